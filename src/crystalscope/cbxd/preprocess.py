"""Pre-processing of CBXD rotation frames (seed 000, Methods 5.2.1).

* **Detector efficiency** (Eq. 9): a sensor of thickness ``t_s`` and linear attenuation
  ``mu`` absorbs the fraction ``D = 1 - exp(-mu t_s / cos 2theta)`` of the photons that
  reach it at the scattering angle ``2theta``; counts are divided by ``D(2theta) / D(0)``
  (:func:`relative_efficiency`).
* **Background**: the diffuse background is nearly constant through a scan while the
  streaks move, so the initial background of a pixel is the median of its counts over
  the frames (computed tile by tile through dask, so a scan larger than memory works).
* **Bad pixels**: a pixel is *dead* when its median and its maximum over the scan are
  both at most ``dead_level`` (it never responded); it is *hot* when its median exceeds
  ``hot_factor`` times the median of its ``window`` x ``window`` neighbourhood plus
  ``hot_floor`` counts (consistently high).  Both are masked.
* **Saturation**: pixels at or above the detector's ``saturation`` count are flagged
  per frame before the background is subtracted.

:func:`correct_frame` applies the three to one frame: ``(counts - background) / D`` (the
background is the median of the raw counts; both it and the streaks were recorded with
the efficiency ``D``) with the bad and saturated pixels masked (set to 0 and returned in
a mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da
import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from crystalscope.cbxd.intensity import detector_efficiency
from crystalscope.errors import DataError

__all__ = [
    "BadPixels",
    "correct_frame",
    "find_bad_pixels",
    "median_background",
    "relative_efficiency",
]


def relative_efficiency(
    two_theta_rad: ArrayLike, mu_per_mm: float, thickness_mm: float
) -> np.ndarray:
    """Eq. 9 relative to the beam axis, ``D(2theta) / D(0)``
    (:func:`~crystalscope.cbxd.intensity.detector_efficiency`): the factor counts are
    divided by.

    Raises
    ------
    DataError
        For a non-positive attenuation or thickness, or angles of 90 degrees or more.
    """
    if not (mu_per_mm > 0 and thickness_mm > 0):
        raise DataError("attenuation and sensor thickness must be positive", field="sensor")
    tt = np.asarray(two_theta_rad, dtype=np.float64)
    if np.any(np.cos(tt) <= 0):
        raise DataError("scattering angles must be below 90 degrees", field="two_theta")
    return detector_efficiency(tt, mu_per_mm, thickness_mm) / detector_efficiency(
        0.0, mu_per_mm, thickness_mm
    )


def median_background(frames: ArrayLike | da.Array, *, tile: int = 256) -> np.ndarray:
    """Per-pixel median of ``frames`` (n, ss, fs) over the frame axis (float32), computed
    in ``tile`` x ``tile`` blocks through dask."""
    stack = frames if isinstance(frames, da.Array) else da.asarray(frames)
    if stack.ndim != 3 or stack.shape[0] == 0:
        raise DataError(f"frames must be a non-empty (n, ss, fs) stack, got {stack.shape}",
                        field="frames")  # fmt: skip
    stack = stack.rechunk((stack.shape[0], tile, tile))
    med = stack.map_blocks(
        lambda b: np.median(b, axis=0, keepdims=True).astype(np.float32),
        chunks=((1,), *stack.chunks[1:]), dtype=np.float32,
    )  # fmt: skip
    return np.asarray(med.compute())[0]


@dataclass(frozen=True)
class BadPixels:
    """Dead and hot pixel masks (True: bad) and their union."""

    dead: np.ndarray
    hot: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        """Dead or hot."""
        return self.dead | self.hot


def find_bad_pixels(
    median: ArrayLike,
    maximum: ArrayLike,
    *,
    dead_level: float = 0.0,
    hot_factor: float = 5.0,
    hot_floor: float = 5.0,
    window: int = 5,
) -> BadPixels:
    """Dead and hot pixels from the per-pixel median and maximum over a scan (module
    docstring)."""
    med = np.asarray(median, dtype=np.float64)
    top = np.asarray(maximum, dtype=np.float64)
    if med.shape != top.shape or med.ndim != 2:
        raise DataError("median and maximum must be 2-D maps of one shape", field="median")
    dead = (med <= dead_level) & (top <= dead_level)
    # a median filter ignores isolated bad pixels (one of window^2 values)
    local = ndimage.median_filter(med, size=window, mode="nearest")
    hot = ~dead & (med > hot_factor * local + hot_floor)
    return BadPixels(dead, hot)


def correct_frame(
    frame: ArrayLike,
    background: np.ndarray,
    efficiency: np.ndarray | None,
    bad: np.ndarray | None,
    saturation: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(counts - background) / D`` (float32) and the mask of bad or saturated pixels
    (which are set to 0)."""
    data = np.asarray(frame, dtype=np.float32)
    if data.shape != background.shape:
        raise DataError(f"frame shape {data.shape} differs from the background's "
                        f"{background.shape}", field="frame")  # fmt: skip
    mask = np.zeros(data.shape, dtype=bool) if bad is None else bad.copy()
    if saturation is not None:
        mask |= data >= saturation
    out = data - background
    if efficiency is not None:
        out /= efficiency
    out[mask] = 0.0
    return out.astype(np.float32), mask
