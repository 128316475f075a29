"""Numba kernels of :mod:`crystalscope.image.peakfinder8` (one frame, one thread).

Pixel bins
    ``bins[i] = rint(radius[i]) + 1`` for usable pixels and ``0`` for unusable ones
    (masked, non-finite value or radius, outside the resolution limits), as ``uint32``:
    bin ``0`` is a dummy that every table carries, so that no kernel needs a branch or a
    signed index for unusable pixels.

Exact radial statistics without five passes over the frame
    CrystFEL recomputes ``count, sum, sum of squares`` of the clipped pixels of every bin
    in ``iterations`` full passes.  Here one pass (:func:`core_pass`) splits the pixels
    of each bin ``k`` into a *core*, the values inside an interval ``S_k`` (summed once),
    and an *outlier list* of the rest (index, bin and value, raster order).  ``S_k`` is
    ``m_k +- h s_k`` (``h = 0.5 min_snr`` by default) from a robustly clipped mean and
    standard deviation of a sample of the pixels (:func:`sample_bounds`).  Every
    iteration then adds the listed values inside the current interval to the core sums
    (:func:`iterate_bins`).  This is exact as long as ``S_k`` lies inside every clipping
    interval that is used and below the final threshold, which is checked; bins where it
    fails are redone with an empty core (all their pixels listed), which is the plain
    algorithm.  Every pixel above the final threshold is therefore in the outlier list,
    which provides the seeds of the peak search in raster order (:func:`find_peaks`).

Cost model (2-core development VM)
    Scattered read-modify-writes into per-bin tables cost about 1 ns each and dominate;
    vectorised gathers are slow on this machine class, so table lookups sit in loops
    that do not vectorise; random accesses go to a huge-page copy of the frame.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "bin_pixels",
    "core_pass",
    "find_peaks",
    "iterate_bins",
    "sample_bounds",
]

U32 = np.uint32
U64 = np.uint64
MIN_SAMPLES = 40  # bins with fewer sampled pixels get an empty core
SAMPLE_BLOCK = 16  # consecutive pixels per sampled run (one cache line of float32)
SAMPLE_CLIP = 3.0  # clipping of the sampled pixels after the first round (standard deviations)
SAMPLE_ITERATIONS = 10
N_OUT = 7  # per-peak output columns


@numba.njit(cache=True, nogil=True)
def bin_pixels(
    data: np.ndarray,
    radius: np.ndarray,
    mask: np.ndarray,
    rmin: float,
    rmax: float,
    rcap: float,
    bins: np.ndarray,
    copy: np.ndarray,
) -> int:
    """Fill ``bins`` (uint32) and ``copy`` (the frame, float32); return the largest bin
    (0: no usable pixel).

    ``mask`` is uint8 of the frame's size (non-zero = bad) or of size 0 (no mask).
    Radii are clipped to ``rcap`` before rounding so that a nonsense map cannot overflow.
    The copy goes to the caller's (huge-page) workspace, which makes the random accesses
    of the peak search cheaper; it costs little in this vectorised loop.
    """
    d = data.ravel()
    r = radius.ravel()
    b = bins.ravel()
    c = copy.ravel()
    m = mask.ravel()
    has_mask = m.size == d.size
    kmax = U32(0)
    for i in range(d.size):
        ri = r[i]
        x = d[i]
        c[i] = x
        ok = (ri > rmin) & (ri < rmax) & np.isfinite(x)
        if has_mask:
            ok = ok & (m[i] == 0)
        rc = min(ri, rcap) if ok else 0.0
        k = U32(np.rint(rc)) + U32(1) if ok else U32(0)
        b[i] = k
        kmax = max(kmax, k)
    return int(kmax)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _clip_segment(seg: np.ndarray, lo: float, hi: float) -> tuple[int, float, float]:
    """Count, sum and sum of squares of the values of ``seg`` within ``[lo, hi]``."""
    c = 0
    t = 0.0
    t2 = 0.0
    for j in range(seg.size):
        v = np.float64(seg[j])
        inside = (v >= lo) & (v <= hi)
        c += 1 if inside else 0
        t += v if inside else 0.0
        t2 += v * v if inside else 0.0
    return c, t, t2


@numba.njit(cache=True, nogil=True, inline="always")
def _moments(c: float, t: float, t2: float) -> tuple[float, float]:
    """Mean and standard deviation from count, sum and sum of squares (``c > 0``)."""
    mean = t / c
    return mean, math.sqrt(max(t2 / c - mean * mean, 0.0))


@numba.njit(cache=True, nogil=True)
def group_by_bin(keys: np.ndarray, values: np.ndarray, nb: int) -> tuple[np.ndarray, np.ndarray]:
    """Counting sort: ``(grouped, start)``, bin ``k`` owning ``grouped[start[k]:start[k+1]]``
    (input order kept within a bin)."""
    start = np.zeros(nb + 1, np.int64)
    for j in range(keys.size):
        start[keys[j] + U32(1)] += 1
    for k in range(nb):
        start[k + 1] += start[k]
    pos = start[:nb].copy()
    grouped = np.empty(keys.size, values.dtype)
    for j in range(keys.size):
        k = keys[j]
        grouped[pos[k]] = values[j]
        pos[k] += 1
    return grouped, start


@numba.njit(cache=True, nogil=True)
def sample_bounds(
    data: np.ndarray,
    bins: np.ndarray,
    nb: int,
    stride: int,
    half: float,
    s_lo: np.ndarray,
    s_hi: np.ndarray,
) -> None:
    """Core intervals ``S_k`` from a sample of the pixels.

    The sample is one run of :data:`SAMPLE_BLOCK` consecutive pixels in every
    ``stride * SAMPLE_BLOCK`` (whole cache lines, so that sampling reads only 1/stride of
    the frame).  ``S_k = m_k +- half * s_k`` from robustly clipped sample moments
    (:func:`_robust_moments`); empty (``lo = inf, hi = -inf``) for bins with fewer than
    :data:`MIN_SAMPLES` samples or when ``stride <= 0``; bin 0 (unusable pixels) gets
    ``(-inf, inf)`` so that those pixels never enter the outlier list.
    """
    s_lo[:] = np.inf
    s_hi[:] = -np.inf
    s_lo[0] = -np.inf
    s_hi[0] = np.inf
    if stride <= 0:
        return
    d = data.ravel()
    b = bins.ravel()
    step = stride * SAMPLE_BLOCK
    n = 0
    keys = np.empty(d.size // stride + SAMPLE_BLOCK, np.uint32)
    vals = np.empty(keys.size, np.float32)
    for i0 in range(0, d.size, step):
        for i in range(i0, min(i0 + SAMPLE_BLOCK, d.size)):
            keys[n] = b[i]
            vals[n] = d[i]
            n += 1
    grouped, start = group_by_bin(keys[:n], vals[:n], nb)
    for k in range(1, nb):
        seg = grouped[start[k] : start[k + 1]]
        if seg.size < MIN_SAMPLES:
            continue
        mean, sd, c = _robust_moments(seg)
        if c > 0:
            s_lo[k] = mean - half * sd
            s_hi[k] = mean + half * sd


@numba.njit(cache=True, nogil=True)
def _robust_moments(seg: np.ndarray) -> tuple[float, float, int]:
    """Mean and standard deviation of ``seg`` after robust iterative clipping.

    The first round clips at 2 standard deviations of all values, later rounds at 3 of
    the clipped values until the count stops changing.  (With ``n`` values none can lie
    more than ``(n - 1) / sqrt(n)`` standard deviations from the mean, so peakfinder8's
    own 5-sigma clipping would not remove a bright pixel from a sample of a few dozen
    pixels, nor a spot covering several of them.)  Returns the final count as well.
    """
    lo, hi = -np.inf, np.inf
    mean, sd, last = 0.0, 0.0, -1
    for it in range(SAMPLE_ITERATIONS):
        c, t, t2 = _clip_segment(seg, lo, hi)
        if c == 0 or c == last:
            break
        mean, sd = _moments(c, t, t2)
        width = (2.0 if it == 0 else SAMPLE_CLIP) * sd
        lo, hi, last = mean - width, mean + width, c
    return mean, sd, max(last, 0)


@numba.njit(cache=True, nogil=True)
def core_pass(
    data: np.ndarray,
    bins: np.ndarray,
    s_lo: np.ndarray,
    s_hi: np.ndarray,
    core: np.ndarray,
    out_list: np.ndarray,
    list_bin: np.ndarray,
    list_val: np.ndarray,
) -> int:
    """Sum the core values of every bin into ``core`` (``4 * nb``: count, sum, sum of
    squares, unused; raster order) and list the other pixels (index, bin, value) in
    raster order; returns the list length.

    Branch-free: every pixel adds itself with weight 0 or 1, and the list entry is
    always written but the length advanced only for listed pixels (a branch would be
    mispredicted for every listed pixel).
    """
    d = data.ravel()
    b = bins.ravel()
    core[:] = 0.0
    n = 0
    for i in range(d.size):
        k = b[i]
        x = d[i]
        v = np.float64(x)
        inside = (v >= s_lo[k]) & (v <= s_hi[k])
        w = 1.0 if inside else 0.0
        j = k * U32(4)
        core[j] += w
        core[j + U32(1)] += w * v
        core[j + U32(2)] += w * (v * v)
        out_list[n] = i
        list_bin[n] = k
        list_val[n] = x
        n += 0 if inside else 1
    return n


@numba.njit(cache=True, nogil=True)
def iterate_bins(
    list_bin: np.ndarray,
    list_val: np.ndarray,
    core: np.ndarray,
    s_lo: np.ndarray,
    s_hi: np.ndarray,
    min_snr: float,
    threshold: float,
    iterations: int,
    offset: np.ndarray,
    sigma: np.ndarray,
    thr: np.ndarray,
) -> np.ndarray:
    """Exact sigma-clipped statistics from the core sums and the outlier list.

    Every round uses the pixels within ``[lo, hi]`` (first round: all) and sets
    ``lo = m - min_snr s``, ``hi = max(m + min_snr s, threshold)``; a bin without such
    pixels gets ``(-inf, inf)`` again.  Fills ``offset``, ``sigma`` (NaN for bins empty
    in the last round) and the final upper threshold ``thr`` (``inf`` for empty bins and
    bin 0) and returns a boolean array of the bins whose core interval was not inside
    every interval used or not below the final threshold (their result is invalid).
    """
    nb = thr.size
    values, start = group_by_bin(list_bin, list_val, nb)
    fail = np.zeros(nb, np.bool_)
    thr[0] = np.inf
    for k in range(1, nb):
        seg = values[start[k] : start[k + 1]]
        has_core = s_lo[k] <= s_hi[k]
        core_c, core_t, core_t2 = core[4 * k], core[4 * k + 1], core[4 * k + 2]
        lo, hi = -np.inf, np.inf
        offset[k], sigma[k] = np.nan, np.nan
        for _ in range(iterations):
            if has_core and (lo > s_lo[k] or hi < s_hi[k]):
                fail[k] = True
            c, t, t2 = _clip_segment(seg, lo, hi)
            c += core_c
            if c == 0:
                lo, hi = -np.inf, np.inf
                offset[k], sigma[k] = np.nan, np.nan
                continue
            mean, sd = _moments(c, t + core_t, t2 + core_t2)
            offset[k], sigma[k] = mean, sd
            lo = mean - min_snr * sd
            hi = max(mean + min_snr * sd, threshold)
        thr[k] = hi
        if has_core and hi < s_hi[k]:
            fail[k] = True
    return fail


@numba.njit(cache=True, nogil=True)
def _mark_above(
    out_list: np.ndarray,
    list_bin: np.ndarray,
    list_val: np.ndarray,
    thr: np.ndarray,
    bitmap: np.ndarray,
) -> int:
    """Set the bits of the listed pixels above their threshold; returns their number.

    The bitmap (one bit per pixel, 100 kB for a LAMBDA frame, cache-resident) serves the
    flood fill: a pixel joins a region when its bit is set, and its bit is cleared then.
    """
    bitmap[:] = 0
    count = 0
    for q in range(out_list.size):
        if list_val[q] > thr[list_bin[q]]:
            i = U64(out_list[q])
            bitmap[i >> U64(6)] |= U64(1) << (i & U64(63))
            count += 1
    return count


@numba.njit(cache=True, nogil=True, inline="always")
def _take(bitmap: np.ndarray, i: int) -> bool:
    """Clear pixel ``i``'s bit; True if it was set."""
    word = U64(i) >> U64(6)
    bit = U64(1) << (U64(i) & U64(63))
    if bitmap[word] & bit:
        bitmap[word] ^= bit
        return True
    return False


@numba.njit(cache=True, nogil=True)
def _flood(
    bitmap: np.ndarray,
    width: int,
    height: int,
    x0: int,
    y0: int,
    qx: np.ndarray,
    qy: np.ndarray,
) -> int:
    """8-connected region of marked pixels from ``(x0, y0)`` (already taken); its pixels
    are ``(qx[:n], qy[:n])``; returns ``n``."""
    qx[0] = x0
    qy[0] = y0
    n = 1
    p = 0
    while p < n:
        x = qx[p]
        y = qy[p]
        p += 1
        for yy in range(max(y - 1, 0), min(y + 2, height)):
            for xx in range(max(x - 1, 0), min(x + 2, width)):
                if _take(bitmap, yy * width + xx):
                    qx[n] = xx
                    qy[n] = yy
                    n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _first_centroid(
    d: np.ndarray,
    b: np.ndarray,
    offset: np.ndarray,
    width: int,
    qx: np.ndarray,
    qy: np.ndarray,
    qv: np.ndarray,
    n: int,
) -> tuple[float, float, float]:
    """``sum |v - m_k|`` and the centroid it weights (fs, ss); stores the values in ``qv``."""
    sw = sx = sy = 0.0
    for p in range(n):
        i = qy[p] * width + qx[p]
        v = np.float64(d[i])
        qv[p] = v
        w = abs(v - offset[b[i]])
        sw += w
        sx += w * qx[p]
        sy += w * qy[p]
    if sw < 1e-10:
        return sw, 0.0, 0.0
    return sw, sx / sw, sy / sw


@numba.njit(cache=True, nogil=True)
def _local_background(
    d: np.ndarray,
    b: np.ndarray,
    thr: np.ndarray,
    width: int,
    height: int,
    cx: int,
    cy: int,
    ring: int,
) -> tuple[int, float, float, float]:
    """Count, mean, standard deviation and maximum of the usable pixels within ``ring``
    pixels of ``(cx, cy)`` that are not above their threshold (the maximum starts at 0)."""
    n = 0
    t = t2 = 0.0
    vmax = 0.0
    r2 = ring * ring
    for yy in range(max(cy - ring, 0), min(cy + ring + 1, height)):
        dy = yy - cy
        for xx in range(max(cx - ring, 0), min(cx + ring + 1, width)):
            dx = xx - cx
            if dx * dx + dy * dy > r2:
                continue
            j = yy * width + xx
            k = b[j]
            v = np.float64(d[j])
            if k == 0 or v > thr[k]:
                continue
            n += 1
            t += v
            t2 += v * v
            vmax = max(vmax, v)
    if n == 0:
        return 0, 0.0, 0.0, vmax
    mean, sd = _moments(n, t, t2)
    return n, mean, sd, vmax


@numba.njit(cache=True, nogil=True)
def _measure(
    qx: np.ndarray, qy: np.ndarray, qv: np.ndarray, n: int, local_offset: float
) -> tuple[float, float, float, float, float]:
    """Background-subtracted sum, its centroid (fs, ss), raw and subtracted maximum."""
    tot = sx = sy = 0.0
    raw_max = -np.inf
    sub_max = 0.0
    for p in range(n):
        v = qv[p]
        w = v - local_offset
        tot += w
        sx += w * qx[p]
        sy += w * qy[p]
        raw_max = max(raw_max, v)
        sub_max = max(sub_max, w)
    if tot <= 0.0:
        return tot, np.nan, np.nan, raw_max, sub_max
    return tot, sx / tot, sy / tot, raw_max, sub_max


@numba.njit(cache=True, nogil=True)
def find_peaks(
    data: np.ndarray,
    bins: np.ndarray,
    out_list: np.ndarray,
    list_bin: np.ndarray,
    list_val: np.ndarray,
    offset: np.ndarray,
    sigma: np.ndarray,
    thr: np.ndarray,
    iparams: np.ndarray,
    min_snr: float,
    out: np.ndarray,
) -> int:
    """Grow, measure and select peaks from the listed seeds (raster order).

    ``iparams = (min_pix, max_pix, local_bg_radius, max_peaks, crystfel_snr)``;
    ``out`` is ``(max_peaks, 7)`` float64 receiving
    ``fs, ss, intensity, n_pixels, snr, max_adu, background`` per peak.
    Returns the number of peaks written.
    """
    height, width = data.shape
    d = data.ravel()
    b = bins.ravel()
    min_pix, max_pix, ring = iparams[0], iparams[1], 2 * iparams[2]
    max_peaks, crystfel_snr = iparams[3], iparams[4] != 0
    bitmap = np.empty((d.size + 63) // 64, np.uint64)
    n_above = _mark_above(out_list, list_bin, list_val, thr, bitmap)
    qx = np.empty(n_above + 1, np.int64)
    qy = np.empty(n_above + 1, np.int64)
    qv = np.empty(n_above + 1, np.float64)
    n_peaks = 0
    for q in range(out_list.size):
        if not list_val[q] > thr[list_bin[q]]:
            continue
        seed = out_list[q]
        y, x = divmod(seed, width)
        if y < 1 or y >= height - 1 or x < 1 or x >= width - 1 or not _take(bitmap, seed):
            continue
        n = _flood(bitmap, width, height, x, y, qx, qy)
        if n < min_pix or n > max_pix:
            continue
        sw, fx, fy = _first_centroid(d, b, offset, width, qx, qy, qv, n)
        if sw < 1e-10:
            continue
        cx, cy = int(np.rint(fx)), int(np.rint(fy))
        nbg, mean, sd, bg_max = _local_background(d, b, thr, width, height, cx, cy, ring)
        k = b[cy * width + cx]
        k = k if k > 0 else list_bin[q]
        if nbg == 0:
            mean = offset[k]
        if sd == 0.0 and np.isfinite(sigma[k]):
            sd = sigma[k]
        tot, fs, ss, raw_max, sub_max = _measure(qx, qy, qv, n, mean)
        if not tot > 0.0:
            continue
        noise = sd if crystfel_snr else sd * math.sqrt(n)
        snr = tot / noise if noise > 0.0 else np.inf
        if snr < min_snr or sub_max < bg_max - mean:
            continue
        if fs < 0.0 or fs > width - 1 or ss < 0.0 or ss > height - 1:
            continue
        row = out[n_peaks]
        row[0], row[1], row[2], row[3] = fs, ss, tot, n
        row[4], row[5], row[6] = snr, raw_max, mean
        n_peaks += 1
        if n_peaks >= max_peaks:
            break
    return n_peaks
