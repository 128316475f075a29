"""Numba kernels of :mod:`crystalscope.integrate.summation` (one frame, one thread).

Pixel classes around a spot at ``(fs, ss)`` (raw pixel-centre coordinates), with
``rho^2 = (j - fs)^2 + (i - ss)^2`` for pixel ``[i, j]``:

* peak disk: ``rho <= r_peak``;
* background annulus: ``r_in <= rho <= r_out``, without the pixels of any predicted
  spot's peak disk (the occupancy image counts, per pixel, the peak disks covering it).

A pixel is *usable* when it lies in the array, on the spot's panel (``panel_map``) and
is neither masked nor non-finite.  Unusable peak pixels set ``FLAG_EDGE`` (off the array
or the panel) or ``FLAG_MASKED`` and are left out of the sums.

Output columns of ``out_f``: ``I, sigma, background, bg_sigma, peak``; of ``out_i``:
``n_peak, n_bg, flags``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["integrate_all", "mark_peaks"]

# flag bits (same values as crystalscope.integrate.observations)
_MASKED = 1
_SATURATED = 2
_EDGE = 4
_OVERLAP = 8
_FEW_BACKGROUND = 16
_PLANE_MIN_PX = 4  # a plane needs at least one degree of freedom left
_PLANE_MIN_DET = 1e-3  # relative determinant below which the annulus is too lopsided
N_OUT_F = 5
N_OUT_I = 3


@numba.njit(cache=True, nogil=True)
def mark_peaks(
    occ: np.ndarray, fs: np.ndarray, ss: np.ndarray, r_peak: float, step: int = 1
) -> None:
    """Add ``step`` to ``occ[i, j]`` for every pixel of every spot's peak disk.

    ``step = -1`` undoes a previous call with the same spots (the buffer is reused).
    """
    n_ss, n_fs = occ.shape
    r2 = r_peak * r_peak
    for s in range(fs.shape[0]):
        i0 = max(0, math.ceil(ss[s] - r_peak))
        i1 = min(n_ss - 1, math.floor(ss[s] + r_peak))
        j0 = max(0, math.ceil(fs[s] - r_peak))
        j1 = min(n_fs - 1, math.floor(fs[s] + r_peak))
        for i in range(i0, i1 + 1):
            di = i - ss[s]
            for j in range(j0, j1 + 1):
                dj = j - fs[s]
                if dj * dj + di * di <= r2:
                    occ[i, j] += step


@numba.njit(cache=True, nogil=True, inline="always")
def _background(acc: np.ndarray, plane: bool) -> tuple[float, float, float, float, float, float]:
    """Fit ``v = b0 + b1 (x - mx) + b2 (y - my)`` (or the mean) to the annulus sums.

    ``acc`` holds ``n, sum x, sum y, sum x^2, sum y^2, sum x y, sum w, sum x w, sum y w,
    sum w^2, K`` with ``w = v - K`` (``K`` the first pixel value, which keeps the
    one-pass sums free of cancellation).  Returns ``b0, b1, b2, mx, my, var`` with
    ``var = sum(res^2) / (n - n_par)`` (NaN where ``n <= n_par``).
    """
    n = acc[0]
    mx = acc[1] / n
    my = acc[2] / n
    mw = acc[6] / n
    sxx = acc[3] - acc[1] * mx
    syy = acc[4] - acc[2] * my
    sxy = acc[5] - acc[1] * my
    sxw = acc[7] - acc[1] * mw
    syw = acc[8] - acc[2] * mw
    ss_res = acc[9] - acc[6] * mw
    b1 = b2 = 0.0
    n_par = 1
    det = sxx * syy - sxy * sxy
    if plane and n >= _PLANE_MIN_PX and det > _PLANE_MIN_DET * sxx * syy and det > 0.0:
        b1 = (syy * sxw - sxy * syw) / det
        b2 = (sxx * syw - sxy * sxw) / det
        ss_res -= b1 * sxw + b2 * syw
        n_par = 3
    var = max(ss_res, 0.0) / (n - n_par) if n > n_par else math.nan
    return acc[10] + mw, b1, b2, mx, my, var


@numba.njit(cache=True, nogil=True, inline="always")
def _one_spot(
    frame: np.ndarray,
    mask: np.ndarray,
    panel_map: np.ndarray,
    occ: np.ndarray,
    fs: float,
    ss: float,
    radii: np.ndarray,
    sat: float,
    acc: np.ndarray,
) -> tuple[int, float, float, float, float, int]:
    """Scan one spot: flags, peak sum, sums of peak dx and dy, largest peak pixel and
    n_peak; fills ``acc`` with the annulus sums of :func:`_background`.

    Rows run over ``|i - ss| <= r_out`` and, per row, columns over the chord of the
    outer circle.  A pixel is usable when it lies in the array, on the panel of the
    spot's centre pixel, is not masked and is finite; unusable peak pixels set
    ``FLAG_EDGE`` (array, panel) or ``FLAG_MASKED``.
    """
    r_peak2, r_in2, r_out = radii[0] ** 2, radii[1] ** 2, radii[2]
    n_ss, n_fs = frame.shape
    has_mask = mask.shape[0] > 0
    has_map = panel_map.shape[0] > 0
    ci = math.floor(ss + 0.5)
    cj = math.floor(fs + 0.5)
    panel = -1
    if 0 <= ci < n_ss and 0 <= cj < n_fs:
        panel = panel_map[ci, cj] if has_map else 0
    flags = 0
    total = sx = sy = 0.0
    peak = -math.inf
    n_peak = 0
    acc[:] = 0.0
    for i in range(math.ceil(ss - r_out), math.floor(ss + r_out) + 1):
        dy = i - ss
        half = math.sqrt(max(r_out * r_out - dy * dy, 0.0))
        row_ok = panel >= 0 and 0 <= i < n_ss
        for j in range(math.ceil(fs - half), math.floor(fs + half) + 1):
            dx = j - fs
            d2 = dx * dx + dy * dy
            in_peak = d2 <= r_peak2
            if not in_peak and d2 < r_in2:
                continue
            if not row_ok or j < 0 or j >= n_fs or (has_map and panel_map[i, j] != panel):
                if in_peak:
                    flags |= _EDGE
                continue
            v = frame[i, j]
            if (has_mask and mask[i, j]) or not math.isfinite(v):
                if in_peak:
                    flags |= _MASKED
                continue
            if in_peak:
                total += v
                sx += dx
                sy += dy
                n_peak += 1
                peak = max(peak, v)
                if v >= sat:
                    flags |= _SATURATED
                if occ[i, j] > 1:
                    flags |= _OVERLAP
            elif occ[i, j] == 0:
                if acc[0] == 0.0:
                    acc[10] = v
                w = v - acc[10]
                acc[0] += 1.0
                acc[1] += dx
                acc[2] += dy
                acc[3] += dx * dx
                acc[4] += dy * dy
                acc[5] += dx * dy
                acc[6] += w
                acc[7] += dx * w
                acc[8] += dy * w
                acc[9] += w * w
    return flags, total, sx, sy, peak, n_peak


@numba.njit(cache=True, nogil=True)
def integrate_all(
    frame: np.ndarray,
    mask: np.ndarray,
    panel_map: np.ndarray,
    occ: np.ndarray,
    fs: np.ndarray,
    ss: np.ndarray,
    radii: np.ndarray,
    plane: bool,
    gain: float,
    sat: float,
    min_bg: int,
    out_f: np.ndarray,
    out_i: np.ndarray,
) -> None:
    """Summation integration of every spot (see :mod:`crystalscope.integrate.summation`).

    ``mask`` (uint8/bool) and ``panel_map`` (int) are frame-sized or of shape (0, 0) when
    absent; ``occ`` is the occupancy image of :func:`mark_peaks`; ``radii`` holds
    ``r_peak, r_in, r_out`` (px); ``sat`` is ``inf`` without a saturation level.
    """
    acc = np.zeros(11)
    for s in range(fs.shape[0]):
        flags, total, sx, sy, peak, n_peak = _one_spot(
            frame, mask, panel_map, occ, fs[s], ss[s], radii, sat, acc
        )
        n_bg = int(acc[0])
        if n_bg < min_bg:
            flags |= _FEW_BACKGROUND
        intensity = sigma = bg = bg_sd = math.nan
        if n_bg > 0:
            b0, b1, b2, mx, my, var = _background(acc, plane)
            bg_sd = math.sqrt(var)
            if n_peak > 0:
                under = n_peak * b0 + b1 * (sx - n_peak * mx) + b2 * (sy - n_peak * my)
                bg = under / n_peak
                intensity = total - under
                var_i = gain * max(intensity, 0.0) + n_peak * var * (1.0 + n_peak / n_bg)
                sigma = math.sqrt(var_i)
            else:
                bg = b0
        out_f[s, 0] = intensity
        out_f[s, 1] = sigma
        out_f[s, 2] = bg
        out_f[s, 3] = bg_sd
        out_f[s, 4] = peak if n_peak > 0 else math.nan
        out_i[s, 0] = n_peak
        out_i[s, 1] = n_bg
        out_i[s, 2] = flags
