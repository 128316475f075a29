"""Data-set-wide elliptical distortion from peak positions (seed 004, section 3.1.4, Fig. 5).

Projector lenses distort electron diffraction patterns elliptically by a few percent.
Peaks of many randomly oriented crystals, histogrammed by their distance from each
pattern's centre, form a *virtual powder pattern*: sharp rings at the lattice's
``1/d`` values.  An elliptical distortion moves every ring outwards along one axis and
inwards along the other, so in polar coordinates ``(phi, r)`` the rings wiggle as
``cos 2 phi`` and the azimuthally integrated pattern is blurred (Fig. 5A).  The fit
finds the area-preserving distortion whose inverse makes the rings straight and the
integrated pattern sharpest (Fig. 5B).

Model
-----
:class:`~crystalscope.model.distortion.EllipticalDistortion` (diffractem's ``ratio``,
``angle``; the simulator's ``EllipticalDistortion(1 + ellipticity, angle)``) maps an
observed offset ``p`` from the centre to the true offset ``C p`` with
``C = R^T S R``, ``S = diag(ratio^-1/2, ratio^1/2)``, ``det C = 1``.  The fit is
parametrised by the logarithm of the metric ``M = C^T C`` (symmetric, traceless):

.. math::

    \\log M = \\begin{pmatrix} \\beta & \\gamma \\\\ \\gamma & -\\beta \\end{pmatrix},
    \\qquad \\beta = -\\ln(\\mathrm{ratio}) \\cos 2a, \\quad
    \\gamma = \\ln(\\mathrm{ratio}) \\sin 2a,

so ``C = exp(log M / 2)``, ``ratio = exp(hypot(beta, gamma))`` and
``2a = atan2(gamma, -beta)``.  The map is smooth through ``ratio = 1`` (where the angle
is undefined), so the optimiser never meets the angle singularity.  An observed ring
of true radius ``q`` has ``log r(phi) = log q - (beta cos 2 phi + gamma sin 2 phi) / 2``
to first order.

Sharpness
---------
For trial ``(beta, gamma)`` the corrected radii ``r_i = |C p_i|`` are binned linearly
into bins of width ``w = sigma_px / 4`` and smoothed twice: with a Gaussian of width
``sigma_px`` (``s``, the ring profile; ``sigma_px`` ~ the centroid precision) and with
three box filters that together approximate a Gaussian of width ``8 sigma_px`` (``e``,
the envelope of the peak density).  The sharpness

.. math::

    S = 2 \\sqrt{\\pi} \\, \\frac{\\sigma_\\mathrm{px}}{w}
        \\frac{\\sum_b (s_b - e_b)^2}{\\sum_b e_b}

(sums over the bins within ``r_range_px``) is the ring contrast in
units of its shot noise: about 1 for peaks without ring structure, larger the sharper
the rings.  Subtracting the envelope keeps the overall growth of the peak density with
radius, and the loss of peaks at the detector edges, out of the score.

Search
------
The score has a narrow maximum (width about ``sigma_px / r`` in ``beta``, ``gamma`` for
rings at radius ``r``) on a flat, noisy plateau, so local methods alone need a start
close to the answer.  The fit evaluates ``S`` on a square grid of step ``grid_step``
over the disc ``hypot(beta, gamma) <= ln(1 + max_ellipticity)`` (about 550 evaluations
of ~1 ms for 10^5 peaks with the defaults), then polishes the best grid point with
Nelder-Mead.  The basin of the maximum is about 0.02 wide in our tests, so the default
step of 0.006 has a wide margin.

Why not sector cross-correlation: the textbook implementation of the seed's
"iteratively modify the positions according to their azimuth until no dependence is
left" cross-correlates per-azimuth radial histograms.  With ~10^4 peaks per sector and
rings only partly resolved beyond ~60 px (protein cells), those cross-correlations are
dominated by the envelope and by aliasing between neighbouring rings, and gave wrong
angles in our tests.  Maximising the sharpness of the whole corrected pattern uses every
pair of peaks at once and is the same criterion: the integrated pattern is sharpest
exactly when no ring depends on the azimuth.

Accuracy (simulated lysozyme on the LAMBDA 750K, 200 frames, ~75 000 truth spots with
0.3 px centroid noise and 5 % spurious peaks; tests/serial/test_ellipticity.py and 20
further data sets): ratio within 0.07 % for ellipticities of 0-3 %; angle within 1.4
degrees at 1 % ellipticity (RMS 0.6 degrees), within 0.3 degrees at 2-3 %.  A fit takes
about 1 s.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage, optimize

from crystalscope.errors import ConfigError, DataError
from crystalscope.io.atomic import atomic_path
from crystalscope.model.distortion import EllipticalDistortion

__all__ = [
    "EllipticityFit",
    "distortion_from_log_metric",
    "draw_polar",
    "fit_ellipticity",
    "log_metric",
    "plot_ellipticity",
    "polar_histogram",
    "sharpness",
]

_ENVELOPE = 8.0  # envelope smoothing width, in units of sigma_px
_BINS_PER_SIGMA = 4.0
_AGREEMENT = 0.003  # half fits closer than this in (beta, gamma) always agree


@dataclass(frozen=True)
class EllipticityFit:
    """Result of :func:`fit_ellipticity`.

    Attributes
    ----------
    distortion : EllipticalDistortion
        The fitted distortion: ``distortion.correct`` maps observed positions to
        true ones (``ratio >= 1``, angle in ``[0, 180)`` degrees).
    ratio, angle_deg : float
        ``distortion.ratio`` and ``distortion.angle_deg``.
    n_peaks : int
        Peaks within ``r_range_px`` that the fit used.
    sharpness_before, sharpness_after : float
        Ring contrast :func:`sharpness` of the uncorrected and corrected positions
        (units of shot noise; ~1 without rings).
    r_range_px : (float, float)
        Radial range used (pixels).
    sigma_px : float
        Ring-profile smoothing width used (pixels).
    significant : bool
        False when the cross-validation (two random halves of the peaks, each fitted on
        its own and scored on the other) does not confirm the distortion: too few peaks
        to tell it from noise.  Callers should then apply none.
    half_ratios : tuple of float
        The ratios fitted on the two halves.
    """

    distortion: EllipticalDistortion
    ratio: float
    angle_deg: float
    n_peaks: int
    sharpness_before: float
    sharpness_after: float
    r_range_px: tuple[float, float] = (0.0, 0.0)
    sigma_px: float = 0.3
    significant: bool = True
    half_ratios: tuple[float, ...] = ()


# --------------------------------------------------------------------------- model


def log_metric(distortion: EllipticalDistortion) -> tuple[float, float]:
    """``(beta, gamma)`` of ``log(C^T C)`` for a distortion (see the module doc)."""
    rho = math.log(distortion.ratio)
    two_a = math.radians(2.0 * distortion.angle_deg)
    return -rho * math.cos(two_a), rho * math.sin(two_a)


def distortion_from_log_metric(beta: float, gamma: float) -> EllipticalDistortion:
    """The distortion with ``log(C^T C) = [[beta, gamma], [gamma, -beta]]``.

    Canonical form: ``ratio >= 1`` and ``angle_deg`` in ``[0, 180)``; ``(0, 0)`` gives
    ``EllipticalDistortion(1, 0)``.
    """
    rho = math.hypot(beta, gamma)
    if rho == 0.0:
        return EllipticalDistortion(1.0, 0.0)
    angle = (0.5 * math.degrees(math.atan2(gamma, -beta))) % 180.0
    return EllipticalDistortion(math.exp(rho), 0.0 if angle >= 180.0 else angle)


def _correction(beta: float, gamma: float) -> np.ndarray:
    """``C = exp(log M / 2)`` in closed form (``log M / 2`` has eigenvalues ``+-rho/2``)."""
    half = 0.5 * math.hypot(beta, gamma)
    if half == 0.0:
        return np.eye(2)
    g = np.array([[beta, gamma], [gamma, -beta]]) / (2.0 * half)
    return math.cosh(half) * np.eye(2) + math.sinh(half) * g


# --------------------------------------------------------------------------- sharpness


@numba.njit(cache=True, nogil=True, fastmath=True)
def _radial_hist(
    dx: np.ndarray, dy: np.ndarray, c: np.ndarray, lo: float, inv_bin: float, n: int
) -> np.ndarray:
    """Linear (cloud-in-cell) histogram of ``|C p|`` on bins of ``1/inv_bin`` from ``lo``."""
    h = np.zeros(n)
    for i in range(dx.size):
        x = c[0, 0] * dx[i] + c[0, 1] * dy[i]
        y = c[1, 0] * dx[i] + c[1, 1] * dy[i]
        u = (math.sqrt(x * x + y * y) - lo) * inv_bin
        if u >= 0.0 and u < n - 1:
            k = int(u)
            t = u - k
            h[k] += 1.0 - t
            h[k + 1] += t
    return h


class _Scorer:
    """Sharpness of the corrected radial pattern as a function of ``(beta, gamma)``."""

    def __init__(
        self, dx: np.ndarray, dy: np.ndarray, r_range: tuple[float, float], sigma_px: float
    ) -> None:
        order = np.argsort(np.hypot(dx, dy))  # sequential histogram writes: 2x faster
        self.dx, self.dy = dx[order], dy[order]
        # three boxes of width b have variance 3 (b^2 - 1) / 12 = (_ENVELOPE sigma)^2
        self.box = 2 * round(math.sqrt(4 * (_ENVELOPE * _BINS_PER_SIGMA) ** 2 + 1) / 2) + 1
        self.width = sigma_px / _BINS_PER_SIGMA
        pad = 4.0 * _ENVELOPE * sigma_px
        self.lo = max(r_range[0] - pad, 0.0)
        self.n = math.ceil((r_range[1] + pad - self.lo) / self.width) + 1
        self.inner = slice(
            int((r_range[0] - self.lo) / self.width), int((r_range[1] - self.lo) / self.width)
        )
        self.norm = 2.0 * math.sqrt(math.pi) * _BINS_PER_SIGMA

    def __call__(self, beta: float, gamma: float) -> float:
        c = _correction(beta, gamma)
        h = _radial_hist(self.dx, self.dy, c, self.lo, 1.0 / self.width, self.n)
        s = ndimage.gaussian_filter1d(h, _BINS_PER_SIGMA, mode="constant")
        e = h
        for _ in range(3):  # three box filters: a Gaussian of width _ENVELOPE sigma_px
            e = ndimage.uniform_filter1d(e, self.box, mode="constant")
        s, e = s[self.inner], e[self.inner]
        total = float(e.sum())
        if total <= 0.0:
            return 0.0
        return float(self.norm * np.sum((s - e) ** 2) / total)


def sharpness(
    dx: ArrayLike,
    dy: ArrayLike,
    *,
    distortion: EllipticalDistortion | None = None,
    r_range_px: tuple[float, float] | None = None,
    sigma_px: float = 0.3,
) -> float:
    """Ring contrast of the radial peak distribution in units of shot noise (module doc).

    ``distortion`` (optional) is removed first (``distortion.correct``).
    """
    x, y = _positions(dx, dy)
    r_range = _r_range(np.hypot(x, y), r_range_px)
    beta, gamma = log_metric(distortion) if distortion is not None else (0.0, 0.0)
    return _Scorer(x, y, r_range, _check_sigma(sigma_px))(beta, gamma)


# --------------------------------------------------------------------------- helpers


def _positions(dx: ArrayLike, dy: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(dx, dtype=np.float64).ravel()
    y = np.asarray(dy, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise DataError(f"{x.size} x but {y.size} y peak offsets", field="peaks")
    ok = np.isfinite(x) & np.isfinite(y)
    return np.ascontiguousarray(x[ok]), np.ascontiguousarray(y[ok])


def _r_range(r: np.ndarray, r_range_px: tuple[float, float] | None) -> tuple[float, float]:
    if r_range_px is None:
        if r.size == 0:
            raise DataError("no finite peak positions to fit the ellipticity", field="peaks")
        lo, hi = np.percentile(r, [0.5, 99.5])
        return max(float(lo), 2.0), float(hi)
    lo, hi = (float(v) for v in r_range_px)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo < hi):
        raise ConfigError(
            f"radial range must satisfy 0 <= r_min < r_max, got {r_range_px}",
            field="ellipticity.r_range_px",
        )
    return lo, hi


def _check_sigma(sigma_px: float) -> float:
    if not (math.isfinite(sigma_px) and sigma_px > 0):
        raise ConfigError(
            f"sigma_px must be positive, got {sigma_px}", field="ellipticity.sigma_px"
        )
    return float(sigma_px)


def _check_search(max_ellipticity: float, grid_step: float) -> None:
    if not (0.0 < max_ellipticity < 1.0):
        raise ConfigError(
            f"max_ellipticity must be in (0, 1), got {max_ellipticity}",
            field="ellipticity.max_ellipticity",
        )
    if not (0.0 < grid_step <= 0.05):
        raise ConfigError(
            f"grid_step must be in (0, 0.05], got {grid_step}", field="ellipticity.grid_step"
        )


def _grid_search(score: _Scorer, rho_max: float, step: float) -> tuple[float, float]:
    g = np.arange(-rho_max, rho_max + 0.5 * step, step)
    g -= g[np.argmin(np.abs(g))]  # put a node on 0 (no distortion)
    best, arg = -math.inf, (0.0, 0.0)
    for b in g:
        for c in g:
            if math.hypot(b, c) > rho_max + 1e-12:
                continue
            s = score(float(b), float(c))
            if s > best:
                best, arg = s, (float(b), float(c))
    return arg


# --------------------------------------------------------------------------- fit


def fit_ellipticity(
    dx: ArrayLike,
    dy: ArrayLike,
    *,
    r_range_px: tuple[float, float] | None = None,
    sigma_px: float = 0.3,
    max_ellipticity: float = 0.08,
    grid_step: float = 0.006,
    min_peaks: int = 200,
) -> EllipticityFit:
    """Fit the elliptical distortion of a data set from its peak positions.

    Parameters
    ----------
    dx, dy : array_like
        Peak positions relative to each frame's pattern centre, all frames
        concatenated (pixels, in the detector-plane ``x``/``y`` frame, which is
        ``(fs, ss)`` for single-panel and LAMBDA frames).  Non-finite entries are
        dropped.
    r_range_px : (float, float), optional
        Radii used.  Default: the 0.5th to 99.5th percentile of the peak radii (at
        least 2 px).  Rings are sharpest at low resolution; spurious peaks do no harm.
    sigma_px : float
        Width of the ring profile (pixels): about the peak-centroid precision,
        including the centre's.
    max_ellipticity : float
        Largest ``ratio - 1`` searched (default 8 %).
    grid_step : float
        Step of the global search in ``beta``/``gamma`` (~ ``ratio`` - 1 units).
    min_peaks : int
        Fewest peaks within ``r_range_px`` to attempt a fit.

    Returns
    -------
    EllipticityFit

    Raises
    ------
    DataError
        Fewer than ``min_peaks`` usable peaks, or mismatched inputs.
    ConfigError
        Invalid parameters.
    """
    sigma_px = _check_sigma(sigma_px)
    _check_search(max_ellipticity, grid_step)
    x, y = _positions(dx, dy)
    r = np.hypot(x, y)
    lo, hi = _r_range(r, r_range_px)
    sel = (r >= lo) & (r <= hi)
    n = int(sel.sum())
    if n < min_peaks:
        raise DataError(
            f"only {n} peaks between {lo:.1f} and {hi:.1f} px from the centre; at least "
            f"{min_peaks} are needed to fit the ellipticity",
            field="peaks",
        )
    rho_max = math.log1p(max_ellipticity)
    score = _Scorer(x, y, (lo, hi), sigma_px)
    beta, gamma = _search(score, rho_max, grid_step)
    halves = _cross_validate(x, y, (lo, hi), sigma_px, rho_max, grid_step, (beta, gamma))
    significant = halves is None or halves[0]
    distortion = distortion_from_log_metric(beta, gamma)
    return EllipticityFit(
        distortion=distortion,
        ratio=distortion.ratio,
        angle_deg=distortion.angle_deg,
        n_peaks=n,
        sharpness_before=score(0.0, 0.0),
        sharpness_after=score(beta, gamma),
        r_range_px=(lo, hi),
        sigma_px=sigma_px,
        significant=bool(significant),
        half_ratios=halves[1] if halves is not None else (),
    )


def _search(score: _Scorer, rho_max: float, step: float) -> tuple[float, float]:
    """Global grid search, then Nelder-Mead from the best node: ``(beta, gamma)``."""
    start = _grid_search(score, rho_max, step)
    res = optimize.minimize(
        lambda p: -score(float(p[0]), float(p[1])),
        np.array(start),
        method="Nelder-Mead",
        options={
            "initial_simplex": np.array(start) + np.array([[0, 0], [1, 0], [0, 1]]) * step / 2,
            "xatol": 1e-5,
            "fatol": 1e-9,
            "maxiter": 400,
        },
    )
    return float(res.x[0]), float(res.x[1])


def _cross_validate(
    x: np.ndarray, y: np.ndarray, r_range: tuple[float, float], sigma_px: float,
    rho_max: float, step: float, full: tuple[float, float],
) -> tuple[bool, tuple[float, ...]] | None:  # fmt: skip
    """Is the fitted distortion real?  Each random half of the peaks is fitted on its
    own and the fit scored on the other half: a real distortion sharpens the other half
    too and both halves find it; a maximum of the noise (few peaks) does neither.
    Returns (significant, ratios of the two half fits); None for a fit at the origin."""
    if math.hypot(*full) == 0.0:
        return None
    order = np.random.default_rng(0).permutation(x.size)
    parts = [order[: x.size // 2], order[x.size // 2 :]]
    scorers = [_Scorer(x[p], y[p], r_range, sigma_px) for p in parts]
    fits = [_search(sc, rho_max, step) for sc in scorers]
    gains = [scorers[1 - i](*fits[i]) - scorers[1 - i](0.0, 0.0) for i in range(2)]
    spread = math.hypot(fits[0][0] - fits[1][0], fits[0][1] - fits[1][1])
    agree = spread <= 0.5 * math.hypot(*full) + _AGREEMENT
    ratios = tuple(distortion_from_log_metric(*f).ratio for f in fits)
    return (agree and min(gains) > 0.0), ratios


# --------------------------------------------------------------------------- display


def polar_histogram(
    dx: ArrayLike,
    dy: ArrayLike,
    *,
    distortion: EllipticalDistortion | None = None,
    r_range_px: tuple[float, float] | None = None,
    n_r: int = 400,
    n_phi: int = 90,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """2-D histogram of peak positions in polar coordinates (seed Fig. 5).

    Parameters
    ----------
    dx, dy : array_like
        Peak offsets from the pattern centres (pixels).
    distortion : EllipticalDistortion, optional
        Removed first (``distortion.correct``), for the "after" panel.
    r_range_px : (float, float), optional
        Radial range (default: as :func:`fit_ellipticity`).
    n_r, n_phi : int
        Number of radial and azimuthal bins.

    Returns
    -------
    hist : ndarray of float64, shape (n_phi, n_r)
        Peak counts.
    r_edges : ndarray, shape (n_r + 1,)
        Radial bin edges (pixels).
    phi_edges_deg : ndarray, shape (n_phi + 1,)
        Azimuth bin edges from -180 to 180 degrees; ``phi = atan2(dy, dx)``.
    """
    if n_r < 1 or n_phi < 1:
        raise ConfigError(f"need n_r >= 1 and n_phi >= 1, got {n_r}, {n_phi}", field="n_r")
    x, y = _positions(dx, dy)
    if distortion is not None:
        x, y = distortion.correct(x, y, (0.0, 0.0))
    r = np.hypot(x, y)
    lo, hi = _r_range(r, r_range_px)
    phi = np.degrees(np.arctan2(y, x))
    r_edges = np.linspace(lo, hi, n_r + 1)
    phi_edges = np.linspace(-180.0, 180.0, n_phi + 1)
    hist, _, _ = np.histogram2d(phi, r, bins=(phi_edges, r_edges))
    return hist, r_edges, phi_edges


def draw_polar(ax: Any, hist: np.ndarray, r_edges: np.ndarray, phi_edges: np.ndarray) -> None:
    """Draw a :func:`polar_histogram` (square-root scale) with its azimuthal sum (the
    virtual powder profile) in white, on the matplotlib axes ``ax``."""
    extent = (r_edges[0], r_edges[-1], phi_edges[0], phi_edges[-1])
    ax.imshow(np.sqrt(hist), origin="lower", aspect="auto", extent=extent, cmap="magma")
    profile = hist.sum(axis=0)
    if profile.max() > 0:
        scaled = phi_edges[0] + (phi_edges[-1] - phi_edges[0]) * profile / profile.max()
        ax.plot(0.5 * (r_edges[1:] + r_edges[:-1]), scaled, color="white", lw=0.7)
    ax.set_ylabel("azimuth (deg)")


def plot_ellipticity(
    dx: ArrayLike,
    dy: ArrayLike,
    fit: EllipticityFit,
    path: str | os.PathLike[str],
    *,
    r_range_px: tuple[float, float] | None = None,
    n_r: int = 400,
    n_phi: int = 72,
    overwrite: bool = True,
) -> Path:
    """Write a PNG of the polar histograms before and after correction (seed Fig. 5).

    Each panel shows peak counts over azimuth and radius (square-root colour scale) and,
    in white, the azimuthally integrated profile.  Written atomically.

    Parameters
    ----------
    dx, dy : array_like
        The peak offsets given to :func:`fit_ellipticity`.
    fit : EllipticityFit
        Its result.
    path : str or os.PathLike
        Output PNG.
    r_range_px : (float, float), optional
        Radii shown; default the inner third of ``fit.r_range_px``, where the rings of
        typical unit cells are resolved.
    n_r, n_phi : int
        Histogram bins.
    overwrite : bool
        Replace an existing file (else :class:`~crystalscope.errors.CrystalscopeError`).

    Returns
    -------
    Path
        ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if r_range_px is None:
        lo, hi = fit.r_range_px
        r_range_px = (lo, lo + (hi - lo) / 3.0)
    fig = Figure(figsize=(10, 7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    for ax, dist, title in (
        (axes[0], None, f"before: sharpness {fit.sharpness_before:.2f}"),
        (
            axes[1],
            fit.distortion,
            f"after correcting ratio {fit.ratio:.4f}, angle {fit.angle_deg:.1f} deg: "
            f"sharpness {fit.sharpness_after:.2f}",
        ),
    ):
        hist, r_edges, phi_edges = polar_histogram(
            dx, dy, distortion=dist, r_range_px=r_range_px, n_r=n_r, n_phi=n_phi
        )
        draw_polar(ax, hist, r_edges, phi_edges)
        ax.set_title(f"{title} ({fit.n_peaks} peaks)", fontsize=10)
    axes[1].set_xlabel("radius (px)")
    target = Path(path)
    with atomic_path(target, overwrite=overwrite) as tmp:
        fig.savefig(tmp, format="png")
    return target
