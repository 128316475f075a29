"""Stacks: N-d dask arrays whose first axis runs over frames, and CXI peak lists.

Chunking policy: the frame stack ``data`` always has one frame per chunk (the unit of
per-frame work and of HDF5 chunks); other stacks have one frame per chunk when a frame
of them is at least 256 KiB, otherwise as many frames as fill about 4 MiB.

CXI peak lists (Cheetah/CrystFEL ``peak_list_type = cxi``) are four stacks:

* ``nPeaks`` (int32, shape ``(n_frames,)``): number of peaks in each frame;
* ``peakXPosRaw``, ``peakYPosRaw`` (float32, ``(n_frames, max_peaks)``): fast-scan and
  slow-scan position in the raw data array, **pixel-centre** convention (the centre of
  the first pixel is 0.0; CrystFEL adds the half pixel itself);
* ``peakTotalIntensity`` (float32, ``(n_frames, max_peaks)``): integrated intensity.

Entries beyond ``nPeaks`` of a row are zero.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import pandas as pd

from crystalscope.errors import DataError

__all__ = [
    "FRAME_STACK",
    "PEAK_DTYPES",
    "PEAK_STACKS",
    "as_stack",
    "frames_per_chunk",
    "peak_arrays",
    "peak_table",
    "take_frames",
]

FRAME_STACK = "data"
PEAK_STACKS = ("nPeaks", "peakXPosRaw", "peakYPosRaw", "peakTotalIntensity")
PEAK_DTYPES: dict[str, Any] = {
    "nPeaks": np.dtype(np.int32),
    "peakXPosRaw": np.dtype(np.float32),
    "peakYPosRaw": np.dtype(np.float32),
    "peakTotalIntensity": np.dtype(np.float32),
}

_SINGLE_FRAME_BYTES = 256 * 1024
_BATCH_BYTES = 4 * 1024 * 1024


def frames_per_chunk(name: str, shape: tuple[int, ...], dtype: Any) -> int:
    """Frames per chunk (axis 0) for stack ``name`` of ``shape`` and ``dtype``."""
    if name == FRAME_STACK:
        return 1
    frame_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
    if frame_bytes >= _SINGLE_FRAME_BYTES:
        return 1
    per = _BATCH_BYTES // max(frame_bytes, 1)
    return int(max(1, min(per, shape[0] if shape and shape[0] else 1)))


def as_stack(name: str, array: Any, n_frames: int | None) -> da.Array:
    """Check ``array`` as a stack of ``n_frames`` frames and chunk it by the policy."""
    if not isinstance(array, da.Array):
        array = np.asarray(array)
    if array.ndim == 0:
        raise DataError("a stack needs at least one axis (the frames)", field=name)
    if array.dtype.kind not in "biufc":
        raise DataError(f"stacks must be numeric or boolean, not {array.dtype}", field=name)
    if n_frames is not None and array.shape[0] != n_frames:
        raise DataError(
            f"stack has {array.shape[0]} entries along axis 0 but there are {n_frames} frames",
            field=name,
        )
    if any(np.isnan(n) for n in array.shape):
        raise DataError("stack shape must be known (compute dask chunk sizes first)", field=name)
    per = frames_per_chunk(name, array.shape, array.dtype)
    chunks = (per, *(int(n) for n in array.shape[1:]))
    if not isinstance(array, da.Array):
        return da.from_array(array, chunks=chunks)
    whole_frames = all(len(c) == 1 for c in array.chunks[1:])
    if per == 1 and not (whole_frames and all(c == 1 for c in array.chunks[0])):
        return array.rechunk(chunks)
    if not whole_frames:
        return array.rechunk((array.chunks[0], *chunks[1:]))
    return array


def take_frames(array: da.Array, index: np.ndarray) -> da.Array:
    """Frames ``index`` (positions) of ``array``: a slice when contiguous, else fancy."""
    n = array.shape[0]
    if len(index) == n and np.array_equal(index, np.arange(n)):
        return array
    if len(index) == 0:
        return array[:0]
    if np.all(np.diff(index) == 1):
        return array[int(index[0]) : int(index[-1]) + 1]
    return array[index]


def peak_arrays(
    peaks: pd.DataFrame,
    frames: np.ndarray,
    *,
    max_peaks: int | None = None,
) -> dict[str, np.ndarray]:
    """CXI peak arrays from a peak table.

    Parameters
    ----------
    peaks : DataFrame
        One row per peak with columns ``frame`` (a frame identifier), ``fs``, ``ss``
        (pixels, pixel-centre origin, raw-array coordinates) and ``intensity``.
    frames : ndarray of int
        Frame identifiers in frame order (``shots.frame``).
    max_peaks : int, optional
        Width of the 2-D arrays.  Frames with more peaks keep the ``max_peaks`` most
        intense.  Default: the largest number of peaks in any frame.

    Returns
    -------
    dict of str to ndarray
        ``nPeaks``, ``peakXPosRaw``, ``peakYPosRaw``, ``peakTotalIntensity``.
    """
    missing = [c for c in ("frame", "fs", "ss", "intensity") if c not in peaks]
    if missing:
        raise DataError("peak table lacks columns " + ", ".join(missing), field=missing[0])
    pos = pd.Index(np.asarray(frames)).get_indexer(peaks["frame"].to_numpy())
    if (pos < 0).any():
        bad = peaks["frame"].to_numpy()[pos < 0][0]
        raise DataError(f"peak refers to frame {bad}, which is not in the dataset", field="frame")
    table = pd.DataFrame(
        {
            "pos": pos,
            "fs": peaks["fs"].to_numpy(np.float64),
            "ss": peaks["ss"].to_numpy(np.float64),
            "i": peaks["intensity"].to_numpy(np.float64),
        }
    )
    table = table.sort_values(["pos", "i"], ascending=[True, False], kind="stable")
    rank = table.groupby("pos").cumcount().to_numpy()
    counts = np.bincount(table["pos"].to_numpy(), minlength=len(frames))
    width = int(counts.max(initial=0)) if max_peaks is None else int(max_peaks)
    if width < 0:
        raise DataError("max_peaks must not be negative", field="max_peaks")
    keep = rank < width
    rows, cols = table["pos"].to_numpy()[keep], rank[keep]
    out: dict[str, np.ndarray] = {"nPeaks": np.minimum(counts, width).astype(np.int32)}
    for name, col in (("peakXPosRaw", "fs"), ("peakYPosRaw", "ss"), ("peakTotalIntensity", "i")):
        arr = np.zeros((len(frames), width), dtype=np.float32)
        arr[rows, cols] = table[col].to_numpy()[keep]
        out[name] = arr
    return out


def peak_table(arrays: dict[str, np.ndarray], frames: np.ndarray) -> pd.DataFrame:
    """Peak table (``frame, fs, ss, intensity``) from the four CXI peak arrays."""
    n_peaks = np.asarray(arrays["nPeaks"], dtype=np.int64)
    width = arrays["peakXPosRaw"].shape[1] if arrays["peakXPosRaw"].ndim == 2 else 0
    if n_peaks.min(initial=0) < 0 or n_peaks.max(initial=0) > width:
        raise DataError(
            f"nPeaks must lie in 0..{width} (the width of the peak arrays)", field="nPeaks"
        )
    mask = np.arange(width)[None, :] < n_peaks[:, None]
    rows = np.nonzero(mask)[0]
    return pd.DataFrame(
        {
            "frame": np.asarray(frames, dtype=np.int64)[rows],
            "fs": arrays["peakXPosRaw"][mask].astype(np.float64),
            "ss": arrays["peakYPosRaw"][mask].astype(np.float64),
            "intensity": arrays["peakTotalIntensity"][mask].astype(np.float64),
        }
    )
