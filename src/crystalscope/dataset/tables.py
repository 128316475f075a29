"""The per-frame (``shots``) and per-crystal (``crystals``) tables and run metadata.

Both tables are ordinary :class:`pandas.DataFrame` objects.  This module fixes their
key columns, validates them, and converts columns and nested metadata to and from
HDF5.

Key columns
-----------
``shots`` (one row per frame, in frame order):

* ``file`` (str): the file the frame's data are read from (as given when opening);
* ``event`` (int64): index of the frame in that file (CrystFEL event ``//event``);
* ``frame`` (int64): frame identifier, unique within the dataset and kept through
  selections; it is the ``frame`` of reflection tables and of ``crystals``.

``crystals`` (one row per crystal lattice found in a frame):

* ``frame`` (int64): the frame the crystal was seen in (a ``shots.frame`` value);
* ``crystal`` (int64): crystal identifier; ``(frame, crystal)`` is unique.

Any number of further columns (numbers, booleans, strings, tz-naive datetimes with
s/ms/us/ns resolution) may be added.  Strings are stored as variable-length UTF-8; a
missing string is written as the empty string.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np
import pandas as pd

from crystalscope.errors import CrystalscopeError, DataError, FormatError

__all__ = [
    "CRYSTAL_KEYS",
    "SHOT_KEYS",
    "common_meta",
    "default_shots",
    "encode_table",
    "normalize_crystals",
    "normalize_shots",
    "read_meta",
    "read_table",
    "write_meta",
    "write_table",
]

SHOT_KEYS = ("file", "event", "frame")
CRYSTAL_KEYS = ("frame", "crystal")

_STR = h5py.string_dtype("utf-8")
_NX_CLASS = {
    "instrument": "NXinstrument",
    "sample": "NXsample",
    "detector": "NXdetector",
    "source": "NXsource",
    "beam": "NXbeam",
    "monochromator": "NXmonochromator",
}
_MISSING = object()
_TIME_UNITS = {f"datetime64[{u}]" for u in ("s", "ms", "us", "ns")}


def check_name(name: object, what: str) -> str:
    """Return ``name`` if it can name an HDF5 object, else raise DataError."""
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise DataError(f"{what} name {name!r} must be a non-empty string without '/'")
    return name


def default_shots(n_frames: int, file: str = "") -> pd.DataFrame:
    """Shots table with only the key columns: ``file``, ``event = frame = 0..n-1``."""
    ids = np.arange(n_frames, dtype=np.int64)
    return pd.DataFrame({"file": [file] * n_frames, "event": ids, "frame": ids.copy()})


def _as_int64(
    col: pd.Series, name: str, error: type[CrystalscopeError], path: str | None
) -> np.ndarray:
    values = col.to_numpy()
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "b":
        raise error("key column must hold integers, not booleans", path=path, field=name)
    try:
        as_float = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise error("key column must hold integers", path=path, field=name) from None
    if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
        raise error("key column must hold whole numbers (no NaN)", path=path, field=name)
    return as_float.astype(np.int64)


def normalize_shots(
    shots: pd.DataFrame | None,
    n_frames: int,
    *,
    error: type[CrystalscopeError] = DataError,
    path: str | None = None,
    field_prefix: str = "",
) -> pd.DataFrame:
    """Validated copy of a shots table with ``n_frames`` rows and all key columns.

    Missing key columns are filled in (``file = ""``, ``event = frame = 0..n-1``).
    """
    if shots is None:
        return default_shots(n_frames)
    if not isinstance(shots, pd.DataFrame):
        raise error("the shots table must be a pandas DataFrame", path=path)
    if len(shots) != n_frames:
        raise error(
            f"the shots table has {len(shots)} rows but there are {n_frames} frames",
            path=path,
            field=field_prefix or "shots",
        )
    out = shots.reset_index(drop=True)
    ids = np.arange(n_frames, dtype=np.int64)
    if "file" not in out:
        out.insert(0, "file", [""] * n_frames)
    for pos, key in ((1, "event"), (2, "frame")):
        if key in out:
            out[key] = _as_int64(out[key], field_prefix + key, error, path)
        else:
            out.insert(min(pos, out.shape[1]), key, ids.copy())
    if not out["frame"].is_unique:
        dup = out["frame"][out["frame"].duplicated()].iloc[0]
        raise error(
            f"frame identifiers must be unique; {dup} occurs more than once",
            path=path,
            field=field_prefix + "frame",
        )
    return out


def normalize_crystals(
    crystals: pd.DataFrame | None,
    frames: pd.Series | np.ndarray,
    *,
    error: type[CrystalscopeError] = DataError,
    path: str | None = None,
    field_prefix: str = "",
) -> pd.DataFrame:
    """Validated copy of a crystals table whose ``frame`` values are among ``frames``.

    A missing ``crystal`` column is numbered 0, 1, ... within each frame.
    """
    if crystals is None:
        return pd.DataFrame(
            {"frame": np.zeros(0, dtype=np.int64), "crystal": np.zeros(0, dtype=np.int64)}
        )
    if not isinstance(crystals, pd.DataFrame):
        raise error("the crystals table must be a pandas DataFrame", path=path)
    if "frame" not in crystals:
        raise error(
            "the crystals table needs a 'frame' column", path=path, field=field_prefix + "frame"
        )
    out = crystals.reset_index(drop=True)
    out["frame"] = _as_int64(out["frame"], field_prefix + "frame", error, path)
    if "crystal" in out:
        out["crystal"] = _as_int64(out["crystal"], field_prefix + "crystal", error, path)
    else:
        out.insert(1, "crystal", out.groupby("frame").cumcount().to_numpy(dtype=np.int64))
    unknown = ~out["frame"].isin(np.asarray(frames))
    if unknown.any():
        raise error(
            f"crystal row {int(np.argmax(unknown.to_numpy()))} refers to frame "
            f"{out['frame'][unknown].iloc[0]}, which is not in the shots table",
            path=path,
            field=field_prefix + "frame",
        )
    if out.duplicated(["frame", "crystal"]).any():
        raise error(
            "(frame, crystal) pairs must be unique", path=path, field=field_prefix + "crystal"
        )
    return out


# --------------------------------------------------------------------------- columns


def _string_values(col: pd.Series, name: str) -> np.ndarray:
    values = col.to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        if isinstance(v, str):
            out[i] = v
        elif v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
            out[i] = ""
        else:
            raise DataError(
                f"column mixes strings with {type(v).__name__} values (row {i})", field=name
            )
    return out


def encode_column(col: pd.Series, name: str) -> tuple[np.ndarray, dict[str, str]]:
    """Array and HDF5 attributes that store column ``name``; DataError if unsupported."""
    check_name(name, "column")
    dtype = col.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return encode_column(pd.Series(np.asarray(col, dtype=object)), name)
    if isinstance(dtype, pd.DatetimeTZDtype):
        raise DataError("time-zone aware datetimes cannot be stored; convert to UTC", field=name)
    if pd.api.types.is_datetime64_dtype(dtype):
        values = col.to_numpy()
        unit = np.datetime_data(values.dtype)[0]
        return values.view(np.int64), {"pandas_dtype": f"datetime64[{unit}]"}
    if pd.api.types.is_bool_dtype(dtype) and not col.hasnans:
        return col.to_numpy(dtype=bool), {}
    if isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_numeric_dtype(dtype):
        if col.hasnans:
            return col.to_numpy(dtype=np.float64, na_value=np.nan), {}
        return col.to_numpy(dtype=dtype.numpy_dtype), {}
    if isinstance(dtype, np.dtype) and dtype.kind in "iufc":
        return col.to_numpy(), {}
    if pd.api.types.is_string_dtype(dtype) or dtype == np.dtype(object):
        return _string_values(col, name), {}
    raise DataError(f"columns of type {dtype} cannot be stored", field=name)


def encode_table(table: pd.DataFrame) -> list[tuple[str, np.ndarray, dict[str, str]]]:
    """Encode every column of ``table`` (raises DataError before any file is touched)."""
    names = list(table.columns)
    if len(set(map(str, names))) != len(names):
        raise DataError("column names must be unique", field=", ".join(map(str, names)))
    return [(name, *encode_column(table[name], name)) for name in names]


def write_table(
    group: h5py.Group, encoded: Sequence[tuple[str, np.ndarray, dict[str, str]]]
) -> None:
    """Write encoded columns as one 1-D dataset each, with the column order as attribute."""
    group.attrs["columns"] = np.array([name for name, _, _ in encoded], dtype=_STR)
    for name, values, attrs in encoded:
        if values.dtype == object:
            dset = group.create_dataset(name, data=values, dtype=_STR)
        elif len(values):
            dset = group.create_dataset(
                name, data=values, compression="gzip", compression_opts=4, shuffle=True
            )
        else:
            dset = group.create_dataset(name, data=values)
        for key, val in attrs.items():
            dset.attrs[key] = val


def _decode_column(dset: h5py.Dataset, path: str) -> pd.Series:
    if dset.ndim != 1:
        raise FormatError(
            f"table column must be 1-D, has shape {dset.shape}", path=path, field=dset.name
        )
    try:
        if h5py.check_string_dtype(dset.dtype) is not None:
            return pd.Series(dset.asstr()[()].tolist(), dtype=None if len(dset) else object)
        values = dset[()]
    except (OSError, RuntimeError, UnicodeDecodeError) as exc:
        raise FormatError(f"cannot read column: {exc}", path=path, field=dset.name) from None
    kind = dset.attrs.get("pandas_dtype")
    if kind is not None:
        if kind not in _TIME_UNITS:
            raise FormatError(f"unknown pandas_dtype {kind!r}", path=path, field=dset.name)
        values = np.asarray(values, dtype=np.int64).view(kind)
    if values.dtype.kind not in "biufcM":
        raise FormatError(f"unsupported column type {values.dtype}", path=path, field=dset.name)
    return pd.Series(values)


def read_table(handle: h5py.File, h5path: str, path: str) -> pd.DataFrame | None:
    """Read the table stored under group ``h5path``; None when the group is absent."""
    group = handle.get(h5path)
    if group is None:
        return None
    if not isinstance(group, h5py.Group):
        raise FormatError("expected an HDF5 group (a table)", path=path, field=h5path)
    order = [str(c) for c in np.atleast_1d(group.attrs.get("columns", []))]
    names = [n for n in order if n in group] + [n for n in group if n not in order]
    columns = {}
    for name in names:
        node = group[name]
        if not isinstance(node, h5py.Dataset):
            raise FormatError("table columns must be datasets", path=path, field=node.name)
        columns[name] = _decode_column(node, path)
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        first = next(iter(lengths))
        bad = next(n for n in lengths if lengths[n] != lengths[first])
        raise FormatError(
            f"table columns differ in length ({first}: {lengths[first]}, {bad}: {lengths[bad]})",
            path=path,
            field=f"{h5path}/{bad}",
        )
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- metadata


def _meta_value(value: Any, key: str) -> Any:
    if isinstance(value, str):
        return np.array(value, dtype=_STR)
    if isinstance(value, bool | int | float | complex | np.generic):
        return np.asarray(value)
    if isinstance(value, list | tuple | np.ndarray):
        arr = np.asarray(value)
        if arr.dtype.kind in "biufc":
            return arr
        if arr.dtype.kind in "UO" and all(isinstance(v, str) for v in arr.ravel()):
            return np.asarray(arr, dtype=object).astype(_STR)
    raise DataError(
        f"metadata value of type {type(value).__name__} cannot be stored "
        "(use numbers, strings, arrays of them, or nested dicts)",
        field=key,
    )


def write_meta(group: h5py.Group, meta: Mapping[str, Any], prefix: str = "") -> None:
    """Store nested dicts as HDF5 groups and their values as datasets (NeXus fields)."""
    for key, value in meta.items():
        where = f"{prefix}/{key}" if prefix else str(key)
        check_name(key, f"metadata key '{where}':")
        if isinstance(value, Mapping):
            sub = group.create_group(key, track_order=True)
            sub.attrs["NX_class"] = _NX_CLASS.get(key, "NXcollection")
            write_meta(sub, value, where)
        else:
            group.create_dataset(key, data=_meta_value(value, where))


def check_meta(meta: Mapping[str, Any], prefix: str = "") -> None:
    """Raise DataError if ``meta`` holds anything :func:`write_meta` cannot store."""
    for key, value in meta.items():
        where = f"{prefix}/{key}" if prefix else str(key)
        check_name(key, f"metadata key '{where}':")
        if isinstance(value, Mapping):
            check_meta(value, where)
        else:
            _meta_value(value, where)


def read_meta(group: h5py.Group, path: str) -> dict[str, Any]:
    """Nested dict of the datasets under ``group`` (scalars as Python numbers/str)."""
    out: dict[str, Any] = {}
    for key, node in group.items():
        try:
            if isinstance(node, h5py.Group):
                out[key] = read_meta(node, path)
            elif isinstance(node, h5py.Dataset):
                out[key] = read_meta_value(node)
        except (OSError, RuntimeError, UnicodeDecodeError, ValueError) as exc:
            raise FormatError(f"cannot read metadata: {exc}", path=path, field=node.name) from None
    return out


def read_meta_value(dset: h5py.Dataset) -> Any:
    if h5py.check_string_dtype(dset.dtype) is not None:
        value = dset.asstr()[()]
        return value if isinstance(value, str) else np.asarray(value, dtype=object)
    value = dset[()]
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return value
    return value.item() if isinstance(value, np.generic) else value


def _meta_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        try:
            return bool(np.array_equal(np.asarray(a), np.asarray(b)))
        except (TypeError, ValueError):
            return False
    return bool(type(a) is type(b) and a == b)


def common_meta(metas: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The part of nested dicts ``metas`` on which all agree (deep intersection)."""
    if not metas:
        return {}
    first, rest = metas[0], metas[1:]
    out: dict[str, Any] = {}
    for key, value in first.items():
        others = [m.get(key, _MISSING) for m in rest]
        if isinstance(value, Mapping):
            if all(isinstance(o, Mapping) for o in others):
                sub = common_meta([value, *others])
                if sub or not value:
                    out[key] = sub
        elif all(o is not _MISSING and _meta_equal(value, o) for o in others):
            out[key] = value
    return out
