"""Checking an observation table and turning it into sorted arrays for merging (private).

The used observations are sorted by crystal (ascending ``crystal_id``) and, within a
crystal, by unique reflection, so that kernels see each crystal, and each
(crystal, reflection) pair, as one contiguous run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.merge._params import MergeParams
from crystalscope.model.crystal import Crystal

__all__ = ["REQUIRED_COLUMNS", "Prepared", "prepare"]

#: Columns of the observation table that merging reads.
REQUIRED_COLUMNS = (
    "h", "k", "l", "I", "sigma", "frame", "crystal", "crystal_id",
    "qx", "qy", "qz", "excitation_error", "profile_radius", "flags",
)  # fmt: skip

_KEY_OFFSET = 1 << 20  # Miller indices are packed into one int64 key
_WAVELENGTH_TOLERANCE = 0.05  # of the median profile radius (median |s - s(q, lambda)|)


@dataclass
class Prepared:
    """Sorted arrays of the usable observations (see the module docstring)."""

    rows: np.ndarray  # positions in the input table of the used observations, sorted
    crystal_ids: np.ndarray  # (nc,) every crystal_id of the input, ascending
    frames: np.ndarray  # (nc,)
    crystal_numbers: np.ndarray  # (nc,) crystal number within the frame
    starts: np.ndarray  # (nc + 1,) crystal c owns rows starts[c]:starts[c + 1]
    obs_crystal: np.ndarray  # (n,) crystal index of each observation
    hkl_index: np.ndarray  # (n,) index of the unique reflection
    isym: np.ndarray  # (n,) int32, gemmi/MTZ ISYM
    asu: np.ndarray  # (nh, 3) int32 ASU indices, sorted by h, k, l
    d_hkl: np.ndarray  # (nh,) resolution, A
    intensity: np.ndarray
    sigma: np.ndarray
    q: np.ndarray  # (n, 3) 1/A
    q2: np.ndarray  # |q|^2
    h2: np.ndarray  # 1 / (2 d^2)
    r0: np.ndarray  # (nc,) initial profile radius, 1/A (NaN: none)
    run_id: np.ndarray  # (n,) index of the observation's (crystal, reflection) run
    run_hkl: np.ndarray  # (nr,) reflection of each run
    crystal_runs: np.ndarray  # (nc + 1,) crystal c owns runs crystal_runs[c]:[c + 1]
    n_dropped: dict[str, int]

    @property
    def n_crystals(self) -> int:
        return len(self.crystal_ids)

    @property
    def n_hkl(self) -> int:
        return len(self.asu)


def _check_columns(observations: pd.DataFrame) -> None:
    if not isinstance(observations, pd.DataFrame):
        raise DataError(
            f"observations must be a pandas DataFrame, got {type(observations).__name__}"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in observations.columns]
    if missing:
        raise DataError(f"observation table lacks column(s) {', '.join(missing)}", field=missing[0])
    for name in REQUIRED_COLUMNS:
        if not pd.api.types.is_numeric_dtype(observations[name].dtype):
            raise DataError("column must be numeric", field=name)
    for name in ("h", "k", "l", "crystal_id", "frame", "crystal", "flags"):
        values = observations[name].to_numpy()
        if values.dtype.kind == "f" and not np.all(
            np.isfinite(values) & (values == np.round(values))
        ):
            raise DataError("column must hold integers", field=name)


def _crystal_table(observations: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = observations["crystal_id"].to_numpy(np.int64)
    unique, first = np.unique(ids, return_index=True)
    frames = observations["frame"].to_numpy(np.int64)[first]
    numbers = observations["crystal"].to_numpy(np.int64)[first]
    return unique, frames, numbers


def _usable(observations: pd.DataFrame, params: MergeParams) -> tuple[np.ndarray, dict[str, int]]:
    """Row mask of observations passing the flag, finiteness and (0,0,0) tests."""
    dropped: dict[str, int] = {}
    flags = observations["flags"].to_numpy(np.int64)
    keep = (flags & params.exclude_flags) == 0
    dropped["flagged"] = int(np.count_nonzero(~keep))
    finite = np.ones(len(observations), dtype=bool)
    for name in ("I", "sigma", "qx", "qy", "qz", "excitation_error"):
        finite &= np.isfinite(observations[name].to_numpy(float))
    finite &= observations["sigma"].to_numpy(float) >= 0
    dropped["non-finite"] = int(np.count_nonzero(keep & ~finite))
    keep &= finite
    hkl = observations[["h", "k", "l"]].to_numpy(np.int64)
    origin = ~np.any(hkl, axis=1)
    dropped["000"] = int(np.count_nonzero(keep & origin))
    keep &= ~origin
    if hkl.size and np.max(np.abs(hkl)) >= _KEY_OFFSET // 2:
        raise DataError("Miller indices are implausibly large", field="h")
    return keep, dropped


def _pack(hkl: np.ndarray) -> np.ndarray:
    h = hkl.astype(np.int64) + _KEY_OFFSET // 2
    return (h[:, 0] * _KEY_OFFSET + h[:, 1]) * _KEY_OFFSET + h[:, 2]


def _to_asu(
    hkl: np.ndarray, cell: gemmi.UnitCell, space_group: gemmi.SpaceGroup
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(asu (nh, 3), hkl_index (n,), isym (n,), absent (n,))`` via gemmi, per unique index."""
    crystal = Crystal(cell, space_group)
    unique, inverse = np.unique(_pack(hkl), return_inverse=True)
    first = np.zeros(len(unique), dtype=np.int64)
    first[inverse[::-1]] = np.arange(len(hkl))[::-1]
    asu_u, isym_u = crystal.to_asu(hkl[first])
    absent_u = np.asarray(crystal.is_absent(asu_u), dtype=bool)
    asu_keys, asu_index = np.unique(_pack(asu_u), return_inverse=True)
    pick = np.zeros(len(asu_keys), dtype=np.int64)
    pick[asu_index] = np.arange(len(asu_u))
    asu = np.ascontiguousarray(asu_u[pick], dtype=np.int32)
    return asu, asu_index[inverse], isym_u[inverse].astype(np.int32), absent_u[inverse]


def _check_wavelength(
    q: np.ndarray, s_stored: np.ndarray, radius: np.ndarray, wavelength: float
) -> None:
    """The stored excitation errors must follow from ``q`` and ``wavelength``."""
    if not len(q):
        return
    s = excitation_errors(q, wavelength)
    typical = np.nanmedian(np.where(radius > 0, radius, np.nan)) if np.any(radius > 0) else 0.0
    typical = typical if np.isfinite(typical) and typical > 0 else 1e-3
    misfit = float(np.median(np.abs(s - s_stored)))
    if misfit > _WAVELENGTH_TOLERANCE * typical:
        raise DataError(
            f"the observations' excitation errors do not follow from q and a wavelength of "
            f"{wavelength:g} A (median difference {misfit:.3g} 1/A, profile radius "
            f"{typical:.3g} 1/A): is the wavelength right?",
            field="wavelength",
        )


def excitation_errors(q: np.ndarray, wavelength: float) -> np.ndarray:
    """``s = 1/lambda - |q + k0|`` (1/A) in the cancellation-free form, vectorised."""
    k = 1.0 / wavelength
    a = np.einsum("ij,ij->i", q, q) + 2.0 * k * q[:, 2]
    return -a / (k + np.sqrt(k * k + a))


def _initial_radius(radius: np.ndarray, obs_crystal: np.ndarray, n_crystals: int) -> np.ndarray:
    """Median valid profile radius of each crystal's observations (NaN: none)."""
    out = np.full(n_crystals, np.nan)
    valid = np.isfinite(radius) & (radius > 0)
    if not np.any(valid):
        return out
    order = np.lexsort((radius[valid], obs_crystal[valid]))
    c_sorted = obs_crystal[valid][order]
    r_sorted = radius[valid][order]
    first = np.searchsorted(c_sorted, np.arange(n_crystals), side="left")
    last = np.searchsorted(c_sorted, np.arange(n_crystals), side="right")
    have = last > first
    mid = (first + last - 1) // 2
    upper = (first + last) // 2
    out[have] = 0.5 * (r_sorted[mid[have]] + r_sorted[upper[have]])
    return out


def _runs(
    crystal_of: np.ndarray, hkl_index: np.ndarray, n_crystals: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal (crystal, reflection) in the sorted observations."""
    n = len(crystal_of)
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = (crystal_of[1:] != crystal_of[:-1]) | (hkl_index[1:] != hkl_index[:-1])
    run_id = np.cumsum(new) - 1
    first = np.flatnonzero(new)
    crystal_runs = np.searchsorted(crystal_of[first], np.arange(n_crystals + 1))
    return run_id.astype(np.int64), hkl_index[first].astype(np.int64), crystal_runs.astype(np.int64)


def prepare(
    observations: pd.DataFrame,
    cell: gemmi.UnitCell,
    space_group: gemmi.SpaceGroup,
    params: MergeParams,
    wavelength: float,
) -> Prepared:
    """Check, filter, map to the ASU and sort an observation table (module docstring).

    Raises
    ------
    DataError
        For a missing or non-numeric column, implausible indices, or excitation errors
        that do not follow from ``q`` and ``wavelength``.
    """
    _check_columns(observations)
    crystal_ids, frames, numbers = _crystal_table(observations)
    keep, dropped = _usable(observations, params)
    rows = np.flatnonzero(keep)
    if not len(rows):
        why = ", ".join(f"{v} {k}" for k, v in dropped.items() if v) or "the table is empty"
        raise DataError(f"no usable observations ({why})")
    hkl = observations[["h", "k", "l"]].to_numpy(np.int32)[rows]
    asu, hkl_index, isym, absent = _to_asu(hkl, cell, space_group)
    d_asu = np.asarray(cell.calculate_d_array(asu), dtype=float) if len(asu) else np.zeros(0)
    d = d_asu[hkl_index]
    in_range = ~absent
    dropped["absent"] = int(np.count_nonzero(absent))
    if params.d_min is not None:
        in_range &= d >= params.d_min
    if params.d_max is not None:
        in_range &= d <= params.d_max
    dropped["resolution"] = int(np.count_nonzero(~absent & ~in_range))
    rows, hkl_index, isym = rows[in_range], hkl_index[in_range], isym[in_range]
    used_hkl, hkl_index = np.unique(hkl_index, return_inverse=True)
    asu, d_asu = asu[used_hkl], d_asu[used_hkl]
    crystal_of = np.searchsorted(crystal_ids, observations["crystal_id"].to_numpy(np.int64)[rows])
    order = np.argsort(crystal_of * max(len(asu), 1) + hkl_index, kind="stable")
    rows, hkl_index, isym, crystal_of = (
        rows[order],
        hkl_index[order],
        isym[order],
        crystal_of[order],
    )
    q = np.ascontiguousarray(observations[["qx", "qy", "qz"]].to_numpy(float)[rows])
    radius = observations["profile_radius"].to_numpy(float)[rows]
    _check_wavelength(q, observations["excitation_error"].to_numpy(float)[rows], radius, wavelength)
    starts = np.searchsorted(crystal_of, np.arange(len(crystal_ids) + 1)).astype(np.int64)
    d_obs = d_asu[hkl_index]
    run_id, run_hkl, crystal_runs = _runs(crystal_of, hkl_index, len(crystal_ids))
    return Prepared(
        rows=rows,
        crystal_ids=crystal_ids,
        frames=frames,
        crystal_numbers=numbers,
        starts=starts,
        obs_crystal=crystal_of.astype(np.int64),
        hkl_index=hkl_index.astype(np.int64),
        isym=isym,
        asu=asu,
        d_hkl=d_asu,
        intensity=observations["I"].to_numpy(float)[rows],
        sigma=observations["sigma"].to_numpy(float)[rows],
        q=q,
        q2=np.einsum("ij,ij->i", q, q),
        h2=0.5 / d_obs**2,
        r0=_initial_radius(radius, crystal_of, len(crystal_ids)),
        run_id=run_id,
        run_hkl=run_hkl,
        crystal_runs=crystal_runs,
        n_dropped=dropped,
    )


def check_wavelength_value(wavelength: float) -> float:
    """``wavelength`` as a positive float (DataError otherwise)."""
    try:
        value = float(wavelength)
    except (TypeError, ValueError):
        raise DataError(
            f"wavelength must be a number, got {wavelength!r}", field="wavelength"
        ) from None
    if not (math.isfinite(value) and value > 0):
        raise DataError(f"wavelength must be positive, got {wavelength} A", field="wavelength")
    return value
