"""Summation integration of predicted spots with a local background annulus.

For a spot predicted at raw pixel-centre position ``(fs, ss)`` the pixels ``[i, j]``
with ``rho^2 = (j - fs)^2 + (i - ss)^2`` are split into

* the **peak disk** ``P``: ``rho <= r_peak``;
* the **background annulus** ``B``: ``r_bg_inner <= rho <= r_bg_outer``, without every
  pixel that lies in the peak disk of any predicted spot (of any crystal of the frame).

Only *usable* pixels enter the sums: inside the array, on the panel of the spot's
centre pixel (``panel_map``), not masked and finite.  The background model is fitted to
the ``n_bg`` usable annulus pixels ``v_b`` at offsets ``(x_b, y_b)`` from the spot:

``plane`` (for raw patterns with background gradients)
    least squares ``v = b_0 + b_1 (x - <x>) + b_2 (y - <y>)``; the background under
    the peak is the plane summed over the peak pixels,
    ``B_P = n_peak b_0 + b_1 sum_P (x - <x>) + b_2 sum_P (y - <y>)``.  Annuli too small
    (fewer than 4 pixels) or too lopsided (the 2 x 2 moment matrix nearly singular) fall
    back to the mean.
``mean`` (for background-subtracted patterns)
    ``b_0 = <v>``, ``B_P = n_peak b_0``.

With ``S_P`` the sum of the ``n_peak`` usable peak pixels,

.. math::

    I = S_P - B_P, \\qquad
    \\sigma^2(I) = g \\max(I, 0) + n_\\mathrm{peak}\\, \\sigma_\\mathrm{bg}^2
                   \\left(1 + \\frac{n_\\mathrm{peak}}{n_\\mathrm{bg}}\\right),

where ``g`` is the gain (ADU per count, so that a signal of ``I`` ADU has the Poisson
variance ``g I``) and ``sigma_bg^2`` the sample variance of the annulus pixels about the
fitted model, ``sum (v - model)^2 / (n_bg - n_par)`` (``n_par`` = 3 for the plane, 1 for
the mean).  The second term is the variance of the background contribution of the peak
pixels (``n_peak sigma_bg^2``) plus that of its estimate (``n_peak^2 sigma_bg^2 / n_bg``).
Measuring the pixel variance instead of assuming Poisson statistics of the background
level is what makes the same formula right for background-subtracted frames, where the
original background level (and with it the Poisson variance of the background) is no
longer in the data but its noise is.

Outputs per spot: ``I, sigma`` (ADU); ``background`` = ``B_P / n_peak`` (mean background
per peak pixel, ADU); ``bg_sigma`` = ``sigma_bg``; ``n_peak, n_bg``; ``peak`` (largest
usable peak pixel, before background subtraction); ``flags``
(:mod:`crystalscope.integrate.observations`): masked or non-finite peak pixels
(``FLAG_MASKED``), a peak pixel ``>= saturation_adu`` (``FLAG_SATURATED``), peak pixels
off the array or the spot's panel (``FLAG_EDGE``), a peak pixel shared with another
spot's peak disk (``FLAG_OVERLAP``), ``n_bg < min_background_px``
(``FLAG_FEW_BACKGROUND``).  ``I`` and ``sigma`` are NaN without usable peak pixels or
background pixels (and ``sigma`` also when ``n_bg <= n_par``).

The per-pixel work is a numba kernel
(:mod:`crystalscope.integrate._summation_kernels`); a few hundred spots take well under
a millisecond.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from crystalscope.errors import ConfigError, DataError
from crystalscope.integrate._summation_kernels import N_OUT_F, N_OUT_I, integrate_all, mark_peaks
from crystalscope.integrate.partiality import PARTIALITY_MODELS

__all__ = ["SPOT_COLUMNS", "IntegrationParams", "integrate_arrays", "integrate_spots"]

#: Columns and dtypes of :func:`integrate_spots`.
SPOT_COLUMNS: dict[str, str] = {
    "I": "float64",
    "sigma": "float64",
    "background": "float64",
    "bg_sigma": "float64",
    "n_peak": "int32",
    "n_bg": "int32",
    "peak": "float64",
    "flags": "int32",
}

_MAX_RADIUS_PX = 100.0
_MAX_POSITION_PX = 1e9
_local = threading.local()


@dataclass(frozen=True)
class IntegrationParams:
    """Parameters of summation integration and spot prediction.

    Attributes
    ----------
    r_peak_px : float
        Radius of the peak disk, px (default 3).
    r_bg_inner_px, r_bg_outer_px : float
        Radii of the background annulus, px (defaults 4 and 6); ``r_peak_px <=
        r_bg_inner_px < r_bg_outer_px``.
    background : {"plane", "mean"}
        Background model: a plane fitted to the annulus (raw patterns) or its mean
        (background-subtracted patterns).
    gain_adu_per_count : float
        Detector gain ``g`` (ADU per detected quantum) for the Poisson term of sigma.
    saturation_adu : float or None
        Peak pixels at or above this value set ``FLAG_SATURATED`` (None: never).
    min_background_px : int
        Fewer usable annulus pixels set ``FLAG_FEW_BACKGROUND`` (default 10).
    partiality : {"unity", "xsphere", "gaussian"}
        Model of the per-observation partiality estimate.
    prediction_factor : float
        Reflections with ``|s| <= prediction_factor * R`` are predicted.
    min_beam_distance_px : float
        Spots closer than this to the direct beam (the zero-order halo, where the
        background is steep and its subtraction biased) set ``FLAG_NEAR_BEAM``
        (default 20 px; 0 switches the flag off).
    """

    r_peak_px: float = 3.0
    r_bg_inner_px: float = 4.0
    r_bg_outer_px: float = 6.0
    background: Literal["plane", "mean"] = "plane"
    gain_adu_per_count: float = 1.0
    saturation_adu: float | None = None
    min_background_px: int = 10
    partiality: str = "xsphere"
    prediction_factor: float = 1.0
    min_beam_distance_px: float = 20.0

    def __post_init__(self) -> None:
        radii = (self.r_peak_px, self.r_bg_inner_px, self.r_bg_outer_px)
        if not all(isinstance(r, int | float) and 0 < r <= _MAX_RADIUS_PX for r in radii):
            raise ConfigError(
                f"integration radii must be in (0, {_MAX_RADIUS_PX:g}] px, got {radii}",
                field="r_peak_px",
            )
        if not self.r_peak_px <= self.r_bg_inner_px < self.r_bg_outer_px:
            raise ConfigError(
                f"need r_peak_px <= r_bg_inner_px < r_bg_outer_px, got {radii}",
                field="r_bg_inner_px",
            )
        if self.background not in ("plane", "mean"):
            raise ConfigError(
                f"background must be 'plane' or 'mean', got {self.background!r}",
                field="background",
            )
        _positive(self.gain_adu_per_count, "gain_adu_per_count")
        if self.saturation_adu is not None:
            _positive(self.saturation_adu, "saturation_adu")
        if isinstance(self.min_background_px, bool) or not (
            isinstance(self.min_background_px, int | np.integer) and self.min_background_px >= 0
        ):
            raise ConfigError(
                f"min_background_px must be an integer >= 0, got {self.min_background_px!r}",
                field="min_background_px",
            )
        if self.partiality not in PARTIALITY_MODELS:
            raise ConfigError(
                f"unknown partiality model {self.partiality!r}; choose one of "
                f"{', '.join(PARTIALITY_MODELS)}",
                field="partiality",
            )
        _positive(self.prediction_factor, "prediction_factor")
        if not (
            isinstance(self.min_beam_distance_px, int | float) and self.min_beam_distance_px >= 0
        ):
            raise ConfigError(
                f"min_beam_distance_px must be >= 0, got {self.min_beam_distance_px!r}",
                field="min_beam_distance_px",
            )


def _positive(value: Any, field: str) -> None:
    ok = isinstance(value, int | float | np.floating | np.integer) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value > 0):
        raise ConfigError(f"{field} must be a positive number, got {value!r}", field=field)


def _frame_array(frame: ArrayLike) -> np.ndarray:
    """The frame as a C-contiguous float32/float64 2-D array."""
    arr = np.asarray(frame)
    if arr.ndim != 2:
        raise DataError(f"frame must be a 2-D array, got shape {arr.shape}", field="frame")
    if arr.dtype.kind not in "fiub":
        raise DataError(f"frame must be numeric, got dtype {arr.dtype}", field="frame")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return np.ascontiguousarray(arr)


def _aux(array: ArrayLike | None, shape: tuple[int, ...], field: str, dtype: Any) -> np.ndarray:
    """A frame-sized auxiliary array (mask or panel map), or an empty (0, 0) one."""
    if array is None:
        return np.zeros((0, 0), dtype=dtype)
    arr = np.asarray(array)
    if arr.shape != shape:
        raise DataError(f"{field} has shape {arr.shape}, the frame {shape}", field=field)
    if dtype is np.uint8:  # a mask: any non-zero value is bad
        flags = arr if arr.dtype == np.bool_ else arr != 0
        return np.ascontiguousarray(flags).view(np.uint8)
    return np.ascontiguousarray(arr, dtype=dtype)


def _positions(fs: ArrayLike, ss: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    try:
        f = np.ascontiguousarray(fs, dtype=np.float64).reshape(-1)
        s = np.ascontiguousarray(ss, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError("spot positions must be numbers", field="fs") from None
    if f.shape != s.shape:
        raise DataError(f"fs and ss differ in length: {f.size} and {s.size}", field="ss")
    if not (np.all(np.abs(f) < _MAX_POSITION_PX) and np.all(np.abs(s) < _MAX_POSITION_PX)):
        raise DataError(
            f"spot positions must be finite and within {_MAX_POSITION_PX:g} px", field="fs"
        )
    return f, s


def _occupancy(shape: tuple[int, ...]) -> np.ndarray:
    """A zeroed int32 frame-sized buffer, one per thread and shape (reused between calls).

    Reuse avoids page-faulting a fresh multi-megabyte array in for every frame; callers
    undo their marks (:func:`mark_peaks` with ``step = -1``) so it is zero again.
    """
    buffers: dict[tuple[int, ...], np.ndarray] = _local.__dict__.setdefault("occ", {})
    occ = buffers.get(shape)
    if occ is None:
        buffers.clear()  # one shape at a time per thread
        occ = buffers[shape] = np.zeros(shape, dtype=np.int32)
    return occ


def integrate_arrays(
    frame: ArrayLike,
    fs: ArrayLike,
    ss: ArrayLike,
    params: IntegrationParams,
    *,
    mask: ArrayLike | None = None,
    panel_map: ArrayLike | None = None,
) -> dict[str, np.ndarray]:
    """:func:`integrate_spots` as a dict of typed column arrays (no DataFrame overhead)."""
    data = _frame_array(frame)
    f, s = _positions(fs, ss)
    mask_u8 = _aux(mask, data.shape, "mask", np.uint8)
    pmap = _aux(panel_map, data.shape, "panel_map", np.int64)
    out_f = np.full((f.size, N_OUT_F), np.nan)
    out_i = np.zeros((f.size, N_OUT_I), dtype=np.int64)
    if f.size:
        radii = np.array([params.r_peak_px, params.r_bg_inner_px, params.r_bg_outer_px], float)
        sat = math.inf if params.saturation_adu is None else float(params.saturation_adu)
        occ = _occupancy(data.shape)
        mark_peaks(occ, f, s, radii[0])
        try:
            integrate_all(
                data, mask_u8, pmap, occ, f, s, radii, params.background == "plane",
                float(params.gain_adu_per_count), sat, int(params.min_background_px), out_f,
                out_i,
            )  # fmt: skip
        finally:
            mark_peaks(occ, f, s, radii[0], -1)  # leave the buffer zeroed for the next call
    return {
        "I": out_f[:, 0],
        "sigma": out_f[:, 1],
        "background": out_f[:, 2],
        "bg_sigma": out_f[:, 3],
        "n_peak": out_i[:, 0].astype(np.int32),
        "n_bg": out_i[:, 1].astype(np.int32),
        "peak": out_f[:, 4],
        "flags": out_i[:, 2].astype(np.int32),
    }


def integrate_spots(
    frame: np.ndarray,
    fs: ArrayLike,
    ss: ArrayLike,
    params: IntegrationParams,
    *,
    mask: np.ndarray | None = None,
    panel_map: np.ndarray | None = None,
) -> pd.DataFrame:
    """Summation integration of spots at raw pixel-centre positions (module docstring).

    Parameters
    ----------
    frame : numpy.ndarray, shape (n_ss, n_fs)
        The raw frame (ADU); non-finite pixels count as masked.
    fs, ss : array_like, shape (N,)
        Spot positions, raw pixel-centre coordinates.
    params : IntegrationParams
        Radii, background model, gain, saturation level, minimum background.
    mask : numpy.ndarray of bool, optional
        Frame-sized, True for bad pixels.
    panel_map : numpy.ndarray of int, optional
        Frame-sized panel index per pixel (-1: none, e.g.
        :meth:`~crystalscope.model.detector.Detector.panel_map`); pixels of a panel other
        than that of the spot's centre pixel are not used.  Without it the whole array
        is one panel.

    Returns
    -------
    pandas.DataFrame
        One row per spot, columns :data:`SPOT_COLUMNS`.

    Raises
    ------
    DataError
        For a frame that is not 2-D numeric, non-finite positions or a mask / panel map
        of the wrong shape.
    """
    arrays = integrate_arrays(frame, fs, ss, params, mask=mask, panel_map=panel_map)
    return pd.DataFrame(arrays)
