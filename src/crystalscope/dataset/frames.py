"""Per-frame work through dask: map a NumPy function over the frames of a stack.

The function receives one frame at a time (an ndarray without the frame axis) and
returns either an array of fixed shape (the results form a lazy dask array with one
entry per frame) or a dict of scalars (the results form a table with one row per
frame).  Only one chunk (one frame) per worker thread is in memory at a time, so the
work runs on datasets larger than memory.

Computation uses dask's default scheduler: local threads, or the active
``dask.distributed`` client; a client passed as ``client=`` is used explicitly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.parallel import compute

if TYPE_CHECKING:
    from crystalscope.dataset.core import Dataset

__all__ = ["check_finite", "map_frames"]


def stack_h5path(ds: Dataset, stack: str) -> str:
    """The HDF5 path a stack is (or would be) stored at, for messages."""
    if stack == "data" and ds.frames_path is not None:
        return ds.frames_path
    return f"/entry/data/{stack}"


def _labels(ds: Dataset, stack: str) -> list[tuple[str, str]]:
    h5path = stack_h5path(ds, stack)
    in_files = stack != "data" or ds.frames_path is not None
    return [
        (str(f), f"{h5path}[{int(e)}]")
        if f and in_files
        else ("", f"stack '{stack}', frame position {i}")
        for i, (f, e) in enumerate(zip(ds.shots["file"], ds.shots["event"], strict=True))
    ]


def _frame_block(
    block: np.ndarray,
    *,
    fn: Callable[..., Any],
    fn_kwargs: Mapping[str, Any],
    keys: Sequence[str] | None,
    labels: Sequence[tuple[str, str]] | None,
    empty: np.ndarray,
    block_id: tuple[int, ...] | None = None,
) -> np.ndarray:
    if block.shape[0] == 0:
        return empty
    frame = block[0]
    if labels is not None and frame.dtype.kind in "fc" and not np.all(np.isfinite(frame)):
        index = block_id[0] if block_id is not None else 0
        file, field = labels[index]
        raise DataError("frame contains NaN or infinite values", path=file or None, field=field)
    out = fn(frame, **fn_kwargs)
    if keys is not None:
        if not isinstance(out, Mapping) or list(out) != list(keys):
            raise DataError(
                "the function must return a dict with the same keys for every frame "
                f"({', '.join(keys)})"
            )
        return np.array([[float(out[k]) for k in keys]])
    return np.asarray(out)[None]


def _one_frame_chunks(arr: da.Array) -> da.Array:
    if all(c == 1 for c in arr.chunks[0]) and all(len(c) == 1 for c in arr.chunks[1:]):
        return arr
    return arr.rechunk({i: (1 if i == 0 else -1) for i in range(arr.ndim)})


def _sample(arr: da.Array, fn: Callable[..., Any], kwargs: Mapping[str, Any], client: Any) -> Any:
    if arr.shape[0] == 0:
        raise DataError("no frames: pass out_shape= and out_dtype= to map an empty stack")
    (first,) = compute(arr[0], client=client)
    return fn(np.asarray(first), **kwargs)


def map_frames(
    ds: Dataset,
    func: Callable[..., Any],
    *,
    stack: str = "data",
    out_shape: tuple[int, ...] | None = None,
    out_dtype: Any = None,
    allow_nan: bool = True,
    compute_now: bool = False,
    client: Any = None,
    **kwargs: Any,
) -> da.Array | np.ndarray | pd.DataFrame:
    """Apply ``func(frame, **kwargs)`` to every frame of ``stack``; see Dataset.map_frames."""
    arr = _one_frame_chunks(ds[stack])
    labels = None if allow_nan else _labels(ds, stack)
    keys: list[str] | None = None
    if out_shape is None or out_dtype is None:
        sample = _sample(arr, func, kwargs, client)
        if isinstance(sample, Mapping):
            keys = [str(k) for k in sample]
            dtypes = {k: np.asarray(sample[k]).dtype for k in keys}
            bad = [k for k, d in dtypes.items() if d.kind not in "biuf"]
            if bad:
                raise DataError("dict results must be numbers or booleans", field=bad[0])
            out_shape, out_dtype = (len(keys),), np.float64
        else:
            sample_arr = np.asarray(sample)
            out_shape = sample_arr.shape if out_shape is None else out_shape
            out_dtype = sample_arr.dtype if out_dtype is None else out_dtype
    out_shape = tuple(int(n) for n in out_shape)
    empty = np.empty((0, *out_shape), dtype=out_dtype)
    block = partial(_frame_block, fn=func, fn_kwargs=kwargs, keys=keys, labels=labels, empty=empty)
    result = da.map_blocks(
        block,
        arr,
        dtype=out_dtype,
        chunks=(arr.chunks[0], *((n,) for n in out_shape)),
        drop_axis=list(range(1, arr.ndim)),
        new_axis=list(range(1, 1 + len(out_shape))) or None,
        meta=np.empty((0,) * (1 + len(out_shape)), dtype=out_dtype),
    )
    if keys is not None:
        (values,) = compute(result, client=client)
        table = pd.DataFrame(np.asarray(values), columns=keys)
        return table.astype({k: d for k, d in dtypes.items()})
    if compute_now:
        (values,) = compute(result, client=client)
        return np.asarray(values)
    return result


def _all_finite(frame: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(frame))) if frame.dtype.kind in "fc" else True


def check_finite(ds: Dataset, stack: str = "data", *, client: Any = None) -> None:
    """Raise DataError naming the first frame of ``stack`` with NaN or infinite values."""
    ok = map_frames(
        ds, _all_finite, stack=stack, out_shape=(), out_dtype=bool, compute_now=True, client=client
    )
    bad = np.nonzero(~np.asarray(ok))[0]
    if len(bad):
        i = int(bad[0])
        file, field = _labels(ds, stack)[i]
        raise DataError(
            f"{len(bad)} of {len(ok)} frames contain NaN or infinite values; the first is "
            f"frame {int(ds.shots['frame'].iloc[i])}",
            path=file or None,
            field=field,
        )
