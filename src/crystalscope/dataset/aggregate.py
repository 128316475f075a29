"""Group-wise reduction of frames, e.g. summing the dose fractions of one crystal.

Frames are grouped by the values of shots columns; each stack is reduced over each
group lazily (dask), giving one new frame per group in the order of the sorted group
keys.  The new shots table has one row per group: the key columns, the first frame's
``file``/``event``/``frame`` (so that the aggregated frame keeps the identity and
provenance of its first frame), the other columns' first (or mean) values, and a count
column.  Crystals follow their frames: a crystal row moves to its group's frame, and
only the first row of each ``(frame, crystal)`` pair is kept.  Frames whose key is
missing (NaN) belong to no group and are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numpy as np
import pandas as pd

from crystalscope.dataset.stacks import PEAK_STACKS
from crystalscope.dataset.tables import SHOT_KEYS
from crystalscope.errors import DataError

if TYPE_CHECKING:
    from crystalscope.dataset.core import Dataset

__all__ = ["aggregate", "group_rows"]


def group_rows(shots: pd.DataFrame, by: list[str]) -> list[np.ndarray]:
    """Row positions of each group of ``shots`` with equal ``by`` values, in the order of
    the sorted keys (rows in table order within a group; rows with a NaN key in none)."""
    missing = [c for c in by if c not in shots]
    if missing:
        raise DataError("no such column in the shots table", field=missing[0])
    codes = shots.groupby(by, sort=True, dropna=True).ngroup().to_numpy()
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    valid = sorted_codes >= 0
    order, sorted_codes = order[valid], sorted_codes[valid]
    bounds = np.flatnonzero(np.diff(sorted_codes)) + 1
    return [np.asarray(g, dtype=np.int64) for g in np.split(order, bounds)] if len(order) else []


def _reduce(arr: da.Array, idx: np.ndarray, how: str, dtype: Any) -> da.Array:
    if np.all(np.diff(idx) == 1):
        part = arr[int(idx[0]) : int(idx[-1]) + 1]
    else:
        part = arr[idx]
    if how == "sum":
        return part.sum(axis=0, dtype=dtype)
    return part.mean(axis=0, dtype=dtype)


def _new_shots(
    shots: pd.DataFrame, groups: list[np.ndarray], by: list[str], columns: str, count: str
) -> pd.DataFrame:
    first = np.array([g[0] for g in groups], dtype=np.int64)
    out = shots.iloc[first].reset_index(drop=True)
    if columns == "mean":
        codes = np.empty(len(shots), dtype=np.int64)
        codes[:] = -1
        for i, g in enumerate(groups):
            codes[g] = i
        keep = codes >= 0
        for col in out.columns:
            if col in by or col in SHOT_KEYS:
                continue
            series = shots[col]
            if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
                means = series[keep].groupby(codes[keep]).mean()
                out[col] = means.to_numpy()
    if count in out.columns:
        raise DataError(f"the shots table already has a column '{count}'", field=count)
    out[count] = np.array([len(g) for g in groups], dtype=np.int64)
    return out


def _new_crystals(
    crystals: pd.DataFrame, shots: pd.DataFrame, groups: list[np.ndarray]
) -> pd.DataFrame:
    frame_ids = shots["frame"].to_numpy()
    mapping = {int(frame_ids[i]): int(frame_ids[g[0]]) for g in groups for i in g}
    kept = crystals[crystals["frame"].isin(list(mapping))]
    kept = kept.assign(frame=kept["frame"].map(mapping).astype(np.int64))
    return kept.drop_duplicates(["frame", "crystal"], keep="first").reset_index(drop=True)


def aggregate(
    ds: Dataset,
    by: str | Sequence[str],
    how: Literal["sum", "mean"] = "sum",
    *,
    query: str | None = None,
    stacks: Sequence[str] | None = None,
    columns: Literal["first", "mean"] = "first",
    count_column: str = "frame_count",
    dtype: Any = None,
) -> Dataset:
    """Reduce groups of frames to one frame each; see :meth:`Dataset.aggregate`."""
    from crystalscope.dataset.core import Dataset

    if how not in ("sum", "mean"):
        raise DataError(f"how must be 'sum' or 'mean', not {how!r}", field="how")
    if columns not in ("first", "mean"):
        raise DataError(f"columns must be 'first' or 'mean', not {columns!r}", field="columns")
    if query is not None:
        ds = ds.select(query)
    keys = [by] if isinstance(by, str) else list(by)
    if not keys:
        raise DataError("aggregate needs at least one column to group by", field="by")
    names = [n for n in ds.stacks if n not in PEAK_STACKS] if stacks is None else list(stacks)
    for name in names:
        if name not in ds.stacks:
            raise DataError("no such stack", field=name)
        if name in PEAK_STACKS:
            raise DataError("peak lists cannot be summed or averaged; find peaks again", field=name)
    groups = group_rows(ds.shots, keys)
    new_stacks = {}
    for name in names:
        parts = [_reduce(ds[name], g, how, dtype) for g in groups]
        arr = ds[name]
        if parts:
            new_stacks[name] = da.stack(parts, axis=0)
        else:
            probe = (
                arr[:0].sum(axis=0, dtype=dtype)
                if how == "sum"
                else arr[:0].mean(axis=0, dtype=dtype)
            )
            new_stacks[name] = da.zeros((0, *arr.shape[1:]), dtype=probe.dtype)
    shots = _new_shots(ds.shots, groups, keys, columns, count_column)
    crystals = _new_crystals(ds.crystals, ds.shots, groups)
    return Dataset(new_stacks, shots, crystals, ds.meta, file_meta=ds.file_meta)
