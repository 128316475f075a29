"""peakfinder8: Bragg-peak search on one raw frame (Barty et al. 2014, CrystFEL's pf8).

The algorithm of CrystFEL's ``libcrystfel/src/peakfinder8.c``, in compiled code, on the
raw frame ``frame[ss, fs]`` with a per-frame radius map (pixels from the pattern centre)
and a bad-pixel mask.  Positions are pixel-centre (``docs/conventions.md``): CrystFEL
writes ``fs + 0.5, ss + 0.5``; here the first pixel's centre is ``(0, 0)``.

1. **Radial statistics.**  Usable pixels (not masked, finite value and radius,
   ``min_res_px < r < max_res_px``) fall into integer radius bins ``k = rint(r)``.  Per
   bin, ``iterations`` rounds of sigma clipping: the pixels with
   ``lo_k <= I <= hi_k`` give the offset ``m_k`` (mean) and ``s_k`` (standard deviation,
   ``s^2 = <I^2> - <I>^2``), and the next interval is

   .. math::

       lo_k = m_k - \\mathrm{SNR}_{min}\\, s_k, \\qquad
       hi_k = \\max(m_k + \\mathrm{SNR}_{min}\\, s_k,\\ I_{thr}),

   starting from ``(-inf, inf)``.  The final ``hi_k`` is the pixel threshold.
2. **Regions.**  Every usable pixel with ``I > hi_k`` that is not on the frame's outer
   border seeds a flood fill (raster order) over 8-connected usable pixels above their
   thresholds.  Regions with fewer than ``min_pix`` or more than ``max_pix`` pixels are
   dropped (their pixels are not seeded again).
3. **Local background.**  Around the rounded first centroid (weights
   ``|I - m_k|``), the usable pixels within ``2 local_bg_radius`` pixels that are not
   above their threshold give the local offset ``b`` (mean) and ``sigma_b`` (standard
   deviation).  Without such pixels ``b = m_k``; with ``sigma_b = 0`` (e.g. a disc of
   zeros on a counting detector) ``sigma_b = s_k``, ``k`` the bin at the disc centre;
   when that is 0 too the SNR is infinite.
4. **Measurement and selection.**  ``I_tot = sum (I - b)`` over the region, centroid
   ``sum (I - b) x / I_tot``, and

   .. math::

       \\mathrm{SNR} = \\frac{I_{tot}}{\\sigma_b \\sqrt{n_{pix}}} \\ge \\mathrm{SNR}_{min}

   (``crystfel_snr=True``: ``I_tot / sigma_b`` as CrystFEL).  A peak is also dropped when
   its highest pixel minus ``b`` is below the highest background pixel minus ``b``.

Deliberate differences to CrystFEL are listed in ``docs/algorithms/peakfinder8.md``;
:mod:`crystalscope.image.peakfinder8_reference` is a plain numpy/scipy implementation
of the same definition, and the numba kernels (:mod:`._pf8_kernels`) give the same peaks.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from crystalscope.errors import ConfigError, DataError
from crystalscope.image import _pf8_kernels as _k

__all__ = ["PeakFinder8Params", "PeakList", "peakfinder8", "radial_statistics"]

_COLUMNS = ("fs", "ss", "intensity", "n_pixels", "snr", "max_adu", "background")
_MAX_RADIUS_PX = float(2**20)  # larger usable radii mean the map is not in pixels
SAMPLE_STRIDE = 13  # every 13th pixel estimates the core intervals (see _pf8_kernels)
CORE_FRACTION = 0.5  # core interval: sampled mean +- CORE_FRACTION * min_snr * sd


def _check_int(name: str, value: Any, lowest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lowest:
        raise ConfigError(f"must be an integer >= {lowest}, got {value!r}", field=f"peaks.{name}")


def _check_float(name: str, value: Any, lowest: float | None = None, strict: bool = False) -> None:
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))
    if ok and lowest is not None:
        ok = float(value) > lowest if strict else float(value) >= lowest
    if not ok:
        bound = "" if lowest is None else f" {'>' if strict else '>='} {lowest}"
        raise ConfigError(f"must be a finite number{bound}, got {value!r}", field=f"peaks.{name}")


@dataclass(frozen=True)
class PeakFinder8Params:
    """Parameters of :func:`peakfinder8` (CrystFEL option names in brackets).

    Attributes
    ----------
    threshold_adu : float
        Absolute minimum pixel value of peak pixels, ADU (``--threshold``); it also
        raises the upper clipping bound of the radial statistics, as in CrystFEL.
    min_snr : float
        Pixel threshold in radial sigmas and minimum peak SNR (``--min-snr``), > 0.
    min_pix, max_pix : int
        Allowed pixel count of a peak region (``--min-pix-count``, ``--max-pix-count``).
    local_bg_radius : int
        Local background from the disc of radius ``2 * local_bg_radius`` pixels around
        the peak (``--local-bg-radius``).
    min_res_px, max_res_px : float
        Only pixels with ``min_res_px < r < max_res_px`` (pixels from the centre) are
        used, for statistics and peaks (``--min-res``, ``--max-res``).
    iterations : int
        Sigma-clipping rounds of the radial statistics (CrystFEL: 5).
    max_peaks : int
        At most this many peaks, the first in raster order of their seed pixel.
    crystfel_snr : bool
        ``True``: peak SNR ``I / sigma_b`` as CrystFEL; ``False`` (default):
        ``I / (sigma_b sqrt(n_pix))``, the SNR of a sum of ``n_pix`` background pixels.
    """

    threshold_adu: float = 0.0
    min_snr: float = 5.0
    min_pix: int = 2
    max_pix: int = 200
    local_bg_radius: int = 3
    min_res_px: float = 0.0
    max_res_px: float = 1e9
    iterations: int = 5
    max_peaks: int = 2048
    crystfel_snr: bool = False

    def __post_init__(self) -> None:
        _check_float("threshold_adu", self.threshold_adu)
        _check_float("min_snr", self.min_snr, 0.0, strict=True)
        _check_int("min_pix", self.min_pix, 1)
        _check_int("max_pix", self.max_pix, 1)
        if self.max_pix < self.min_pix:
            raise ConfigError(
                f"max_pix ({self.max_pix}) is below min_pix ({self.min_pix})",
                field="peaks.max_pix",
            )
        _check_int("local_bg_radius", self.local_bg_radius, 1)
        _check_float("min_res_px", self.min_res_px, 0.0)
        _check_float("max_res_px", self.max_res_px, float(self.min_res_px), strict=True)
        _check_int("iterations", self.iterations, 1)
        _check_int("max_peaks", self.max_peaks, 1)
        if not isinstance(self.crystfel_snr, (bool, np.bool_)):
            raise ConfigError(
                f"must be true or false, got {self.crystfel_snr!r}", field="peaks.crystfel_snr"
            )


@dataclass(frozen=True)
class PeakList:
    """Peaks of one frame; every attribute is an array of the same length.

    Attributes
    ----------
    fs, ss : ndarray of float64
        Centroid of the background-subtracted pixel values, pixel-centre raw-array
        coordinates (CrystFEL's stream values are these plus 0.5).
    intensity : ndarray of float64
        Background-subtracted sum over the peak's pixels, ADU.
    n_pixels : ndarray of int32
        Pixels in the peak region.
    snr : ndarray of float64
        Peak signal-to-noise ratio (see :class:`PeakFinder8Params.crystfel_snr`); ``inf``
        when the background has no measurable spread.
    max_adu : ndarray of float64
        Highest raw pixel value of the peak, ADU.
    background : ndarray of float64
        Local background offset per pixel, ADU.
    """

    fs: np.ndarray
    ss: np.ndarray
    intensity: np.ndarray
    n_pixels: np.ndarray
    snr: np.ndarray
    max_adu: np.ndarray
    background: np.ndarray

    def __post_init__(self) -> None:
        sizes = {f.name: np.shape(getattr(self, f.name)) for f in fields(self)}
        if len(set(sizes.values())) != 1 or len(sizes["fs"]) != 1:
            raise DataError(f"peak columns must be 1-D of equal length, got {sizes}", field="peaks")

    def __len__(self) -> int:
        return int(self.fs.shape[0])

    def to_frame(self) -> pd.DataFrame:
        """Table with columns ``fs, ss, intensity, n_pixels, snr, max_adu, background``."""
        return pd.DataFrame({name: getattr(self, name) for name in _COLUMNS})

    @classmethod
    def empty(cls) -> PeakList:
        """A list without peaks."""
        z = np.zeros(0)
        return cls(z, z.copy(), z.copy(), np.zeros(0, np.int32), z.copy(), z.copy(), z.copy())


_WORKSPACE = threading.local()
_HUGE_PAGE = 2 << 20


def _workspace(size: int) -> tuple[np.ndarray, ...]:
    """Per-thread scratch arrays reused between frames of one size.

    ``(bins uint32, frame copy float32, list index int32, list bin uint32, list value
    float32)``, carved from one 2 MiB-aligned block of at least 4 MiB, which numpy
    backs with transparent huge pages where the system allows it.  Fresh arrays would
    cost page faults on every call (about 0.5 ms per LAMBDA frame), and the random
    accesses of the peak search about as much in TLB misses with 4 kiB pages.
    """
    cached = getattr(_WORKSPACE, "arrays", None)
    if cached is not None and cached[0].size == size:
        return cached  # type: ignore[no-any-return]
    chunk = -(-4 * size // 64) * 64  # bytes per array, cache-line multiple
    raw = np.empty(max(5 * chunk, 4 << 20) + _HUGE_PAGE, np.uint8)
    start = -raw.ctypes.data % _HUGE_PAGE
    types = (np.uint32, np.float32, np.int32, np.uint32, np.float32)
    arrays = tuple(
        raw[start + j * chunk : start + j * chunk + 4 * size].view(t) for j, t in enumerate(types)
    )
    _WORKSPACE.arrays = arrays
    return arrays


def _prepare(frame: Any, radius: Any, mask: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check shapes and types; return float32 frame and radius, uint8 mask (size 0: none)."""
    frame = np.asarray(frame)
    if frame.ndim != 2 or frame.size == 0:
        raise DataError(
            f"frame must be a non-empty 2-D array, got shape {frame.shape}", field="frame"
        )
    if not (np.issubdtype(frame.dtype, np.number) or frame.dtype == bool) or np.iscomplexobj(frame):
        raise DataError(f"frame must be real numbers, got dtype {frame.dtype}", field="frame")
    radius = np.asarray(radius)
    if radius.shape != frame.shape:
        raise DataError(
            f"radius map has shape {radius.shape}, frame has {frame.shape}", field="radius"
        )
    if not np.issubdtype(radius.dtype, np.floating) and not np.issubdtype(radius.dtype, np.integer):
        raise DataError(
            f"radius map must be real numbers, got dtype {radius.dtype}", field="radius"
        )
    data = np.ascontiguousarray(frame, dtype=np.float32)
    rad = np.ascontiguousarray(radius, dtype=np.float32)
    if mask is None:
        return data, rad, np.zeros(0, np.uint8)
    mask = np.asarray(mask)
    if mask.shape != frame.shape:
        raise DataError(f"mask has shape {mask.shape}, frame has {frame.shape}", field="mask")
    if mask.dtype == bool:
        return data, rad, np.ascontiguousarray(mask).view(np.uint8)
    return data, rad, np.ascontiguousarray(mask != 0, dtype=np.uint8)


@dataclass
class _Tables:
    """Radial statistics of one frame and the scratch state of the peak search."""

    data: np.ndarray  # float32 copy of the frame
    bins: np.ndarray
    out_list: np.ndarray  # flat indices of the listed pixels (raster order)
    list_bin: np.ndarray
    list_val: np.ndarray
    offset: np.ndarray  # per bin + 1 (index 0: unusable pixels), NaN where empty
    sigma: np.ndarray
    thr: np.ndarray


def _tables(
    data_in: np.ndarray,
    rad: np.ndarray,
    mask8: np.ndarray,
    *,
    min_res_px: float,
    max_res_px: float,
    min_snr: float,
    threshold_adu: float,
    iterations: int,
    sample_stride: int = SAMPLE_STRIDE,
) -> _Tables:
    """Bin the pixels and compute the exact sigma-clipped statistics of every bin."""
    bins, copy, out_list, list_bin, list_val = _workspace(data_in.size)
    bins = bins.reshape(data_in.shape)
    data = copy.reshape(data_in.shape)
    kmax = _k.bin_pixels(data_in, rad, mask8, min_res_px, max_res_px, _MAX_RADIUS_PX, bins, data)
    if kmax > _MAX_RADIUS_PX:
        raise DataError(
            f"radius map reaches {_MAX_RADIUS_PX:.0f} px or more; it must be in pixels",
            field="radius",
        )
    nb = kmax + 1
    s_lo, s_hi = np.empty(nb), np.empty(nb)
    _k.sample_bounds(data, bins, nb, sample_stride, CORE_FRACTION * min_snr, s_lo, s_hi)
    core = np.empty(4 * nb)
    offset, sigma, thr = np.full(nb, np.nan), np.full(nb, np.nan), np.empty(nb)
    for _ in range(2):  # the second round only when some core interval was too wide
        n = _k.core_pass(data, bins, s_lo, s_hi, core, out_list, list_bin, list_val)
        fail = _k.iterate_bins(
            list_bin[:n], list_val[:n], core, s_lo, s_hi,
            min_snr, threshold_adu, iterations, offset, sigma, thr,
        )  # fmt: skip
        if not fail.any():
            break
        s_lo[fail], s_hi[fail] = np.inf, -np.inf
    return _Tables(data, bins, out_list[:n], list_bin[:n], list_val[:n], offset, sigma, thr)


def radial_statistics(
    frame: np.ndarray,
    radius: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    min_snr: float = 5.0,
    threshold_adu: float = 0.0,
    iterations: int = 5,
    min_res_px: float = 0.0,
    max_res_px: float = 1e9,
) -> tuple[np.ndarray, np.ndarray]:
    """Sigma-clipped mean and standard deviation per integer radius bin (peakfinder8 step 1).

    Parameters
    ----------
    frame : ndarray, shape (ss, fs)
        Raw frame, ADU.
    radius : ndarray, same shape
        Distance of each pixel from the pattern centre, pixels (NaN: not on the detector).
    mask : ndarray of bool, optional
        True for pixels to ignore.
    min_snr, threshold_adu, iterations, min_res_px, max_res_px
        As in :class:`PeakFinder8Params`.

    Returns
    -------
    offset, sigma : ndarray of float32
        Index ``k`` is the bin ``rint(r) == k``; length ``1 +`` the largest usable bin;
        NaN for bins without usable (or unclipped) pixels.
    """
    params = PeakFinder8Params(
        threshold_adu=threshold_adu, min_snr=min_snr, iterations=iterations,
        min_res_px=min_res_px, max_res_px=max_res_px,
    )  # fmt: skip
    data, rad, mask8 = _prepare(frame, radius, mask)
    t = _tables(
        data, rad, mask8, min_res_px=params.min_res_px, max_res_px=params.max_res_px,
        min_snr=params.min_snr, threshold_adu=params.threshold_adu, iterations=params.iterations,
    )  # fmt: skip
    return t.offset[1:].astype(np.float32), t.sigma[1:].astype(np.float32)


def peakfinder8(
    frame: np.ndarray,
    radius: np.ndarray,
    mask: np.ndarray | None = None,
    params: PeakFinder8Params = PeakFinder8Params(),
) -> PeakList:
    """Find Bragg peaks in one raw frame with CrystFEL's peakfinder8 algorithm.

    Parameters
    ----------
    frame : ndarray, shape (ss, fs)
        Raw frame in ADU (converted to float32).  NaN or infinite pixels are ignored.
    radius : ndarray, same shape
        Distance of every pixel centre from the pattern centre in pixels, e.g.
        :func:`crystalscope.image.geometry.radius_map`; NaN in gaps.
    mask : ndarray of bool, optional
        True for pixels to ignore (gaps, dead, hot, saturated).
    params : PeakFinder8Params
        Thresholds and limits.

    Returns
    -------
    PeakList
        Peaks in raster order of their first pixel; empty for frames without usable
        pixels (all masked, NaN) or without peaks (e.g. all zero).

    Raises
    ------
    DataError
        If the frame is not 2-D, ``radius`` or ``mask`` differ from it in shape, or the
        radius map is not in pixels.
    """
    data, rad, mask8 = _prepare(frame, radius, mask)
    return _find(data, rad, mask8, params)


def _find(
    data: np.ndarray,
    rad: np.ndarray,
    mask8: np.ndarray,
    params: PeakFinder8Params,
    sample_stride: int = SAMPLE_STRIDE,
) -> PeakList:
    """:func:`peakfinder8` on prepared arrays (``sample_stride=0``: no core, all listed)."""
    t = _tables(
        data, rad, mask8, min_res_px=params.min_res_px, max_res_px=params.max_res_px,
        min_snr=params.min_snr, threshold_adu=params.threshold_adu,
        iterations=params.iterations, sample_stride=sample_stride,
    )  # fmt: skip
    if t.out_list.size == 0:
        return PeakList.empty()
    iparams = np.array(
        [params.min_pix, params.max_pix, params.local_bg_radius, params.max_peaks,
         int(params.crystfel_snr)], dtype=np.int64,
    )  # fmt: skip
    out = np.empty((params.max_peaks, _k.N_OUT))
    n = _k.find_peaks(
        t.data, t.bins, t.out_list, t.list_bin, t.list_val,
        t.offset, t.sigma, t.thr, iparams, float(params.min_snr), out,
    )  # fmt: skip
    res = out[:n]
    return PeakList(
        fs=res[:, 0].copy(), ss=res[:, 1].copy(), intensity=res[:, 2].copy(),
        n_pixels=res[:, 3].astype(np.int32), snr=res[:, 4].copy(),
        max_adu=res[:, 5].copy(), background=res[:, 6].copy(),
    )  # fmt: skip
