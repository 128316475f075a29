"""Whole-profile (Pawley-type) fit of predicted lines to the radial histograms.

Model of the counts in bin ``b`` (edges ``x_b^-, x_b^+``) of histogram ``H`` (the
powder pattern or the pair-distance histogram):

.. math::

    y_b = \\sum_k I_k \\left[\\Phi\\left(\\frac{x_b^+ - \\mu_k}{\\sigma_k}\\right)
          - \\Phi\\left(\\frac{x_b^- - \\mu_k}{\\sigma_k}\\right)\\right]
          + \\sum_m c_m B_m(x_b)

with one line ``k`` per group of lattice vectors of equal length ``L_k(p)`` (``p`` the
free cell parameters, :mod:`._refine_lattice`), free intensities ``I_k >= 0`` and a
non-negative cubic B-spline background ``c_m >= 0``.  Line positions and widths are

.. math::

    \\mu_k = L_k + \\frac{\\beta_H}{2 L_k}, \\qquad
    \\sigma_k^2 = \\sigma_{0,H}^2 + (\\sigma_{1,H}^2 + \\delta^2) L_k^2 .

``sigma_0`` is the peak-position error (constant in ``1/d`` on a flat detector),
``sigma_1`` a relative spread (cell variation between crystals).  ``beta / (2 L)`` is
the second-order bias of the length of a noisy vector: noise perpendicular to a vector
of length ``L`` lengthens it by ``<e_perp^2> / (2 L)`` on average (the Rice bias), and
projecting reciprocal-lattice points onto the Ewald sphere, which drops their
excitation errors from ``q``, shortens it by ``<s^2> / (2 L)``; ``beta`` (1/A^2, either
sign) is their net.  ``delta`` is an artificial relative broadening used by the
coarse-to-fine schedule only.

The intensities and backgrounds enter linearly and are eliminated (variable
projection): for given nonlinear parameters ``theta`` (cell, ``sigma_0``, ``sigma_1``,
``beta``) they are the non-negative least-squares solution ``c(theta)``, weights
``w_b = 1 / max(y_b, 1)`` (Poisson).  ``theta`` is fitted by bounded least squares
(``scipy.optimize.least_squares``, trust region reflective) with Kaufman's Jacobian
``J = (1 - P) W^(1/2) (dA/dtheta) c``, ``P`` the projector onto the columns of
``W^(1/2) A`` whose coefficients are not at their bound.  ``(J^T J)^-1`` is the
covariance of ``theta`` with the intensities marginalised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np
from scipy import interpolate, optimize, sparse
from scipy.sparse import linalg as sparse_linalg

from crystalscope.index._refine_lattice import LatticeModel

__all__ = ["HistogramData", "ProfileFit", "fit_profile", "profile_matrix"]

_SQRT2 = float(np.sqrt(2.0))
_N_WIDTH = 3  # sigma_0, sigma_1, beta per histogram
_N_SPLINE_INTERVALS = 6
_CUTOFF = 7.0  # profiles are evaluated within this many sigma of their centre


@dataclass
class HistogramData:
    """One histogram restricted to its fit range.

    Attributes
    ----------
    kind : {"powder", "pairs"}
    edges : numpy.ndarray, shape (n + 1,)
        Bin edges (1/A).
    counts : numpy.ndarray, shape (n,)
    hkl : numpy.ndarray, shape (m, 3)
        One representative of each predicted line in (and near) the range.
    weight : float
        Weight of the whole histogram (1 / reduced chi^2 of an earlier fit).
    """

    kind: str
    edges: np.ndarray
    counts: np.ndarray
    hkl: np.ndarray
    weight: float = 1.0
    basis: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.basis = _spline_basis(self.edges)

    @property
    def n_lines(self) -> int:
        return len(self.hkl)


@dataclass
class ProfileFit:
    """Result of :func:`fit_profile`."""

    params: np.ndarray  # free cell parameters
    widths: np.ndarray  # (n_hist, 3): sigma_0, sigma_1, beta
    intensities: list[np.ndarray]  # per histogram, per line
    background: list[np.ndarray]  # per histogram, B-spline coefficients
    covariance: np.ndarray  # of the free cell parameters
    chi2_reduced: list[float]  # per histogram, with the weights used
    success: bool
    cost: float = 0.0  # weighted sum of squared residuals


def _spline_basis(edges: np.ndarray) -> np.ndarray:
    """Cubic B-spline basis (n_bins, intervals + 3) over the range of ``edges``."""
    x = 0.5 * (edges[1:] + edges[:-1])
    inner = np.linspace(edges[0], edges[-1], _N_SPLINE_INTERVALS + 1)
    knots = np.concatenate([[inner[0]] * 3, inner, [inner[-1]] * 3])
    n_basis = len(knots) - 4
    basis = interpolate.BSpline(knots, np.eye(n_basis), 3, extrapolate=False)(x)
    return np.nan_to_num(np.asarray(basis, dtype=float))


@numba.njit(cache=True, nogil=True)
def _fill_profiles(edges: np.ndarray, mu: np.ndarray, sigma: np.ndarray, out: np.ndarray) -> None:
    """``out[b, k]``: integral of the unit Gaussian ``(mu_k, sigma_k)`` over bin ``b``.

    Only bins within ``_CUTOFF`` sigma of the centre are filled (the rest stay 0).
    """
    n_bins = edges.shape[0] - 1
    x0 = edges[0]
    width = (edges[n_bins] - x0) / n_bins
    for k in range(mu.shape[0]):
        m, s = mu[k], sigma[k]
        if not (s > 0 and np.isfinite(m)):
            continue
        b0 = max(0, int((m - _CUTOFF * s - x0) / width))
        b1 = min(n_bins, int((m + _CUTOFF * s - x0) / width) + 1)
        if b1 <= b0:
            continue
        scale = 1.0 / (_SQRT2 * s)
        lower = math.erf((edges[b0] - m) * scale)
        for b in range(b0, b1):
            upper = math.erf((edges[b + 1] - m) * scale)
            out[b, k] = 0.5 * (upper - lower)
            lower = upper


def profile_matrix(
    edges: np.ndarray, lengths: np.ndarray, widths: np.ndarray, delta: float
) -> np.ndarray:
    """Bin-integrated unit Gaussians (n_bins, n_lines) at the biased line positions.

    Parameters
    ----------
    edges : numpy.ndarray, shape (n + 1,)
        Uniform bin edges, 1/A.
    lengths : numpy.ndarray, shape (m,)
        Line positions ``L_k`` (1/A).
    widths : sequence of 3 float
        ``sigma_0`` (1/A), ``sigma_1`` (relative), ``beta`` (1/A^2).
    delta : float
        Extra relative broadening.
    """
    sigma0, sigma1, beta = (float(v) for v in widths)
    lengths = np.asarray(lengths, dtype=float)
    mu = lengths + beta / (2.0 * lengths)
    sigma = np.sqrt(sigma0**2 + (sigma1**2 + delta**2) * lengths**2)
    out = np.zeros((len(edges) - 1, len(lengths)))
    _fill_profiles(np.asarray(edges, dtype=float), mu, sigma, out)
    return out


class _Problem:
    """Nonlinear parameters, designs, NNLS solutions and Kaufman's Jacobian of one fit."""

    def __init__(
        self, model: LatticeModel, hists: list[HistogramData], delta: float, theta: np.ndarray
    ) -> None:
        self.model = model
        self.hists = hists
        self.delta = delta
        self.n_free = model.n_free
        self.theta = theta.copy()  # all nonlinear parameters; ``free`` ones are fitted
        self.free = np.ones(len(theta), dtype=bool)
        self.sqrt_w = [np.sqrt(h.weight / np.maximum(h.counts, 1.0)) for h in hists]
        self._x: np.ndarray | None = None
        self.designs: list[np.ndarray] = []
        self.linear: list[np.ndarray] = []
        self.linear_prev: list[np.ndarray] = []
        self.res = np.zeros(0)

    def full(self, x: np.ndarray) -> np.ndarray:
        theta = self.theta.copy()
        theta[self.free] = x
        return theta

    def widths(self, theta: np.ndarray, i: int) -> np.ndarray:
        k = self.n_free + _N_WIDTH * i
        return theta[k : k + _N_WIDTH]

    def design(self, theta: np.ndarray, i: int) -> np.ndarray:
        """Columns (lines, then background) of histogram ``i``."""
        hist = self.hists[i]
        lengths = self.model.one_over_d(theta[: self.n_free], hist.hkl)
        profiles = profile_matrix(hist.edges, lengths, self.widths(theta, i), self.delta)
        return np.hstack([profiles, hist.basis])

    def residuals(self, x: np.ndarray) -> np.ndarray:
        if self._x is not None and np.array_equal(x, self._x):
            return self.res
        theta = self.full(x)
        parts, self.designs, self.linear = [], [], []
        for i, hist in enumerate(self.hists):
            design = self.design(theta, i)
            w = self.sqrt_w[i]
            wa = w[:, None] * design
            previous = self.linear_prev[i] if self.linear_prev else None
            solution = _nnls(wa, w * hist.counts, previous)
            self.designs.append(design)
            self.linear.append(solution)
            parts.append(wa @ solution - w * hist.counts)
        self._x = x.copy()
        self.linear_prev = self.linear
        self.res = np.concatenate(parts)
        return self.res

    def jacobian(self, x: np.ndarray) -> np.ndarray:
        self.residuals(x)
        theta = self.full(x)
        blocks = []
        for i in range(len(self.hists)):
            w, c = self.sqrt_w[i], self.linear[i]
            base = self.designs[i] @ c
            block = np.zeros((len(w), len(theta)))
            for j in self._nonlinear_of(i):
                step = self._step(theta, j)
                shifted = theta.copy()
                shifted[j] += step
                block[:, j] = w * (self.design(shifted, i) @ c - base) / step
            active = c > 0
            if np.any(active):
                block -= _projection(w[:, None] * self.designs[i][:, active], block)
            blocks.append(block)
        return np.vstack(blocks)[:, self.free]

    def _nonlinear_of(self, i: int) -> list[int]:
        own = self.n_free + _N_WIDTH * i
        return [*range(self.n_free), own, own + 1, own + 2]

    def _step(self, theta: np.ndarray, j: int) -> float:
        if j < self.n_free:
            return 1e-6 * max(abs(theta[j]), 1e-3)
        return 1e-7 if (j - self.n_free) % _N_WIDTH != 2 else 1e-11


def _nnls(a: np.ndarray, b: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
    """Non-negative least squares ``min |a x - b|, x >= 0``, warm-started.

    With the solution of a nearby problem, its active set (positive coefficients) is
    tried first: the unconstrained solution on that set, if positive and optimal for
    the Karush-Kuhn-Tucker conditions (no inactive column with a positive gradient
    ``a^T (b - a x)``), is the NNLS solution.  Otherwise scipy's Lawson-Hanson solver runs.
    """
    if previous is not None and np.any(previous > 0):
        active = previous > 0
        x_active = _sparse_lstsq(a[:, active], b)
        if x_active is not None and np.all(x_active > 0):
            x = np.zeros(a.shape[1])
            x[active] = x_active
            gradient = a.T @ (b - a @ x)
            scale = np.sqrt(np.einsum("ij,ij->j", a, a)) * max(float(np.linalg.norm(b)), 1e-300)
            if np.all(gradient[~active] <= 1e-9 * scale[~active]):
                return x
    solution, _ = optimize.nnls(a, b, maxiter=50 * a.shape[1])
    return np.asarray(solution)


def _sparse_lstsq(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """Unconstrained least squares through the sparse normal equations (scaled columns)."""
    norms = np.sqrt(np.einsum("ij,ij->j", a, a))
    if np.any(norms == 0):
        return None
    scaled = sparse.csc_matrix(a / norms)
    gram = (scaled.T @ scaled).tocsc()
    try:
        coef = sparse_linalg.splu(gram).solve(np.asarray(scaled.T @ b))
    except RuntimeError:  # singular
        return None
    if not np.all(np.isfinite(coef)):
        return None
    return np.asarray(coef / norms)


def _projection(columns: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Projection of ``block`` onto the span of ``columns`` (normal equations, tiny ridge).

    The line profiles are local, so the Gram matrix is sparse (banded but for the few
    background columns) and is factorised as such.
    """
    norms = np.sqrt(np.einsum("ij,ij->j", columns, columns))
    scaled = sparse.csc_matrix(columns[:, norms > 0] / norms[norms > 0])
    gram = (scaled.T @ scaled + 1e-9 * sparse.identity(scaled.shape[1])).tocsc()
    coef = sparse_linalg.splu(gram).solve(np.asarray(scaled.T @ block))
    return np.asarray(scaled @ coef)


def _bounds(
    problem: _Problem, l_min: float, bin_width: float, fit_beta: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of all nonlinear parameters; fixes ``beta`` (``free``) when not fitted."""
    theta = problem.theta
    lo = np.zeros(len(theta))
    hi = np.full(len(theta), np.inf)
    for j, name in enumerate(problem.model.names):
        if name in ("alpha", "beta", "gamma"):
            lo[j], hi[j] = 20.0, 160.0
        else:
            lo[j], hi[j] = 0.5 * theta[j], 2.0 * theta[j]
    for i in range(len(problem.hists)):
        k = problem.n_free + _N_WIDTH * i
        lo[k], hi[k + 1] = 0.1 * bin_width, 0.05
        beta_max = 2.0 * l_min * max(theta[k], bin_width)
        lo[k + 2], hi[k + 2] = -beta_max, beta_max
        problem.free[k + 2] = fit_beta
    return lo, hi


def fit_profile(
    model: LatticeModel,
    hists: list[HistogramData],
    params: np.ndarray,
    widths: np.ndarray,
    *,
    delta: float,
    fit_beta: bool,
    max_nfev: int = 50,
) -> ProfileFit:
    """Fit cell and line widths (intensities, backgrounds eliminated) to ``hists``.

    Parameters
    ----------
    model : LatticeModel
        Constraints and lines of the lattice.
    hists : list of HistogramData
        Histograms with their predicted lines.
    params : numpy.ndarray
        Start values of the free cell parameters.
    widths : numpy.ndarray, shape (len(hists), 3)
        Start values of ``sigma_0, sigma_1, beta`` per histogram.
    delta : float
        Artificial relative broadening of this stage.
    fit_beta : bool
        Fit the ``beta / (2 L)`` bias, else keep it at its start value.
    max_nfev : int
        Largest number of function evaluations of the least-squares solver.
    """
    theta = np.concatenate([np.asarray(params, float), np.asarray(widths, float).ravel()])
    problem = _Problem(model, hists, delta, theta)
    l_min = min(float(np.min(model.one_over_d(params, h.hkl))) for h in hists)
    lo, hi = _bounds(problem, l_min, float(hists[0].edges[1] - hists[0].edges[0]), fit_beta)
    problem.theta = np.clip(theta, lo, hi)
    free = problem.free
    result = optimize.least_squares(
        problem.residuals, problem.theta[free], jac=problem.jacobian,
        bounds=(lo[free], hi[free]), method="trf", x_scale="jac", max_nfev=max_nfev,
        tr_solver="lsmr",
    )  # fmt: skip
    jac = problem.jacobian(result.x)
    theta = problem.full(result.x)
    return ProfileFit(
        params=theta[: model.n_free].copy(),
        widths=theta[model.n_free :].reshape(len(hists), _N_WIDTH).copy(),
        intensities=[c[: h.n_lines].copy() for c, h in zip(problem.linear, hists, strict=True)],
        background=[c[h.n_lines :].copy() for c, h in zip(problem.linear, hists, strict=True)],
        covariance=_covariance(jac)[: model.n_free, : model.n_free],
        chi2_reduced=_chi2(problem),
        success=bool(result.status > 0),
        cost=float(np.sum(problem.res**2)),
    )


def _chi2(problem: _Problem) -> list[float]:
    out, row = [], 0
    for hist, c in zip(problem.hists, problem.linear, strict=True):
        n = len(hist.counts)
        dof = max(n - int(np.count_nonzero(c)) - _N_WIDTH - problem.n_free, 1)
        out.append(float(np.sum(problem.res[row : row + n] ** 2) / dof / hist.weight))
        row += n
    return out


def _covariance(jac: np.ndarray) -> np.ndarray:
    """``(J^T J)^-1``, pseudo-inverse over the well-determined directions.

    The normal matrix is small (parameters squared) and formed without BLAS threads,
    which cost more than they save on such sizes.
    """
    normal = np.einsum("ij,ik->jk", jac, jac)
    values, vectors = np.linalg.eigh(normal)
    good = values > max(float(values[-1]), 1e-300) * 1e-14
    return np.asarray((vectors[:, good] / values[good]) @ vectors[:, good].T)
