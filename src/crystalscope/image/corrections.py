"""Detector artifact corrections of raw frames (seed 004, section 3.1.2).

Three detector imperfections are corrected before any image analysis: faulty (dead or
hot) pixels, the non-uniform response to an even illumination (flat field), and
saturation, which is either a sharp cut-off (integrating detectors: flagged) or the
count-rate dependent coincidence loss of counting detectors (corrected with a
paralyzable dead-time model).

Order of operations
-------------------
:func:`correct_frame` undoes the detector response in the reverse order of the
simulator's (:mod:`crystalscope.simulate.render`: flat field -> Poisson counting ->
dead time -> gain -> hot/dead pixels -> saturation).  For each pixel of a raw frame
``A`` (ADU):

1. **Gaps**: pixels that do not exist (``valid`` False) keep their raw value and are
   flagged.  They are never used or filled by the interpolation.
2. **Bad pixels** (``bad``, dead and hot pixels from the mask file) are left out of all
   further steps; their values are restored in step 7.
3. **Non-finite values** (NaN, inf) are kept and flagged.
4. **Saturation** is flagged on the raw value, ``A >= saturation_adu``; the pixel is
   still corrected (its value is a lower bound).
5. **ADU to counts**, ``m = A / g`` (``g = gain_adu_per_count``), and **dead-time
   inversion** of the paralyzable model ``m = n exp(-n tau / T)`` on its principal
   branch (:func:`dead_time_correct`); counts at or above the maximum observable
   ``m_max = T / (e tau)`` are ambiguous, set to ``n = T / tau`` and flagged.
6. **Flat field**, ``n / f``, and back to ADU, ``g n / f``.
7. **Bad pixels** are replaced by the mean of their usable 8-neighbours in the corrected
   frame (growing the neighbourhood to the 5 x 5, 7 x 7 ... square, up to
   ``max_radius`` pixels, when none is usable; :func:`interpolate_bad_pixels`), or,
   with ``interpolate=False``, set to 0 and flagged.  Only pixels that are not flagged
   after steps 1-5 serve as neighbours, and never the other bad pixels, so the result
   does not depend on the order in which the pixels are visited.  A bad pixel without
   any usable neighbour within ``max_radius`` is set to 0 and flagged.

The returned mask is True at every flagged pixel: gaps, non-interpolated bad pixels,
non-finite values, saturated pixels and pixels beyond the dead-time maximum.  Values
under the mask carry no information.  A frame that is entirely NaN (or zero) is not an
error: it comes back unchanged with every NaN pixel flagged; callers decide whether
to skip it.

Steps 1-6 are one vectorised numba pass over all pixels for the ordinary ones plus a
scalar pass over the indices of the others (gaps, bad, non-finite, saturated and bright
pixels); all kernels are ``nogil``, so dask threads run in parallel.  A 516 x 1556
LAMBDA frame with every correction on takes 3-4 ms on one core of the 2-core
development machine (docs/algorithms/corrections.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numba
import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from crystalscope.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_MAX_RADIUS",
    "Corrections",
    "correct_frame",
    "dead_time_correct",
    "flat_field_correct",
    "frame_status",
    "interpolate_bad_pixels",
    "saturation_mask",
]

DEFAULT_MAX_RADIUS = 4
"""Largest half-width (pixels) of the square searched for usable neighbours of a bad pixel."""

_INV_E = math.exp(-1.0)
_SERIES_MAX = 0.005  # below this y = m tau / T the power series alone is exact to 1e-16
_BRANCH_MIN = 0.25  # above this the branch-point series is the better starting value

# ------------------------------------------------------------------------- dead time


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _series_factor(y: float) -> float:
    """``x / y`` from the first 8 terms of ``x = sum_k k^(k-1) / k! y^k`` (Horner)."""
    s = 2097152.0 / 40320.0
    s = 117649.0 / 5040.0 + y * s
    s = 10.8 + y * s
    s = 625.0 / 120.0 + y * s
    s = 8.0 / 3.0 + y * s
    s = 1.5 + y * s
    s = 1.0 + y * s
    return 1.0 + y * s


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _invert_paralyzable(y: float) -> float:
    """The root ``x in [0, 1)`` of ``x exp(-x) = y`` for ``0 <= y < 1/e`` (``x = -W0(-y)``).

    Small ``y``: the Lagrange series ``x = sum_k k^(k-1) / k! y^k`` (8 terms, relative
    error < 1e-16 for ``y < 0.005``).  Otherwise Newton's method on
    ``g(x) = ln x - x - ln y``, which is concave and increasing on ``(0, 1)``, so that
    after the first step the iterates approach the root monotonically from below; it
    starts from the series (``y <= 0.25``) or from the expansion about the branch point,
    ``x = 1 - p + p^2/3 - 11 p^3/72 + 43 p^4/540`` with ``p = sqrt(2 (1 - e y))``, and
    stops when a step is below ``1e-15 x`` or no smaller than the previous one (rounding
    level near the branch point); at most 5 steps on ``0.005 <= y < 1/e``.
    """
    series = y * _series_factor(y)
    if y < _SERIES_MAX:
        return series
    if y <= _BRANCH_MIN:
        x = series
    else:
        p2 = 2.0 * (1.0 - math.e * y)
        if p2 <= 0.0:
            return 1.0
        p = math.sqrt(p2)
        x = 1.0 - p + p2 / 3.0 - 11.0 / 72.0 * p * p2 + 43.0 / 540.0 * p2 * p2
    ln_y = math.log(y)
    last = math.inf
    for _ in range(30):
        slope = 1.0 / x - 1.0
        if slope <= 0.0:
            return 1.0
        step = (math.log(x) - x - ln_y) / slope
        x_new = min(max(x - step, 0.5 * x), 1.0)
        change = abs(x_new - x)
        if change <= 1e-15 * x or change >= last:  # converged, or down to rounding
            return x_new
        last = change
        x = x_new
    return x


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _dead_time_kernel(m: np.ndarray, r: float, n: np.ndarray, beyond: np.ndarray) -> None:
    for i in range(m.size):
        y = m[i] * r
        if y >= _INV_E:
            n[i] = 1.0 / r
            beyond[i] = True
        elif y > 0.0:
            n[i] = _invert_paralyzable(y) / r
        else:
            n[i] = m[i]  # zero, negative (pedestal noise) or NaN: no rate, nothing lost


def _check_dead_time(dead_time_s: float | None, exposure_s: float | None) -> float:
    """``tau / T`` (0 when dead time is off); ConfigError for invalid values."""
    if dead_time_s is None:
        return 0.0
    if not (math.isfinite(dead_time_s) and dead_time_s >= 0):
        raise ConfigError(
            f"dead time must be a non-negative number of seconds, got {dead_time_s}",
            field="corrections.dead_time_s",
        )
    if exposure_s is None:
        raise ConfigError(
            "dead-time correction needs the frame exposure time", field="corrections.exposure_s"
        )
    if not (math.isfinite(exposure_s) and exposure_s > 0):
        raise ConfigError(
            f"exposure must be a positive number of seconds, got {exposure_s}",
            field="corrections.exposure_s",
        )
    return float(dead_time_s) / float(exposure_s)


def dead_time_correct(
    counts: ArrayLike,
    dead_time_s: float,
    exposure_s: float | None,
    *,
    dtype: DTypeLike = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Invert the paralyzable dead-time model of counting detectors.

    A pixel that registers ``n`` true counts during the exposure ``T`` with dead time
    ``tau`` per count records (Feller's paralyzable counter)

    .. math::

        m = n \\exp(-n \\tau / T),

    which rises to its maximum ``m_max = T / (e tau)`` at ``n = T / tau`` and falls
    beyond.  The inversion takes the principal branch ``n <= T / tau``,
    ``n = -(T / tau) W_0(-m tau / T)`` (Lambert W), computed in float64 with a series
    for low rates and Newton steps otherwise (relative error < 1e-12).  Counts
    ``m >= m_max`` have no principal-branch solution (or sit at the ambiguous maximum):
    they are set to ``T / tau`` and flagged.  Pixels on the falling branch (true rates
    above ``T / tau``) cannot be told from lower rates by the value alone and are
    corrected as if on the rising branch.

    Parameters
    ----------
    counts : array_like
        Measured counts per pixel per frame (``ADU / gain``).  Zero, negative and NaN
        values are returned unchanged.
    dead_time_s : float
        Dead time ``tau`` per count in seconds (0: nothing to correct).
    exposure_s : float
        Frame exposure ``T`` in seconds.
    dtype : dtype, optional
        Output dtype of the corrected counts (default float32).

    Returns
    -------
    n : ndarray
        Corrected counts, same shape as ``counts``.
    beyond : ndarray of bool
        True where ``counts >= m_max``.

    Raises
    ------
    ConfigError
        Negative or non-finite dead time (``corrections.dead_time_s``), missing or
        non-positive exposure (``corrections.exposure_s``).
    """
    r = _check_dead_time(dead_time_s, exposure_s)
    m = np.asarray(counts, dtype=np.float64)
    beyond = np.zeros(m.shape, dtype=bool)
    if r == 0.0:
        return m.astype(dtype), beyond
    flat_m = np.ascontiguousarray(m).ravel()
    n = np.empty(flat_m.size, dtype=np.float64)
    _dead_time_kernel(flat_m, r, n, beyond.reshape(-1))
    return n.reshape(m.shape).astype(dtype), beyond


# ----------------------------------------------------------------- simple corrections


def saturation_mask(frame: ArrayLike, saturation_adu: float | None) -> np.ndarray:
    """Pixels at or above the saturation level: ``frame >= saturation_adu`` (bool).

    ``None`` means the detector does not saturate (all False); NaN pixels are not
    flagged here (:func:`correct_frame` flags them separately).
    """
    values = np.asarray(frame)
    if saturation_adu is None:
        return np.zeros(values.shape, dtype=bool)
    _check_saturation(saturation_adu)
    with np.errstate(invalid="ignore"):
        return np.asarray(values >= saturation_adu)


def _check_saturation(saturation_adu: float | None) -> float:
    if saturation_adu is None:
        return math.inf
    if not saturation_adu > 0:  # also NaN
        raise ConfigError(
            f"saturation level must be positive, got {saturation_adu}",
            field="corrections.saturation_adu",
        )
    return float(saturation_adu)


def _check_flat(
    flat: np.ndarray, usable: np.ndarray | None, field: str, path: str | None = None
) -> None:
    """DataError unless ``flat`` is finite and positive on every usable pixel."""
    with np.errstate(invalid="ignore"):
        broken = ~(np.isfinite(flat) & (flat > 0))
    if usable is not None:
        broken &= usable
    n_broken = int(np.count_nonzero(broken))
    if n_broken:
        ss, fs = (int(i) for i in np.unravel_index(int(np.argmax(broken)), flat.shape))
        raise DataError(
            f"flat field is zero, negative or not finite at {n_broken} pixel(s), "
            f"first at (fs, ss) = ({fs}, {ss}): {flat[ss, fs]}; mask those pixels as bad",
            path=path,
            field=field,
        )


def flat_field_correct(
    frame: ArrayLike, flat: ArrayLike, *, valid: np.ndarray | None = None
) -> np.ndarray:
    """Divide by the relative pixel efficiency: ``frame / flat`` (float32).

    Parameters
    ----------
    frame : array_like
        Image (ADU or counts), ``(ss, fs)``.
    flat : array_like
        Relative efficiency of each pixel (mean about 1), same shape.
    valid : ndarray of bool, optional
        Pixels to correct; the others (gaps) are returned unchanged and their flat
        values are not checked.

    Raises
    ------
    DataError
        ``flat`` has another shape than ``frame``, or is zero, negative or not finite
        at a pixel to correct (``flat_field``).
    """
    values = np.asarray(frame, dtype=np.float32)
    f = np.asarray(flat, dtype=np.float32)
    if f.shape != values.shape:
        raise DataError(
            f"flat field has shape {f.shape}, the frame {values.shape}", field="flat_field"
        )
    use = None if valid is None else _mask_like(valid, values.shape, "valid")
    _check_flat(f, use, "flat_field")
    if use is None:
        return values / f
    out = values.copy()
    out[use] = values[use] / f[use]
    return out


def _mask_like(mask: ArrayLike, shape: tuple[int, ...], field: str) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != shape:
        raise DataError(f"{field} mask has shape {m.shape}, the frame {shape}", field=field)
    return np.ascontiguousarray(m, dtype=bool)


# ---------------------------------------------------------------------- interpolation


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _usable(unusable: np.ndarray, panel: np.ndarray, i: int, j: int, own: int) -> bool:
    n_ss, n_fs = unusable.shape
    if i < 0 or j < 0 or i >= n_ss or j >= n_fs or unusable[i, j]:
        return False
    return panel.size == 0 or panel[i, j] == own


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _neighbour_means(
    values: np.ndarray,
    unusable: np.ndarray,
    panel: np.ndarray,
    targets: np.ndarray,
    max_radius: int,
    fill: float,
    out: np.ndarray,
) -> np.ndarray:
    """Mean of the usable pixels nearest to each target (flat index) in growing squares.

    ``out[k]`` gets the mean of the usable pixels at Chebyshev distance ``r`` from
    target ``k`` for the smallest ``r <= max_radius`` that has any (``fill`` if none);
    with a non-empty ``panel`` map only pixels of the target's panel count.  Returns the
    number of pixels averaged per target (0: filled with ``fill``).
    """
    n_fs = values.shape[1]
    used = np.zeros(targets.size, dtype=np.int32)
    for k in range(targets.size):
        i0 = targets[k] // n_fs
        j0 = targets[k] % n_fs
        own = panel[i0, j0] if panel.size > 0 else 0
        out[k] = fill
        for r in range(1, max_radius + 1):
            total = 0.0
            count = 0
            for d in range(-r, r + 1):  # the square's border: rows i0 -+ r, columns j0 -+ r
                for i, j in ((i0 - r, j0 + d), (i0 + r, j0 + d)):
                    if _usable(unusable, panel, i, j, own):
                        total += values[i, j]
                        count += 1
                if abs(d) < r:
                    for i, j in ((i0 + d, j0 - r), (i0 + d, j0 + r)):
                        if _usable(unusable, panel, i, j, own):
                            total += values[i, j]
                            count += 1
            if count > 0:
                out[k] = total / count
                used[k] = count
                break
    return used


def interpolate_bad_pixels(
    frame: ArrayLike,
    bad: ArrayLike,
    *,
    valid: np.ndarray | None = None,
    panel_id: np.ndarray | None = None,
    max_radius: int = DEFAULT_MAX_RADIUS,
    fill: float = math.nan,
) -> np.ndarray:
    """Replace bad pixels by the mean of their good neighbours (float32 copy).

    A bad pixel gets the mean of the good pixels among its 8 neighbours; if none is
    good, of the good pixels on the border of the 5 x 5 square, then 7 x 7, up to the
    ``(2 max_radius + 1)`` square.  Good pixels are valid, not bad and finite; the
    replaced values are never used for other bad pixels.  Bad pixels with no good pixel
    within ``max_radius`` get ``fill``.  Invalid pixels (gaps) are neither used nor
    filled.

    Parameters
    ----------
    frame : array_like
        Image ``(ss, fs)``.
    bad : array_like of bool
        True at the pixels to replace.
    valid : ndarray of bool, optional
        False at pixels that do not exist (gaps between modules).
    panel_id : ndarray of int, optional
        Panel index of each pixel; neighbours are then taken from the same panel only
        (raw layouts that put physically distant modules side by side).
    max_radius : int
        Largest square half-width searched (pixels, default 4).
    fill : float
        Value of bad pixels without a good neighbour (default NaN).

    Raises
    ------
    DataError
        Masks of another shape than ``frame``.
    """
    values = np.ascontiguousarray(frame, dtype=np.float32)
    if values.ndim != 2:
        raise DataError(f"expected a 2-D frame, got shape {values.shape}", field="frame")
    is_bad = _mask_like(bad, values.shape, "bad")
    unusable = is_bad | ~np.isfinite(values)
    if valid is not None:
        ok = _mask_like(valid, values.shape, "valid")
        unusable |= ~ok
        is_bad = is_bad & ok
    targets = np.flatnonzero(is_bad)
    out = values.copy()
    if targets.size:
        panel = _panel_map(panel_id, values.shape)
        means = np.empty(targets.size, dtype=np.float64)
        _neighbour_means(values, unusable, panel, targets, int(max_radius), float(fill), means)
        out.reshape(-1)[targets] = means
    return out


def _panel_map(panel_id: ArrayLike | None, shape: tuple[int, ...]) -> np.ndarray:
    if panel_id is None:
        return np.zeros((0, 0), dtype=np.int32)
    p = np.asarray(panel_id)
    if p.shape != shape:
        raise DataError(f"panel map has shape {p.shape}, the frame {shape}", field="panel_id")
    return np.ascontiguousarray(p, dtype=np.int32)


# ------------------------------------------------------------------------ the pipeline


@dataclass(frozen=True, eq=False)
class Corrections:
    """Everything the corrections of one data set need (arrays of the raw frame shape).

    Attributes
    ----------
    bad : ndarray of bool, optional
        Dead/hot pixel mask from the mask file (True = bad).
    valid : ndarray of bool, optional
        False at pixels that do not exist (gaps, outside panels, masked-off regions).
    flat : ndarray of float, optional
        Relative pixel efficiency (mean about 1); must be finite and positive at every
        valid pixel that is not bad.
    interpolate : bool
        True: replace bad pixels by their neighbours' mean; False: flag them.
    gain_adu_per_count : float
        ADU per detected count (electron or photon).
    dead_time_s : float, optional
        Paralyzable dead time per count in seconds (None or 0: no correction).
    exposure_s : float, optional
        Frame exposure in seconds; required with ``dead_time_s``.
    saturation_adu : float, optional
        Raw values at or above are flagged (None: no saturation level).
    panel_id : ndarray of int, optional
        Panel index per pixel: interpolation then stays within a panel.
    max_radius : int
        Largest neighbourhood half-width for the interpolation (pixels).

    Raises
    ------
    ConfigError
        Invalid scalars (``corrections.<name>``), dead time without exposure
        (``corrections.exposure_s``).
    DataError
        Arrays of different shapes (``corrections.<name>``) or a flat field that is zero,
        negative or not finite at a usable pixel (``corrections.flat_field``).
    """

    bad: np.ndarray | None = None
    valid: np.ndarray | None = None
    flat: np.ndarray | None = None
    interpolate: bool = True
    gain_adu_per_count: float = 1.0
    dead_time_s: float | None = None
    exposure_s: float | None = None
    saturation_adu: float | None = None
    panel_id: np.ndarray | None = None
    max_radius: int = DEFAULT_MAX_RADIUS

    def __post_init__(self) -> None:
        g = self.gain_adu_per_count
        if not (math.isfinite(g) and g > 0):
            raise ConfigError(
                f"gain must be a positive number, got {g}", field="corrections.gain_adu_per_count"
            )
        _check_dead_time(self.dead_time_s, self.exposure_s)
        _check_saturation(self.saturation_adu)
        if int(self.max_radius) < 1:
            raise ConfigError(
                f"max_radius must be at least 1, got {self.max_radius}",
                field="corrections.max_radius",
            )
        shape = None
        for name, dtype in (("bad", bool), ("valid", bool), ("flat", np.float32),
                            ("panel_id", np.int32)):  # fmt: skip
            value = getattr(self, name)
            if value is None:
                continue
            arr = np.ascontiguousarray(value, dtype=dtype)
            if arr.ndim != 2 or (shape is not None and arr.shape != shape):
                raise DataError(
                    f"{name} map has shape {arr.shape}, expected {shape or '(ss, fs)'}",
                    field=f"corrections.{name}",
                )
            shape = arr.shape
            object.__setattr__(self, name, arr)
        if self.flat is not None:
            usable = None if self.valid is None else self.valid.copy()
            if self.bad is not None:
                usable = ~self.bad if usable is None else usable & ~self.bad
            _check_flat(self.flat, usable, "corrections.flat_field")

    @property
    def shape(self) -> tuple[int, ...] | None:
        """Frame shape the maps fix (None when no map is given)."""
        for arr in (self.bad, self.valid, self.flat, self.panel_id):
            if arr is not None:
                return tuple(arr.shape)
        return None

    @cached_property
    def _tau_over_t(self) -> float:
        return _check_dead_time(self.dead_time_s, self.exposure_s)

    @cached_property
    def _kernel_maps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flattened bad, valid and flat maps (defaults where absent) and the panel map."""
        size = int(np.prod(self.shape)) if self.shape is not None else 0
        bad = np.zeros(size, bool) if self.bad is None else self.bad.reshape(-1)
        valid = np.ones(size, bool) if self.valid is None else self.valid.reshape(-1)
        flat = np.ones(size, np.float32) if self.flat is None else self.flat.reshape(-1)
        return bad, valid, flat, _panel_map(self.panel_id, self.shape or (0, 0))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _fast_pass(
    frame: np.ndarray,
    bad: np.ndarray,
    valid: np.ndarray,
    flat: np.ndarray,
    gain: float,
    r: float,
    saturation: float,
    out: np.ndarray,
    special: np.ndarray,
) -> None:
    """Branch-free (vectorised) steps 4-6 for ordinary pixels; marks the others.

    Ordinary pixels are valid, not bad, finite, below saturation and at dead-time rates
    ``0 < y < 0.005``, where the series of :func:`_series_factor` inverts
    ``x exp(-x) = y`` to 1e-16 (or ``y <= 0``, left as is).  Everything else is marked
    in ``special`` for :func:`_special_pass`.
    """
    for i in range(frame.size):
        a = frame[i]
        n = a / gain
        y = n * r
        x = n * _series_factor(y)
        n = x if y > 0.0 else n
        out[i] = n * gain / flat[i]
        special[i] = (
            bad[i] | (not valid[i]) | (y >= _SERIES_MAX) | (a >= saturation) | (not (a - a == 0.0))
        )


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _special_pass(
    frame: np.ndarray,
    bad: np.ndarray,
    valid: np.ndarray,
    flat: np.ndarray,
    gain: float,
    r: float,
    saturation: float,
    index: np.ndarray,
    out: np.ndarray,
    mask: np.ndarray,
) -> int:
    """Steps 1-6 for the pixels listed in ``index``; bad ones move to its front.

    Returns the number of bad pixels, whose flat indices then fill ``index[:n_bad]``.
    Bad pixels get 0 and are flagged.
    """
    n_bad = 0
    for k in range(index.size):
        i = index[k]
        a = frame[i]
        if not valid[i]:
            out[i] = a
            mask[i] = True
            continue
        if bad[i]:
            out[i] = 0.0
            mask[i] = True
            index[n_bad] = i
            n_bad += 1
            continue
        if not np.isfinite(a):
            out[i] = a
            mask[i] = True
            continue
        flagged = a >= saturation
        n = a / gain
        y = n * r
        if y >= _INV_E:
            n = 1.0 / r
            flagged = True
        elif y > 0.0:
            n = _invert_paralyzable(y) / r
        out[i] = n * gain / flat[i]
        mask[i] = flagged
    return n_bad


def correct_frame(frame: ArrayLike, corrections: Corrections) -> tuple[np.ndarray, np.ndarray]:
    """Apply all detector corrections to one raw frame (order in the module doc).

    Parameters
    ----------
    frame : array_like
        Raw frame ``(ss, fs)`` in ADU.
    corrections : Corrections
        What to correct.

    Returns
    -------
    corrected : ndarray of float32
        Corrected frame in ADU (``gain * n / flat``).
    mask : ndarray of bool
        True where the value is unusable: gaps, flagged or unfillable bad pixels,
        non-finite values, saturated pixels, pixels beyond the dead-time maximum.

    Raises
    ------
    DataError
        A frame that is not 2-D or whose shape differs from the correction maps'.
    """
    values = np.ascontiguousarray(frame, dtype=np.float32)
    shape = corrections.shape
    if values.ndim != 2 or (shape is not None and values.shape != shape):
        raise DataError(
            f"frame has shape {values.shape}, the correction maps {shape or '(ss, fs)'}",
            field="frame",
        )
    if shape is None:
        corrections = _with_shape(corrections, values.shape)
    bad, valid, flat, panel = corrections._kernel_maps
    gain, r = float(corrections.gain_adu_per_count), corrections._tau_over_t
    saturation = _check_saturation(corrections.saturation_adu)
    out = np.empty(values.shape, dtype=np.float32)
    mask = np.empty(values.shape, dtype=bool)
    flat_values, flat_out, flat_mask = values.reshape(-1), out.reshape(-1), mask.reshape(-1)
    _fast_pass(flat_values, bad, valid, flat, gain, r, saturation, flat_out, flat_mask)
    index = np.flatnonzero(flat_mask)
    flat_mask[index] = False
    n_bad = _special_pass(
        flat_values, bad, valid, flat, gain, r, saturation, index, flat_out, flat_mask
    )
    if n_bad and corrections.interpolate:
        targets = index[:n_bad]
        means = np.empty(n_bad, dtype=np.float64)
        used = _neighbour_means(out, mask, panel, targets, int(corrections.max_radius), 0.0, means)
        flat_out[targets] = means
        flat_mask[targets] = used == 0
    return out, mask


def _with_shape(corrections: Corrections, shape: tuple[int, ...]) -> Corrections:
    """``corrections`` with an all-valid map of ``shape`` (for map-less corrections).

    Cached on the instance, so that a map-less :class:`Corrections` used for many frames
    builds its default maps once per frame shape.
    """
    cache = corrections.__dict__.setdefault("_shaped", {})
    if shape not in cache:
        cache[shape] = _shaped_copy(corrections, shape)
    return cache[shape]  # type: ignore[no-any-return]


def _shaped_copy(corrections: Corrections, shape: tuple[int, ...]) -> Corrections:
    return Corrections(
        valid=np.ones(shape, dtype=bool),
        interpolate=corrections.interpolate,
        gain_adu_per_count=corrections.gain_adu_per_count,
        dead_time_s=corrections.dead_time_s,
        exposure_s=corrections.exposure_s,
        saturation_adu=corrections.saturation_adu,
        max_radius=corrections.max_radius,
    )


@numba.njit(cache=True, nogil=True)
def _status_counts(values: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """Usable pixels, non-finite usable pixels and non-zero usable pixels (one pass)."""
    v, m = values.ravel(), mask.ravel()
    usable = bad = nonzero = 0
    for i in range(v.size):
        x = np.float64(v[i])
        use = not m[i]
        usable += 1 if use else 0
        bad += 1 if use and not (x - x == 0.0) else 0  # NaN or infinite
        nonzero += 1 if use and x != 0.0 else 0
    return usable, bad, nonzero


def frame_status(values: ArrayLike, mask: ArrayLike) -> int:
    """Whether a raw frame can be processed: 0 usable; 1 with non-finite usable pixels,
    2 if all usable pixels are zero, 3 if no pixel is usable (all masked).

    Parameters
    ----------
    values : array_like
        The raw frame.
    mask : array_like of bool, same shape
        True for pixels that are not used anyway (gaps, known bad pixels).
    """
    v = np.ascontiguousarray(values)
    m = np.ascontiguousarray(mask, dtype=np.bool_)
    if m.shape != v.shape:
        raise DataError(f"mask shape {m.shape} differs from frame {v.shape}", field="mask")
    usable, bad, nonzero = _status_counts(v, m)
    if usable == 0:
        return 3
    if bad:
        return 1
    return 0 if nonzero else 2
