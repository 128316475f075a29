"""CrystFEL list files (``.lst``): one data file per line, optionally with an event.

Format (as read by CrystFEL's ``indexamajig``)::

    run01.h5
    run02.h5 //0
    /data/run03.h5 //17

* Each line is cut at its first carriage return or newline; empty (and, here, also
  whitespace-only) lines are skipped.  There are no comments.
* If the text after the last space of a line contains ``//`` it is the event ID and the
  text before that space the file name; otherwise the whole line is the file name (which
  may then contain spaces).  Trailing white space of a file name is dropped.
* An event ID is ``[path parts]//[dim0[/dim1...]]``: optional ``/``-separated
  placeholder values for ``%`` in HDF5 paths, then ``//``, then frame indices, e.g.
  ``//17`` (frame 17 of a 3-D array).  A line without an event means all frames of the
  file.

File names are returned as written.  :func:`resolve_listed_path` implements the rule
:meth:`crystalscope.dataset.Dataset.open` uses for relative names: relative to the
current directory when the file exists there (as CrystFEL does), otherwise relative to
the directory of the ``.lst`` file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_write

__all__ = [
    "LstEntry",
    "event_frame",
    "format_event",
    "read_lst",
    "read_lst_entries",
    "resolve_listed_path",
    "write_lst",
]


@dataclass(frozen=True)
class LstEntry:
    """One line of a list file: file name as written, event ID (or None), line number."""

    file: str
    event: str | None
    line: int


def _check_event(event: str, path: Path, line: int) -> None:
    head, sep, dims = event.partition("//")
    if not sep:
        raise FormatError(f"event ID {event!r} has no '//'", path=path, field="event", line=line)
    if head and any(part == "" for part in head.split("/")):
        raise FormatError(
            f"event ID {event!r}: empty path part before '//'",
            path=path,
            field="event",
            line=line,
        )
    if dims and not all(p.isascii() and p.isdigit() for p in dims.split("/")):
        raise FormatError(
            f"event ID {event!r}: frame indices after '//' must be non-negative integers "
            "separated by '/'",
            path=path,
            field="event",
            line=line,
        )


def _split_line(text: str, path: Path, line: int) -> LstEntry:
    space = text.rfind(" ")
    event: str | None = None
    name = text
    if space > 2 and "//" in text[space + 1 :]:
        name, event = text[:space], text[space + 1 :]
        _check_event(event, path, line)
    name = name.rstrip()
    if not name:
        raise FormatError("line has an event but no file name", path=path, field="file", line=line)
    if "\x00" in name:
        raise FormatError("file name contains a NUL byte", path=path, field="file", line=line)
    return LstEntry(name, event, line)


def read_lst_entries(path: str | os.PathLike[str]) -> list[LstEntry]:
    """Parse a list file into :class:`LstEntry` records (file names as written)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise FormatError("list file not found", path=p) from None
    except OSError as exc:
        raise FormatError(f"cannot read list file ({exc.strerror})", path=p) from None
    entries = []
    for number, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FormatError(
                f"not UTF-8 text (byte {exc.start})", path=p, field="file", line=number
            ) from None
        text = text.split("\r", 1)[0]
        if text.strip():
            entries.append(_split_line(text, p, number))
    return entries


def read_lst(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a CrystFEL list file.

    Returns
    -------
    DataFrame
        Columns ``file`` (str, as written) and ``event`` (str event ID such as ``"//3"``,
        or None where the line names a whole file), one row per line, in file order.

    Raises
    ------
    FormatError
        If the file is missing, not UTF-8, or an event ID is malformed (names the line).
    """
    entries = read_lst_entries(path)
    return pd.DataFrame(
        {
            "file": pd.Series([e.file for e in entries], dtype=object),
            "event": pd.Series([e.event for e in entries], dtype=object),
        }
    )


def event_frame(event: str | None) -> int | None:
    """Frame index of a simple event ID ``//N`` (None for None); ValueError otherwise."""
    if event is None:
        return None
    head, sep, dims = event.partition("//")
    if head or not sep or not dims.isascii() or not dims.isdigit():
        raise ValueError(f"event ID {event!r} is not of the form //N")
    return int(dims)


def format_event(event: int | str | None) -> str | None:
    """Event ID text for a frame index (``3 -> "//3"``); strings are checked and kept."""
    if event is None:
        return None
    if isinstance(event, str):
        _check_event(event, Path("<event>"), 0)
        return event
    index = int(event)
    if index < 0 or index != event:
        raise DataError(f"event index must be a non-negative integer, got {event!r}", field="event")
    return f"//{index}"


def write_lst(
    path: str | os.PathLike[str],
    entries: pd.DataFrame | Iterable[str | os.PathLike[str] | tuple[str, int | str | None]],
    *,
    overwrite: bool = False,
) -> Path:
    """Write a CrystFEL list file (atomically).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.lst`` file.
    entries : DataFrame or iterable
        A table with columns ``file`` and optionally ``event`` (int frame index, event ID
        string, or None/NaN), or file names, or ``(file, event)`` pairs.
    overwrite : bool
        Replace an existing file (default: refuse with a CrystalscopeError).
    """
    lines = [_format_line(f, e) for f, e in _pairs(entries)]
    with atomic_write(path, overwrite=overwrite) as fh:
        fh.write("".join(line + "\n" for line in lines))
    return Path(path)


def _pairs(entries: object) -> list[tuple[str, int | str | None]]:
    if isinstance(entries, pd.DataFrame):
        if "file" not in entries:
            raise DataError("the table needs a 'file' column", field="file")
        events = entries["event"] if "event" in entries else [None] * len(entries)
        return [
            (f, None if pd.isna(e) else e) for f, e in zip(entries["file"], events, strict=True)
        ]
    out: list[tuple[str, int | str | None]] = []
    for item in entries:  # type: ignore[attr-defined]
        if isinstance(item, tuple):
            out.append((item[0], item[1]))
        else:
            out.append((os.fspath(item), None))
    return out


def _format_line(file: object, event: int | str | None) -> str:
    name = os.fspath(file) if isinstance(file, str | os.PathLike) else None
    if not name or any(c in name for c in "\n\r\x00"):
        raise DataError(f"file name {file!r} cannot be written to a list file", field="file")
    ev = format_event(event)
    last = name.rsplit(" ", 1)
    if ev is None and len(last) == 2 and "//" in last[1] and name.rfind(" ") > 2:
        raise DataError(
            f"file name {name!r} would be read back as a file plus an event", field="file"
        )
    return name if ev is None else f"{name} {ev}"


def resolve_listed_path(name: str, list_file: str | os.PathLike[str]) -> Path | None:
    """Where the file ``name`` from ``list_file`` is, or None if it is in neither place.

    Absolute names are taken as they are.  A relative name is looked up relative to the
    current working directory first (CrystFEL's rule), then relative to the directory
    of the list file.
    """
    p = Path(name)
    if p.is_absolute():
        return p if os.path.exists(p) else None
    if os.path.exists(p):
        return p
    beside = Path(list_file).parent / p
    return beside if os.path.exists(beside) else None
