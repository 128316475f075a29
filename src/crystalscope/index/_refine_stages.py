"""Coarse-to-fine schedule of the cell refinement (see :mod:`.cell_refine`).

Stage ``k`` fits the histograms up to the ``1/d`` of the ``n_k``-th pair line with
both data and model broadened by a relative width ``delta_k`` (the data by spreading
each bin's counts with a Gaussian of ``sigma = delta x``, the model by
``sigma^2 += (delta L)^2``), so that a line predicted ``delta`` (relative) off its peak
still overlaps it.  The first stage starts from the given cell and from the cells with
one free length moved by +-3.5 %; each start gets a few iterations and the best (least
cost on the same data) is continued.  The
final stage fits the full range unbroadened, with the ``beta / (2 L)`` bias free; each
histogram whose reduced chi^2 exceeds 1 is then down-weighted by it and fitted again
(so that its misfit inflates the standard errors; a chi^2 below 1, as with few counts
per bin and the weight floor ``1 / max(y, 1)``, is not used to shrink them).

Every stage works on the histograms rebinned by an integer factor so that a bin is at
most ``sigma / 2.5`` of the narrowest line in the range and the range has at most
:data:`MAX_BINS` bins; if the final fit finds lines narrower than that assumed, it is
repeated on finer bins.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numba
import numpy as np

from crystalscope.errors import DataError
from crystalscope.index._refine_fit import HistogramData, ProfileFit, fit_profile
from crystalscope.index._refine_lattice import LatticeModel
from crystalscope.index.powder import RadialHistograms

__all__ = ["MAX_BINS", "STAGES", "check_lines", "range_for", "run_stages"]

#: (relative broadening delta, number of pair lines in the range) of the coarse stages
STAGES = ((0.04, 12), (0.015, 30), (0.005, 70))
MAX_BINS = 2000  # largest number of bins of one histogram in a fit
_LENGTH_STEP = 0.035  # relative step of the lengths between the first-stage starts
_PROBE_NFEV = 8  # iterations of each first-stage start before the best one is continued
_BINS_PER_SIGMA = 2.5


@numba.njit(cache=True, nogil=True)
def _spread(edges: np.ndarray, counts: np.ndarray, delta: float, out: np.ndarray, i0: int) -> None:
    """Add each bin's counts, spread by a Gaussian of sigma ``delta x``, into ``out``.

    ``out[b]`` is bin ``i0 + b`` of ``edges``; contributions beyond 6 sigma are dropped.
    """
    width = edges[1] - edges[0]
    for j in range(counts.shape[0]):
        if counts[j] == 0:
            continue
        x = 0.5 * (edges[j] + edges[j + 1])
        sigma = max(delta * x, 1e-12)
        b0 = max(i0, int((x - 6.0 * sigma - edges[0]) / width))
        b1 = min(i0 + out.shape[0], int((x + 6.0 * sigma - edges[0]) / width) + 1)
        if b1 <= b0:
            continue
        scale = 1.0 / (math.sqrt(2.0) * sigma)
        lower = math.erf((edges[b0] - x) * scale)
        for b in range(b0, b1):
            upper = math.erf((edges[b + 1] - x) * scale)
            out[b - i0] += 0.5 * (upper - lower) * counts[j]
            lower = upper


def smoothed(edges: np.ndarray, counts: np.ndarray, delta: float, i0: int, i1: int) -> np.ndarray:
    """Bins ``i0:i1`` of the counts spread by a Gaussian of relative width ``delta``."""
    if delta <= 0:
        return np.asarray(counts[i0:i1], dtype=float)
    out = np.zeros(i1 - i0)
    _spread(np.asarray(edges, dtype=float), np.asarray(counts, dtype=float), float(delta), out, i0)
    return out


def rebinned(hist: RadialHistograms, factor: int) -> RadialHistograms:
    """``hist`` with ``factor`` adjacent bins summed (a partial last group is dropped)."""
    if factor <= 1:
        return hist
    n = (len(hist.powder) // factor) * factor
    return dataclasses.replace(
        hist,
        edges=hist.edges[: n + 1 : factor],
        powder=hist.powder[:n].reshape(-1, factor).sum(axis=1),
        pairs=hist.pairs[:n].reshape(-1, factor).sum(axis=1),
    )


def _bin_factor(bin_width: float, sigma: float, lo: float, hi: float) -> int:
    """Rebinning factor: bins <= sigma / 2.5, at most MAX_BINS bins in ``(lo, hi)``."""
    by_width = int(sigma / (_BINS_PER_SIGMA * bin_width))
    by_count = math.ceil((hi - lo) / bin_width / MAX_BINS)
    return max(1, by_width, by_count)


def _low_end(
    model: LatticeModel, params: np.ndarray, kind: str, s_hi: float, width: float
) -> float:
    """Lower end of a fitted range: half the shortest predicted line."""
    hkl, _ = model.lines(params, s_hi, kind)
    if not len(hkl):
        return s_hi
    return max(0.5 * float(np.min(model.one_over_d(params, hkl))), 2 * width)


def _ranges(
    hist: RadialHistograms,
    model: LatticeModel,
    params: np.ndarray,
    kinds: Sequence[str],
    s_hi: float,
) -> dict[str, tuple[float, float]]:
    return {k: (_low_end(model, params, k, s_hi, hist.bin_width), s_hi) for k in kinds}


def range_for(model: LatticeModel, params: np.ndarray, n_pair_lines: int, s_top: float) -> float:
    """``1/d`` between the ``n_pair_lines``-th pair line and the next (at most ``s_top``).

    The lines are listed to a ``1/d`` that holds about four lattice vectors per wanted
    line, widened until more than ``n_pair_lines`` lines are inside (or ``s_top`` is
    reached): the shortest lines are the same, without listing every vector to ``s_top``.
    """
    gstar = model.reciprocal_metric(params)
    s = s_top
    if gstar is not None:
        volume = float(np.sqrt(max(np.linalg.det(gstar), 0.0)))  # of the reciprocal cell
        s = min(s_top, (3.0 * 4 * (n_pair_lines + 1) * volume / (4.0 * np.pi)) ** (1 / 3))
    while True:
        hkl, _ = model.lines(params, s, "pairs")
        if len(hkl) > n_pair_lines or s >= s_top:
            break
        s = min(s_top, 1.5 * s)
    if len(hkl) <= n_pair_lines:
        return s_top
    lengths = np.sort(model.one_over_d(params, hkl))
    return float(min(s_top, 0.5 * (lengths[n_pair_lines - 1] + lengths[n_pair_lines])))


def _stage_data(
    hist: RadialHistograms,
    model: LatticeModel,
    params: np.ndarray,
    ranges: dict[str, tuple[float, float]],
    delta: float,
    sigma: float,
) -> list[HistogramData]:
    """The histograms (rebinned for ``sigma``) cut to their ranges, with their lines."""
    lo_all = min(lo for lo, _ in ranges.values())
    hi_all = max(hi for _, hi in ranges.values())
    factor = _bin_factor(hist.bin_width, math.hypot(sigma, delta * lo_all), lo_all, hi_all)
    work = rebinned(hist, factor)
    width = work.bin_width
    out = []
    for kind, (lo, s_hi) in ranges.items():
        margin = 4.0 * math.hypot(sigma, delta * s_hi)
        hkl, _ = model.lines(params, s_hi + margin, kind)
        if len(hkl):
            hkl = hkl[model.one_over_d(params, hkl) > lo - margin]
        i0, i1 = int(lo / width), min(round(s_hi / width), len(work.powder))
        if not len(hkl) or i1 - i0 < 4:
            continue
        counts = work.powder if kind == "powder" else work.pairs
        data = smoothed(work.edges, counts, delta, i0, i1)
        out.append(HistogramData(kind, work.edges[i0 : i1 + 1], data, hkl))
    return out


def check_lines(data: list[HistogramData], model: LatticeModel) -> None:
    """Raise :class:`DataError` when the ranges hold too few lines for the parameters."""
    n = sum(h.n_lines for h in data)
    if not data or n < model.n_free + 1:
        raise DataError(
            f"only {n} predicted lines in the range of the histograms: too few to refine "
            f"{model.n_free} cell parameters (extend max_one_over_d or check the start cell)",
            field="max_one_over_d",
        )


def _variants(model: LatticeModel, params: np.ndarray) -> list[np.ndarray]:
    """The start and, for each free length, the start with it moved up and down a step."""
    out = [params.copy()]
    for j, name in enumerate(model.names):
        if name in ("alpha", "beta", "gamma"):
            continue
        for sign in (-1.0, 1.0):
            moved = params.copy()
            moved[j] *= 1.0 + sign * _LENGTH_STEP
            out.append(moved)
    return out


Widths = dict[str, np.ndarray]  # sigma_0, sigma_1, beta per histogram kind


def _widths_for(data: list[HistogramData], widths: Widths, default: float) -> np.ndarray:
    """Start widths (len(data), 3) for the histograms of ``data``."""
    rows = [widths.get(h.kind, np.array([default, 0.0, 0.0])) for h in data]
    return np.array(rows, dtype=float)


def _updated(widths: Widths, data: list[HistogramData], fit: ProfileFit) -> Widths:
    out = dict(widths)
    out.update({h.kind: fit.widths[i].copy() for i, h in enumerate(data)})
    return out


def _narrowest(widths: Widths, default: float) -> float:
    return min((float(w[0]) for w in widths.values()), default=default)


def _first_stage(
    hist: RadialHistograms,
    model: LatticeModel,
    params: np.ndarray,
    kinds: Sequence[str],
    s_final: float,
) -> tuple[np.ndarray, Widths]:
    """Coarsest stage from several starting points; the best fit (least cost) wins.

    All starts are fitted to the same data (range and binning fixed by the start cell)
    so that their costs compare.
    """
    delta, n_lines = STAGES[0]
    s_hi = range_for(model, params, n_lines, s_final)
    ranges = _ranges(hist, model, params, kinds, s_hi)
    sigma = _BINS_PER_SIGMA * hist.bin_width
    reference = _stage_data(hist, model, params, ranges, delta, sigma)
    check_lines(reference, model)
    ranges = {h.kind: ranges[h.kind] for h in reference}
    widths = _widths_for(reference, {}, sigma)
    best: tuple[ProfileFit, list[HistogramData]] | None = None
    for start in _variants(model, params):
        data = _stage_data(hist, model, start, ranges, delta, sigma)
        if [h.kind for h in data] != list(ranges) or sum(h.n_lines for h in data) <= model.n_free:
            continue
        fit = fit_profile(
            model, data, start, widths, delta=delta, fit_beta=False, max_nfev=_PROBE_NFEV
        )
        if best is None or fit.cost < best[0].cost:
            best = (fit, data)
    assert best is not None  # the unmoved start always qualifies
    fit = fit_profile(model, best[1], best[0].params, best[0].widths, delta=delta, fit_beta=False)
    return fit.params, _updated({}, best[1], fit)


def _final(
    hist: RadialHistograms,
    model: LatticeModel,
    params: np.ndarray,
    widths: Widths,
    kinds: Sequence[str],
    s_final: float,
) -> tuple[ProfileFit, list[HistogramData]]:
    """Unbroadened fit of the full range, reweighted per histogram and fitted again."""
    ranges = _ranges(hist, model, params, kinds, s_final)
    default = _BINS_PER_SIGMA * hist.bin_width
    sigma = _narrowest(widths, default)
    fitted: tuple[ProfileFit, list[HistogramData]] | None = None
    for _ in range(3):
        data = _stage_data(hist, model, params, ranges, 0.0, sigma)
        check_lines(data, model)
        width = float(data[0].edges[1] - data[0].edges[0])
        if fitted is not None and width >= 0.999 * float(np.diff(fitted[1][0].edges[:2])[0]):
            break  # no finer binning possible
        start = _widths_for(data, widths, default)
        fit = fit_profile(model, data, params, start, delta=0.0, fit_beta=True)
        fitted = (fit, data)
        narrowest = float(np.min(fit.widths[:, 0]))
        if narrowest >= 0.8 * _BINS_PER_SIGMA * width:
            break
        params, widths, sigma = fit.params, _updated(widths, data, fit), narrowest
    assert fitted is not None
    fit, data = fitted
    if max(fit.chi2_reduced) <= 1.0:
        return fit, data
    for h, chi2 in zip(data, fit.chi2_reduced, strict=True):
        h.weight = 1.0 / max(chi2, 1.0)  # inflate errors for misfit, never shrink them
    fit = fit_profile(model, data, fit.params, fit.widths, delta=0.0, fit_beta=True)
    return fit, data


def run_stages(
    hist: RadialHistograms,
    model: LatticeModel,
    params: np.ndarray,
    kinds: Sequence[str],
    s_final: float,
) -> tuple[ProfileFit, list[HistogramData]]:
    """All stages from the start ``params``; the final fit and the data it used."""
    params, widths = _first_stage(hist, model, params, kinds, s_final)
    default = _BINS_PER_SIGMA * hist.bin_width
    for delta, n_lines in STAGES[1:]:
        s_hi = range_for(model, params, n_lines, s_final)
        ranges = _ranges(hist, model, params, kinds, s_hi)
        data = _stage_data(hist, model, params, ranges, delta, _narrowest(widths, default))
        check_lines(data, model)
        start = _widths_for(data, widths, default)
        fit = fit_profile(model, data, params, start, delta=delta, fit_beta=False)
        params, widths = fit.params, _updated(widths, data, fit)
        if s_hi >= s_final:
            break
    return _final(hist, model, params, widths, kinds, s_final)
