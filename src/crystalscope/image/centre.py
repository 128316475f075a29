"""Pattern centre (zero-order beam) of single diffraction frames (seed 004, section 3.1.3).

Three steps, each returning a :class:`CentreFit` that says whether it worked:

1. :func:`centre_of_mass` -- thresholded centre of mass of the direct-beam region.
2. :func:`fit_lorentzian` -- least-squares fit of ``B + A / (1 + r^2/g^2)^p`` to the
   pixels within ``radius_px`` of that estimate.
3. :func:`refine_centre_friedel` -- refinement from Bragg-peak positions: Friedel mates
   ``h``, ``-h`` lie point-symmetric about the centre.

:func:`find_centre` chains steps 1 and 2; step 3 runs after peak finding.  No step raises
for bad frame content (NaN, all zero, no beam): the result has ``success=False`` and a
NaN centre.  Wrong shapes or invalid parameters raise
:class:`~crystalscope.errors.DataError` / :class:`~crystalscope.errors.ConfigError`.
Algorithms, equations and measured accuracy: ``docs/algorithms/centre.md``.

Frames are ``frame[ss, fs]`` with a boolean ``mask`` (True = ignore).  Positions are in
the units of the optional coordinate maps ``x``, ``y`` (panel-0 pixels,
:mod:`crystalscope.image.geometry`; NaN pixels are ignored), by default the pixel-centre
indices ``x = fs``, ``y = ss``; centres ``(cx, cy)`` are in those units.

Centre of mass: ``c = sum w_i p_i / sum w_i`` with ``w_i = I_i - t`` over the beam
region: the brightest ``block_px``-square block mean ``B_max`` locates the beam, the
default threshold is ``t = b + rel_threshold (B_max - b)`` (``b`` the median block
mean), and the region is the 8-connected component of pixels above ``t`` (masked pixels
bridge) near that block with the largest summed weight.

Lorentzian: residuals ``(m - I) / s``, ``s^2 = |I| + 1 + (e I)^2`` (Poisson plus a
relative error ``e``), Levenberg-Marquardt in ``(cx, cy, ln K, ln g, p, B)`` with
``K = A g^(2p)``; pixels beyond 4 robust standard deviations (Bragg spots, hot pixels)
are dropped and the fit repeated.  A plateau or crater core (unmasked saturation,
dead-time paralysis) is left out, or, with ``ceiling_adu``, the pixels where the model
exceeds the highest truthful detector value.

Friedel score (the seed's ``F``, as diffractem's ``center_friedel``)::

    F(c) = sum_{i<j} w_i w_j exp(-|p_i + p_j - 2 c|^2 / (2 sigma^2))

maximised (``F^-1`` minimised) locally from the guess by mean-shift ascent on the pair
mid-points ``m_ij = (p_i + p_j)/2`` (kernel width ``sigma/2``), then polished: pairs with
``|m_ij - c| <= sigma/2`` matched one-to-one, ``c`` their mean with 3.5-sigma clipping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from crystalscope.errors import ConfigError, DataError
from crystalscope.image._centre_kernels import (
    block_means,
    gather_disc,
    levenberg_marquardt,
    match_one_to_one,
    pair_midpoints,
)

__all__ = ["CentreFit", "centre_of_mass", "find_centre", "fit_lorentzian", "refine_centre_friedel"]

_NAN = float("nan")
_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity for ndimage.label


@dataclass(frozen=True)
class CentreFit:
    """Result of one centre-finding step.

    Attributes
    ----------
    cx, cy : float
        Centre in x/y units (pixels); NaN when the step failed.
    method : str
        ``"com"``, ``"lorentzian"`` or ``"friedel"``.
    success : bool
        Whether the step found a centre.
    n_pairs : int
        Friedel pairs used (``"friedel"``), pixels in the beam region (``"com"``) or
        pixels fitted (``"lorentzian"``).
    rms_px : float
        ``"friedel"``: RMS distance of the pair mid-points from the centre;
        ``"lorentzian"``: standard error of the centre, ``sqrt(var cx + var cy)``;
        ``"com"``: RMS radius of the beam region about the centre (pixels).
    width_px : float
        Lorentzian half width ``g`` (pixels); NaN for other methods.
    """

    cx: float
    cy: float
    method: str
    success: bool
    n_pairs: int = 0
    rms_px: float = _NAN
    width_px: float = _NAN

    @property
    def centre(self) -> tuple[float, float]:
        """``(cx, cy)``."""
        return (self.cx, self.cy)

    @classmethod
    def failed(cls, method: str, n_pairs: int = 0) -> CentreFit:
        """A failed result (NaN centre)."""
        return cls(_NAN, _NAN, method, False, n_pairs)


# --------------------------------------------------------------------------- validation


def _prepare(
    frame: ArrayLike, mask: ArrayLike | None, x: ArrayLike | None, y: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """Validate shapes; return C-contiguous frame (float32), mask, x, y and ``use_maps``."""
    arr = np.ascontiguousarray(frame, dtype=np.float32)
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"a frame must be 2-D (ss, fs), got shape {arr.shape}", field="frame")
    if mask is None:
        m = np.zeros(arr.shape, dtype=bool)
    else:
        m = np.ascontiguousarray(mask, dtype=bool)
        if m.shape != arr.shape:
            raise DataError(f"mask shape {m.shape} differs from frame {arr.shape}", field="mask")
    if (x is None) != (y is None):
        raise DataError("give both coordinate maps x and y, or neither", field="x")
    if x is None or y is None:
        dummy = np.zeros((1, 1), dtype=np.float32)
        return arr, m, dummy, dummy, False
    xs = np.ascontiguousarray(x, dtype=np.float32)
    ys = np.ascontiguousarray(y, dtype=np.float32)
    for name, a in (("x", xs), ("y", ys)):
        if a.shape != arr.shape:
            raise DataError(f"map {name} has shape {a.shape}, frame {arr.shape}", field=name)
    return arr, m, xs, ys, True


def _positive(value: float, field: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"must be a positive number, got {value}", field=f"centre.{field}")
    return float(value)


# --------------------------------------------------------------------------- centre of mass


def _beam_block(
    frame: np.ndarray, mask: np.ndarray, x: np.ndarray, use_maps: bool, block_px: int
) -> tuple[int, int, float, float, float] | None:
    """Brightest block (row, col), its mean, the median block mean and a robust block sigma."""
    blocks = block_means(frame, mask, x, use_maps, block_px)
    flat = blocks.ravel()
    k = int(np.argmax(flat))
    top = float(flat[k])
    sample = flat[:: max(1, flat.size // 16384)]  # the statistics need no more blocks
    background = float(np.median(sample))
    spread = 1.4826 * float(np.median(np.abs(sample - background)))
    if not (math.isfinite(top) and top > background):
        return None
    bi, bj = divmod(k, blocks.shape[1])
    return bi, bj, top, background, spread


def centre_of_mass(
    frame: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    x: ArrayLike | None = None,
    y: ArrayLike | None = None,
    threshold: float | None = None,
    rel_threshold: float = 0.1,
    block_px: int = 4,
    window_px: int = 64,
    min_contrast: float = 20.0,
    min_pixels: int = 4,
) -> CentreFit:
    """Thresholded centre of mass of the direct-beam region.

    Parameters
    ----------
    frame : array (ss, fs)
        Frame in ADU (NaN pixels are ignored).
    mask : bool array, optional
        True = pixel to ignore.
    x, y : float arrays, optional
        Pixel-centre coordinate maps (default: fs and ss indices).
    threshold : float, optional
        Absolute threshold ``t`` in ADU; default ``b + rel_threshold (B_max - b)``
        (module docstring).
    rel_threshold : float
        Fraction of the beam's block-mean contrast used for the default threshold.
    block_px : int
        Block size (pixels) of the coarse beam search.
    window_px : int
        Half size (pixels) of the window around the brightest block searched for the
        beam region.
    min_contrast : float
        The brightest block must exceed the median block by this many robust standard
        deviations of the block means (else: no beam).
    min_pixels : int
        Minimum number of pixels in the beam region.

    Returns
    -------
    CentreFit
        ``method="com"``; ``n_pairs`` = pixels in the region, ``rms_px`` = its RMS radius.
    """
    if block_px < 1 or window_px < block_px:
        raise ConfigError("need 1 <= block_px <= window_px", field="centre.block_px")
    arr, m, xs, ys, use_maps = _prepare(frame, mask, x, y)
    found = _beam_block(arr, m, xs, use_maps, int(block_px))
    if found is None:
        return CentreFit.failed("com")
    bi, bj, top, background, spread = found
    if top - background <= min_contrast * spread:
        return CentreFit.failed("com")
    t = background + rel_threshold * (top - background) if threshold is None else threshold
    centre = (bi * block_px + block_px // 2, bj * block_px + block_px // 2)
    return _region_com(arr, m, xs, ys, use_maps, centre, float(t), window_px, min_pixels)


def _region_com(
    arr: np.ndarray, m: np.ndarray, xs: np.ndarray, ys: np.ndarray, use_maps: bool,
    centre: tuple[int, int], t: float, window_px: int, min_pixels: int,
) -> CentreFit:  # fmt: skip
    """Centre of mass of the strongest 8-connected region above ``t`` near ``centre``.

    ``centre`` is (row, column); masked pixels bridge regions but carry no weight.
    """
    (ci, cj), half = centre, int(window_px)
    r0, c0 = max(0, ci - half), max(0, cj - half)
    win = (slice(r0, ci + half + 1), slice(c0, cj + half + 1))
    crop = arr[win]
    good = ~m[win] & np.isfinite(crop)
    if use_maps:
        good &= np.isfinite(xs[win]) & np.isfinite(ys[win])
    above = good & (crop > t)
    labels, n_labels = ndimage.label(above | ~good, structure=_EIGHT)
    if n_labels == 0:
        return CentreFit.failed("com")
    weight = np.where(above, crop - np.float32(t), np.float32(0)).astype(np.float64)
    totals = np.bincount(labels.ravel(), weights=weight.ravel(), minlength=n_labels + 1)
    totals[0] = 0.0
    sel = (labels == int(np.argmax(totals))) & above
    n_sel = int(sel.sum())
    w = weight[sel]
    if n_sel < min_pixels or not w.sum() > 0:
        return CentreFit.failed("com", n_sel)
    if use_maps:
        px, py = xs[win][sel].astype(np.float64), ys[win][sel].astype(np.float64)
    else:
        rows, cols = np.nonzero(sel)
        px, py = (cols + c0).astype(np.float64), (rows + r0).astype(np.float64)
    cx, cy = float(np.average(px, weights=w)), float(np.average(py, weights=w))
    rms = math.sqrt(float(np.average((px - cx) ** 2 + (py - cy) ** 2, weights=w)))
    return CentreFit(cx, cy, "com", True, n_sel, rms)


# --------------------------------------------------------------------------- Lorentzian fit


def _model(
    q: np.ndarray, xs: np.ndarray, ys: np.ndarray, *, with_jac: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Model and Jacobian in the solver parameters ``q = (cx, cy, ln K, ln g, p, B)``.

    ``m = B + K (g^2 + r^2)^-p`` with ``K = A g^(2p)``: the same function as
    ``B + A (1 + r^2/g^2)^-p``, written so that it stays finite for ``g -> 0`` (a fit
    of the flank alone, outside an excluded core, is a power law).
    """
    cx, cy, ln_k, ln_g, p, b = q
    dx, dy = xs - cx, ys - cy
    g2 = math.exp(min(2.0 * ln_g, 700.0))
    s = g2 + dx * dx + dy * dy
    ln_s = np.log(s)
    term = np.exp(np.minimum(ln_k - p * ln_s, 700.0))  # K s^-p
    if not with_jac:
        return b + term, None
    jac = np.empty((xs.size, 6))
    jac[:, 0] = 2.0 * p * term * dx / s
    jac[:, 1] = 2.0 * p * term * dy / s
    jac[:, 2] = term
    jac[:, 3] = -2.0 * p * g2 * term / s
    jac[:, 4] = -term * ln_s
    jac[:, 5] = 1.0
    return b + term, jac


def _to_solver(theta: np.ndarray) -> np.ndarray:
    """``(cx, cy, A, g, p, B)`` to ``(cx, cy, ln K, ln g, p, B)``."""
    cx, cy, a, g, p, b = theta
    ln_g = math.log(max(abs(g), 1e-6))
    return np.array([cx, cy, math.log(max(a, 1e-12)) + 2.0 * p * ln_g, ln_g, p, b])


def _to_natural(q: np.ndarray) -> np.ndarray:
    """``(cx, cy, ln K, ln g, p, B)`` to ``(cx, cy, A, g, p, B)``."""
    cx, cy, ln_k, ln_g, p, b = q
    ln_a = min(ln_k - 2.0 * p * ln_g, 700.0)
    return np.array([cx, cy, math.exp(ln_a), math.exp(min(ln_g, 700.0)), p, b])


def _core_radius(
    vals: np.ndarray, xs: np.ndarray, ys: np.ndarray, centre: tuple[float, float], hole_px: float
) -> float:
    """Radius of an unusable or masked beam core (0 when there is none).

    Masked core: no usable pixel within ``hole_px`` of ``centre`` (the radius of the
    nearest one minus 0.5 is returned: nothing to leave out, but a flank to fit).  The
    pixels within 10 % of the brightest lie at a median distance ``r_med``; a peaked beam
    has them at the centre.  With ``r_med > hole_px`` and at least 3 usable pixels inside
    ``r_med - 1`` that are either mostly that bright (a plateau: unmasked saturation) or
    have a median below 30 % of the brightest (a crater: dead-time paralysis), the core
    and its rim are left out: the largest distance of the bright pixels plus 1 is returned.
    """
    if vals.size < 16:
        return 0.0
    r = np.hypot(xs - centre[0], ys - centre[1])
    if r.min() > hole_px:
        return float(r.min()) - 0.5
    top = float(vals.max())
    if top <= float(np.median(vals)):  # flat: no beam at all, let the fit fail
        return 0.0
    bright = vals >= 0.9 * top
    r_med = float(np.median(r[bright]))
    inner = r < r_med - 1.0
    if r_med <= hole_px or np.count_nonzero(inner) < 3:
        return 0.0
    plateau = np.mean(bright[inner]) > 0.5
    crater = float(np.median(vals[inner])) < 0.3 * top
    return float(r[bright].max()) + 1.0 if plateau or crater else 0.0


def _initial(vals: np.ndarray, guess: tuple[float, float], r_core: float = 0.0) -> np.ndarray:
    """Start parameters ``(cx, cy, A, g, p, B)`` (``p = 1.5``)."""
    b0 = float(np.percentile(vals, 5))
    a0 = max(float(vals.max()) - b0, 1e-6)
    if r_core > 0:  # only the flank outside the core is seen: extrapolate to r = 0
        g0 = max(0.5, 0.5 * r_core)
        return np.array([guess[0], guess[1], a0 * 5.0**1.5, g0, 1.5, b0])
    n_half = int(np.count_nonzero(vals - b0 > 0.5 * a0))
    g0 = max(0.5, math.sqrt(n_half / math.pi) / 0.766)  # half maximum at r = 0.766 g for p = 1.5
    return np.array([guess[0], guess[1], a0, g0, 1.5, b0])


def _lm(
    vals: np.ndarray, xs: np.ndarray, ys: np.ndarray, sigma: np.ndarray, q: np.ndarray
) -> tuple[np.ndarray, float, np.ndarray] | None:
    """One Levenberg-Marquardt fit in the solver parameters (compiled): ``(q, cost,
    J^T J)`` with ``cost = 0.5 sum r^2``, or None when it fails."""
    q, xs, ys, vals, sigma = (
        np.ascontiguousarray(v, dtype=np.float64) for v in (q, xs, ys, vals, sigma)
    )
    try:
        q_fit, cost, jtj, status = levenberg_marquardt(q, xs, ys, vals, sigma, 200)
    except (ValueError, np.linalg.LinAlgError, ZeroDivisionError):
        return None
    if status < 0 or not (np.all(np.isfinite(q_fit)) and math.isfinite(cost)):
        return None
    return q_fit, cost, jtj


def _solve(
    vals: np.ndarray, xs: np.ndarray, ys: np.ndarray, q0: np.ndarray, rel_error: float
) -> tuple[np.ndarray, float, int] | None:
    """Fit with outlier clipping: (solver parameters, centre standard error, pixels kept).

    Pixels whose normalised residual exceeds 4 robust standard deviations (at least 3)
    are dropped (Bragg spots, hot pixels) and the fit repeated, at most three times.
    """
    sigma = np.sqrt(np.abs(vals) + 1.0 + (rel_error * vals) ** 2)
    use = np.ones(vals.size, dtype=bool)
    q = np.array(q0, dtype=float)
    for _ in range(3):
        fitted = _lm(vals[use], xs[use], ys[use], sigma[use], q) if use.sum() > 12 else None
        if fitted is None:
            return None
        q, cost, jtj = fitted
        z = np.abs((_model(q, xs, ys)[0] - vals) / sigma)
        new = z <= max(4.0 * 1.4826 * float(np.median(z[use])), 3.0)
        if np.array_equal(new, use):
            break
        use = new
    dof = max(int(use.sum()) - q.size, 1)
    cov = np.linalg.pinv(jtj) * (2.0 * cost / dof)
    return q, math.sqrt(max(float(cov[0, 0] + cov[1, 1]), 0.0)), int(use.sum())


def _usable(
    vals: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    centre: tuple[float, float],
    q: np.ndarray | None,
    ceiling_adu: float | None,
    r_core: float,
) -> np.ndarray:
    """Pixels to fit: below the ceiling (data and current model), or outside the core."""
    use = np.ones(vals.size, dtype=bool)
    if ceiling_adu is not None:
        use &= vals < ceiling_adu
    if ceiling_adu is not None and q is not None:
        use &= _model(q, xs, ys)[0] < ceiling_adu
    elif r_core > 0:
        use &= np.hypot(xs - centre[0], ys - centre[1]) > r_core
    return use


def _plausible(
    q: np.ndarray, centre: tuple[float, float], radius: float, px: np.ndarray, py: np.ndarray,
    core: bool,
) -> bool:  # fmt: skip
    """Centre inside the region, ``p`` in range, and a resolved, significant peak.

    Without a core: ``g >= 0.1``, ``A >= 10 s(B)`` (``s`` the pixel error at the
    background level) and at least 3 fitted pixels above ``B + A/4`` in the model (so a
    hot pixel or noise is not a beam).  A flank fit (core left out) may have any ``g``.
    """
    cx, cy, a, g, p, b = _to_natural(q)
    if math.hypot(cx - centre[0], cy - centre[1]) > radius or not 0.3 <= p <= 6.0:
        return False
    if g > 2.0 * radius:
        return False
    if core:
        return True
    resolved = np.count_nonzero(_model(q, px, py)[0] - b > 0.25 * a) >= 3
    return bool(g >= 0.1 and a >= 10.0 * math.sqrt(abs(b) + 1.0) and resolved)


def fit_lorentzian(
    frame: ArrayLike,
    guess: tuple[float, float],
    mask: ArrayLike | None = None,
    *,
    x: ArrayLike | None = None,
    y: ArrayLike | None = None,
    radius_px: float = 15.0,
    ceiling_adu: float | None = None,
    rel_error: float = 0.05,
    min_pixels: int = 12,
    max_rounds: int = 4,
    hole_px: float = 2.0,
) -> CentreFit:
    """Least-squares fit of ``B + A / (1 + r^2/g^2)^p`` around ``guess``.

    Parameters
    ----------
    frame, mask, x, y
        As for :func:`centre_of_mass` (mask: gaps, dead/hot and saturated pixels).
    guess : (float, float)
        Start centre ``(cx, cy)``, e.g. from :func:`centre_of_mass`.
    radius_px : float
        Pixels within this distance of the current centre are fitted (default 15;
        enlarged to 2.5 times the radius of an excluded core, see ``hole_px``).
    ceiling_adu : float, optional
        Highest value the detector reports truthfully; pixels at or above it, or where the
        fitted model exceeds it, are excluded and the fit repeated.
    rel_error : float
        Relative error added in quadrature to the Poisson error (flat field, model).
    min_pixels, max_rounds : int
        Fewer usable pixels make the fit fail; fits are repeated (region re-centred)
        while the centre moves by more than ``radius_px / 4`` or the ceiling exclusion
        changes.
    hole_px : float
        A masked core, or a plateau or crater whose brightest pixels lie further than
        this from the centre (unmasked saturation, dead-time paralysis), is left out and
        only the flank is fitted (``docs/algorithms/centre.md``).

    Returns
    -------
    CentreFit
        ``method="lorentzian"``, ``width_px = g``, ``rms_px`` = standard error of the
        centre, ``n_pairs`` = pixels fitted.
    """
    radius = _positive(radius_px, "radius_px")
    arr, m, xs, ys, use_maps = _prepare(frame, mask, x, y)
    centre = (float(guess[0]), float(guess[1]))
    if not all(math.isfinite(v) for v in centre):
        return CentreFit.failed("lorentzian")
    q: np.ndarray | None = None  # solver parameters (cx, cy, ln K, ln g, p, B)
    error, n_used, last_n, r_core = _NAN, 0, -1, 0.0
    for _ in range(max(int(max_rounds), 1)):
        vals, px, py = gather_disc(arr, m, xs, ys, use_maps, centre[0], centre[1], radius)
        if q is None and vals.size >= min_pixels:
            r_core = _core_radius(vals, px, py, centre, hole_px)
            if 2.5 * r_core > radius:  # keep a flank of 1.5 core radii to fit
                radius = 2.5 * r_core
                vals, px, py = gather_disc(arr, m, xs, ys, use_maps, *centre, radius)
        use = _usable(vals, px, py, centre, q, ceiling_adu, r_core)
        n_region = int(use.sum())
        if n_region < min_pixels:
            return CentreFit.failed("lorentzian", n_region)
        vals, px, py = vals[use], px[use], py[use]
        start = _to_solver(_initial(vals, centre, r_core)) if q is None else q
        result = _solve(vals, px, py, start, rel_error)
        if result is None or not _plausible(result[0], centre, radius, px, py, r_core > 0):
            return CentreFit.failed("lorentzian", n_region)
        q, error, n_used = result
        moved = math.hypot(q[0] - centre[0], q[1] - centre[1])
        refit, last_n = ceiling_adu is not None and n_region != last_n, n_region
        centre = (float(q[0]), float(q[1]))
        if moved <= 0.25 * radius and not refit:
            break
    if q is None or math.hypot(centre[0] - guess[0], centre[1] - guess[1]) > radius:
        return CentreFit.failed("lorentzian", n_used)
    width = float(_to_natural(q)[3]) if r_core == 0 else _NAN  # a flank fit has no width
    return CentreFit(centre[0], centre[1], "lorentzian", True, n_used, error, width)


def find_centre(
    frame: ArrayLike,
    mask: ArrayLike | None = None,
    *,
    x: ArrayLike | None = None,
    y: ArrayLike | None = None,
    threshold: float | None = None,
    radius_px: float = 15.0,
    ceiling_adu: float | None = None,
) -> CentreFit:
    """Centre of one frame: :func:`centre_of_mass`, then :func:`fit_lorentzian`.

    Never raises for bad frame content.  When the centre of mass fails, that failure is
    returned; when only the Lorentzian fit fails, the centre-of-mass result is returned
    (``method="com"``, ``success=True``), so ``method`` tells how good the centre is.

    Parameters
    ----------
    frame, mask, x, y
        As for :func:`centre_of_mass`.
    threshold : float, optional
        Centre-of-mass threshold in ADU (default: automatic, see the module docstring).
    radius_px : float
        Radius of the Lorentzian fit region (pixels).
    ceiling_adu : float, optional
        See :func:`fit_lorentzian`.

    Examples
    --------
    >>> fit = find_centre(frame, mask)  # doctest: +SKIP
    >>> fit.cx, fit.cy, fit.method, fit.success  # doctest: +SKIP
    (760.21, 240.37, 'lorentzian', True)
    """
    com = centre_of_mass(frame, mask, x=x, y=y, threshold=threshold)
    if not com.success:
        return com
    fit = fit_lorentzian(
        frame, com.centre, mask, x=x, y=y, radius_px=radius_px, ceiling_adu=ceiling_adu
    )
    return fit if fit.success else com


# --------------------------------------------------------------------------- Friedel pairs


def _peak_arrays(
    px: ArrayLike, py: ArrayLike, weights: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs = np.asarray(px, dtype=np.float64).ravel()
    ys = np.asarray(py, dtype=np.float64).ravel()
    if xs.shape != ys.shape:
        raise DataError(f"px has {xs.size} peaks, py {ys.size}", field="peaks")
    w = np.ones_like(xs) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != xs.shape:
        raise DataError(f"{w.size} weights for {xs.size} peaks", field="weights")
    keep = np.isfinite(xs) & np.isfinite(ys) & np.isfinite(w) & (w > 0)
    return xs[keep], ys[keep], w[keep]


def _select_peaks(
    xs: np.ndarray,
    ys: np.ndarray,
    w: np.ndarray,
    guess: tuple[float, float],
    min_radius: float,
    max_peaks: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop peaks near the guess (the beam itself); cap the number of peaks."""
    r = np.hypot(xs - guess[0], ys - guess[1])
    keep = r >= min_radius
    xs, ys, w, r = xs[keep], ys[keep], w[keep], r[keep]
    if xs.size > max_peaks:  # strongest peaks (given weights), else the innermost
        order = np.argsort(-w if not np.all(w == w[0]) else r, kind="stable")[:max_peaks]
        xs, ys, w = xs[order], ys[order], w[order]
    return xs, ys, w


def _score_maximum(
    mx: np.ndarray, my: np.ndarray, pw: np.ndarray, guess: tuple[float, float], width: float,
    max_shift: float, *, tol: float = 1e-4, max_iter: int = 200,
) -> np.ndarray:  # fmt: skip
    """Local maximum of ``F(c) = sum w exp(-|m - c|^2 / (2 width^2))`` nearest ``guess``.

    Mean-shift ascent ``c <- sum e m / sum e`` (``e`` the weighted kernel values): the
    fixed point is ``grad F = 0`` and every step increases ``F`` (so minimises ``1/F``)
    without ever jumping to a neighbouring maximum.  ``c`` stays within ``max_shift`` of
    ``guess`` per axis.
    """
    c = np.array(guess, dtype=float)
    lower, upper = c - max_shift, c + max_shift
    inv = 1.0 / (2.0 * width * width)
    for _ in range(max_iter):
        dx, dy = mx - c[0], my - c[1]
        e = pw * np.exp(-(dx * dx + dy * dy) * inv)
        total = float(e.sum())
        if not total > 1e-300:  # no pair near c
            break
        new = np.clip([float(e @ mx) / total, float(e @ my) / total], lower, upper)
        step = math.hypot(new[0] - c[0], new[1] - c[1])
        c = new
        if step < tol:
            break
    return c


def _polish(
    mx: np.ndarray, my: np.ndarray, pw: np.ndarray, c: np.ndarray, capture: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean of the selected mid-points with iterative 3.5-sigma (2-D Rayleigh) clipping.

    Returns the centre, the selection and the final clipping radius (pixels).
    """
    sel = np.hypot(mx - c[0], my - c[1]) <= capture
    cut = capture
    for _ in range(20):
        if not sel.any():
            break
        c = np.array([np.average(mx[sel], weights=pw[sel]), np.average(my[sel], weights=pw[sel])])
        dev = np.hypot(mx - c[0], my - c[1])
        sigma_coord = float(np.median(dev[sel])) / 1.1774  # Rayleigh median = 1.1774 sigma
        cut = min(max(3.5 * sigma_coord, 0.05), capture)
        new = dev <= cut
        if np.array_equal(new, sel):
            break
        sel = new
    return c, sel, cut


def _chance_pairs(n_candidates: int, search_radius: float, cut: float, box: float) -> int:
    """Pairs that chance alone puts within ``cut`` of the best point of the search box.

    Mid-points of unrelated peaks have the local density ``n_candidates / (pi R^2)``, so
    ``mu = n_candidates cut^2 / R^2`` fall within ``cut`` of a given point; the search
    looks at ``K = (box / cut)^2`` such cells.  Returns the Poisson(``mu``) count
    exceeded with probability below ``0.01 / K`` (look-elsewhere corrected).
    """
    mu = n_candidates * (cut / search_radius) ** 2
    alpha = 0.01 / max((box / max(cut, 0.05)) ** 2, 1.0)
    k, term = 0, math.exp(-mu)
    cdf = term
    while 1.0 - cdf > alpha and k < 10_000:
        k += 1
        term *= mu / k
        cdf += term
    return k


def refine_centre_friedel(
    px: ArrayLike,
    py: ArrayLike,
    guess: tuple[float, float],
    *,
    sigma_px: float = 2.0,
    min_pairs: int = 4,
    max_shift_px: float = 1.0,
    weights: ArrayLike | None = None,
    min_radius_px: float | None = None,
    max_peaks: int = 1000,
) -> CentreFit:
    """Refine a centre from Friedel-mate peak pairs (seed 004, Fig. 4).

    Parameters
    ----------
    px, py : arrays
        Peak positions in x/y units (pixels), e.g. peakfinder8 centroids.
    guess : (float, float)
        Start centre (e.g. from :func:`find_centre`).
    sigma_px : float
        Characteristic peak width of the score (pixels; the seed uses about 2).  The
        mid-point kernel and the capture radius of the pair matching are ``sigma/2``.
    min_pairs : int
        Fewer matched pairs make the refinement fail.
    max_shift_px : float
        The centre is searched within this distance (per axis) of ``guess``.
    weights : array, optional
        Per-peak weights (e.g. intensities); pairs weigh ``w_i w_j`` in the score and
        ``sqrt(w_i w_j)`` in the polish.  Peaks with non-positive or NaN weight are dropped.
    min_radius_px : float, optional
        Peaks closer than this to ``guess`` are ignored (they may be the beam itself);
        default ``max_shift_px + 2 sigma_px``.
    max_peaks : int
        Beyond this number only the strongest peaks (by weight; without weights the
        innermost) are used, which bounds the O(N^2) pair search.

    Returns
    -------
    CentreFit
        ``method="friedel"``, ``n_pairs`` matched pairs, ``rms_px`` RMS mid-point scatter.
    """
    sigma = _positive(sigma_px, "sigma_px")
    max_shift = _positive(max_shift_px, "max_shift_px")
    if max_peaks < 2:
        raise ConfigError(f"must be at least 2, got {max_peaks}", field="centre.max_peaks")
    g = (float(guess[0]), float(guess[1]))
    xs, ys, w = _peak_arrays(px, py, weights)
    if not all(math.isfinite(v) for v in g):
        return CentreFit.failed("friedel")
    min_r = max_shift + 2.0 * sigma if min_radius_px is None else float(min_radius_px)
    xs, ys, w = _select_peaks(xs, ys, w, g, min_r, int(max_peaks))
    if xs.size < 2 * max(min_pairs, 1):
        return CentreFit.failed("friedel")
    w = w / w.max()
    search = math.sqrt(2.0) * max_shift + 2.0 * sigma
    ii, jj = pair_midpoints(xs, ys, g[0], g[1], search)
    if ii.size < max(min_pairs, 1):
        return CentreFit.failed("friedel", int(ii.size))
    mx, my, pw = 0.5 * (xs[ii] + xs[jj]), 0.5 * (ys[ii] + ys[jj]), w[ii] * w[jj]
    c = _score_maximum(mx, my, pw, g, 0.5 * sigma, max_shift)
    dev = np.hypot(mx - c[0], my - c[1])
    near = dev <= 0.5 * sigma
    order = np.flatnonzero(near)[np.argsort(dev[near], kind="stable")]
    keep = match_one_to_one(ii, jj, order, xs.size)
    mx, my, pw = mx[keep], my[keep], np.sqrt(pw[keep])
    c, sel, cut = _polish(mx, my, pw, c, 0.5 * sigma)
    n = int(sel.sum())
    chance = _chance_pairs(ii.size, search, cut, 2.0 * max_shift)
    shift = math.hypot(c[0] - g[0], c[1] - g[1])
    if n < max(min_pairs, chance + 1, 1) or shift > math.sqrt(2.0) * max_shift + sigma:
        return CentreFit.failed("friedel", n)
    rms = math.sqrt(float(np.mean((mx[sel] - c[0]) ** 2 + (my[sel] - c[1]) ** 2)))
    return CentreFit(float(c[0]), float(c[1]), "friedel", True, n, rms)
