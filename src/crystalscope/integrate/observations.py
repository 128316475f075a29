"""The observation table: one row per integrated reflection observation.

Integration (:func:`crystalscope.integrate.frame.integrate_frame`) produces it and
scaling and merging (:mod:`crystalscope.merge`) consume it.  It is an ordinary
:class:`pandas.DataFrame` with the columns and dtypes of :data:`OBSERVATION_COLUMNS`:

========================  =======  ====================================================
column                    dtype    meaning
========================  =======  ====================================================
``h, k, l``               int32    Miller indices in the indexing setting (not reduced
                                   to the asymmetric unit)
``I, sigma``              float64  background-subtracted summed intensity and its
                                   standard uncertainty (ADU)
``frame``                 int64    the frame (the shots table's ``frame`` value)
``crystal``               int64    crystal number within the frame
``crystal_id``            int64    global crystal number, unique in the data set
``panel``                 int32    panel index
``fs, ss``                float64  predicted raw-array pixel-centre position
``d``                     float64  resolution, A
``qx, qy, qz``            float64  ``q = UB h`` in the lab frame, 1/A
``excitation_error``      float64  ``s = 1/lambda - |q + k0|``, 1/A, > 0 inside the
                                   Ewald sphere
``profile_radius``        float64  the crystal's profile radius ``R``, 1/A
``partiality``            float64  estimate of the integration's partiality model
``background``            float64  mean background per pixel under the peak (ADU)
``bg_sigma``              float64  standard deviation of the background pixels (ADU)
``n_peak, n_bg``          int32    pixels used in the peak disk and the annulus
``peak``                  float64  largest pixel value in the peak disk (ADU, before
                                   background subtraction)
``flags``                 int32    bit mask of the ``FLAG_*`` constants
========================  =======  ====================================================

Flags
-----
``FLAG_MASKED`` (1)
    The peak disk contains masked or non-finite pixels (left out of the sum).
``FLAG_SATURATED`` (2)
    A peak pixel is at or above the saturation level.
``FLAG_EDGE`` (4)
    The peak disk leaves the panel (pixels outside the array, in a gap or on another
    panel; left out of the sum).
``FLAG_OVERLAP`` (8)
    The peak disk shares pixels with another predicted spot's peak disk.
``FLAG_FEW_BACKGROUND`` (16)
    Fewer background pixels than the minimum were usable.
``FLAG_NEAR_BEAM`` (32)
    The spot lies within ``min_beam_distance_px`` of the direct beam, in the zero-order
    halo (steep, noisy background: systematically wrong intensities).

:data:`FLAGS_EXCLUDED_BY_DEFAULT` is what merging leaves out unless told otherwise
(everything but ``FLAG_OVERLAP``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from crystalscope.errors import DataError

__all__ = [
    "FLAGS_EXCLUDED_BY_DEFAULT",
    "FLAG_EDGE",
    "FLAG_FEW_BACKGROUND",
    "FLAG_MASKED",
    "FLAG_NAMES",
    "FLAG_NEAR_BEAM",
    "FLAG_OVERLAP",
    "FLAG_SATURATED",
    "OBSERVATION_COLUMNS",
    "describe_flags",
    "empty_observations",
    "make_observations",
]

#: Columns and dtypes of an observation table, in order.
OBSERVATION_COLUMNS: dict[str, str] = {
    "h": "int32",
    "k": "int32",
    "l": "int32",
    "I": "float64",
    "sigma": "float64",
    "frame": "int64",
    "crystal": "int64",
    "crystal_id": "int64",
    "panel": "int32",
    "fs": "float64",
    "ss": "float64",
    "d": "float64",
    "qx": "float64",
    "qy": "float64",
    "qz": "float64",
    "excitation_error": "float64",
    "profile_radius": "float64",
    "partiality": "float64",
    "background": "float64",
    "bg_sigma": "float64",
    "n_peak": "int32",
    "n_bg": "int32",
    "peak": "float64",
    "flags": "int32",
}

FLAG_MASKED = 1
FLAG_SATURATED = 2
FLAG_EDGE = 4
FLAG_OVERLAP = 8
FLAG_FEW_BACKGROUND = 16
FLAG_NEAR_BEAM = 32
FLAGS_EXCLUDED_BY_DEFAULT = (
    FLAG_MASKED | FLAG_SATURATED | FLAG_EDGE | FLAG_FEW_BACKGROUND | FLAG_NEAR_BEAM
)

#: Flag bit -> short name (for reports and :func:`describe_flags`).
FLAG_NAMES: dict[int, str] = {
    FLAG_MASKED: "masked",
    FLAG_SATURATED: "saturated",
    FLAG_EDGE: "edge",
    FLAG_OVERLAP: "overlap",
    FLAG_FEW_BACKGROUND: "few_background",
    FLAG_NEAR_BEAM: "near_beam",
}


def empty_observations() -> pd.DataFrame:
    """An observation table without rows (all :data:`OBSERVATION_COLUMNS`, typed)."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in OBSERVATION_COLUMNS.items()})


def make_observations(columns: Mapping[str, Any]) -> pd.DataFrame:
    """An observation table from per-column arrays (cast to their dtypes, in order).

    Parameters
    ----------
    columns : mapping
        Every name of :data:`OBSERVATION_COLUMNS` -> array_like of equal length
        (scalars are broadcast); extra names are appended after them as given.

    Raises
    ------
    DataError
        If a column is missing or the lengths differ.
    """
    missing = [c for c in OBSERVATION_COLUMNS if c not in columns]
    if missing:
        raise DataError(f"observation table lacks column(s) {', '.join(missing)}", field=missing[0])
    lengths = {np.size(v) for v in columns.values() if np.ndim(v) > 0}
    if len(lengths) > 1:
        raise DataError(f"observation columns differ in length: {sorted(lengths)}", field="h")
    n = lengths.pop() if lengths else 1
    data: dict[str, Any] = {}
    for name, dtype in OBSERVATION_COLUMNS.items():
        value = np.asarray(columns[name], dtype=dtype)
        data[name] = value if value.shape == (n,) else np.broadcast_to(value, (n,)).copy()
    for name, value in columns.items():
        if name not in data:
            data[name] = value
    return pd.DataFrame(data)


def describe_flags(flags: int) -> str:
    """The names of the bits set in ``flags``, joined by ``|`` (``"ok"`` for none)."""
    names = [name for bit, name in FLAG_NAMES.items() if int(flags) & bit]
    return "|".join(names) if names else "ok"
