"""Run directories of ``crystalscope serial run``: numbering, step records, fingerprints.

A run root holds numbered run directories ``run-001``, ``run-002``, ...; each holds one
sub-directory per pipeline step.  A step's directory is complete only when its record
``step.json`` exists (written atomically, last): it carries the step's *fingerprint*, a
hash of the step's configuration, the identity of its input files (path, size,
modification time) and the fingerprint of the step before it.  So:

* a step whose record matches the current fingerprint is up to date and skipped;
* a step directory without a record was interrupted: it is removed and the step runs
  again from the start (every file inside is itself written atomically, and no later
  step reads a directory without a record);
* a step with the same fingerprint in an earlier run is *reused*: its files are
  hard-linked (copied where links are impossible), not recomputed.

:func:`choose_run_directory` picks the directory of a run: the latest one when its
configuration fingerprint matches (resume, or nothing to do), else a new number.
Earlier runs are never modified unless ``force`` is given.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crystalscope.io.atomic import atomic_write

__all__ = [
    "RECORD_NAME",
    "RUN_RECORD_NAME",
    "StepOutcome",
    "choose_run_directory",
    "file_identity",
    "fingerprint",
    "list_runs",
    "read_record",
    "run_step",
    "write_record",
]

RECORD_NAME = "step.json"
RUN_RECORD_NAME = "run.json"
_PREFIX = "run-"


def fingerprint(*parts: Any) -> str:
    """SHA-256 (hex, 16 characters) of the JSON form of ``parts``."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def file_identity(paths: Iterable[str | os.PathLike[str] | None]) -> list[list[Any]]:
    """``[path, size, mtime_ns]`` of each existing file (None entries and missing files
    give ``[path, None, None]``): what a fingerprint knows of an input file."""
    out: list[list[Any]] = []
    for p in paths:
        if p is None:
            continue
        try:
            st = os.stat(p)
            out.append([os.fspath(p), st.st_size, st.st_mtime_ns])
        except OSError:
            out.append([os.fspath(p), None, None])
    return out


def read_record(path: Path) -> dict[str, Any] | None:
    """The JSON record at ``path`` (None when absent or unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write a JSON record atomically."""
    with atomic_write(path, overwrite=True) as fh:
        json.dump(record, fh, indent=1, default=str)


def list_runs(root: Path) -> list[Path]:
    """The numbered run directories in ``root``, oldest first."""
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX)]
    return sorted((p for p in runs if p.name[len(_PREFIX) :].isdigit()), key=_number)


def _number(path: Path) -> int:
    return int(path.name[len(_PREFIX) :])


def _new_run(root: Path) -> Path:
    runs = list_runs(root)
    n = _number(runs[-1]) + 1 if runs else 1
    while True:
        path = root / f"{_PREFIX}{n:03d}"
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1


def choose_run_directory(root: Path, config_fingerprint: str, *, force: bool) -> Path:
    """The run directory for a configuration with ``config_fingerprint`` (module doc).

    The latest run is continued when it was made with the same configuration (or
    replaced when ``force``); otherwise a new numbered directory is created.
    """
    runs = list_runs(root)
    if runs:
        latest = runs[-1]
        record = read_record(latest / RUN_RECORD_NAME) or {}
        if force or record.get("fingerprint") == config_fingerprint:
            return latest
    return _new_run(root)


@dataclass
class StepOutcome:
    """How a step was satisfied: ``computed``, ``reused`` (from an earlier run) or
    ``up to date``; with the seconds it took."""

    name: str
    status: str
    seconds: float
    directory: Path
    record: dict[str, Any]


def _find_earlier(run_dir: Path, name: str, fp: str) -> Path | None:
    for other in reversed(list_runs(run_dir.parent)):
        if other == run_dir:
            continue
        record = read_record(other / name / RECORD_NAME)
        if record is not None and record.get("fingerprint") == fp:
            return other / name
    return None


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def run_step(
    run_dir: Path,
    name: str,
    fp: str,
    compute: Callable[[Path], dict[str, Any]],
    *,
    force: bool = False,
    clock: Callable[[], float] | None = None,
    on_compute: Callable[[], None] | None = None,
) -> StepOutcome:
    """Bring the step ``name`` of ``run_dir`` up to date with fingerprint ``fp``.

    ``compute(directory)`` writes the step's files into ``directory`` and returns extra
    JSON-compatible facts for the record (counts, summary lines).  ``on_compute()`` is
    called just before, when the step has to be computed (neither up to date nor reused).
    """
    now = clock or time.perf_counter
    start = now()
    target = run_dir / name
    record = read_record(target / RECORD_NAME)
    if not force and record is not None and record.get("fingerprint") == fp:
        return StepOutcome(name, "up to date", 0.0, target, record)
    _remove(target)  # stale or interrupted: start again from nothing
    earlier = None if force else _find_earlier(run_dir, name, fp)
    if earlier is not None:
        partial = run_dir / f".{name}.partial"
        _remove(partial)
        shutil.copytree(earlier, partial, copy_function=_link_or_copy)
        partial.rename(target)
        record = read_record(target / RECORD_NAME) or {}
        return StepOutcome(name, "reused", now() - start, target, record)
    target.mkdir(parents=True)
    if on_compute is not None:
        on_compute()
    facts = compute(target)
    seconds = now() - start
    record = {"step": name, "fingerprint": fp, "seconds": seconds, **facts}
    write_record(target / RECORD_NAME, record)
    return StepOutcome(name, "computed", seconds, target, record)
