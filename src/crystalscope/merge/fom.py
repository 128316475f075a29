"""Low-level pieces of the merging statistics: resolution shells, reflection classes up
to symmetry, possible reflections, selection of reflections, and the figures of merit
CC, CC*, Rsplit and the Wilson scaling of one list to another.

They follow CrystFEL's ``libcrystfel/src/fom.c`` (0.10-0.12); :mod:`crystalscope.merge.stats`
and :mod:`crystalscope.merge.compare` build the tables from them.  Definitions and the
deliberate differences to CrystFEL: ``docs/algorithms/merging-statistics.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gemmi
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from crystalscope.errors import ConfigError, DataError
from crystalscope.model.crystal import SpaceGroupLike, resolve_space_group

__all__ = [
    "SelectedReflections",
    "cc_half",
    "cc_star",
    "common_pairs",
    "epsilon_factor",
    "hkl_rotations",
    "make_edges",
    "one_over_d",
    "possible_per_shell",
    "possible_reflections",
    "r_split",
    "resolution_limits",
    "select_reflections",
    "shell_edges",
    "shell_index",
    "shell_range",
    "symmetry_keys",
    "wilson_scale",
]

_BITS = 21  # bits per index in a symmetry key; indices must satisfy |h| < 2**20
_OFFSET = 1 << (_BITS - 1)
_MASK = (1 << _BITS) - 1


# --------------------------------------------------------------------------- shells


def shell_edges(d_min: float, d_max: float = math.inf, n_shells: int = 10) -> np.ndarray:
    """Edges of resolution shells of equal volume in ``(1/d)^3``, in 1/d (1/A), ascending.

    ``r_0 = 1/d_max``, ``r_n = 1/d_min`` and ``r_i^3 = r_{i-1}^3 + (r_n^3 - r_0^3) / n``
    (``fom_make_resolution_shells``).

    Parameters
    ----------
    d_min, d_max : float
        High- and low-resolution limits, A (``d_max`` may be ``inf``: ``r_0 = 0``).
    n_shells : int
        Number of shells.

    Returns
    -------
    numpy.ndarray, shape (n_shells + 1,)

    Raises
    ------
    ConfigError
        If the limits or the number of shells are invalid.
    """
    if not (math.isfinite(d_min) and d_min > 0):
        raise ConfigError(f"d_min must be a positive number of A, got {d_min}", field="d_min")
    if not (d_max > d_min):
        raise ConfigError(f"d_max ({d_max} A) must exceed d_min ({d_min} A)", field="d_max")
    return make_edges(1.0 / d_max, 1.0 / d_min, n_shells)


def make_edges(r_min: float, r_max: float, n_shells: int) -> np.ndarray:
    """Equal-volume shell edges between ``r_min`` and ``r_max`` (1/A); see :func:`shell_edges`."""
    if isinstance(n_shells, bool) or int(n_shells) != n_shells or n_shells < 1:
        raise ConfigError(f"n_shells must be a positive integer, got {n_shells}", field="n_shells")
    n = int(n_shells)
    step = (r_max**3 - r_min**3) / n
    edges = np.empty(n + 1)
    edges[0] = r_min
    for i in range(1, n):  # iterated as CrystFEL does, so rounding agrees too
        edges[i] = (edges[i - 1] ** 3 + step) ** (1.0 / 3.0)
    edges[n] = r_max
    return edges


def shell_index(one_over_d: ArrayLike, edges: ArrayLike) -> np.ndarray:
    """Shell of each reflection: ``i`` with ``edges[i] < 1/d <= edges[i+1]``.

    Values at or below ``edges[0]`` go to the first shell and values above ``edges[-1]``
    (rounding only; callers select the range first) to the last.
    """
    r = np.asarray(one_over_d, dtype=float)
    e = np.asarray(edges, dtype=float)
    return np.clip(np.searchsorted(e, r, side="left") - 1, 0, len(e) - 2).astype(np.int64)


# --------------------------------------------------------------------------- symmetry


def hkl_rotations(space_group: SpaceGroupLike, *, anomalous: bool = False) -> np.ndarray:
    """Integer matrices ``R`` (``(m, 3, 3)``) of the point group acting on row vectors ``h R``.

    Without ``anomalous`` the Laue group (Friedel mates equivalent), with it the point
    group of the space group.  ``h @ R`` equals gemmi's ``Op.apply_to_hkl(h)``.
    """
    sg = resolve_space_group(space_group)
    mats = []
    for op in sg.operations().sym_ops:
        rot = np.array(op.rot, dtype=np.int64)
        if np.any(rot % op.DEN):
            raise DataError(f"space group {sg.xhm()} has a non-integral hkl operator",
                            field="space_group")  # fmt: skip
        mats.append(rot // op.DEN)
    if not anomalous:
        mats += [-m for m in mats]
    unique = {m.tobytes(): m for m in mats}
    return np.array(list(unique.values()), dtype=np.int64)


def _encode(hkl: np.ndarray) -> np.ndarray:
    h = hkl.astype(np.int64) + _OFFSET
    return (h[:, 0] << (2 * _BITS)) | (h[:, 1] << _BITS) | h[:, 2]


def _decode(keys: np.ndarray) -> np.ndarray:
    keys = np.asarray(keys, dtype=np.int64)
    cols = [(keys >> (2 * _BITS)) & _MASK, (keys >> _BITS) & _MASK, keys & _MASK]
    return (np.stack(cols, axis=1) - _OFFSET).astype(np.int64)


def symmetry_keys(
    hkl: ArrayLike, space_group: SpaceGroupLike, *, anomalous: bool = False
) -> np.ndarray:
    """An int64 key per reflection, equal for symmetry-equivalent reflections.

    The key encodes the lexicographically largest symmetry mate, so tables in different
    asymmetric-unit conventions (gemmi's, CrystFEL's) pair up; :func:`_decode` turns it
    back into that mate.

    Raises
    ------
    DataError
        If an index is too large (``|h| >= 2**20``) or ``hkl`` is not ``(N, 3)``.
    """
    h = np.asarray(hkl)
    if h.ndim != 2 or h.shape[1] != 3:
        raise DataError(f"Miller indices must have shape (N, 3), got {h.shape}", field="hkl")
    h = h.astype(np.int64)
    rots = hkl_rotations(space_group, anomalous=anomalous)
    limit = _OFFSET // 3
    if h.size and np.abs(h).max() >= limit:
        raise DataError(f"Miller index beyond {limit - 1}", field="h")
    keys = np.full(len(h), np.iinfo(np.int64).min, dtype=np.int64)
    for rot in rots:
        np.maximum(keys, _encode(h @ rot), out=keys)
    return keys


def epsilon_factor(hkl: np.ndarray, rots: np.ndarray) -> np.ndarray:
    """Number of operators in ``rots`` that leave ``h`` unchanged (check_hkl's ``e``)."""
    count = np.zeros(len(hkl), dtype=np.int64)
    for rot in rots:
        count += np.all(hkl @ rot == hkl, axis=1)
    return count


def one_over_d(hkl: np.ndarray, cell: gemmi.UnitCell) -> np.ndarray:
    """``1/d`` (1/A) of Miller indices ``(N, 3)`` in ``cell`` (0 for ``000``)."""
    with np.errstate(divide="ignore"):
        return 1.0 / cell.calculate_d_array(np.ascontiguousarray(hkl, dtype=np.int32))


def _centring_absent(hkl: np.ndarray, sg: gemmi.SpaceGroup) -> np.ndarray:
    """Reflections forbidden by the lattice centring alone (``h . t`` not integral)."""
    absent = np.zeros(len(hkl), dtype=bool)
    for t in sg.operations().cen_ops:
        absent |= (hkl @ np.asarray(t, dtype=np.int64)) % gemmi.Op.DEN != 0
    return absent


def _unique_in_range(
    cell: gemmi.UnitCell, sg: gemmi.SpaceGroup, r_lo: float, r_hi: float, anomalous: bool
) -> tuple[np.ndarray, np.ndarray]:
    """One representative (the key's mate) per unique reflection with r_lo <= 1/d <= r_hi."""
    rots = hkl_rotations(sg, anomalous=anomalous)
    a, b, c = cell.a, cell.b, cell.c
    hmax, kmax, lmax = (math.floor(r_hi * x + 1e-9) for x in (a, b, c))
    kk, ll = np.meshgrid(np.arange(-kmax, kmax + 1), np.arange(-lmax, lmax + 1), indexing="ij")
    plane = np.stack([np.zeros(kk.size, dtype=np.int64), kk.ravel(), ll.ravel()], axis=1)
    reps, inv_d = [], []
    for h in range(0 if not anomalous else -hmax, hmax + 1):  # the largest mate has h >= 0
        plane[:, 0] = h
        r = one_over_d(plane, cell)
        pts = plane[(r >= r_lo) & (r <= r_hi) & (r > 0)]
        pts = pts[~_centring_absent(pts, sg)]
        if len(pts) == 0:
            continue
        own = _encode(pts)
        best = own.copy()
        for rot in rots:
            np.maximum(best, _encode(pts @ rot), out=best)
        keep = best == own
        reps.append(pts[keep])
        inv_d.append(one_over_d(pts[keep], cell))
    if not reps:
        return np.zeros((0, 3), dtype=np.int64), np.zeros(0)
    return np.concatenate(reps), np.concatenate(inv_d)


def possible_reflections(
    cell: gemmi.UnitCell,
    space_group: SpaceGroupLike,
    d_min: float,
    d_max: float = math.inf,
    *,
    anomalous: bool = False,
) -> pd.DataFrame:
    """Unique reflections of the asymmetric unit with ``d_min <= d <= d_max``.

    Only lattice-centring absences are removed (as ``check_hkl`` counts them); screw-axis
    and glide-plane absences remain.

    Parameters
    ----------
    cell : gemmi.UnitCell
        Unit cell.
    space_group : gemmi.SpaceGroup or str or int
        Space group; its Laue group (point group with ``anomalous``) defines uniqueness.
    d_min, d_max : float
        Resolution limits, A.
    anomalous : bool
        Count Friedel mates separately.

    Returns
    -------
    pandas.DataFrame
        ``h, k, l`` (int32, gemmi's reciprocal ASU; with ``anomalous`` the Friedel mate of
        an ASU reflection where that is the representative) and ``d`` (A), sorted by
        ``h, k, l``.
    """
    if not (math.isfinite(d_min) and d_min > 0) or not d_max >= d_min:
        raise ConfigError(f"invalid resolution range {d_min}-{d_max} A", field="d_min")
    sg = resolve_space_group(space_group)
    reps, r = _unique_in_range(cell, sg, 1.0 / d_max, 1.0 / d_min, anomalous)
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    out = np.empty_like(reps)
    for i, row in enumerate(reps.tolist()):
        mate, isym = asu.to_asu(row, ops)
        out[i] = mate if (isym % 2 == 1 or not anomalous) else [-x for x in mate]
    table = pd.DataFrame({"h": out[:, 0], "k": out[:, 1], "l": out[:, 2], "d": 1.0 / r}).astype(
        {"h": "int32", "k": "int32", "l": "int32"}
    )
    return table.sort_values(["h", "k", "l"], ignore_index=True)


def possible_per_shell(
    cell: gemmi.UnitCell,
    sg: gemmi.SpaceGroup,
    edges: np.ndarray,
    anomalous: bool,
    strict_low: bool,
) -> np.ndarray:
    """Possible reflections (see :func:`possible_reflections`) per shell of ``edges``.

    ``strict_low`` counts only ``1/d > edges[0]``, as check_hkl does.
    """
    _, r = _unique_in_range(cell, sg, edges[0], edges[-1], anomalous)
    if strict_low:  # check_hkl counts r > r_min only
        r = r[r > edges[0]]
    return np.bincount(shell_index(r, edges), minlength=len(edges) - 1)


# --------------------------------------------------------------------------- figures of merit


def cc_half(i1: ArrayLike, i2: ArrayLike) -> float:
    """Pearson correlation coefficient of two intensity lists (NaN for fewer than 2 pairs).

    ``CC = sum (x - <x>)(y - <y>) / sqrt(sum (x - <x>)^2 sum (y - <y>)^2)``, as
    ``gsl_stats_correlation`` in CrystFEL.
    """
    x = np.asarray(i1, dtype=float)
    y = np.asarray(i2, dtype=float)
    if x.shape != y.shape:
        raise DataError(f"intensity lists differ in length ({x.size}, {y.size})", field="I")
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    return float(np.dot(dx, dy)) / den if den > 0 else math.nan


def cc_star(cc: float) -> float:
    """``CC* = sqrt(2 CC / (1 + CC))`` (Karplus & Diederichs 2012); NaN for CC < 0."""
    if not math.isfinite(cc) or cc < 0:
        return math.nan
    return math.sqrt(2.0 * cc / (1.0 + cc))


def r_split(i1: ArrayLike, i2: ArrayLike) -> float:
    """``Rsplit = (1/sqrt 2) sum|I1 - I2| / ((1/2) sum(I1 + I2))``, in percent (White 2012)."""
    x = np.asarray(i1, dtype=float)
    y = np.asarray(i2, dtype=float)
    den = float(np.sum(x + y))
    if x.size == 0 or den == 0:
        return math.nan
    return 100.0 * math.sqrt(2.0) * float(np.sum(np.abs(x - y))) / den


def wilson_scale(i1: ArrayLike, i2: ArrayLike, d: ArrayLike) -> tuple[float, float]:
    """Scale ``G`` and relative B (A^2) that put list 2 on list 1, as ``compare_hkl``.

    An unweighted straight-line fit ``ln(I1/I2) = ln G + 2 B s^2`` (``s = 1/(2d)``) over
    the pairs with both intensities positive; list 2 is then multiplied by
    ``G exp(2 B s^2)``.  A positive ``B`` means list 2 falls off faster with resolution.
    Fewer than two usable pairs give ``(1, 0)``; a single resolution gives ``B = 0``.
    """
    x1 = np.asarray(i1, dtype=float)
    x2 = np.asarray(i2, dtype=float)
    s2 = 0.25 / np.asarray(d, dtype=float) ** 2
    ok = (x1 > 0) & (x2 > 0) & np.isfinite(x1) & np.isfinite(x2)
    if ok.sum() < 2:
        return 1.0, 0.0
    x, y = s2[ok], np.log(x1[ok] / x2[ok])
    dx = x - x.mean()
    sxx = float(np.dot(dx, dx))
    slope = float(np.dot(dx, y - y.mean())) / sxx if sxx > 0 else 0.0
    return math.exp(float(y.mean()) - slope * float(x.mean())), slope / 2.0


# --------------------------------------------------------------------------- selection


@dataclass
class SelectedReflections:
    """Reflections of one list that enter the statistics (check_hkl's selection).

    ``keys`` (:func:`symmetry_keys`), ``r`` (1/d, 1/A), ``intensity``, ``sigma``,
    ``nobs`` and ``hkl`` of the kept rows, and how many rows were dropped as invalid
    (non-finite I or sigma, sigma < 0, ``000``) or outside the fixed range.
    """

    keys: np.ndarray
    r: np.ndarray
    intensity: np.ndarray
    sigma: np.ndarray
    nobs: np.ndarray
    hkl: np.ndarray
    dropped_invalid: int = 0
    dropped_range: int = 0


def select_reflections(
    table: pd.DataFrame,
    cell: gemmi.UnitCell,
    sg: gemmi.SpaceGroup,
    r_limits: tuple[float | None, float | None],
    anomalous: bool,
    name: str,
) -> SelectedReflections:
    """Drop non-finite I or sigma, negative sigma and reflections outside the fixed range.

    CrystFEL's default ``sigma_cutoff = -inf`` rejects ``sigma < 0`` too
    (``I < -inf * sigma``); ``sigma == 0`` is kept (and skipped by ``<I/sigma>`` only).
    """
    missing = [c for c in ("h", "k", "l", "I", "sigma") if c not in table.columns]
    if missing:
        raise DataError(f"{name} table lacks column(s) {', '.join(missing)}", field=missing[0])
    hkl = table[["h", "k", "l"]].to_numpy(dtype=np.int64)
    intensity = table["I"].to_numpy(dtype=float)
    sigma = table["sigma"].to_numpy(dtype=float)
    if "nobs" in table.columns:
        nobs = table["nobs"].to_numpy(dtype=float)
    else:
        nobs = np.ones(len(table))
    valid = np.isfinite(intensity) & np.isfinite(sigma) & (sigma >= 0)
    r = one_over_d(hkl, cell)
    valid &= r > 0
    in_range = np.ones(len(table), dtype=bool)
    if r_limits[0] is not None:
        in_range &= r >= r_limits[0]
    if r_limits[1] is not None:
        in_range &= r <= r_limits[1]
    keep = valid & in_range
    sel = SelectedReflections(
        keys=symmetry_keys(hkl[keep], sg, anomalous=anomalous),
        r=r[keep],
        intensity=intensity[keep],
        sigma=sigma[keep],
        nobs=nobs[keep],
        hkl=hkl[keep],
        dropped_invalid=int((~valid).sum()),
        dropped_range=int((valid & ~in_range).sum()),
    )
    _check_unique(sel.keys, name)
    return sel


def _check_unique(keys: np.ndarray, name: str) -> None:
    uniq, counts = np.unique(keys, return_counts=True)
    if np.any(counts > 1):
        hkl = _decode(uniq[counts > 1][:1])[0]
        raise DataError(
            f"{name}: reflection {tuple(int(x) for x in hkl)} appears more than once up to "
            "symmetry; is the space group right (anomalous=True for Friedel-separate data)?",
            field="h",
        )


def common_pairs(a: SelectedReflections, b: SelectedReflections) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``a`` and ``b`` of the reflections present in both."""
    _, ia, ib = np.intersect1d(a.keys, b.keys, assume_unique=True, return_indices=True)
    return ia, ib


def resolution_limits(
    d_min: float | None, d_max: float | None
) -> tuple[float | None, float | None]:
    """Fixed ``(1/d_max, 1/d_min)`` in 1/A (None where not given), validated.

    Raises
    ------
    ConfigError
        If a limit is not positive or ``d_max <= d_min``.
    """
    if d_min is not None and not (math.isfinite(d_min) and d_min > 0):
        raise ConfigError(f"d_min must be a positive number of A, got {d_min}", field="d_min")
    if d_max is not None and not d_max > 0:
        raise ConfigError(f"d_max must be a positive number of A, got {d_max}", field="d_max")
    if d_min is not None and d_max is not None and not d_max > d_min:
        raise ConfigError(f"d_max ({d_max} A) must exceed d_min ({d_min} A)", field="d_max")
    r_lo = None if d_max is None else (0.0 if math.isinf(d_max) else 1.0 / d_max)
    return r_lo, None if d_min is None else 1.0 / d_min


def shell_range(
    r: np.ndarray, fixed: tuple[float | None, float | None], name: str
) -> tuple[float, float]:
    """``(r_min, r_max)`` of the shells: the fixed limits, else the range of ``r`` (1/A).

    Raises
    ------
    DataError
        If there are no reflections to take the range from, or the range is empty.
    """
    if r.size == 0 and None in fixed:
        raise DataError(f"{name}: no reflections with finite I and sigma in range", field="I")
    r_min = fixed[0] if fixed[0] is not None else float(r.min())
    r_max = fixed[1] if fixed[1] is not None else float(r.max())
    if not r_max > r_min:
        raise DataError(
            f"{name}: the resolution range is empty (1/d from {r_min:.4f} to {r_max:.4f} 1/A)",
            field="d",
        )
    return r_min, r_max
