"""The HDF5 layout of a dataset file: writing (atomic, streamed) and reading one file.

Layout (NeXus/CXI style; see ``docs/formats/dataset-hdf5.md``)::

    /                          attrs: default="entry", creator, crystalscope_format
    /entry                     NXentry
    /entry/data                NXdata, signal="data"
    /entry/data/data           frames, (n_frames, ss, fs), one frame per chunk
    /entry/data/<stack>        any other stack, first axis = frames
    /entry/data/nPeaks ...     CXI peak lists (CrystFEL: peak_list = /entry/data)
    /entry/shots/<column>      one 1-D dataset per column of the shots table
    /entry/crystals/<column>   one 1-D dataset per column of the crystals table
    /entry/instrument, ...     run metadata: nested groups, values as datasets

Stacks are compressed with bitshuffle/LZ4 (``hdf5plugin``); table columns with gzip so
that any HDF5 tool reads them without plugins.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import dask.array as da
import h5py
import hdf5plugin
import numpy as np
import pandas as pd

from crystalscope.dataset import tables
from crystalscope.dataset.chunks import ChunkPlan, can_encode, chunk_plan, encode_chunk
from crystalscope.dataset.reader import H5Array, open_fresh
from crystalscope.dataset.stacks import FRAME_STACK, PEAK_DTYPES, PEAK_STACKS, frames_per_chunk
from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_path

if TYPE_CHECKING:
    from crystalscope.dataset.core import Dataset

__all__ = [
    "CRYSTALS",
    "DATA",
    "ENTRY",
    "FORMAT_VERSION",
    "SHOTS",
    "FilePart",
    "read_file",
    "write_dataset",
]

ENTRY = "/entry"
DATA = "/entry/data"
SHOTS = "/entry/shots"
CRYSTALS = "/entry/crystals"
RESERVED = ("data", "shots", "crystals")
FORMAT_VERSION = 1

Progress = Callable[[int, int], None]


@dataclass
class FilePart:
    """What one dataset file contributes: lazy stacks, tables and metadata."""

    path: str
    stacks: dict[str, H5Array]
    shots: pd.DataFrame
    crystals: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    frames_path: str = DATA + "/" + FRAME_STACK
    external_frames: bool = False


# --------------------------------------------------------------------------- writing


class _Counter:
    def __init__(self, total: int, callback: Progress | None) -> None:
        self.total = total
        self.done = 0
        self.callback = callback

    def add(self, nbytes: int) -> None:
        self.done += nbytes
        if self.callback is not None:
            self.callback(self.done, self.total)


#: Bytes of stack data computed per batch while writing (bounds the write's memory).
WRITE_BATCH_BYTES = 16 * 2**20


def _batch_frames(stacks: Mapping[str, da.Array], n_frames: int) -> int:
    """Frames per write batch: at least two per worker thread, otherwise ~16 MB."""
    per_frame = sum(int(a.nbytes) // max(n_frames, 1) for a in stacks.values())
    threads = 2 * (os.cpu_count() or 1)
    return max(threads, min(n_frames, WRITE_BATCH_BYTES // max(per_frame, 1)))


def _stack_for_file(name: str, array: da.Array) -> da.Array:
    if name in PEAK_DTYPES and array.dtype != PEAK_DTYPES[name]:
        return array.astype(PEAK_DTYPES[name])
    return array


def _create_stack(group: h5py.Group, name: str, array: da.Array, compress: bool) -> h5py.Dataset:
    shape = tuple(int(n) for n in array.shape)
    if 0 in shape:
        return group.create_dataset(name, shape=shape, dtype=array.dtype)
    per = frames_per_chunk(name, shape, array.dtype)
    kwargs: dict[str, Any] = {"chunks": (min(per, shape[0]), *shape[1:])}
    if compress:
        kwargs.update(hdf5plugin.Bitshuffle(cname="lz4"))
    return group.create_dataset(name, shape=shape, dtype=array.dtype, **kwargs)


def _shots_for_file(ds: Dataset, target: Path, frames: bool) -> pd.DataFrame:
    shots = ds.shots.copy()
    if frames:
        shots["file"] = target.name
        shots["event"] = np.arange(len(shots), dtype=np.int64)
        return shots
    if ds.frames_path is None or FRAME_STACK not in ds.stacks:
        raise DataError(
            "frames=False needs frames read unchanged from files (the shots table's file "
            "and event columns are written instead); these frames exist only in memory",
            field="data",
        )
    base = target.resolve().parent
    shots["file"] = [os.path.relpath(Path(f).resolve(), base) for f in shots["file"]]
    return shots


def _write_layout(handle: h5py.File, frames_path: str | None) -> tuple[h5py.Group, h5py.Group]:
    from crystalscope import __version__

    handle.attrs["default"] = "entry"
    handle.attrs["creator"] = f"crystalscope {__version__}"
    handle.attrs["crystalscope_format"] = FORMAT_VERSION
    entry = handle.create_group(ENTRY, track_order=True)
    entry.attrs["NX_class"] = "NXentry"
    entry.attrs["default"] = "data"
    data = entry.create_group("data", track_order=True)
    data.attrs["NX_class"] = "NXdata"
    data.attrs["signal"] = FRAME_STACK
    if frames_path is not None:
        data.attrs["frames"] = "external"
        data.attrs["frames_path"] = frames_path
    return entry, data


def write_dataset(
    ds: Dataset,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    frames: bool = True,
    compression: bool = True,
    progress: Progress | None = None,
) -> Path:
    """Write ``ds`` to ``path`` atomically; see :meth:`Dataset.write`."""
    target = Path(path)
    shots = tables.encode_table(_shots_for_file(ds, target, frames))
    crystals = tables.encode_table(ds.crystals)
    tables.check_meta(ds.meta)
    for key in ds.meta:
        if key in RESERVED:
            raise DataError(f"metadata key '{key}' is reserved for the layout", field=key)
    stacks = {
        name: _stack_for_file(name, arr)
        for name, arr in ds.stacks.items()
        if frames or name != FRAME_STACK
    }
    with atomic_path(target, overwrite=overwrite) as tmp:
        with h5py.File(tmp, "w", track_order=True) as handle:
            entry, data = _write_layout(handle, None if frames else ds.frames_path)
            tables.write_table(entry.create_group("shots", track_order=True), shots)
            entry["shots"].attrs["NX_class"] = "NXcollection"
            tables.write_table(entry.create_group("crystals", track_order=True), crystals)
            entry["crystals"].attrs["NX_class"] = "NXcollection"
            tables.write_meta(entry, ds.meta)
            _store_stacks(data, stacks, compression, progress)
    return target


def _store_stacks(
    group: h5py.Group, stacks: Mapping[str, da.Array], compress: bool, progress: Progress | None
) -> None:
    """Compute the stacks on local threads and write them.

    Frame stacks stored one frame per chunk are compressed by the worker threads as each
    chunk is computed (:func:`~crystalscope.dataset.chunks.encode_chunk`) and written
    straight away, only the chunk write holding HDF5's lock (one ``da.store`` over all
    of them, so that the graph is optimised once and stacks computed together, e.g. the
    frames and masks of one map, share the work).  The other stacks are computed batch by
    batch and written before the next batch starts, so memory holds at most one batch
    (~16 MB, at least two frames per thread).  h5py handles cannot travel to other
    processes, so the writes always happen in this process.
    """
    total = sum(int(arr.nbytes) for arr in stacks.values())
    counter = _Counter(total, progress)
    targets = {name: _create_stack(group, name, arr, compress) for name, arr in stacks.items()}
    names = [name for name, arr in stacks.items() if arr.size]
    if progress is not None:
        progress(0, total)
    if not names:
        return
    plans = {name: chunk_plan(targets[name]) for name in names}
    lock = threading.Lock()
    writers = {
        name: _ChunkWriter(targets[name], plan, counter, lock)
        for name, plan in plans.items()
        if plan is not None and can_encode(plan)
    }
    if writers:
        with dask.config.set(scheduler="threads"):
            da.store([stacks[k] for k in writers], list(writers.values()), lock=False)  # type: ignore[arg-type]
    rest = [k for k in names if k not in writers]
    if not rest:
        return
    n = int(stacks[rest[0]].shape[0])
    step = _batch_frames({k: stacks[k] for k in rest}, n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        with dask.config.set(scheduler="threads"):
            values = dask.compute(*(stacks[k][start:stop] for k in rest))
        for name, value in zip(rest, values, strict=True):
            _write_batch(targets[name], start, np.asarray(value), counter)


class _ChunkWriter:
    """A ``da.store`` target that compresses frames in the calling (worker) thread and
    writes the chunks with ``write_direct_chunk`` under ``lock``."""

    def __init__(
        self, dset: h5py.Dataset, plan: ChunkPlan, counter: _Counter, lock: threading.Lock
    ) -> None:
        self.dset, self.plan, self.counter, self.lock = dset, plan, counter, lock
        self.shape, self.dtype, self.ndim = dset.shape, dset.dtype, dset.ndim

    def __setitem__(self, index: tuple[slice, ...], value: np.ndarray) -> None:
        start = index[0].start or 0
        encoded = [encode_chunk(frame, self.plan) for frame in value]
        tail = (0,) * (self.ndim - 1)
        with self.lock:
            for i, data in enumerate(encoded):
                self.dset.id.write_direct_chunk((start + i, *tail), data)
                self.counter.add(self.plan.frame_bytes)


def _write_batch(dset: h5py.Dataset, start: int, value: np.ndarray, counter: _Counter) -> None:
    """Write a batch; frame by frame (with progress) for image-like stacks."""
    if value.ndim < 3:
        dset[start : start + len(value)] = value
        counter.add(int(value.nbytes))
        return
    for i, frame in enumerate(value):
        dset[start + i] = frame
        counter.add(int(frame.nbytes))


# --------------------------------------------------------------------------- reading


def _stacks_of(handle: h5py.File, path: str, n_frames: int) -> dict[str, H5Array]:
    group = handle.get(DATA)
    if group is None:
        return {}
    if not isinstance(group, h5py.Group):
        raise FormatError("expected an HDF5 group", path=path, field=DATA)
    stacks = {}
    for name, node in group.items():
        if not isinstance(node, h5py.Dataset):
            continue
        if node.ndim == 0 or node.shape[0] != n_frames:
            raise FormatError(
                f"stack has shape {node.shape}, but the shots table has {n_frames} rows "
                "(the first axis of every stack runs over the frames)",
                path=path,
                field=node.name,
            )
        stacks[name] = H5Array(path, node.name, node.shape, node.dtype)
    return stacks


def _read_ours(handle: h5py.File, path: str) -> FilePart:
    shots = tables.read_table(handle, SHOTS, path)
    if shots is None:
        raise FormatError(
            "not a crystalscope dataset (no /entry/shots); for frames in another HDF5 "
            "layout pass data_path=",
            path=path,
            field=SHOTS,
        )
    for key in tables.SHOT_KEYS:
        if key not in shots:
            raise FormatError(
                "missing key column of the shots table", path=path, field=f"{SHOTS}/{key}"
            )
    shots = tables.normalize_shots(
        shots, len(shots), error=FormatError, path=path, field_prefix=SHOTS + "/"
    )
    crystals = tables.normalize_crystals(
        tables.read_table(handle, CRYSTALS, path),
        shots["frame"],
        error=FormatError,
        path=path,
        field_prefix=CRYSTALS + "/",
    )
    meta = {
        key: (
            tables.read_meta(node, path)
            if isinstance(node, h5py.Group)
            else tables.read_meta_value(node)
        )
        for key, node in handle[ENTRY].items()
        if key not in RESERVED
    }
    part = FilePart(path, _stacks_of(handle, path, len(shots)), shots, crystals, meta)
    data = handle.get(DATA)
    if isinstance(data, h5py.Group) and data.attrs.get("frames") == "external":
        part.external_frames = True
        part.frames_path = str(data.attrs.get("frames_path", DATA + "/" + FRAME_STACK))
    else:
        part.shots["file"] = path
        part.shots["event"] = np.arange(len(shots), dtype=np.int64)
    return part


def _read_foreign(handle: h5py.File, path: str, data_path: str, peaks_path: str | None) -> FilePart:
    frames = H5Array.from_file(path, data_path, handle)
    if frames.ndim < 2:
        raise FormatError(
            f"frames must have at least 2 dimensions (frames first), shape is {frames.shape}",
            path=path,
            field=data_path,
        )
    n = frames.shape[0]
    stacks = {FRAME_STACK: frames}
    if peaks_path is not None:
        for name in PEAK_STACKS:
            arr = H5Array.from_file(path, f"{peaks_path.rstrip('/')}/{name}", handle)
            if arr.ndim != (1 if name == "nPeaks" else 2) or arr.shape[0] != n:
                raise FormatError(
                    f"CXI peak array has shape {arr.shape}; expected {n} frames "
                    f"({'1-D' if name == 'nPeaks' else '2-D'})",
                    path=path,
                    field=arr.h5path,
                )
            stacks[name] = arr
    shots = tables.default_shots(n, path)
    part = FilePart(path, stacks, shots, tables.normalize_crystals(None, shots["frame"]))
    part.frames_path = data_path
    return part


def read_file(
    path: str, *, data_path: str | None = None, peaks_path: str | None = None
) -> FilePart:
    """Describe one HDF5 file: tables and metadata in memory, stacks as lazy views.

    With ``data_path`` the file may have any layout: frames are read from that dataset
    (and CXI peak lists from group ``peaks_path``); without it the file must be a
    crystalscope dataset.
    """
    try:
        with open_fresh(path) as handle:
            if data_path is not None:
                return _read_foreign(handle, path, data_path, peaks_path)
            part = _read_ours(handle, path)
    except (OSError, RuntimeError, KeyError) as exc:
        raise FormatError(f"cannot read file (truncated or corrupt?): {exc}", path=path) from None
    if peaks_path is not None and peaks_path.rstrip("/") != DATA:
        raise FormatError(
            "peaks_path applies only together with data_path", path=path, field=peaks_path
        )
    return part
