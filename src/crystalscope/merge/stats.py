"""Figures of merit of merged intensities, per resolution shell, as CrystFEL defines them.

The definitions follow CrystFEL's ``check_hkl`` and ``compare_hkl`` (``libcrystfel/src/
fom.c``, versions 0.10-0.12) so that the same ``.hkl`` files give the same numbers; the
equations, the selection rules and the few deliberate differences are written out in
``docs/algorithms/merging-statistics.md``.  In short (``r = 1/d``, ``s = 1/(2d)``):

* shells of equal volume in ``r^3`` between ``r_min`` and ``r_max`` (the data's range,
  or ``1/d_max`` and ``1/d_min`` when given); a reflection belongs to the shell with
  ``r_lo < r <= r_hi`` (the lowest reflection to the first shell);
* completeness ``N_measured / N_possible``, possible reflections being the unique ones
  of the asymmetric unit with ``r_min <= r <= r_max``, only lattice-centring absences
  removed (screw axes and glide planes are not: CrystFEL predicts and merges them);
* multiplicity ``sum(nobs) / N``, ``<I>``, CrystFEL's ``snr = <I/sigma>`` and the ratio
  of means ``<I>/<sigma>``;
* CC1/2 = Pearson correlation of the half-set intensities over the reflections present in
  both halves, CC* = sqrt(2 CC / (1 + CC)), Rsplit = sqrt(2) sum|I1 - I2| / sum(I1 + I2),
  after the second half is scaled to the first by ``G exp(2 B s^2)`` (``compare_hkl``);
* the Wilson plot of ``check_hkl --wilson``: ``ln <I / (eps E(s))>`` in bins of equal
  width in ``s^2``, ``B = -slope / 2``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import ConfigError, DataError
from crystalscope.io.atomic import atomic_write
from crystalscope.merge.fom import (
    SelectedReflections,
    cc_half,
    cc_star,
    common_pairs,
    epsilon_factor,
    hkl_rotations,
    make_edges,
    possible_per_shell,
    possible_reflections,
    r_split,
    resolution_limits,
    select_reflections,
    shell_edges,
    shell_index,
    shell_range,
    symmetry_keys,
    wilson_scale,
)
from crystalscope.model.crystal import SpaceGroupLike, resolve_space_group

__all__ = [
    "CC_HALF_CUTOFF",
    "MergeStatistics",
    "Normalisation",
    "WilsonFit",
    "cc_half",
    "cc_star",
    "hkl_rotations",
    "merge_statistics",
    "possible_reflections",
    "r_split",
    "shell_edges",
    "shell_index",
    "symmetry_keys",
    "wilson_fit",
    "wilson_scale",
    "write_statistics_csv",
]

#: CC1/2 at which the suggested resolution cut-off is placed (Karplus & Diederichs 2012).
CC_HALF_CUTOFF = 0.143
#: check_hkl widens the Wilson plot's data range by 0.001 nm^-1 on each side (1/A here).
_WILSON_WIDEN = 1e-4
#: check_hkl fits the Wilson B from 3.125 nm^-1 (3.2 A) outwards.
CRYSTFEL_WILSON_D = 3.2
#: Atoms per average amino-acid residue (Rupp, BMC p. 356), as check_hkl --wilson.
_RESIDUE = (("C", 5.00), ("N", 1.35), ("O", 1.50), ("H", 8.00))
#: check_hkl's form factors ``(a1..a4, b1..b4, c)``: International Tables (Cromer-Mann)
#: values, with H from the four-Gaussian table and O's ``b4`` as check_hkl has it (322.9098;
#: the tables give 32.9089), so that ``normalisation="crystfel"`` reproduces check_hkl.
_CRYSTFEL_SFAC = {
    "C": ((2.31000, 1.02000, 1.58860, 0.865000), (20.8439, 10.2075, 0.568700, 51.6512), 0.215600),
    "N": ((12.2126, 3.13220, 2.01250, 1.16630), (0.005700, 9.89330, 28.9975, 0.582600), -11.529),
    "O": ((3.04850, 2.28680, 1.54630, 0.867000), (13.2771, 5.70110, 0.323900, 322.9098), 0.250800),
    "H": ((0.489918, 0.262003, 0.196767, 0.049879), (20.6593, 7.74039, 49.5519, 2.20159), 0.001305),
}

Normalisation = Literal["crystfel", "xray", "electron", "none"]


# --------------------------------------------------------------------------- Wilson plot


@dataclass
class WilsonFit:
    """A Wilson plot and the straight line fitted to it.

    Attributes
    ----------
    b_factor : float
        ``B`` in A^2 from ``ln<I/(eps E)> = ln_scale - B/2 * (1/d^2)`` (NaN when fewer than
        3 bins are usable in the fit range).
    ln_scale : float
        Intercept.
    one_over_d2 : numpy.ndarray
        Bin centres in ``1/d^2`` (1/A^2); the bins have equal width in ``1/d^2``.
    ln_mean_i : numpy.ndarray
        ``ln`` of the mean normalised intensity per bin (NaN for empty bins or a mean
        <= 0).
    used : numpy.ndarray of bool
        Bins used in the fit.
    n_reflections : numpy.ndarray of int
        Reflections per bin.
    normalisation : str
        What the intensities were divided by (see :func:`wilson_fit`).
    """

    b_factor: float
    ln_scale: float
    one_over_d2: np.ndarray
    ln_mean_i: np.ndarray
    used: np.ndarray
    n_reflections: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    normalisation: str = "crystfel"


def _scattering(s2: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """Average-residue scattering E(s): sum n f (crystfel), sum n f^2 (xray, electron)."""
    if normalisation == "none":
        return np.ones_like(s2)
    total = np.zeros_like(s2)
    for symbol, count in _RESIDUE:
        a_coef: Sequence[float]
        b_coef: Sequence[float]
        if normalisation == "crystfel":
            a_coef, b_coef, c = _CRYSTFEL_SFAC[symbol]
        else:
            element = gemmi.Element(symbol)
            coef = element.c4322 if normalisation == "electron" else element.it92
            a_coef, b_coef, c = list(coef.a), list(coef.b), float(getattr(coef, "c", 0.0))
        f = np.full_like(s2, c)
        for a, b in zip(a_coef, b_coef, strict=True):
            f += a * np.exp(-b * s2)
        total += count * (f if normalisation == "crystfel" else f * f)
    return total


def wilson_fit(
    merged: pd.DataFrame,
    cell: gemmi.UnitCell,
    *,
    d_range: tuple[float | None, float | None] = (4.0, None),
    n_bins: int = 50,
    space_group: SpaceGroupLike | None = None,
    anomalous: bool = False,
    normalisation: Normalisation = "crystfel",
    d_min: float | None = None,
    d_max: float | None = None,
    min_snr: float | None = 1.0,
) -> WilsonFit:
    """Wilson plot ``ln <I / (eps E(s))>`` against ``1/d^2`` and the B factor of its slope.

    As ``check_hkl --wilson``: the data range in ``s^2 = 1/(4 d^2)`` (widened by
    0.0001 1/A in ``s`` on each side, or ``d_min``/``d_max``) is cut into ``n_bins`` bins
    of equal width; ``eps`` counts the Laue-group (point-group with ``anomalous``)
    operators that leave ``h`` unchanged; ``ln <I/(eps E)> = ln_scale - 2 B s^2`` is
    fitted by unweighted least squares over the bins whose lower edge lies beyond
    ``1/(2 d_range[0])`` (check_hkl: 3.2 A) and whose centre lies within
    ``1/(2 d_range[1])``.  Bins whose mean ``I/sigma`` is below ``min_snr`` are left
    out of the fit as well (check_hkl has no such test): beyond the resolution of the
    data their mean intensity is noise around zero, and its logarithm would bend the
    line (``min_snr=None`` fits every bin, as check_hkl).

    Parameters
    ----------
    merged : pandas.DataFrame
        Merged reflections ``h, k, l, I, sigma``.
    cell : gemmi.UnitCell
        Unit cell.
    d_range : (float or None, float or None)
        Low- and high-resolution end of the fit, A (None: no limit).
    n_bins : int
        Number of bins (check_hkl's default for ``--wilson`` is 50).
    space_group : gemmi.SpaceGroup or str or int, optional
        For ``eps``; without it ``eps = 1``.
    anomalous : bool
        Friedel mates are separate reflections (``eps`` from the point group).
    normalisation : {"crystfel", "xray", "electron", "none"}
        ``E(s)``: ``"crystfel"`` the average residue's ``sum n_j f_j(s)`` (not squared)
        with check_hkl's X-ray form factors, exactly as check_hkl; ``"xray"``/``"electron"`` the
        textbook ``sum n_j f_j(s)^2`` with X-ray (IT92) or electron (ITC 4.3.2.2) form
        factors; ``"none"`` divides by ``eps`` only (apparent B).
    d_min, d_max : float, optional
        Fixed range of the plot, A (check_hkl ``--highres``/``--lowres``).
    min_snr : float or None
        Smallest mean ``I/sigma`` of a fitted bin (reflections with ``sigma = 0`` count
        as significant).
    """
    if normalisation not in ("crystfel", "xray", "electron", "none"):
        raise ConfigError(f"unknown Wilson normalisation {normalisation!r}", field="normalisation")
    sg = resolve_space_group(space_group if space_group is not None else "P 1")
    limits = resolution_limits(d_min, d_max)
    sel = select_reflections(
        merged, cell, sg, limits, anomalous and space_group is not None, "merged"
    )
    if sel.r.size == 0:
        raise DataError("no reflections for a Wilson plot", field="I")
    r_lo = limits[0] if limits[0] is not None else float(sel.r.min()) - _WILSON_WIDEN
    r_hi = limits[1] if limits[1] is not None else float(sel.r.max()) + _WILSON_WIDEN
    s2min, s2max = (r_lo / 2.0) ** 2, (r_hi / 2.0) ** 2
    n = int(n_bins)
    if n < 1:
        raise ConfigError(f"n_bins must be positive, got {n_bins}", field="n_bins")
    step = (s2max - s2min) / n
    s2 = (sel.r / 2.0) ** 2
    bins = np.clip(((s2 - s2min) / step).astype(np.int64), 0, n - 1)
    eps = (
        epsilon_factor(sel.hkl, hkl_rotations(sg, anomalous=anomalous))
        if space_group is not None
        else 1
    )
    value = sel.intensity / (eps * _scattering(s2, normalisation))
    counts = np.bincount(bins, minlength=n)
    sums = np.bincount(bins, weights=value, minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        ln_mean = np.log(sums / counts)
    ln_mean[~np.isfinite(ln_mean)] = np.nan
    centres = s2min + (np.arange(n) + 0.5) * step
    used = _wilson_bins(centres, step, s2min, d_range) & np.isfinite(ln_mean)
    if min_snr is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.where(sel.sigma > 0, sel.intensity / sel.sigma, np.inf)
        snr_sum = np.bincount(bins, weights=np.minimum(snr, 1e6), minlength=n)
        with np.errstate(divide="ignore", invalid="ignore"):
            used &= snr_sum / counts >= min_snr
    b_factor = ln_scale = math.nan
    if used.sum() >= 3:
        slope, ln_scale = np.polyfit(centres[used], ln_mean[used], 1)
        b_factor = -float(slope) / 2.0
    return WilsonFit(
        b_factor=b_factor,
        ln_scale=float(ln_scale),
        one_over_d2=4.0 * centres,
        ln_mean_i=ln_mean,
        used=used,
        n_reflections=counts,
        normalisation=normalisation,
    )


def _wilson_bins(
    centres: np.ndarray, step: float, s2min: float, d_range: tuple[float | None, float | None]
) -> np.ndarray:
    use = np.ones(len(centres), dtype=bool)
    if d_range[0] is not None:
        first = int((0.25 / d_range[0] ** 2 - s2min) / step) + 1  # C truncation, as check_hkl
        use[: max(first, 0)] = False
    if d_range[1] is not None:
        use &= centres <= 0.25 / d_range[1] ** 2
    return use


# --------------------------------------------------------------------------- merge statistics

_SHELL_COLUMNS = [
    "d_max", "d_min", "n_possible", "n_measured", "completeness", "n_obs", "multiplicity",
    "mean_i", "mean_i_over_sigma", "snr", "cc_half", "cc_star", "r_split", "n_common",
]  # fmt: skip


@dataclass
class MergeStatistics:
    """Figures of merit per resolution shell and overall.

    Attributes
    ----------
    shells : pandas.DataFrame
        Index ``"1" ... "n"`` and ``"overall"``; columns ``d_max, d_min`` (A),
        ``n_possible, n_measured, completeness`` (%), ``n_obs, multiplicity, mean_i,
        mean_i_over_sigma`` (``<I>/<sigma>``), ``snr`` (CrystFEL's ``<I/sigma>``),
        ``cc_half, cc_star, r_split`` (%), ``n_common`` (reflections in both halves).
    wilson : WilsonFit or None
        The Wilson plot (None when it could not be made).
    cutoff_d : float or None
        Resolution (A) where CC1/2 first falls below 0.143, interpolated linearly in
        ``1/d`` between shell centres; None if it never does (or is below in the first
        shell, or there are no half-sets).
    half_scale, half_b_factor : float
        Scale and relative B (A^2) applied to the second half-set (1 and 0 if unscaled).
    notes : list of str
        What was discarded, and why.
    """

    shells: pd.DataFrame
    wilson: WilsonFit | None
    cutoff_d: float | None
    half_scale: float = 1.0
    half_b_factor: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def overall(self) -> pd.Series:
        """The ``overall`` row of :attr:`shells`."""
        return self.shells.loc["overall"]

    def table(self) -> str:
        """A fixed-width text table (one line per shell, then overall) for terminals."""
        head = (
            f"{'shell':>7} {'d_max':>7} {'d_min':>6} {'possible':>8} {'unique':>7} "
            f"{'compl%':>6} {'nobs':>9} {'mult':>6} {'<I>':>10} {'<I>/<sig>':>9} "
            f"{'<I/sig>':>8} {'CC1/2':>7} {'CC*':>6} {'Rsplit%':>7} {'pairs':>7}"
        )
        lines = [head, "-" * len(head)]
        for name, row in self.shells.iterrows():
            lines.append(_table_row(str(name), row))
        if self.wilson is not None and math.isfinite(self.wilson.b_factor):
            lines.append(
                f"Wilson B = {self.wilson.b_factor:.2f} A^2 (ln k = {self.wilson.ln_scale:.3f},"
                f" {int(self.wilson.used.sum())} bins, {self.wilson.normalisation} "
                "normalisation)"
            )
        if self.cutoff_d is not None:
            lines.append(f"CC1/2 = {CC_HALF_CUTOFF} at d = {self.cutoff_d:.2f} A")
        if self.half_scale != 1.0 or self.half_b_factor != 0.0:
            lines.append(
                f"half-set 2 scaled by {self.half_scale:.4f}, relative B "
                f"{self.half_b_factor:.2f} A^2"
            )
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt(value: float, spec: str, width: int) -> str:
    return f"{value:{width}{spec}}" if math.isfinite(value) else f"{'-':>{width}}"


def _table_row(name: str, row: pd.Series) -> str:
    return " ".join(
        [
            f"{name:>7}",
            _fmt(row["d_max"], ".2f", 7),
            _fmt(row["d_min"], ".2f", 6),
            f"{int(row['n_possible']):8d}",
            f"{int(row['n_measured']):7d}",
            _fmt(row["completeness"], ".2f", 6),
            f"{int(row['n_obs']):9d}",
            _fmt(row["multiplicity"], ".2f", 6),
            _fmt(row["mean_i"], ".2f", 10),
            _fmt(row["mean_i_over_sigma"], ".2f", 9),
            _fmt(row["snr"], ".2f", 8),
            _fmt(row["cc_half"], ".4f", 7),
            _fmt(row["cc_star"], ".4f", 6),
            _fmt(row["r_split"], ".2f", 7),
            f"{int(row['n_common']):7d}",
        ]
    )


def merge_statistics(
    merged: pd.DataFrame,
    half1: pd.DataFrame | None,
    half2: pd.DataFrame | None,
    cell: gemmi.UnitCell,
    space_group: SpaceGroupLike,
    *,
    n_shells: int = 10,
    d_min: float | None = None,
    d_max: float | None = None,
    anomalous: bool = False,
    scale_halves: bool = True,
    wilson_d_range: tuple[float | None, float | None] = (4.0, None),
    wilson_normalisation: Normalisation = "crystfel",
    crystfel_compatible: bool = False,
) -> MergeStatistics:
    """Per-shell statistics of a merged data set (``check_hkl`` + ``compare_hkl`` CC, Rsplit).

    Parameters
    ----------
    merged : pandas.DataFrame
        Merged reflections ``h, k, l, I, sigma`` and ``nobs`` (default 1), one per unique
        reflection (any asymmetric-unit convention).
    half1, half2 : pandas.DataFrame or None
        Half-data-set merges (same columns) for CC1/2, CC* and Rsplit; NaN without.
    cell : gemmi.UnitCell
        Unit cell; ``d`` is computed from it, as CrystFEL does.
    space_group : gemmi.SpaceGroup or str or int
        Space group (its Laue group, or point group with ``anomalous``, defines unique
        reflections; its lattice centring the absences).
    n_shells : int
        Number of shells of equal volume in ``(1/d)^3``.
    d_min, d_max : float, optional
        Resolution range, A (``--highres``/``--lowres``); default: that of ``merged``.
    anomalous : bool
        Friedel mates are separate reflections.
    scale_halves : bool
        Scale half 2 to half 1 with :func:`wilson_scale` before CC and Rsplit, as
        ``compare_hkl`` does (False: ``compare_hkl -u``).
    wilson_d_range, wilson_normalisation
        Passed to :func:`wilson_fit` (``(3.2, None)`` reproduces check_hkl).
    crystfel_compatible : bool
        Count possible reflections only for ``1/d > r_min`` as check_hkl does (it leaves
        out the lowest-resolution reflection when the range comes from the data).

    Returns
    -------
    MergeStatistics
    """
    sg = resolve_space_group(space_group)
    limits = resolution_limits(d_min, d_max)
    main = select_reflections(merged, cell, sg, limits, anomalous, "merged")
    r_min, r_max = shell_range(main.r, limits, "merged")
    edges = make_edges(r_min, r_max, n_shells)
    possible = possible_per_shell(cell, sg, edges, anomalous, crystfel_compatible)
    single = _single_list_foms(main, edges, possible)
    notes = _notes(main, "merged")
    pair_foms, scale, b_rel = _pair_foms(half1, half2, cell, sg, limits, anomalous, edges,
                                         scale_halves, notes)  # fmt: skip
    shells = pd.concat([single, pair_foms], axis=1)
    shells.insert(0, "d_min", 1.0 / np.append(edges[1:], r_max))
    with np.errstate(divide="ignore"):
        shells.insert(0, "d_max", 1.0 / np.append(edges[:-1], r_min))
    shells = shells[_SHELL_COLUMNS]
    shells.index = pd.Index([str(i + 1) for i in range(len(edges) - 1)] + ["overall"],
                            name="shell")  # fmt: skip
    try:
        wilson: WilsonFit | None = wilson_fit(
            merged, cell, d_range=wilson_d_range, space_group=sg, anomalous=anomalous,
            normalisation=wilson_normalisation, d_min=d_min, d_max=d_max,
        )  # fmt: skip
    except DataError as exc:
        wilson = None
        notes.append(f"no Wilson plot: {exc.message}")
    cutoff = _cutoff(edges, shells["cc_half"].to_numpy()[:-1])
    return MergeStatistics(shells, wilson, cutoff, scale, b_rel, notes)


def _notes(sel: SelectedReflections, name: str) -> list[str]:
    notes = []
    if sel.dropped_invalid:
        notes.append(f"{sel.dropped_invalid} {name} reflections with non-finite I or sigma, "
                     "or sigma < 0, discarded")  # fmt: skip
    if sel.dropped_range:
        notes.append(f"{sel.dropped_range} {name} reflections outside the resolution range")
    return notes


def _per_shell(bins: np.ndarray, n: int, values: np.ndarray) -> np.ndarray:
    """Per-shell sums followed by the overall sum."""
    sums = np.bincount(bins, weights=values, minlength=n)
    return np.append(sums, sums.sum())


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _single_list_foms(
    sel: SelectedReflections, edges: np.ndarray, possible: np.ndarray
) -> pd.DataFrame:
    n = len(edges) - 1
    bins = shell_index(sel.r, edges)
    count = _per_shell(bins, n, np.ones(len(bins)))
    n_possible = np.append(possible, possible.sum()).astype(np.int64)
    n_obs = _per_shell(bins, n, sel.nobs)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr_each = sel.intensity / sel.sigma
    finite = np.isfinite(snr_each)
    snr_sum = _per_shell(bins[finite], n, snr_each[finite])
    snr_n = _per_shell(bins[finite], n, np.ones(int(finite.sum())))
    sum_i = _per_shell(bins, n, sel.intensity)
    sum_sigma = _per_shell(bins, n, sel.sigma)
    return pd.DataFrame(
        {
            "n_possible": n_possible,
            "n_measured": count.astype(np.int64),
            "completeness": 100.0 * _ratio(count, n_possible.astype(float)),
            "n_obs": np.rint(n_obs).astype(np.int64),
            "multiplicity": _ratio(n_obs, count),
            "mean_i": _ratio(sum_i, count),
            "mean_i_over_sigma": _ratio(sum_i, sum_sigma),
            "snr": _ratio(snr_sum, snr_n),
        }
    )


def _pair_foms(
    half1: pd.DataFrame | None,
    half2: pd.DataFrame | None,
    cell: gemmi.UnitCell,
    sg: gemmi.SpaceGroup,
    limits: tuple[float | None, float | None],
    anomalous: bool,
    edges: np.ndarray,
    scale: bool,
    notes: list[str],
) -> tuple[pd.DataFrame, float, float]:
    n = len(edges) - 1
    empty = pd.DataFrame(
        {"cc_half": np.full(n + 1, np.nan), "cc_star": np.full(n + 1, np.nan),
         "r_split": np.full(n + 1, np.nan), "n_common": np.zeros(n + 1, dtype=np.int64)}
    )  # fmt: skip
    if half1 is None or half2 is None:
        return empty, 1.0, 0.0
    a = select_reflections(half1, cell, sg, limits, anomalous, "half-set 1")
    b = select_reflections(half2, cell, sg, limits, anomalous, "half-set 2")
    notes += _notes(a, "half-set 1") + _notes(b, "half-set 2")
    ia, ib = common_pairs(a, b)
    i1, i2, r = a.intensity[ia], b.intensity[ib], a.r[ia]
    g, b_rel = wilson_scale(i1, i2, 1.0 / r) if scale else (1.0, 0.0)
    i2 = i2 * g * np.exp(2.0 * b_rel * (r / 2.0) ** 2)
    bins = shell_index(r, edges)
    groups = [bins == j for j in range(n)] + [np.ones(len(r), dtype=bool)]
    cc = np.array([cc_half(i1[m], i2[m]) for m in groups])
    table = pd.DataFrame(
        {
            "cc_half": cc,
            "cc_star": [cc_star(c) for c in cc],
            "r_split": [r_split(i1[m], i2[m]) for m in groups],
            "n_common": [int(m.sum()) for m in groups],
        }
    )
    return table, g, b_rel


def _cutoff(edges: np.ndarray, cc: np.ndarray) -> float | None:
    """1/d where CC1/2 first drops below the threshold, interpolated between shell centres."""
    centres = 0.5 * (edges[:-1] + edges[1:])
    ok = np.isfinite(cc)
    r, c = centres[ok], cc[ok]
    if c.size == 0 or c[0] < CC_HALF_CUTOFF:
        return None
    below = np.nonzero(c < CC_HALF_CUTOFF)[0]
    if below.size == 0:
        return None
    j = int(below[0])
    frac = (c[j - 1] - CC_HALF_CUTOFF) / (c[j - 1] - c[j])
    return float(1.0 / (r[j - 1] + frac * (r[j] - r[j - 1])))


def write_statistics_csv(
    stats: MergeStatistics, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write :attr:`MergeStatistics.shells` as CSV (first column ``shell``), atomically.

    Raises
    ------
    CrystalscopeError
        If ``path`` exists and ``overwrite`` is false.
    """
    with atomic_write(path, overwrite=overwrite) as fh:
        stats.shells.to_csv(fh, index_label="shell", float_format="%.6g")
    return Path(path)
