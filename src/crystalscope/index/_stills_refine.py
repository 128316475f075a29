"""Least-squares refinement of one lattice on one still: orientation, shift, cell, profile.

The model of peak ``i`` indexed as ``h_i`` (see :mod:`crystalscope.index.stills`):

* lattice point ``p_i = R B(c) h_i`` (lab frame, 1/A), ``R`` the orientation, ``B(c)`` of
  the cell parameters ``c``;
* its peak on the Ewald sphere ``p'_i = k (p_i + k0)/|p_i + k0| - k0``
  (``k = 1/lambda``, ``k0 = (0, 0, k)``), its excitation error
  ``s_i = k - |p_i + k0|``;
* the observed vector ``q_i(d) = (r_i/|r_i| - z)/lambda`` with ``r_i = r_i0 + J_i d``
  for the detector shift ``d = (dx, dy)`` (mm).

Gauss-Newton minimises

.. math::

    \\chi^2 = \\sum_i \\frac{|q_i(d) - p'_i|^2}{\\sigma_t^2}
            + \\sum_i \\frac{s_i^2}{\\sigma_s^2}
            + \\sum_j \\left(\\frac{c_j - c_{j,0}}{0.01\\, c_{j,0}}\\right)^2

over small rotations ``R <- exp([w]x) R``, ``d`` and the free cell parameters of the
Bravais lattice (the last term, a 1 % prior on the known cell, only when the cell is
refined).  The peak positions fix the orientation in the detector plane and the shift;
the excitation errors fix the tilt, which for a flat Ewald sphere (electrons) the
positions hardly constrain.  Assignments ``h_i`` are redone between rounds with
tolerances shrinking to the final ones; ``sigma_t`` and ``sigma_s`` are re-estimated
robustly (median absolute values) from the peaks within the position tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from crystalscope.index._stills_gn import gauss_newton_steps
from crystalscope.index._stills_kernels import assign_peaks
from crystalscope.index._stills_setup import FrameGeometry, cell_b_matrix

__all__ = ["Fit", "FitOptions", "Model", "cell_groups", "indexed_mask", "refine_lattice"]

_MAD = 1.4826  # sigma of a Gaussian per median absolute deviation
_ROUNDS = ((3.0, 2.0), (2.0, 1.5), (1.2, 1.0), (1.0, 1.0))


def cell_groups(
    system: str, unique_axis: str, rhombohedral_axes: bool
) -> tuple[tuple[int, ...], ...]:
    """Free cell parameters of a crystal family: each group of indices into
    ``(a, b, c, alpha, beta, gamma)`` moves together."""
    if system == "triclinic":
        return ((0,), (1,), (2,), (3,), (4,), (5,))
    if system == "monoclinic":
        return ((0,), (1,), (2,), ({"a": 3, "b": 4, "c": 5}[unique_axis],))
    if system == "orthorhombic":
        return ((0,), (1,), (2,))
    if system in ("trigonal", "hexagonal") and rhombohedral_axes:
        return ((0, 1, 2), (3, 4, 5))
    if system in ("tetragonal", "trigonal", "hexagonal"):
        return ((0, 1), (2,))
    return ((0, 1, 2),)


@dataclass(frozen=True)
class FitOptions:
    """Settings of one refinement (see :class:`~crystalscope.index.stills.IndexingParams`)."""

    tolerance_px: float
    profile_radius: float
    refine_shift: bool
    refine_cell: bool
    refine_profile_radius: bool
    cell_groups: tuple[tuple[int, ...], ...]
    max_shift_mm: float
    min_indexed: int


@dataclass(frozen=True)
class Model:
    """Orientation ``rot``, cell parameters, shift (mm, relative to the frame's start),
    error scales ``sigma_t`` (per axis) and ``sigma_s`` (1/A), profile radius (1/A)."""

    rot: np.ndarray
    cell: np.ndarray
    shift: np.ndarray
    sigma_t: float
    sigma_s: float
    profile_radius: float

    @property
    def ub(self) -> np.ndarray:
        """``UB = R B`` (1/A)."""
        return self.rot @ cell_b_matrix(self.cell)


@dataclass(frozen=True)
class Fit:
    """A refined lattice and its final assignment of the frame's peaks."""

    model: Model
    hkl: np.ndarray
    indexed: np.ndarray
    resid: np.ndarray
    s: np.ndarray
    n_indexed: int
    rms_residual: float
    rms_excitation: float
    rms_residual_px: float
    bowl: float
    bowl_error: float


@lru_cache(maxsize=32)
def _group_rows(groups: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """The cell groups as an int array, rows padded with -1 (for the kernels)."""
    out = np.full((max(len(groups), 1), 6), -1, dtype=np.int64)
    for j, group in enumerate(groups):
        out[j, : len(group)] = group
    return out


def _gauss_newton(
    model: Model, geom: FrameGeometry, hkl: np.ndarray, opts: FitOptions, cell0: np.ndarray
) -> Model:
    """Two damped Gauss-Newton steps on the peaks ``hkl`` (all rows used; the kernel is
    :func:`~crystalscope.index._stills_gn.gauss_newton_steps`)."""
    n_cell = len(opts.cell_groups) if opts.refine_cell else 0
    rot, cell, shift = gauss_newton_steps(
        model.rot, model.cell, model.shift, cell0, _group_rows(opts.cell_groups), n_cell,
        (geom.r0, geom.jx, geom.jy, geom.wavelength), hkl.astype(float),
        (model.sigma_t, model.sigma_s), opts.refine_shift, 2,
    )  # fmt: skip
    return replace(model, rot=rot, cell=cell, shift=shift if opts.refine_shift else model.shift)


def _robust_sigmas(resid: np.ndarray, s: np.ndarray, model: Model, px: float) -> Model:
    """``sigma_t`` (per axis) and ``sigma_s`` from median absolute values, with floors."""
    r2 = np.sum(resid * resid, axis=1)
    # |e|^2 / (2 sigma^2) is chi^2 with 2 degrees of freedom: median = ln(4) sigma^2
    sigma_t = float(np.sqrt(np.median(r2) / np.log(4.0)))
    sigma_s = _MAD * float(np.median(np.abs(s)))
    return replace(model, sigma_t=max(sigma_t, 0.05 * px), sigma_s=max(sigma_s, 1e-5, 0.02 * px))


def _select(
    hkl: np.ndarray, resid: np.ndarray, s: np.ndarray, tol_t: np.ndarray, tol_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks within the position tolerance, and those also within the s tolerance."""
    nonzero = np.any(hkl != 0, axis=1)
    near = nonzero & (np.sum(resid * resid, axis=1) <= tol_t * tol_t)
    return near, near & (np.abs(s) <= tol_s)


def refine_lattice(
    rot: np.ndarray,
    cell0: np.ndarray,
    geom: FrameGeometry,
    opts: FitOptions,
    shift0: np.ndarray | None = None,
    floor: int = 0,
) -> Fit | None:
    """Refine a lattice from a starting orientation; None when too few peaks fit.

    ``shift0`` (mm, relative to the geometry's start) is the starting shift.  Rounds of
    (assign, select, two Gauss-Newton steps, re-estimate the error scales)
    with position tolerances ``f * tolerance_px`` pixels and excitation tolerances
    ``g * profile_radius`` for ``(f, g)`` in ``(3, 2), (2, 1.5), (1.2, 1), (1, 1)``.
    With ``refine_profile_radius`` the radius becomes ``3 sigma_s`` (at most the given
    radius) after each round.  A start that selects fewer than ``floor`` peaks in the
    first round is given up (it cannot beat a lattice already found).
    """
    px = float(np.median(geom.px_q))
    shift = np.zeros(2) if shift0 is None or not opts.refine_shift else np.array(shift0, float)
    model = Model(rot, cell0.copy(), shift, 0.3 * px, opts.profile_radius / 3, 0.0)
    model = replace(model, profile_radius=opts.profile_radius)
    for f_t, f_s in _ROUNDS:
        hkl, resid, s = assign_peaks(model.ub, geom.q(model.shift), geom.wavelength)
        near, use = _select(
            hkl, resid, s, f_t * opts.tolerance_px * geom.px_q, f_s * model.profile_radius
        )
        if use.sum() < max(opts.min_indexed, 4, floor if f_t == _ROUNDS[0][0] else 0):
            return None
        model = _robust_sigmas(resid[near], s[near], model, px)
        model = _gauss_newton(model, geom.subset(use), hkl[use], opts, cell0)
        if float(np.hypot(*model.shift)) > opts.max_shift_mm:
            return None
        if opts.refine_profile_radius:  # never wider than the given radius
            radius = min(3.0 * model.sigma_s, opts.profile_radius)
            model = replace(model, profile_radius=radius)
    return _final(model, geom, opts)


def indexed_mask(model: Model, geom: FrameGeometry, opts: FitOptions) -> np.ndarray:
    """Peaks of ``geom`` that ``model`` indexes with the final tolerances."""
    hkl, resid, s = assign_peaks(model.ub, geom.q(model.shift), geom.wavelength)
    return _select(hkl, resid, s, opts.tolerance_px * geom.px_q, model.profile_radius)[1]


def _final(model: Model, geom: FrameGeometry, opts: FitOptions) -> Fit | None:
    hkl, resid, s = assign_peaks(model.ub, geom.q(model.shift), geom.wavelength)
    use = _select(hkl, resid, s, opts.tolerance_px * geom.px_q, model.profile_radius)[1]
    n = int(use.sum())
    if n < max(opts.min_indexed, 4):
        return None
    rms = float(np.sqrt(np.mean(np.sum(resid[use] ** 2, axis=1))))
    rms_s = float(np.sqrt(np.mean(s[use] ** 2)))
    rms_px = float(np.sqrt(np.mean(np.sum(resid[use] ** 2, axis=1) / geom.px_q[use] ** 2)))
    q2 = np.sum(geom.q(model.shift)[use] ** 2, axis=1)
    bowl, bowl_error = _bowl(q2, s[use], geom.wavelength)
    return Fit(model, hkl.astype(np.int64), use, resid, s, n, rms, rms_s, rms_px, bowl, bowl_error)


def _bowl(q2: np.ndarray, s: np.ndarray, wavelength: float) -> tuple[float, float]:
    """Slope of the excitation errors against ``|q|^2`` in units of ``lambda``, and its
    standard error.

    On a flat Ewald sphere the lattice turned by 180 degrees about the beam puts every
    peak at the same place but its lattice points off the sphere by about
    ``lambda |q|^2``: its excitation errors grow along a bowl with slope ``~ +-1``
    (in units of ``lambda``), the right lattice's do not.
    """
    if len(q2) < 4 or np.ptp(q2) <= 0:
        return 0.0, np.inf
    x = q2 - q2.mean()
    slope = float(np.sum(x * (s - s.mean())) / np.sum(x * x))
    scatter = s - s.mean() - slope * x
    error = float(np.sqrt(np.sum(scatter**2) / (len(s) - 2) / np.sum(x * x)))
    return slope / wavelength, error / wavelength
