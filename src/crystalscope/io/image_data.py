"""Images read from detector files, their metadata, and lazy frame stacks.

Every image reader returns an :class:`ImageData`: the pixel array (``(ss, fs)`` for one
frame, ``(n, ss, fs)`` for a stack) and a metadata dictionary whose *standard keys*
(:data:`STANDARD_KEYS`) mean the same in every format; the format's own header is kept
under ``"header"`` so that writers can round-trip it.

:class:`LazyFrames` wraps a per-frame read function as an array-like that
:func:`dask.array.from_array` can chunk one frame per chunk; it is picklable (open file
handles are dropped and reopened), so the dask graph runs on a distributed cluster too.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from crystalscope.errors import DataError

__all__ = [
    "STANDARD_KEYS",
    "ImageData",
    "LazyFrames",
    "as_lossless",
    "frames_to_dask",
    "is_number",
    "own_header",
]

#: Metadata keys with one meaning in every format (all optional).
STANDARD_KEYS: dict[str, str] = {
    "pixel_size_mm": "pixel size (fast-scan, slow-scan) in mm",
    "distance_mm": "sample-to-detector distance in mm",
    "wavelength_a": "wavelength in A",
    "beam_center_px": "direct-beam position (fs, ss) in pixels, pixel-centre origin",
    "exposure_time_s": "exposure time per frame in s",
    "phi_start_deg": "rotation angle at the start of the frame in degrees",
    "phi_range_deg": "rotation range of the frame in degrees",
    "voxel_size_a": "MRC voxel size (x, y, z) in A",
    "header": "the format's own header items (round-tripped by the writers)",
    "header_format": "the format ``header`` was read from; other formats' writers ignore it",
}


@dataclass
class ImageData:
    """Pixel data and metadata of one image file.

    Attributes
    ----------
    data : numpy.ndarray
        ``(ss, fs)`` for one frame or ``(n, ss, fs)`` for a stack.
    metadata : dict
        Standard keys (:data:`STANDARD_KEYS`) where the file has them, plus
        format-specific ones (documented per reader).
    format : str
        ``"tiff"``, ``"mrc"``, ``"smv"``, ``"cbf"`` or ``"hdf5"``.
    path : str or None
        The file the image was read from.
    """

    data: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = ""
    path: str | None = None

    @property
    def n_frames(self) -> int:
        """Number of frames (1 for a single 2-D image)."""
        return 1 if self.data.ndim == 2 else int(np.prod(self.data.shape[:-2]))

    def frames(self) -> np.ndarray:
        """The data as a ``(n, ss, fs)`` stack (a view)."""
        return self.data.reshape((-1, *self.data.shape[-2:]))


class LazyFrames:
    """Array-like ``(n, ss, fs)`` stack whose frames are read on demand.

    Parameters
    ----------
    shape : tuple of int
        ``(n, ss, fs)``.
    dtype : numpy.dtype
        Pixel type.
    read_frame : callable
        ``read_frame(index) -> ndarray (ss, fs)``; must be picklable (a module-level
        function, a :func:`functools.partial` of one, or an object with ``__call__``).
    token : tuple
        Identifies the data for dask (e.g. path, modification time, dataset).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        dtype: np.dtype[Any] | type,
        read_frame: Callable[[int], np.ndarray],
        token: tuple[Any, ...],
    ) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        self.read_frame = read_frame
        self.token = token

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("LazyFrames", self.shape, str(self.dtype), *self.token)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        first, rest = key[0], key[1:]
        indices = range(self.shape[0])[first] if isinstance(first, slice) else None
        if indices is None:
            return self._frame(int(first))[rest]
        out = np.empty((len(indices), *self.shape[1:]), dtype=self.dtype)
        for j, i in enumerate(indices):
            out[j] = self._frame(i)
        return out[(slice(None), *rest)]

    def _frame(self, index: int) -> np.ndarray:
        if index < 0:
            index += self.shape[0]
        frame = np.asarray(self.read_frame(index))
        if frame.shape != self.shape[1:]:
            raise DataError(
                f"frame {index} has shape {frame.shape}, expected {self.shape[1:]}",
                path=str(self.token[0]) if self.token else None,
            )
        return frame.astype(self.dtype, copy=False)


def frames_to_dask(frames: LazyFrames) -> da.Array:
    """A dask array over ``frames`` with one frame per chunk."""
    chunks = (1, *frames.shape[1:])
    return da.from_array(frames, chunks=chunks, asarray=False, fancy=False,
                         meta=np.empty((0, 0, 0), dtype=frames.dtype))  # fmt: skip


def file_token(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """(absolute path, size, mtime in ns): changes when the file changes."""
    p = Path(path).resolve()
    st = p.stat()
    return str(p), st.st_size, st.st_mtime_ns


class CachedHandle:
    """A lazily opened, picklable file handle shared by the frames of one reader.

    ``opener(path)`` opens the file; the handle is dropped when pickled and reopened in
    the receiving process.
    """

    def __init__(self, path: str, opener: Callable[[str], Any]) -> None:
        self.path = path
        self.opener = opener
        self._handle: Any = None
        #: Hold this while using the handle: dask reads frames from several threads.
        self.lock = threading.RLock()

    def get(self) -> Any:
        """The open handle (opened on first use); call with :attr:`lock` held."""
        with self.lock:
            if self._handle is None:
                self._handle = self.opener(self.path)
            return self._handle

    def close(self) -> None:
        """Close the handle (it is reopened on the next :meth:`get`)."""
        with self.lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown, already closed
            self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "opener": self.opener}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["opener"])  # type: ignore[misc]


def own_header(metadata: dict[str, Any], fmt: str) -> dict[str, Any]:
    """``metadata["header"]`` if it belongs to format ``fmt`` (or has no format), else {}.

    A header read from a CBF file means nothing to the SMV writer, so converting between
    formats carries the standard keys over but not the foreign header.
    """
    header = metadata.get("header")
    if not isinstance(header, dict) or metadata.get("header_format", fmt) != fmt:
        return {}
    return header


def is_number(value: Any) -> bool:
    """True for a real scalar (Python or numpy number), False for sequences."""
    return isinstance(value, int | float | np.integer | np.floating)


def as_lossless(data: np.ndarray, allowed: tuple[str, ...], *, what: str) -> np.ndarray:
    """Return ``data`` in the first of ``allowed`` dtypes that holds it exactly.

    Raises
    ------
    DataError
        If no allowed dtype represents every value exactly.
    """
    data = np.asarray(data)
    if data.dtype.name in allowed:
        return data
    for name in allowed:
        target = np.dtype(name)
        if target.kind in "iu" and data.dtype.kind not in "iub":
            if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
                continue
        if data.size and target.kind in "iu":
            info = np.iinfo(target)
            if data.min() < info.min or data.max() > info.max:
                continue
        with np.errstate(over="ignore", invalid="ignore"):
            converted = data.astype(target)  # overflow shows up as inequality below
        if np.array_equal(converted, data, equal_nan=target.kind == "f"):
            return converted
    raise DataError(
        f"{what} cannot store {data.dtype} data exactly (supported: {', '.join(allowed)})",
        field="dtype",
    )
