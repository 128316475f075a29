"""Plain numpy/scipy implementation of peakfinder8, for tests and benchmarks.

Written for reading, not for speed: every step of
:func:`crystalscope.image.peakfinder8.peakfinder8` spelled out with whole-array numpy
operations and one Python loop over the candidate regions, in the order of CrystFEL's
``peakfinder8.c``.  The compiled version must give the same peaks (tested).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from crystalscope.image.peakfinder8 import PeakFinder8Params, PeakList, _prepare

__all__ = ["peakfinder8_reference", "radial_statistics_reference"]

_DEFAULTS = PeakFinder8Params()


def _usable(data: np.ndarray, rad: np.ndarray, bad: np.ndarray, p: PeakFinder8Params) -> np.ndarray:
    """Pixels that take part: not masked, finite, strictly inside the resolution limits."""
    with np.errstate(invalid="ignore"):
        return ~bad & np.isfinite(data) & (rad > p.min_res_px) & (rad < p.max_res_px)


def _clipped_statistics(
    values: np.ndarray, k: np.ndarray, nb: int, p: PeakFinder8Params
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin offset, sigma (NaN where empty) and final threshold by iterative clipping."""
    lo = np.full(nb, -np.inf)
    hi = np.full(nb, np.inf)
    offset = np.full(nb, np.nan)
    sigma = np.full(nb, np.nan)
    v = values.astype(np.float64)
    for _ in range(p.iterations):
        sel = (v >= lo[k]) & (v <= hi[k])
        count = np.bincount(k[sel], minlength=nb).astype(np.float64)
        total = np.bincount(k[sel], weights=v[sel], minlength=nb)
        squares = np.bincount(k[sel], weights=v[sel] ** 2, minlength=nb)
        filled = count > 0
        offset[:] = np.nan
        sigma[:] = np.nan
        offset[filled] = total[filled] / count[filled]
        var = squares[filled] / count[filled] - offset[filled] ** 2
        sigma[filled] = np.sqrt(np.maximum(var, 0.0))
        lo = np.where(filled, offset - p.min_snr * sigma, -np.inf)
        hi = np.where(filled, np.maximum(offset + p.min_snr * sigma, p.threshold_adu), np.inf)
    return offset, sigma, hi


def radial_statistics_reference(
    frame: np.ndarray,
    radius: np.ndarray,
    mask: np.ndarray | None = None,
    params: PeakFinder8Params = _DEFAULTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Offset, sigma and threshold per integer radius bin (index ``k``: ``rint(r) == k``)."""
    data, rad, mask8 = _prepare(frame, radius, mask)
    bad = mask8.reshape(data.shape).astype(bool) if mask8.size else np.zeros(data.shape, bool)
    ok = _usable(data, rad, bad, params)
    k = np.rint(rad[ok]).astype(np.int64)
    nb = int(k.max()) + 1 if k.size else 0
    return _clipped_statistics(data[ok], k, nb, params)


def _regions(above: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """8-connected regions of ``above`` that have a pixel off the frame border:
    ``(seed, flat pixel indices)``, the seed being the region's first such pixel in raster
    order (where CrystFEL's scan starts it), sorted by seed."""
    labels, n = ndimage.label(above, structure=np.ones((3, 3), dtype=bool))
    interior = np.zeros_like(above)
    interior[1:-1, 1:-1] = True
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(1, n + 2))
    found: list[tuple[int, np.ndarray]] = []
    inner = interior.ravel()
    for lab in range(n):
        pix = order[bounds[lab] : bounds[lab + 1]]
        seeds = pix[inner[pix]]
        if seeds.size:
            found.append((int(seeds.min()), pix))
    found.sort(key=lambda item: item[0])
    return found


def _background(
    data: np.ndarray, good_bg: np.ndarray, cx: int, cy: int, ring: int
) -> tuple[int, float, float, float]:
    """Count, mean, standard deviation and maximum (starting at 0) of the background
    pixels within ``ring`` pixels of ``(cx, cy)``."""
    h, w = data.shape
    y0, y1, x0, x1 = (
        max(cy - ring, 0),
        min(cy + ring + 1, h),
        max(cx - ring, 0),
        min(cx + ring + 1, w),
    )
    yy, xx = np.mgrid[y0:y1, x0:x1]
    disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= ring * ring
    vals = data[y0:y1, x0:x1][disc & good_bg[y0:y1, x0:x1]].astype(np.float64)
    if vals.size == 0:
        return 0, 0.0, 0.0, 0.0
    mean = vals.sum() / vals.size
    sd = np.sqrt(max((vals**2).sum() / vals.size - mean**2, 0.0))
    return vals.size, mean, sd, max(vals.max(), 0.0)


def peakfinder8_reference(
    frame: np.ndarray,
    radius: np.ndarray,
    mask: np.ndarray | None = None,
    params: PeakFinder8Params = _DEFAULTS,
) -> PeakList:
    """The same result as :func:`crystalscope.image.peakfinder8.peakfinder8`, in numpy."""
    p = params
    data, rad, mask8 = _prepare(frame, radius, mask)
    h, w = data.shape
    bad = mask8.reshape(data.shape).astype(bool) if mask8.size else np.zeros(data.shape, bool)
    ok = _usable(data, rad, bad, p)
    kmap = np.zeros(data.shape, np.int64)
    kmap[ok] = np.rint(rad[ok]).astype(np.int64)
    nb = int(kmap[ok].max()) + 1 if ok.any() else 0
    offset, sigma, thr = _clipped_statistics(data[ok], kmap[ok], nb, p)
    above = np.zeros(data.shape, bool)
    above[ok] = data[ok] > thr[kmap[ok]]
    good_bg = ok & ~above
    rows: list[tuple[float, ...]] = []
    for seed, pix in _regions(above):
        n = pix.size
        if n < p.min_pix or n > p.max_pix:
            continue
        ys, xs = np.divmod(pix, w)
        vals = data.ravel()[pix].astype(np.float64)
        weight = np.abs(vals - offset[kmap.ravel()[pix]])
        if weight.sum() < 1e-10:
            continue
        cx = int(np.rint((weight * xs).sum() / weight.sum()))
        cy = int(np.rint((weight * ys).sum() / weight.sum()))
        nbg, mean, sd, bg_max = _background(data, good_bg, cx, cy, 2 * p.local_bg_radius)
        k = kmap[cy, cx] if ok[cy, cx] else kmap.ravel()[seed]
        mean = offset[k] if nbg == 0 else mean
        sd = sigma[k] if sd == 0.0 and np.isfinite(sigma[k]) else sd
        sub = vals - mean
        tot = sub.sum()
        if not tot > 0.0:
            continue
        noise = sd if p.crystfel_snr else sd * np.sqrt(n)
        snr = tot / noise if noise > 0.0 else np.inf
        if snr < p.min_snr or max(sub.max(), 0.0) < bg_max - mean:
            continue
        fs, ss = (sub * xs).sum() / tot, (sub * ys).sum() / tot
        if not (0.0 <= fs <= w - 1 and 0.0 <= ss <= h - 1):
            continue
        rows.append((fs, ss, tot, n, snr, vals.max(), mean))
        if len(rows) >= p.max_peaks:
            break
    if not rows:
        return PeakList.empty()
    a = np.array(rows, dtype=np.float64)
    return PeakList(
        fs=a[:, 0], ss=a[:, 1], intensity=a[:, 2], n_pixels=a[:, 3].astype(np.int32),
        snr=a[:, 4], max_adu=a[:, 5], background=a[:, 6],
    )  # fmt: skip
