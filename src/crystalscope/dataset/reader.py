"""Lazy, picklable access to HDF5 datasets for dask.

:class:`H5Array` stands for one HDF5 dataset (file path + dataset path, shape, dtype)
without holding an open handle, so that dask graphs built on it can be pickled and sent
to ``dask.distributed`` workers.  Reads go through a small per-process cache of
read-only :class:`h5py.File` handles keyed by the file's inode and modification time,
so a file replaced on disk (``Dataset.write(..., overwrite=True)``) is re-opened rather
than read through a stale handle.

Every failure of the HDF5 library while opening or reading (truncated file, corrupt
chunk, missing compression filter) becomes a :class:`~crystalscope.errors.FormatError`
that names the file and the HDF5 path.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401  (registers bitshuffle/LZ4 and other filters with HDF5)
import numpy as np

from crystalscope.dataset.chunks import ChunkPlan, chunk_plan, decode_chunk
from crystalscope.errors import FormatError

__all__ = ["H5Array", "close_all", "close_files", "file_stamp", "open_fresh", "open_h5", "read_h5"]

_MAX_OPEN = 32
_CACHE: OrderedDict[tuple[str, int, int, int], h5py.File] = OrderedDict()
_LOCK = threading.RLock()
_PLANS: dict[tuple[str, int, int, int, str], ChunkPlan | None] = {}


def _key(path: str) -> tuple[str, int, int, int]:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FormatError("file not found", path=path) from None
    except OSError as exc:
        raise FormatError(f"cannot access file ({exc.strerror})", path=path) from None
    return (os.path.realpath(path), st.st_ino, st.st_mtime_ns, st.st_size)


def open_h5(path: str | os.PathLike[str], stamp: tuple[int, int, int] | None = None) -> h5py.File:
    """Return a cached read-only handle to the HDF5 file ``path``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    stamp : tuple of int, optional
        ``(inode, mtime_ns, size)`` of the file when a dataset was opened from it.  If the
        file has been replaced or modified since, the still-open handle to the original
        is used when this process has one, otherwise an error is raised rather than
        reading different data.

    Raises
    ------
    FormatError
        If the file is missing, not HDF5, truncated, changed since ``stamp``, or
        otherwise unreadable.
    """
    name = os.fspath(path)
    key = _key(name)
    with _LOCK:
        if stamp is not None and key[1:] != stamp:
            old = _CACHE.get((key[0], *stamp))
            if old is not None and old.id.valid:
                return old
            raise FormatError(
                "file was replaced or modified after the dataset was opened; open it again",
                path=name,
            )
        handle = _CACHE.get(key)
        if handle is not None and handle.id.valid:
            _CACHE.move_to_end(key)
            return handle
        handle = _open_file(name)
        _CACHE[key] = handle
        while len(_CACHE) > _MAX_OPEN:
            _, old = _CACHE.popitem(last=False)
            old.close()
        return handle


def _open_file(name: str) -> h5py.File:
    if Path(name).is_dir():
        raise FormatError("is a directory, not an HDF5 file", path=name)
    try:
        return h5py.File(name, "r")
    except FileNotFoundError:
        raise FormatError("file not found", path=name) from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise FormatError(
            f"not a readable HDF5 file (truncated or corrupt?): {exc}", path=name
        ) from None


@contextlib.contextmanager
def open_fresh(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Open ``path`` read-only outside the cache and close it afterwards.

    Used to read tables and metadata when a dataset is opened, so that no handle stays
    open unless frames are actually read.
    """
    handle = _open_file(os.fspath(path))
    try:
        yield handle
    finally:
        handle.close()


def close_all() -> None:
    """Close every cached HDF5 handle of this process (they re-open on demand)."""
    with _LOCK:
        while _CACHE:
            _, handle = _CACHE.popitem()
            handle.close()


def close_files(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Close the cached handles of ``paths`` (e.g. before modifying them with h5py)."""
    real = {os.path.realpath(p) for p in paths}
    with _LOCK:
        for key in [k for k in _CACHE if k[0] in real]:
            _CACHE.pop(key).close()


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """``(inode, mtime_ns, size)`` of ``path``, to detect later replacement."""
    return _key(os.fspath(path))[1:]


def _node(path: str, h5path: str, stamp: tuple[int, int, int] | None) -> h5py.Dataset:
    handle = open_h5(path, stamp)
    try:
        node = handle[h5path]
    except KeyError:
        raise FormatError("HDF5 dataset not found", path=path, field=h5path) from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise FormatError(f"cannot open HDF5 object: {exc}", path=path, field=h5path) from None
    if not isinstance(node, h5py.Dataset):
        raise FormatError("is an HDF5 group, not a dataset", path=path, field=h5path)
    return node


def _read_node(node: h5py.Dataset, index: Any, path: str, h5path: str) -> Any:
    try:
        if h5py.check_string_dtype(node.dtype) is not None:
            return node.asstr()[index]
        return node[index]
    except (OSError, RuntimeError) as exc:
        raise FormatError(
            f"cannot read data (truncated or corrupt file?): {exc}", path=path, field=h5path
        ) from None


def _whole_frames(index: Any, shape: tuple[int, ...]) -> tuple[range, bool] | None:
    """The axis-0 entries ``index`` selects when it takes whole frames (full slices on
    every other axis), and whether axis 0 is dropped (an integer index); else None."""
    items = index if isinstance(index, tuple) else (index,)
    if not items or len(items) > len(shape) or len(shape) < 2:
        return None
    for item, n in zip(items[1:], shape[1:], strict=False):
        if not isinstance(item, slice) or item.indices(n) != (0, n, 1):
            return None
    first = items[0]
    if isinstance(first, (int, np.integer)) and not isinstance(first, bool):
        i = int(first) + (shape[0] if first < 0 else 0)
        return (range(i, i + 1), True) if 0 <= i < shape[0] else None
    if isinstance(first, slice):
        start, stop, step = first.indices(shape[0])
        return (range(start, stop), False) if step == 1 and stop > start else None
    return None


def _raw_chunks(
    node: h5py.Dataset, frames: range, key: tuple[str, int, int, int, str]
) -> list[bytes] | None:
    """Stored bytes of the chunks of ``frames`` when they can be decoded here, else None."""
    if key not in _PLANS:
        _PLANS[key] = chunk_plan(node)
    if _PLANS[key] is None:
        return None
    tail = (0,) * (node.ndim - 1)
    out = []
    try:
        for i in frames:
            mask, data = node.id.read_direct_chunk((i, *tail))
            if mask:
                return None
            out.append(data)
    except (OSError, RuntimeError, ValueError, KeyError):
        return None
    return out


def read_h5(
    path: str, h5path: str, index: Any = (), stamp: tuple[int, int, int] | None = None
) -> Any:
    """Read ``index`` of the dataset ``h5path`` in ``path``; errors name file and path.

    The read holds this module's lock, so a handle cannot be closed by the cache while
    it is in use (h5py serialises calls into HDF5 anyway).  Whole frames of a dataset
    stored one frame per chunk are fetched compressed under the lock and decompressed
    after it is released (:mod:`crystalscope.dataset.chunks`), so that threads
    decompress in parallel.
    """
    with _LOCK:
        node = _node(path, h5path, stamp)
        frames = _whole_frames(index, node.shape)
        key = (os.path.realpath(path), *(stamp or file_stamp(path)), h5path)
        raw = _raw_chunks(node, frames[0], key) if frames is not None else None
        if raw is None:
            return _read_node(node, index, path, h5path)
        plan = _PLANS[key]
    assert plan is not None and frames is not None
    try:
        decoded = [decode_chunk(data, plan) for data in raw]
    except ValueError:
        with _LOCK:  # let HDF5 itself read (and report) what would not decode here
            return _read_node(_node(path, h5path, stamp), index, path, h5path)
    return decoded[0] if frames[1] else np.stack(decoded)


class H5Array:
    """A picklable, lazily read view of one HDF5 dataset, usable with ``da.from_array``.

    Parameters
    ----------
    path : str
        The HDF5 file (kept as an absolute path, so that a change of the working
        directory or a worker process elsewhere does not break reading).
    h5path : str
        The dataset inside the file, e.g. ``/entry/data/data``.
    shape, dtype
        Shape and dtype of the dataset (read once when the file is opened).
    """

    def __init__(self, path: str, h5path: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = os.path.abspath(path)
        self.h5path = h5path
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.stamp = file_stamp(path)

    @classmethod
    def from_file(cls, path: str, h5path: str, handle: h5py.File | None = None) -> H5Array:
        """Describe dataset ``h5path`` of ``path`` (reads shape and dtype from ``handle``)."""
        if handle is None:
            with open_fresh(path) as fresh:
                return cls.from_file(path, h5path, fresh)
        try:
            node = handle.get(h5path)
        except (OSError, RuntimeError, ValueError) as exc:
            raise FormatError(f"cannot open HDF5 object: {exc}", path=path, field=h5path) from None
        if not isinstance(node, h5py.Dataset):
            what = "HDF5 dataset not found" if node is None else "is a group, not a dataset"
            raise FormatError(what, path=path, field=h5path)
        return cls(path, h5path, node.shape, node.dtype)

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(read_h5(self.path, self.h5path, index, self.stamp))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("H5Array", self.path, self.h5path, self.shape, str(self.dtype), self.stamp)

    def __repr__(self) -> str:
        return f"H5Array({self.path!r}, {self.h5path!r}, shape={self.shape}, dtype={self.dtype})"

    def to_dask(self, frames_per_chunk: int) -> da.Array:
        """Dask array over this dataset with ``frames_per_chunk`` entries per chunk on axis 0."""
        chunks = (max(1, frames_per_chunk), *self.shape[1:])
        return da.from_array(self, chunks=chunks, asarray=True, inline_array=True, fancy=False)
