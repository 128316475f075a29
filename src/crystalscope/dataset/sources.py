"""Opening many files as one dataset: files, lists of files, glob patterns, ``.lst`` files.

Every source is expanded into ``(file, event)`` requests in order (``event`` None means
all frames of the file).  Consecutive requests for the same file become one segment;
segments are concatenated lazily (dask), so the frames keep their file and event.
Relative names in a ``.lst`` are resolved as CrystFEL does (current directory first),
falling back to the directory of the list file.
"""

from __future__ import annotations

import glob
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd

from crystalscope.dataset import tables
from crystalscope.dataset.hdf5 import FilePart, read_file
from crystalscope.dataset.reader import H5Array
from crystalscope.dataset.stacks import FRAME_STACK, PEAK_STACKS, frames_per_chunk, take_frames
from crystalscope.errors import FormatError
from crystalscope.io.lst import event_frame, read_lst_entries, resolve_listed_path

__all__ = ["Request", "Segment", "assemble", "expand_sources"]

Source = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]


@dataclass(frozen=True)
class Request:
    """Frames requested from one file: ``event`` None = all; where it was asked for."""

    file: str
    event: int | None = None
    list_file: str | None = None
    line: int | None = None


@dataclass
class Segment:
    """Consecutive frames of one file: positions in that file, in dataset order."""

    part: FilePart
    index: np.ndarray


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _expand_lst(path: str) -> list[Request]:
    requests = []
    for entry in read_lst_entries(path):
        found = resolve_listed_path(entry.file, path)
        if found is None:
            raise FormatError(
                f"listed file '{entry.file}' not found (looked relative to the current "
                "directory and to the list file's directory)",
                path=path,
                field="file",
                line=entry.line,
            )
        try:
            event = event_frame(entry.event)
        except ValueError:
            raise FormatError(
                f"event ID {entry.event!r} is not supported here: datasets address frames "
                "as //N (index along the first axis)",
                path=path,
                field="event",
                line=entry.line,
            ) from None
        requests.append(Request(str(found), event, path, entry.line))
    return requests


def expand_sources(source: Source) -> list[Request]:
    """Expand a file, glob pattern, ``.lst`` file, or a sequence of them, into requests."""
    if isinstance(source, str | os.PathLike):
        items: list[str | os.PathLike[str]] = [source]
    else:
        items = list(source)
    requests: list[Request] = []
    for item in items:
        name = os.fspath(item)
        if not isinstance(name, str):
            raise FormatError(f"source {item!r} is not a file name")
        if name.lower().endswith(".lst") and not _has_magic(name):
            requests.extend(_expand_lst(name))
        elif os.path.exists(name) or not _has_magic(name):
            if not os.path.isfile(name):
                raise FormatError(
                    "file not found" if not os.path.exists(name) else "is not a file", path=name
                )
            requests.append(Request(name))
        else:
            matches = sorted(glob.glob(name))
            if not matches:
                raise FormatError("no file matches the pattern", path=name)
            requests.extend(expand_sources(matches))
    if not requests:
        raise FormatError("no files to open (empty list)", path=items[0] if items else None)
    return requests


def _event_error(req: Request, n: int) -> FormatError:
    msg = f"event //{req.event} is out of range: '{req.file}' holds {n} frames"
    if req.list_file is not None:
        return FormatError(msg, path=req.list_file, field="event", line=req.line)
    return FormatError(msg, path=req.file, field="event")


def _segments(requests: list[Request], parts: dict[str, FilePart]) -> list[Segment]:
    segments: list[Segment] = []
    pending: list[int] = []
    seen: set[tuple[str, int]] = set()
    current: FilePart | None = None
    for req in requests:
        part = parts[os.path.realpath(req.file)]
        n = len(part.shots)
        if req.event is not None and not 0 <= req.event < n:
            raise _event_error(req, n)
        events = range(n) if req.event is None else [req.event]
        for ev in events:
            key = (os.path.realpath(req.file), ev)
            if key in seen:
                where = req.list_file or req.file
                raise FormatError(
                    f"frame //{ev} of '{req.file}' is requested twice",
                    path=where,
                    field="event",
                    line=req.line,
                )
            seen.add(key)
        if current is not None and part is not current:
            segments.append(Segment(current, np.asarray(pending, dtype=np.int64)))
            pending = []
        current = part
        pending.extend(events)
    if current is not None:
        segments.append(Segment(current, np.asarray(pending, dtype=np.int64)))
    return segments


def _renumber(segments: list[Segment]) -> list[tuple[pd.DataFrame, pd.DataFrame]]:
    """Shots and crystals of each segment, frame ids offset per file if they collide."""
    pieces = []
    for seg in segments:
        shots = seg.part.shots.iloc[seg.index].reset_index(drop=True)
        crystals = seg.part.crystals[seg.part.crystals["frame"].isin(shots["frame"])]
        pieces.append((shots, crystals))
    ids = np.concatenate([s["frame"].to_numpy() for s, _ in pieces])
    if len(np.unique(ids)) == len(ids):
        return pieces
    offsets: dict[int, int] = {}
    total = 0
    for seg in segments:
        ids_k = seg.part.shots["frame"]
        if id(seg.part) not in offsets and len(ids_k):
            offsets[id(seg.part)] = total - int(ids_k.min())
            total += int(ids_k.max()) - int(ids_k.min()) + 1
    out = []
    for seg, (shots, crystals) in zip(segments, pieces, strict=True):
        shift = offsets.get(id(seg.part), 0)
        out.append(
            (
                shots.assign(frame=shots["frame"] + shift),
                crystals.assign(frame=crystals["frame"] + shift),
            )
        )
    return out


def _lazy(arr: H5Array, name: str) -> da.Array:
    return arr.to_dask(frames_per_chunk(name, arr.shape, arr.dtype))


def _pad_peaks(arrays: list[da.Array]) -> list[da.Array]:
    width = max(a.shape[1] for a in arrays)
    return [
        a if a.shape[1] == width else da.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays
    ]


def _concat_stack(name: str, pieces: list[tuple[Segment, da.Array]]) -> da.Array:
    arrays = [arr for _, arr in pieces]
    if name in PEAK_STACKS[1:] and all(a.ndim == 2 for a in arrays):
        arrays = _pad_peaks(arrays)
    ref_seg, ref = pieces[0][0], arrays[0]
    for (seg, _), arr in zip(pieces[1:], arrays[1:], strict=True):
        if arr.shape[1:] != ref.shape[1:] or arr.dtype != ref.dtype:
            raise FormatError(
                f"stack '{name}' has frames of shape {arr.shape[1:]} ({arr.dtype}) here but "
                f"{ref.shape[1:]} ({ref.dtype}) in '{ref_seg.part.path}'",
                path=seg.part.path,
                field=name,
            )
    return arrays[0] if len(arrays) == 1 else da.concatenate(arrays, axis=0)


def _stacks(segments: list[Segment], externals: dict[int, da.Array]) -> dict[str, da.Array]:
    names = [
        set(seg.part.stacks) | ({FRAME_STACK} if id(seg) in externals else set())
        for seg in segments
    ]
    common = set.intersection(*names) if names else set()
    dropped = set.union(*names) - common if names else set()
    if dropped:
        warnings.warn(
            "stacks missing from some files were left out: " + ", ".join(sorted(dropped)),
            stacklevel=4,
        )
    order = [n for n in segments[0].part.stacks if n in common]
    if FRAME_STACK in common and FRAME_STACK not in order:
        order.insert(0, FRAME_STACK)
    stacks = {}
    for name in order:
        pieces = []
        for seg in segments:
            if name == FRAME_STACK and id(seg) in externals:
                pieces.append((seg, externals[id(seg)]))
            else:
                pieces.append((seg, take_frames(_lazy(seg.part.stacks[name], name), seg.index)))
        stacks[name] = _concat_stack(name, pieces)
    return stacks


def _external_frames(seg: Segment, shots: pd.DataFrame) -> tuple[da.Array, pd.DataFrame]:
    """Frames of a peaks-only file, read from the files its shots table names."""
    base = Path(seg.part.path).parent
    files = []
    for name in shots["file"]:
        p = Path(name)
        cand = p if p.is_absolute() else base / p
        if not os.path.exists(cand) and os.path.exists(p):
            cand = p
        files.append(str(cand))
    requests = [Request(f, int(e)) for f, e in zip(files, shots["event"], strict=True)]
    frame_parts: dict[str, FilePart] = {}
    for req in requests:
        key = os.path.realpath(req.file)
        if key not in frame_parts:
            arr = H5Array.from_file(req.file, seg.part.frames_path)
            frame_parts[key] = FilePart(
                req.file,
                {FRAME_STACK: arr},
                tables.default_shots(arr.shape[0], req.file),
                tables.normalize_crystals(None, []),
            )
    segs = _segments(requests, frame_parts)
    arrays = [take_frames(_lazy(s.part.stacks[FRAME_STACK], FRAME_STACK), s.index) for s in segs]
    frames = arrays[0] if len(arrays) == 1 else da.concatenate(arrays, axis=0)
    return frames, shots.assign(file=files)


def assemble(
    requests: list[Request], *, data_path: str | None, peaks_path: str | None
) -> tuple[dict[str, da.Array], pd.DataFrame, pd.DataFrame, dict[str, Any], str | None]:
    """Read the files of ``requests`` and concatenate them lazily.

    Returns
    -------
    stacks, shots, crystals, file_meta, frames_path
    """
    parts: dict[str, FilePart] = {}
    for req in requests:
        key = os.path.realpath(req.file)
        if key not in parts:
            parts[key] = read_file(req.file, data_path=data_path, peaks_path=peaks_path)
    segments = _segments(requests, parts)
    pieces = _renumber(segments)
    externals: dict[int, da.Array] = {}
    for i, seg in enumerate(segments):
        if seg.part.external_frames and len(seg.index):
            frames, shots = _external_frames(seg, pieces[i][0])
            externals[id(seg)] = frames
            pieces[i] = (shots, pieces[i][1])
    stacks = _stacks(segments, externals)
    shots = pd.concat([s for s, _ in pieces], ignore_index=True)
    crystals = pd.concat([c for _, c in pieces], ignore_index=True)
    file_meta = {part.path: part.meta for part in parts.values()}
    frames_paths = {part.frames_path for part in parts.values()}
    frames_path = frames_paths.pop() if len(frames_paths) == 1 else None
    return stacks, shots, crystals, file_meta, frames_path
