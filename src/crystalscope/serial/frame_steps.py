"""The per-frame part of SerialED pre-processing, as two pure functions.

:func:`analyse_frame` takes one raw frame through

1. a validity check (non-finite or all-zero frames are flagged and skipped);
2. detector corrections (:func:`crystalscope.image.corrections.correct_frame`);
3. the pattern centre: thresholded centre of mass, then a Lorentzian fit
   (:func:`crystalscope.image.centre.find_centre`); where that fails, the geometry's
   nominal centre is used and the frame says so (``centre_method = 0``);
4. peakfinder8 around that centre (:func:`crystalscope.image.peakfinder8.peakfinder8`);
5. refinement of the centre from Friedel-mate pairs of the peaks
   (:func:`crystalscope.image.centre.refine_centre_friedel`);
6. the radial background around the refined centre, measured away from the peaks
   (:mod:`crystalscope.image.background`);

and returns a fixed-length vector of numbers (:data:`RESULT_COLUMNS`; centres are in
detector-plane coordinates, i.e. panel 0's pixel-centre ``(fs, ss)``), the peak list
and the background profile.  :func:`finish_frame` then makes the output frame: the
same corrections (deterministic, so identical), minus the background image built from
the stored profile.  Only small results travel between the two passes.

Everything a frame needs that does not change from frame to frame sits in one
:class:`FrameSetup`, built once and shared by all tasks (one object in the dask graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crystalscope.image.background import (
    peak_exclusion_mask,
    radial_background,
    subtract_profile,
)
from crystalscope.image.centre import CentreFit, find_centre, refine_centre_friedel
from crystalscope.image.corrections import Corrections, correct_frame, frame_status
from crystalscope.image.geometry import radius_map
from crystalscope.image.peakfinder8 import PeakFinder8Params, PeakList, peakfinder8

__all__ = [
    "CENTRE_METHODS",
    "FLAGS",
    "PEAK_COLUMNS",
    "RESULT_COLUMNS",
    "FrameSetup",
    "analyse_frame",
    "finish_frame",
]

#: Per-frame numbers returned by :func:`analyse_frame`, in order.
RESULT_COLUMNS = (
    "flag",
    "lorentz_fs",
    "lorentz_ss",
    "lorentz_width_px",
    "centre_fs",
    "centre_ss",
    "centre_method",
    "friedel_pairs",
    "centre_rms_px",
    "num_peaks",
    "masked_pixels",
)
#: ``flag`` values: why a frame was skipped (0: it was not).
FLAGS = {0: "ok", 1: "non-finite values", 2: "all pixels zero", 3: "no usable pixels"}
#: ``centre_method`` values.
CENTRE_METHODS = {0: "nominal", 1: "com", 2: "lorentzian", 3: "friedel"}
#: Columns of the peak arrays returned by :func:`analyse_frame`.
PEAK_COLUMNS = ("fs", "ss", "intensity", "snr", "n_pixels")
_METHOD_CODE = {name: code for code, name in CENTRE_METHODS.items()}


@dataclass(frozen=True)
class FrameSetup:
    """What every frame of a data set shares (arrays have the raw frame shape).

    Attributes
    ----------
    x, y : ndarray of float32
        Detector-plane coordinates of pixel centres (:mod:`crystalscope.image.geometry`).
    mask : ndarray of bool
        Static mask: gaps, bad regions (True = ignore).
    corrections : Corrections
        Detector corrections.
    peaks : PeakFinder8Params
        peakfinder8 parameters.
    nominal_centre : (float, float)
        Where the geometry puts the direct beam, in x/y units.
    jacobian : ndarray, shape (n_panels, 2, 2)
        d(x, y)/d(fs, ss) of each panel; with ``panel_map`` it maps sub-pixel peak
        positions to the detector plane.
    panel_map : ndarray of intp
        Panel index of every raw pixel (-1 in gaps).
    n_bins : int
        Length of every frame's radial background profile (``bin_px`` bins from 0).
    identity_plane : bool
        True when ``x``/``y`` equal the raw ``fs``/``ss`` indices wherever a pixel
        exists (single panels, LAMBDA, Timepix quad): kernels then use the faster
        windowed index path (gaps are in ``mask``).
    """

    x: np.ndarray
    y: np.ndarray
    mask: np.ndarray
    corrections: Corrections
    peaks: PeakFinder8Params
    nominal_centre: tuple[float, float]
    jacobian: np.ndarray
    panel_map: np.ndarray
    com_threshold: float | None = None
    lorentzian_radius_px: float = 15.0
    friedel: bool = True
    friedel_sigma_px: float = 2.0
    min_pairs: int = 4
    max_shift_px: float = 1.0
    identity_plane: bool = False
    subtract_background: bool = True
    exclude_radius_px: float = 4.0
    median_bins: int = 9
    bin_px: float = 1.0
    n_bins: int = 2048

    def to_plane(self, fs: np.ndarray, ss: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Detector-plane ``(x, y)`` of sub-pixel raw positions ``(fs, ss)``."""
        ny, nx = self.x.shape
        i = np.clip(np.rint(ss).astype(np.intp), 0, ny - 1)
        j = np.clip(np.rint(fs).astype(np.intp), 0, nx - 1)
        panel = self.panel_map[i, j]
        jac = self.jacobian[np.maximum(panel, 0)]
        dfs, dss = fs - j, ss - i
        px = self.x[i, j] + jac[:, 0, 0] * dfs + jac[:, 0, 1] * dss
        py = self.y[i, j] + jac[:, 1, 0] * dfs + jac[:, 1, 1] * dss
        return px.astype(float), py.astype(float)


def _skip(flag: int, masked: int, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = np.full(len(RESULT_COLUMNS), np.nan)
    out[0] = flag
    out[RESULT_COLUMNS.index("num_peaks")] = 0
    out[RESULT_COLUMNS.index("masked_pixels")] = masked
    empty = np.zeros((0, len(PEAK_COLUMNS)), dtype=np.float32)
    return out, empty, np.full(n_bins, np.nan, dtype=np.float32)


def _prepare(frame: np.ndarray, setup: FrameSetup) -> tuple[np.ndarray, np.ndarray, int]:
    """Corrected frame and mask, and the skip flag (0 when the frame is usable)."""
    values = np.asarray(frame)
    flag = frame_status(values, setup.mask)
    if flag:
        return values, setup.mask, flag
    corrected, mask = correct_frame(values, setup.corrections)
    np.logical_or(mask, setup.mask, out=mask)
    return corrected, mask, 0


def _first_centre(corrected: np.ndarray, mask: np.ndarray, setup: FrameSetup) -> CentreFit:
    x, y = (None, None) if setup.identity_plane else (setup.x, setup.y)
    fit = find_centre(
        corrected, mask, x=x, y=y,
        threshold=setup.com_threshold, radius_px=setup.lorentzian_radius_px,
    )  # fmt: skip
    if fit.success and np.isfinite(fit.cx) and np.isfinite(fit.cy):
        return fit
    cx, cy = setup.nominal_centre
    return CentreFit(cx=cx, cy=cy, method="nominal", success=False)


def _peak_array(peaks: PeakList) -> np.ndarray:
    cols = [peaks.fs, peaks.ss, peaks.intensity, peaks.snr, peaks.n_pixels]
    return np.column_stack(cols).astype(np.float32) if len(peaks) else np.zeros((0, 5), np.float32)


def analyse_frame(
    frame: np.ndarray, setup: FrameSetup
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, peaks and radial background profile of one raw frame.

    Returns
    -------
    results : ndarray of float64, shape (len(RESULT_COLUMNS),)
        The numbers named by :data:`RESULT_COLUMNS` (NaN where not determined).
    peaks : ndarray of float32, shape (n_peaks, len(PEAK_COLUMNS))
        Found peaks, raw-array pixel-centre positions.
    profile : ndarray of float32, shape (setup.n_bins,)
        Radial background around the refined centre, measured away from the peaks and
        median-filtered (NaN when background subtraction is off or the frame skipped).
    """
    corrected, mask, flag = _prepare(frame, setup)
    if flag:
        return _skip(flag, int(mask.sum()), setup.n_bins)
    first = _first_centre(corrected, mask, setup)
    radius = radius_map(setup.x, setup.y, (first.cx, first.cy))
    peaks = peakfinder8(corrected, radius, mask, setup.peaks)
    centre = first
    if setup.friedel and len(peaks) >= 2 * setup.min_pairs:
        px, py = setup.to_plane(np.asarray(peaks.fs), np.asarray(peaks.ss))
        refined = refine_centre_friedel(
            px, py, (first.cx, first.cy), sigma_px=setup.friedel_sigma_px,
            min_pairs=setup.min_pairs, max_shift_px=setup.max_shift_px,
        )  # fmt: skip
        if refined.success:
            centre = refined
    profile = np.full(setup.n_bins, np.nan, dtype=np.float32)
    if setup.subtract_background:
        if centre is not first:
            radius = radius_map(setup.x, setup.y, (centre.cx, centre.cy))
        profile[:] = _profile(corrected, radius, mask, peaks.fs, peaks.ss, setup)
    out = np.full(len(RESULT_COLUMNS), np.nan)
    values = {
        "flag": 0,
        "lorentz_width_px": first.width_px,
        "centre_fs": centre.cx,
        "centre_ss": centre.cy,
        "centre_method": _METHOD_CODE.get(centre.method, 0),
        "friedel_pairs": centre.n_pairs if centre.method == "friedel" else 0,
        "centre_rms_px": centre.rms_px,
        "num_peaks": len(peaks),
        "masked_pixels": int(mask.sum()),
    }
    if first.method == "lorentzian":
        values.update(lorentz_fs=first.cx, lorentz_ss=first.cy)
    for key, value in values.items():
        out[RESULT_COLUMNS.index(key)] = value
    return out, _peak_array(peaks), profile


def _profile(
    frame: np.ndarray, radius: np.ndarray, mask: np.ndarray, fs: np.ndarray, ss: np.ndarray,
    setup: FrameSetup,
) -> np.ndarray:  # fmt: skip
    exclude = peak_exclusion_mask(
        frame.shape, np.asarray(fs), np.asarray(ss), setup.exclude_radius_px
    )
    profile = radial_background(
        frame, radius, mask, exclude=exclude, bin_px=setup.bin_px,
        median_bins=setup.median_bins, n_bins=setup.n_bins,
    )  # fmt: skip
    finite = np.flatnonzero(np.isfinite(profile))
    if len(finite):  # beyond the last pixel (and before the first): nearest value
        profile[: finite[0]] = profile[finite[0]]
        profile[finite[-1] + 1 :] = profile[finite[-1]]
    return profile


def finish_frame(
    frame: np.ndarray, setup: FrameSetup, centre: tuple[float, float], profile: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Corrected, background-subtracted frame and its mask.

    Parameters
    ----------
    frame : ndarray
        The raw frame.
    setup : FrameSetup
        As given to :func:`analyse_frame`.
    centre : (float, float)
        Refined centre (x/y units).
    profile : ndarray
        The radial background profile :func:`analyse_frame` returned for this frame.

    Returns
    -------
    frame : ndarray of float32
        Corrected frame minus the radial background (0 where masked).
    mask : ndarray of bool
        True where a pixel is unusable.
    """
    corrected, mask, flag = _prepare(frame, setup)
    if flag:
        return np.zeros(setup.x.shape, np.float32), np.ones(setup.x.shape, bool)
    if setup.subtract_background and np.isfinite(profile).all():
        x, y = (None, None) if setup.identity_plane else (setup.x, setup.y)
        out = subtract_profile(corrected, profile, centre, mask, x=x, y=y, bin_px=setup.bin_px)
        return out, mask
    out = np.array(corrected, dtype=np.float32, copy=True)
    out[mask] = 0.0
    return out, mask
