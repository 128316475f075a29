"""Unit-cell refinement against the virtual powder and pair-distance histograms.

Given a Bravais lattice (or a space group) and a starting cell, the free cell
parameters -- only those the lattice allows: ``a, c`` for tP, ``a, b, c, beta`` for
mP ... -- are fitted to both histograms of :func:`crystalscope.index.powder.radial_histograms`
at once (seed 004, section 3.2.1 and Fig. 6):

* powder lines at ``1/d = sqrt(h^T G* h)`` of the allowed reflections (centring
  absences, and those of the space group when one is given);
* pair lines at the lengths of all lattice vectors (centring absences only).

The fit is a whole-profile (Pawley-type) least-squares fit (:mod:`._refine_fit`):
every line is a bin-integrated Gaussian with a free intensity, on a smooth background,
with line positions tied to the cell and widths ``sigma^2 = sigma_0^2 + sigma_1^2 L^2``
fitted per histogram, plus the second-order length bias ``beta / (2 L)`` of noisy
vectors.  Overlapping lines are no problem, so that the fit uses the many lines at
higher ``1/d`` whose positions carry most of the information.

Convergence from a start several percent off is obtained coarse to fine
(:mod:`._refine_stages`): the first stages fit only the first 12, 30 and 70 pair lines
with both the data and the model broadened by a relative width ``delta`` (4 %, 1.5 %,
0.5 %) so that every predicted line still overlaps its observed peak, the first one
from ``1 + 2 n`` starts for ``n`` free lengths (the start, and each free length moved by
+-3.5 %); the last stage fits the full range with ``delta = 0``.  Standard errors come
from the Jacobian of the last fit (Kaufman's variable-projection form, intensities and
backgrounds eliminated), so they include the correlation with the intensities of
overlapping lines; a histogram whose reduced chi^2 exceeds 1 is down-weighted by it
first, so that misfit inflates them.

Measured (``docs/algorithms/cell-refinement.md``): lysozyme-like tP from 1000 simulated
200 kV stills, start 1.5-2 % off, ``a`` and ``c`` within 0.02 % in about 2 s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import ConfigError, CrystalscopeError, DataError
from crystalscope.index._refine_fit import HistogramData, ProfileFit, profile_matrix
from crystalscope.index._refine_lattice import PARAMETER_NAMES, LatticeModel, lattice_model
from crystalscope.index._refine_stages import range_for, run_stages
from crystalscope.index.powder import RadialHistograms

__all__ = ["CellRefinement", "predicted_lines", "refine_cell"]

_KINDS = ("powder", "pairs")
_MIN_PEAKS = 20


@dataclass(frozen=True, eq=False)
class CellRefinement:
    """A refined unit cell.

    Attributes
    ----------
    cell : gemmi.UnitCell
        Refined cell (A, degrees).
    start : gemmi.UnitCell
        Start cell (after imposing the lattice's constraints).
    lattice : str
        Bravais symbol.
    sigmas : tuple of 6 float
        Standard errors of ``a, b, c`` (A) and ``alpha, beta, gamma`` (degrees); 0 for
        parameters fixed by the lattice.
    n_lines : int
        Predicted lines in the final fit (powder and pairs) with a non-zero intensity.
    rms_one_over_d : float
        RMS difference (1/A) between the fitted positions of isolated lines, each fitted
        on its own, and the positions the refined cell predicts.
    n_matched : int
        Isolated lines in ``rms_one_over_d``.
    parameters : tuple of str
        Names of the free parameters.
    peak_sigma : tuple of 2 float
        Fitted ``sigma_0`` (1/A) of the powder and pair lines (NaN where not used).
    chi2_reduced : tuple of 2 float
        Reduced chi^2 of the powder and pair fits with Poisson weights (NaN where not used).
    range_one_over_d : tuple of 2 float
        Range of ``1/d`` fitted (1/A).
    space_group : str or None
        Space group whose absences were used, if given.
    converged : bool
        Whether the final least-squares fit converged.
    varied : tuple of 6 bool
        Which of ``a, b, c, alpha, beta, gamma`` were refined (free or tied to a free
        parameter, as ``b = a`` in a tetragonal cell).
    """

    cell: gemmi.UnitCell
    start: gemmi.UnitCell
    lattice: str
    sigmas: tuple[float, ...]
    n_lines: int
    rms_one_over_d: float
    n_matched: int = 0
    parameters: tuple[str, ...] = ()
    peak_sigma: tuple[float, float] = (math.nan, math.nan)
    chi2_reduced: tuple[float, float] = (math.nan, math.nan)
    range_one_over_d: tuple[float, float] = (math.nan, math.nan)
    space_group: str | None = None
    converged: bool = True
    varied: tuple[bool, ...] = (True,) * 6

    def table(self) -> pd.DataFrame:
        """Per cell parameter: ``parameter, start, refined, sigma, change_percent, free``."""
        start = list(self.start.parameters)
        refined = list(self.cell.parameters)
        free = list(self.varied)
        return pd.DataFrame(
            {
                "parameter": list(PARAMETER_NAMES),
                "start": start,
                "refined": refined,
                "sigma": list(self.sigmas),
                "change_percent": [
                    100.0 * (r / s - 1.0) for r, s in zip(refined, start, strict=True)
                ],
                "free": free,
            }
        )

    def summary(self) -> str:
        """A small printable table of start, refined value and sigma per parameter."""
        lines = [
            f"cell refinement, lattice {self.lattice}"
            + (f" ({self.space_group})" if self.space_group else "")
        ]
        lines.append(f"{'':>6} {'start':>10} {'refined':>10} {'sigma':>9} {'change':>8}")
        for row in self.table().itertuples():
            unit = "A" if row.parameter in ("a", "b", "c") else "deg"
            if row.free:
                lines.append(
                    f"{row.parameter:>6} {row.start:10.4f} {row.refined:10.4f} {row.sigma:9.4f} "
                    f"{row.change_percent:7.3f}% {unit}"
                )
            else:
                lines.append(
                    f"{row.parameter:>6} {row.start:10.4f} {row.refined:10.4f} {'fixed':>9}"
                )
        lo, hi = self.range_one_over_d
        lines.append(
            f"{self.n_lines} lines in 1/d = {lo:.4f}..{hi:.4f} 1/A; isolated-line rms "
            f"{self.rms_one_over_d:.2e} 1/A ({self.n_matched} lines); peak sigma powder "
            f"{self.peak_sigma[0]:.2e}, pairs {self.peak_sigma[1]:.2e} 1/A; reduced chi2 "
            f"{self.chi2_reduced[0]:.2f}, {self.chi2_reduced[1]:.2f}"
            + ("" if self.converged else "; NOT CONVERGED")
        )
        return "\n".join(lines)


def _as_cell(start: gemmi.UnitCell | Sequence[float], field: str = "start") -> tuple[float, ...]:
    """Six validated cell parameters from a gemmi cell or a sequence."""
    from crystalscope.model.crystal import make_cell

    values = list(start.parameters) if isinstance(start, gemmi.UnitCell) else list(start)
    if len(values) != 6:
        raise ConfigError(
            f"a cell needs 6 parameters (a, b, c, alpha, beta, gamma), got {len(values)}",
            field=field,
        )
    try:
        return tuple(make_cell(*values).parameters)
    except CrystalscopeError as exc:
        raise ConfigError(exc.message, field=field) from None


def predicted_lines(
    cell: gemmi.UnitCell | Sequence[float],
    lattice: Any,
    *,
    max_one_over_d: float,
    kind: str = "powder",
) -> pd.DataFrame:
    """Predicted line positions of a cell in the powder or pair-distance histogram.

    Parameters
    ----------
    cell : gemmi.UnitCell or 6 floats
        Cell (A, degrees).
    lattice : str or int or gemmi.SpaceGroup
        Bravais symbol (centring absences only) or space group (all absences).
    max_one_over_d : float
        Largest ``1/d`` (1/A).
    kind : {"powder", "pairs"}
        Allowed reflections, or all lattice vectors (centring absences only).

    Returns
    -------
    DataFrame
        One row per line: ``h, k, l`` (a representative), ``one_over_d`` (1/A), ``d``
        (A), ``multiplicity`` (vectors on the line, Friedel mates counted), by ``1/d``.
    """
    if kind not in _KINDS:
        raise ConfigError(f"kind must be 'powder' or 'pairs', got {kind!r}", field="kind")
    values = _as_cell(cell, "cell")
    model = lattice_model(lattice, values, field="cell")
    params = model.params(values)
    hkl, mult = model.lines(params, float(max_one_over_d), kind)
    s = model.one_over_d(params, hkl)
    return pd.DataFrame(
        {
            "h": hkl[:, 0],
            "k": hkl[:, 1],
            "l": hkl[:, 2],
            "one_over_d": s,
            "d": 1.0 / s,
            "multiplicity": mult,
        }
    )


def _check_inputs(hist: RadialHistograms, kinds: Sequence[str]) -> None:
    if not isinstance(hist, RadialHistograms):
        raise DataError(f"expected RadialHistograms, got {type(hist).__name__}", field="hist")
    for kind in kinds:
        if kind not in _KINDS:
            raise ConfigError(
                f"histograms to use are 'powder' and/or 'pairs', got {kind!r}", field="use"
            )
    if not kinds:
        raise ConfigError("use at least one of 'powder' and 'pairs'", field="use")
    if hist.n_peaks < _MIN_PEAKS or sum(int(np.sum(getattr(hist, k))) for k in kinds) < _MIN_PEAKS:
        raise DataError(
            f"too few peaks for cell refinement ({hist.n_peaks} peaks, "
            f"{hist.n_pairs} pairs); at least {_MIN_PEAKS} are needed",
            field="peaks",
        )


def _check_range(hist: RadialHistograms, max_one_over_d: float | None, n_lines: int) -> float:
    """The largest ``1/d`` the fit may use (1/A); raises for bad options."""
    s_top = hist.max_one_over_d if max_one_over_d is None else float(max_one_over_d)
    if not (math.isfinite(s_top) and 0 < s_top <= hist.max_one_over_d + 1e-12):
        raise ConfigError(
            f"max_one_over_d must be in (0, {hist.max_one_over_d:g}] 1/A, got {max_one_over_d}",
            field="max_one_over_d",
        )
    if n_lines < 10:
        raise ConfigError(f"n_lines must be at least 10, got {n_lines}", field="n_lines")
    return s_top


def _isolated_rms(
    fit: ProfileFit, data: list[HistogramData], model: LatticeModel
) -> tuple[float, int]:
    """RMS offset (1/A) of the isolated, clearly present lines from their prediction.

    A line is isolated when no other line of its histogram lies within 4 sigma, and
    clearly present with at least 25 fitted counts.  Its observed position is the
    centroid, within 2 sigma, of the counts left for it (data minus every other fitted
    line and the background); its predicted one the centroid of its own model profile
    over the same bins.
    """
    offsets = []
    for i, h in enumerate(data):
        sigma0, sigma1, beta = fit.widths[i]
        lengths = model.one_over_d(fit.params, h.hkl)
        mu = lengths + beta / (2.0 * lengths)
        sigma = np.sqrt(sigma0**2 + (sigma1 * lengths) ** 2)
        x = 0.5 * (h.edges[1:] + h.edges[:-1])
        total = (
            profile_matrix(h.edges, lengths, fit.widths[i], 0.0) @ fit.intensities[i]
            + h.basis @ fit.background[i]
        )
        for k in np.flatnonzero(fit.intensities[i] > 0):
            gap = np.min(np.abs(np.delete(mu, k) - mu[k])) if len(mu) > 1 else np.inf
            window = np.abs(x - mu[k]) < 2.0 * sigma[k]
            if gap < 4.0 * sigma[k] or window.sum() < 3 or fit.intensities[i][k] < 25.0:
                continue
            own = (
                fit.intensities[i][k]
                * profile_matrix(h.edges, lengths[k : k + 1], fit.widths[i], 0.0)[:, 0]
            )
            signal = (h.counts - (total - own))[window]
            if signal.sum() <= 0:
                continue
            centroid = float(np.sum(signal * x[window]) / signal.sum())
            expected = float(np.sum(own[window] * x[window]) / own[window].sum())
            offsets.append(centroid - expected)
    if not offsets:
        return math.nan, 0
    return float(np.sqrt(np.mean(np.square(offsets)))), len(offsets)


def refine_cell(
    hist: RadialHistograms,
    start: gemmi.UnitCell | Sequence[float],
    lattice: Any,
    *,
    max_one_over_d: float | None = None,
    n_lines: int = 150,
    use: Sequence[str] = _KINDS,
) -> CellRefinement:
    """Refine the cell parameters a lattice allows against the radial histograms.

    Parameters
    ----------
    hist : RadialHistograms
        Powder and pair-distance histograms of the data set
        (:func:`crystalscope.index.powder.radial_histograms`).
    start : gemmi.UnitCell or 6 floats
        Start cell (A, degrees), in the conventional setting of ``lattice``; it may be
        a few percent off.
    lattice : str or int or gemmi.SpaceGroup
        Bravais symbol (``aP mP mC oP oC oI oF tP tI hP hR cP cI cF``: centring
        absences only) or a space group (its absences apply to the powder lines).
    max_one_over_d : float, optional
        Upper end of the fitted range (1/A); default: where the ``n_lines``-th pair
        line lies, at most the end of the histograms.
    n_lines : int
        Number of pair lines that sets the default range (default 150).
    use : sequence of {"powder", "pairs"}
        Histograms to fit (default both).

    Returns
    -------
    CellRefinement

    Raises
    ------
    ConfigError
        Unknown lattice, a start cell that the lattice does not allow, bad options.
    DataError
        Too few peaks, or too few predicted lines in the range.
    """
    kinds = tuple(use)
    _check_inputs(hist, kinds)
    s_top = _check_range(hist, max_one_over_d, n_lines)
    values = _as_cell(start)
    model = lattice_model(lattice, values)
    params = model.params(values)
    s_final = range_for(model, params, n_lines, s_top) if max_one_over_d is None else s_top
    fit, data = run_stages(hist, model, params, kinds, s_final)
    rms, n_matched = _isolated_rms(fit, data, model)
    sigmas = np.sqrt(np.maximum(np.diag(fit.covariance), 0.0))
    by_kind = {h.kind: i for i, h in enumerate(data)}

    def per_kind(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
        a, b = (float(values[by_kind[k]]) if k in by_kind else math.nan for k in _KINDS)
        return a, b

    return CellRefinement(
        cell=gemmi.UnitCell(*model.expand(fit.params)),
        start=gemmi.UnitCell(*model.expand(params)),
        lattice=model.bravais,
        sigmas=model.expand_sigmas(sigmas),
        n_lines=int(sum(np.count_nonzero(c) for c in fit.intensities)),
        rms_one_over_d=rms,
        n_matched=n_matched,
        parameters=model.names,
        peak_sigma=per_kind(fit.widths[:, 0]),
        chi2_reduced=per_kind(fit.chi2_reduced),
        range_one_over_d=(float(min(h.edges[0] for h in data)), float(s_final)),
        space_group=model.space_group.xhm() if model.space_group is not None else None,
        converged=fit.success,
        varied=tuple(isinstance(t, int) for t in model.ties),
    )
