"""Reading whole input files with the project's error messages.

Every text reader starts the same way: read the bytes, report a missing or unreadable
file as a :class:`~crystalscope.errors.FormatError` naming it, and decode.
"""

from __future__ import annotations

import os
from pathlib import Path

from crystalscope.errors import FormatError

__all__ = ["read_file_bytes", "read_text"]


def read_file_bytes(path: str | os.PathLike[str]) -> bytes:
    """The content of ``path``; FormatError naming the file if it cannot be read."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise FormatError("file not found", path=p) from None
    except IsADirectoryError:
        raise FormatError("is a directory, not a file", path=p) from None
    except OSError as exc:
        raise FormatError(f"cannot read file ({exc.strerror})", path=p) from None


def read_text(path: str | os.PathLike[str], *, fallback: str | None = None) -> str:
    """``path`` decoded as UTF-8.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    fallback : str, optional
        Encoding used when the bytes are not UTF-8 (e.g. ``"latin-1"``, ``"replace"`` for
        UTF-8 with replacement characters); without it such a file is a FormatError that
        names the first offending line.
    """
    data = read_file_bytes(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if fallback == "replace":
            return data.decode("utf-8", errors="replace")
        if fallback is not None:
            return data.decode(fallback)
        line = data[: exc.start].count(b"\n") + 1
        raise FormatError("file is not UTF-8 text", path=path, line=line) from None
