"""Per-crystal scaling and post-refinement against a reference, and delta-CC1/2 rejection.

Every crystal ``c`` has a scale ``G``, a relative B factor ``B`` (A^2), two small tilt
angles ``alpha`` (about lab x) and ``beta`` (about lab y) and a profile radius ``R``
(1/A).  Observation ``j`` of reflection ``h`` is modelled as

.. math::

    I_j \\approx G\\, e^{-B / (2 d^2)}\\, p(s_j, R)\\, I_h ,\\qquad
    s_j = \\frac{1}{\\lambda} - \\lvert R_y(\\beta) R_x(\\alpha)\\, \\mathbf{q}_j
          + \\mathbf{k}_0 \\rvert ,

with ``q_j = UB h`` as indexed (the table's ``qx, qy, qz``) and ``p`` the partiality
model (:mod:`crystalscope.integrate.partiality`).  Electron stills cut an almost flat
Ewald sphere, so a tilt changes ``s`` by about ``beta q_x - alpha q_y``: the two angles
are what the spot positions determine worst and what the intensities determine best.

:func:`fit_crystals` fits the free parameters of every crystal against a reference
(``I_ref``, from all *other* crystals) by minimising the Huber loss (threshold 2) of
``(I_j - m_j) / sigma'_j``, ``sigma'^2 = sigma^2 + (e G e^{-B/2d^2} I_ref)^2``, plus weak
Gaussian priors (tilts 0 +- max_tilt/2, ``ln R`` at ``ln R0 +- ln(f)/2``, ``B`` 0 +-
max_abs_b/2), with a bounded Levenberg-Marquardt in numba, one crystal per thread.  The
first post-refinement cycle starts the tilts from the best point of a coarse-to-fine
grid over ``+-max_tilt``.  :func:`delta_cc_rejection` rejects crystals by delta-CC1/2 (Assmann,
Brehm & Diederichs 2016) with CC1/2 from the sigma-tau formula (Karplus & Diederichs
2012), updated per crystal in O(observations of that crystal).

See ``docs/algorithms/merging.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crystalscope.merge import _kernels as kern
from crystalscope.merge._params import MergeParams
from crystalscope.merge._prepare import Prepared

__all__ = [
    "CrystalState",
    "accumulate",
    "clipped_mean_std",
    "correlation_rejection",
    "crystal_correlations",
    "delta_cc_rejection",
    "fit_crystals",
    "initial_state",
    "normalise",
    "observation_model",
    "reference_intensities",
]

_LN_G_RANGE = 20.0  # ln G stays within +- this of its start


@dataclass
class CrystalState:
    """Per-crystal parameters and bookkeeping (arrays of length ``n_crystals``).

    ``x`` is ``(n, 5)``: ``ln G, B (A^2), tilt_x (rad), tilt_y (rad), ln R (1/A)``.
    """

    x: np.ndarray
    r0: np.ndarray
    rejected: np.ndarray
    reason: np.ndarray  # object array of str, "" for kept crystals
    n_obs: np.ndarray
    cc_ref: np.ndarray
    delta_cc: np.ndarray

    def reject(self, which: np.ndarray, reason: str | np.ndarray) -> int:
        """Reject crystals ``which`` (bool mask) not rejected yet; returns how many."""
        new = which & ~self.rejected
        self.rejected |= new
        self.reason[new] = reason[new] if isinstance(reason, np.ndarray) else reason
        return int(np.count_nonzero(new))


def initial_state(prep: Prepared, params: MergeParams) -> CrystalState:
    """``G = 1, B = 0``, no tilt, ``R`` from the table; rejects crystals without data."""
    nc = prep.n_crystals
    x = np.zeros((nc, kern.N_PARAMS))
    r0 = prep.r0.copy()
    needs_radius = params.partiality != "unity"
    x[:, kern.LN_R] = np.log(np.where(np.isfinite(r0) & (r0 > 0), r0, 1e-3))
    state = CrystalState(
        x=x,
        r0=r0,
        rejected=np.zeros(nc, dtype=bool),
        reason=np.full(nc, "", dtype=object),
        n_obs=np.diff(prep.starts).astype(np.int64),
        cc_ref=np.full(nc, np.nan),
        delta_cc=np.full(nc, np.nan),
    )
    few = state.n_obs < params.min_observations
    reasons = np.array(
        [f"too few observations ({n} < {params.min_observations})" for n in state.n_obs],
        dtype=object,
    )
    state.reject(few, reasons)
    if needs_radius:
        state.reject(~(np.isfinite(r0) & (r0 > 0)), "no valid profile radius")
    return state


def observation_model(
    prep: Prepared, state: CrystalState, params: MergeParams, wavelength: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per observation: refined excitation error ``s`` (1/A), partiality ``p``, and
    ``g = G exp(-B / (2 d^2))``."""
    return kern.evaluate(
        prep.starts,
        state.x,
        prep.q,
        prep.q2,
        prep.h2,
        1.0 / wavelength,
        kern.MODEL_CODES[params.partiality],
        float(params.bandwidth),
    )


def accumulate(
    index: np.ndarray,
    size: int,
    intensity: np.ndarray,
    sigma: np.ndarray,
    factor: np.ndarray,
    mask: np.ndarray,
) -> np.ndarray:
    """Weighted sums of full-intensity estimates per ``index`` value, shape ``(size, 6)``.

    With ``f = G e^{-B/2d^2} p`` (``factor``), ``x = I / f`` and ``w = f^2``, the columns
    are ``sum w, sum w x (= sum f I), sum w x^2 (= sum I^2), sum w^2, n, sum f^2 sigma^2``.
    """
    f = np.where(mask, factor, 0.0)
    sel = mask & (f > 0)
    idx = index[sel]
    fs, i_s = f[sel], intensity[sel]
    columns = (fs * fs, fs * i_s, i_s * i_s, fs**4, np.ones(len(idx)), (fs * sigma[sel]) ** 2)
    return np.column_stack([np.bincount(idx, weights=c, minlength=size) for c in columns])


def reference_intensities(
    prep: Prepared, factor: np.ndarray, merged: np.ndarray, min_other: int = 2
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-own-crystal-out reference intensity of each observation.

    ``merged`` marks the observations in the reference.  Returns ``(I_ref, usable, sums)``:
    ``I_ref_j = (sum f I - own) / (sum f^2 - own)`` over the other crystals' observations
    of the same reflection, usable where at least ``min_other`` of them exist.
    """
    sums = accumulate(prep.hkl_index, prep.n_hkl, prep.intensity, prep.sigma, factor, merged)
    n_runs = len(prep.run_hkl)
    own = accumulate(prep.run_id, n_runs, prep.intensity, prep.sigma, factor, merged)
    other = sums[prep.run_hkl] - own
    run_ok = (other[:, 4] >= min_other - 0.5) & (other[:, 0] > 1e-12 * sums[prep.run_hkl, 0])
    ref_run = np.where(run_ok, other[:, 1] / np.where(run_ok, other[:, 0], 1.0), 0.0)
    return ref_run[prep.run_id], run_ok[prep.run_id], sums


def _bounds_and_priors(
    state: CrystalState, params: MergeParams
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nc = len(state.x)
    tilt = math.radians(params.max_tilt_deg)
    ln_f = math.log(params.max_radius_factor)
    ln_r0 = np.log(np.where(np.isfinite(state.r0) & (state.r0 > 0), state.r0, 1e-3))
    bounds = np.zeros((nc, 2, kern.N_PARAMS))
    prior = np.zeros((nc, 2, kern.N_PARAMS))
    bounds[:, 0, kern.LN_G] = state.x[:, kern.LN_G] - _LN_G_RANGE
    bounds[:, 1, kern.LN_G] = state.x[:, kern.LN_G] + _LN_G_RANGE
    bounds[:, 0, kern.B], bounds[:, 1, kern.B] = -params.max_abs_b, params.max_abs_b
    prior[:, 1, kern.B] = params.max_abs_b / 2
    for i in (kern.TILT_X, kern.TILT_Y):
        bounds[:, 0, i], bounds[:, 1, i] = -tilt, tilt
        prior[:, 1, i] = tilt / 2
    bounds[:, 0, kern.LN_R], bounds[:, 1, kern.LN_R] = ln_r0 - ln_f, ln_r0 + ln_f
    prior[:, 0, kern.LN_R] = ln_r0
    prior[:, 1, kern.LN_R] = ln_f / 2 if ln_f > 0 else 0.0
    geometry = params.refines_geometry
    free = np.array(
        [params.scale, params.b_factor, geometry, geometry, geometry and ln_f > 0],
        dtype=np.bool_,
    )
    return bounds, prior, free


def fit_crystals(
    prep: Prepared,
    state: CrystalState,
    reference: np.ndarray,
    usable: np.ndarray,
    params: MergeParams,
    wavelength: float,
    *,
    grid: bool = False,
) -> np.ndarray:
    """Refine the free parameters of every kept crystal against ``reference`` (in place).

    Crystals with fewer than ``min_observations`` usable observations, or whose fit
    fails, are rejected.  Returns the final cost per crystal (NaN where not fitted).
    """
    n_usable = _per_crystal_counts(prep, usable)
    few = n_usable < params.min_observations
    reasons = np.array(
        [f"too few observations with a reference ({n} < {params.min_observations})"
         for n in n_usable],
        dtype=object,
    )  # fmt: skip
    state.reject(few & ~state.rejected, reasons)
    bounds, prior, free = _bounds_and_priors(state, params)
    if not np.any(free):
        return np.full(prep.n_crystals, np.nan)
    data = (
        prep.q, prep.q2, prep.h2, reference, prep.intensity, usable,
        1.0 / wavelength, kern.MODEL_CODES[params.partiality], float(params.bandwidth),
    )  # fmt: skip
    grid = grid and bool(free[kern.TILT_X])
    cost, _ = kern.fit_crystals(
        prep.starts, state.x, ~state.rejected, data, prep.sigma, free, bounds, prior,
        grid, params.model_error,
    )  # fmt: skip
    bad = ~state.rejected & ~(np.isfinite(cost) & np.all(np.isfinite(state.x), axis=1))
    state.reject(bad, "scaling failed (no finite solution)")
    return cost


def _per_crystal_counts(prep: Prepared, mask: np.ndarray) -> np.ndarray:
    counts = np.bincount(prep.obs_crystal[mask], minlength=prep.n_crystals)
    return counts.astype(np.int64)


def normalise(state: CrystalState) -> None:
    """Fix the degenerate overall scale and B: mean ``ln G`` and mean ``B`` of the kept
    crystals become 0 (the reference absorbs them)."""
    kept = ~state.rejected
    if np.any(kept):
        state.x[:, kern.LN_G] -= np.mean(state.x[kept, kern.LN_G])
        state.x[:, kern.B] -= np.mean(state.x[kept, kern.B])


def delta_cc_rejection(
    prep: Prepared, state: CrystalState, factor: np.ndarray, merged: np.ndarray,
    params: MergeParams,
) -> tuple[float, int]:  # fmt: skip
    """Delta-CC1/2 of every kept crystal; rejects outliers (``params.reject_delta_cc``).

    ``delta_c = CC1/2(all) - CC1/2(all but c)`` (sigma-tau CC1/2 of the weighted
    full-intensity estimates).  A crystal whose removal raises CC1/2 has a negative
    delta; crystals with a negative delta below ``mean - reject_delta_cc * std`` are
    rejected, the mean and standard deviation taken over the kept crystals with the
    outliers clipped (:func:`clipped_mean_std`), so that a few wild crystals cannot
    widen the threshold until they pass it.  Returns ``(CC1/2 of all data, number newly rejected)``.
    """
    sums = accumulate(prep.hkl_index, prep.n_hkl, prep.intensity, prep.sigma, factor, merged)
    runs = accumulate(prep.run_id, len(prep.run_hkl), prep.intensity, prep.sigma, factor, merged)
    cc_all, delta = kern.delta_cc_half(
        np.ascontiguousarray(sums[:, :5]), prep.run_hkl, np.ascontiguousarray(runs[:, :5]),
        prep.crystal_runs,
    )  # fmt: skip
    delta[state.rejected] = np.nan
    state.delta_cc = delta
    if params.reject_delta_cc is None:
        return float(cc_all), 0
    values = delta[np.isfinite(delta)]
    if len(values) < 3:
        return float(cc_all), 0
    mean, std = clipped_mean_std(values, params.reject_delta_cc)
    threshold = mean - params.reject_delta_cc * std
    low = np.isfinite(delta) & (delta < threshold) & (delta < 0.0)
    reasons = np.array(
        [f"delta-CC1/2 {d:.3g} < {threshold:.3g} (mean - {params.reject_delta_cc:g} std)"
         for d in np.where(low, delta, 0.0)],
        dtype=object,
    )  # fmt: skip
    return float(cc_all), state.reject(low, reasons)


def clipped_mean_std(values: np.ndarray, k: float, max_iter: int = 20) -> tuple[float, float]:
    """Mean and standard deviation of ``values`` after iteratively leaving out those more
    than ``k`` standard deviations from the mean (both sides)."""
    keep = np.ones(len(values), dtype=bool)
    for _ in range(max_iter):
        mean, std = float(np.mean(values[keep])), float(np.std(values[keep]))
        new = np.abs(values - mean) <= k * std
        if std == 0.0 or new.sum() < 3 or np.array_equal(new, keep):
            break
        keep = new
    return float(np.mean(values[keep])), float(np.std(values[keep]))


def correlation_rejection(
    prep: Prepared, state: CrystalState, usable: np.ndarray, params: MergeParams
) -> int:
    """Reject crystals whose CC with the reference is not significantly positive.

    Fisher's ``z = atanh(CC) sqrt(n - 3)`` over the ``n`` usable observations of the
    crystal (``state.cc_ref``) must reach ``params.min_cc_z``; crystals without a CC
    (fewer than 3 usable observations, or no spread) are not judged.  Returns how many
    crystals were newly rejected.
    """
    if params.min_cc_z is None:
        return 0
    n = _per_crystal_counts(prep, usable).astype(float)
    judged = np.isfinite(state.cc_ref)  # NaN: too few points or no spread, not judged
    cc = np.clip(np.where(judged, state.cc_ref, 1.0), -0.999999, 0.999999)
    z = np.arctanh(cc) * np.sqrt(np.maximum(n - 3.0, 0.0))
    low = judged & (z < params.min_cc_z)
    reasons = np.array(
        [f"no correlation with the other crystals (CC {c:.3f} over {int(k)} observations)"
         for c, k in zip(cc, n, strict=True)],
        dtype=object,
    )  # fmt: skip
    return state.reject(low, reasons)


def crystal_correlations(
    prep: Prepared, observed: np.ndarray, model: np.ndarray, usable: np.ndarray
) -> np.ndarray:
    """Pearson CC of observed and modelled intensities per crystal (NaN: < 3 points)."""
    return kern.crystal_cc(prep.starts, observed, model, usable)
