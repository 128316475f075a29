"""Reflection tables: a pandas DataFrame with required, typed columns.

A reflection table is an ordinary :class:`pandas.DataFrame` so that users can filter,
group and plot it with the tools they know.  This module fixes the column names and
dtypes every reader, writer and pipeline step agrees on, and validates tables at the
I/O boundary.

Columns
-------
Required: ``h, k, l`` (int32 Miller indices, gemmi convention), ``I`` (float64 intensity)
and ``sigma`` (float64 standard uncertainty of ``I``).

Optional, typed when present (see :data:`OPTIONAL_COLUMNS`): structure-factor amplitudes
``F``/``sigF``, ``phase`` (degrees), ``nobs`` (int32 number of measurements), detector
position ``fs``/``ss`` (pixels, pixel-centre origin), ``panel`` (str), ``frame`` and
``crystal`` (int64 identifiers), ``partiality``, ``d`` (resolution in A), ``batch`` (int32),
``background``, ``peak`` (max pixel value) and ``isym`` (int32, symmetry operator index of
unmerged data, as in MTZ M/ISYM).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from crystalscope.errors import DataError

__all__ = [
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "empty_reflections",
    "make_reflections",
    "validate_reflections",
]

REQUIRED_COLUMNS: dict[str, str] = {
    "h": "int32",
    "k": "int32",
    "l": "int32",
    "I": "float64",
    "sigma": "float64",
}

OPTIONAL_COLUMNS: dict[str, str] = {
    "F": "float64",
    "sigF": "float64",
    "phase": "float64",
    "nobs": "int32",
    "fs": "float64",
    "ss": "float64",
    "panel": "object",
    "frame": "int64",
    "crystal": "int64",
    "partiality": "float64",
    "d": "float64",
    "batch": "int32",
    "background": "float64",
    "peak": "float64",
    "isym": "int32",
}


def empty_reflections(extra: Iterable[str] = ()) -> pd.DataFrame:
    """An empty reflection table with the required columns and ``extra`` optional ones."""
    cols = dict(REQUIRED_COLUMNS)
    for name in extra:
        cols[name] = OPTIONAL_COLUMNS.get(name, "float64")
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})


def make_reflections(
    hkl: Any,
    intensity: Any,
    sigma: Any,
    **columns: Any,
) -> pd.DataFrame:
    """Build a validated reflection table.

    Parameters
    ----------
    hkl : array_like, shape (N, 3)
        Miller indices.
    intensity, sigma : array_like, shape (N,)
        Intensities and their standard uncertainties.
    **columns : array_like, shape (N,)
        Further columns (known names are cast to their dtype; others are kept as given).

    Returns
    -------
    pandas.DataFrame
    """
    hkl = np.asarray(hkl)
    if hkl.ndim != 2 or hkl.shape[1] != 3:
        raise DataError(f"Miller indices must have shape (N, 3), got {hkl.shape}", field="hkl")
    data: dict[str, Any] = {"h": hkl[:, 0], "k": hkl[:, 1], "l": hkl[:, 2]}
    data["I"] = np.asarray(intensity, dtype=float)
    data["sigma"] = np.asarray(sigma, dtype=float)
    data.update(columns)
    return validate_reflections(pd.DataFrame(data))


def validate_reflections(
    table: pd.DataFrame,
    *,
    required: Mapping[str, str] | None = None,
    source: str | None = None,
) -> pd.DataFrame:
    """Check and normalise a reflection table; return it with canonical dtypes.

    Parameters
    ----------
    table : pandas.DataFrame
        The table to check.
    required : mapping, optional
        Required column names and dtypes; defaults to :data:`REQUIRED_COLUMNS`.
    source : str, optional
        File the table came from, named in errors.

    Raises
    ------
    DataError
        If a required column is missing, Miller indices are not integral, or a column
        cannot be converted to its dtype.
    """
    required = REQUIRED_COLUMNS if required is None else required
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(
            f"reflection table lacks required column(s) {', '.join(missing)}",
            path=source,
            field=missing[0],
        )
    out = table.copy()
    for name in out.columns:
        dtype = required.get(name) or OPTIONAL_COLUMNS.get(name)
        if dtype is None or str(out[name].dtype) == dtype:
            continue
        out[name] = _cast(out[name], name, dtype, source)
    return out


def _cast(column: pd.Series, name: str, dtype: str, source: str | None) -> pd.Series:
    if dtype == "object":
        return column.astype(str).astype(object)
    try:
        values = column.to_numpy(dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"column is not numeric ({exc})", path=source, field=name) from None
    if dtype.startswith("int"):
        if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
            raise DataError("column must hold integers", path=source, field=name)
    return pd.Series(values.astype(dtype), index=column.index, name=name)
