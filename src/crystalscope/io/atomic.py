"""Atomic file output: write to a temporary file beside the target, then rename.

An interrupted write (exception, Ctrl-C, killed process) never leaves a half-written
target, and an existing file is only replaced when the caller says so.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from crystalscope.errors import CrystalscopeError

__all__ = ["atomic_path", "atomic_write", "check_outputs_free", "check_writable", "save_png"]


def check_writable(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Return ``path`` as a Path; raise if it exists and ``overwrite`` is false."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise CrystalscopeError(
            "output file exists; pass overwrite=True (--overwrite) to replace it", path=target
        )
    if not target.parent.exists():
        raise CrystalscopeError("output directory does not exist", path=target.parent)
    return target


def check_outputs_free(paths: Iterable[str | os.PathLike[str]], *, overwrite: bool) -> None:
    """Raise before a run starts if any of its output files exists and ``overwrite`` is
    false (so that a long run never ends in a refusal to write, nor replaces results)."""
    taken = [Path(p) for p in paths if Path(p).exists()]
    if taken and not overwrite:
        raise CrystalscopeError(
            "output exists; choose another output.directory or pass --overwrite",
            path=taken[0],
        )


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The process's umask, read once (reading it means setting it, which is not thread-safe).
_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` if the block succeeds.

    Examples
    --------
    >>> with atomic_path("out.h5") as tmp:  # doctest: +SKIP
    ...     write_everything(tmp)
    """
    target = check_writable(path, overwrite=overwrite)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not overwrite and target.exists():
            raise CrystalscopeError("output file appeared while writing; not replaced", path=target)
        if tmp.exists():
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared data
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str],
    mode: str = "w",
    *,
    overwrite: bool = True,
    encoding: str | None = "utf-8",
    newline: str | None = "\n",
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing that replaces ``path`` only on success."""
    if "b" in mode:
        encoding = newline = None
    with (
        atomic_path(path, overwrite=overwrite) as tmp,
        open(tmp, mode, encoding=encoding, newline=newline) as handle,
    ):
        yield handle


def save_png(
    fig: Any, path: str | os.PathLike[str], *, dpi: int = 90, overwrite: bool = True
) -> Path:
    """Write a matplotlib figure as PNG atomically (after ``tight_layout``); return the
    path."""
    target = Path(path)
    fig.tight_layout()
    with atomic_path(target, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return target
