"""Choosing among refined lattices of one still, and how much to trust the choice.

Each refined candidate ``F`` (with its own error scales ``sigma_t`` per axis on the
Ewald sphere and ``sigma_s`` of the excitation errors) is given the log-likelihood
ratio of its peaks against background (peaks at random places),

.. math::

    \\ell_{F,i} = -\\frac{|e_i|^2}{2 \\sigma_t^2} - \\frac{s_i^2}{2 \\sigma_s^2}
                - \\ln\\left(2 \\pi \\sigma_t^2 \\sqrt{2 \\pi}\\, \\sigma_s\\right)
                + \\ln\\left(\\pi q_{max}^2 \\cdot 2 R\\right),
    \\qquad L_F = \\sum_{i \\in F} \\ell_{F,i},

for every peak ``i`` it indexes (distance ``e_i`` from its predicted position,
excitation error ``s_i``); a peak it does not index counts 0, as background spread over
the pattern (``pi q_max^2``) and over the excitation range ``2 R`` (``R`` the given
profile radius).  Each explained peak is worth about ``ln(10^6)``; a lattice that drops
peaks to fit the rest more tightly, or the flat-sphere twin with its wider excitation
errors, loses.  The best candidate maximises ``L``.  Its confidence is

.. math::

    C = 1 - \\exp\\left(-\\frac{L_F(F) - \\max_{F' \\neq F} L_{F'}(F)}{n_F}\\right),

with ``L_{F'}(F)`` an alternative's sum over the ``n_F`` peaks that ``F`` indexes: the
evidence per peak for ``F`` against the best other explanation of the same peaks.  An
alternative explaining them as well (exact zone axes, pseudo-symmetric projections)
gives ``C`` near 0; a second crystal on the same frame (other peaks) does not lower it.
"""

from __future__ import annotations

import math

import numpy as np

from crystalscope.index._stills_kernels import distinct_rotations
from crystalscope.index._stills_refine import Fit

__all__ = ["choose_fit", "distinct_fits", "log_background", "log_likelihood"]


def distinct_fits(fits: list[Fit], rotations: np.ndarray, tol_deg: float) -> list[Fit]:
    """Fits whose orientations differ by more than ``tol_deg`` modulo the lattice
    rotations, keeping the one indexing more peaks."""
    if not fits:
        return []
    fits = sorted(fits, key=lambda f: -f.n_indexed)
    rots = np.array([f.model.rot for f in fits])
    keep, _ = distinct_rotations(
        rots, np.arange(len(fits)), rotations, float(np.cos(np.radians(tol_deg))), len(fits)
    )
    return [fits[i] for i in keep]


def log_background(q_max: float, profile_radius: float) -> float:
    """``ln(pi q_max^2 2 R)``: the log volume over which background peaks spread."""
    return math.log(math.pi * q_max**2 * 2.0 * profile_radius)


def _per_peak(fit: Fit, log_bg: float) -> np.ndarray:
    """``l_{F,i}`` for every peak (0 where ``fit`` does not index it)."""
    sigma_t, sigma_s = fit.model.sigma_t, fit.model.sigma_s
    e2 = np.sum(fit.resid**2, axis=1)
    norm = math.log(2.0 * math.pi * sigma_t**2 * math.sqrt(2.0 * math.pi) * sigma_s)
    ell = -e2 / (2.0 * sigma_t**2) - fit.s**2 / (2.0 * sigma_s**2) - norm + log_bg
    return np.where(fit.indexed, ell, 0.0)


def log_likelihood(fit: Fit, log_bg: float) -> float:
    """``L_F``: the fit's log-likelihood ratio against background, summed over its peaks."""
    return float(_per_peak(fit, log_bg).sum())


def choose_fit(fits: list[Fit], log_bg: float) -> tuple[Fit, float]:
    """The best of distinct fits of the same peaks, and its confidence (0..1)."""
    ells = [_per_peak(f, log_bg) for f in fits]
    totals = [float(e.sum()) for e in ells]
    best = int(np.argmax(totals))
    mine = fits[best].indexed
    rival = max((float(e[mine].sum()) for i, e in enumerate(ells) if i != best), default=0.0)
    evidence = (totals[best] - max(rival, 0.0)) / max(int(mine.sum()), 1)
    return fits[best], float(max(0.0, 1.0 - math.exp(-evidence)))
