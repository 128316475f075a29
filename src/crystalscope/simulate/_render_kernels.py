"""Numba kernels of the detector-image renderer (see :mod:`crystalscope.simulate.render`).

* :func:`add_spots`: pixel-integrated 2-D Gaussians (erf differences per axis, window
  +-5 sigma renormalised to 1).
* :func:`add_radial` / :func:`refine_radial`: pixel-integrated radial 2-D Cauchy
  profiles on an affine pixel grid (midpoint rule everywhere, adaptive n x n
  sub-sampling where the midpoint rule's relative error would exceed ``tol``).
* :func:`fold`: sum a physical grid into raw pixels with one index map per axis.
* :func:`respond`: flat field, Poisson counting, paralyzable dead time, gain and
  saturation of every pixel in one pass.

Poisson deviates come from a xoshiro256** generator (Blackman & Vigna) whose 256-bit
state is seeded from the caller's numpy Generator.  Means below 100 combine a
tabulated CDF (guide-table inversion) with one Poisson process walked along the pixels
(see :func:`_counts`); larger means use the transformed rejection method PTRS (Hormann
1993, the algorithm numpy uses).  All draws are exact Poisson deviates (up to the 1e-17
truncation of the tables' tails), at a fraction of the cost of numpy's sampler (40-60 ns
per pixel on the development machine).
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import float64, uint64

U64 = np.uint64

__all__ = [
    "add_radial",
    "add_spots",
    "fold",
    "poisson_array",
    "refine_radial",
    "respond",
    "seed_state",
]

_ERF5 = math.erf(5.0 / math.sqrt(2.0))  # Gaussian mass within +-5 sigma
_FINE_STEP, _FINE_MAX = 0.02, 10.0  # tabulated Poisson CDFs: fine steps below 10
_COARSE_STEP, _TABLE_MAX = 0.1, 100.0  # coarse steps up to 100; larger means use PTRS
_N_FINE = round(_FINE_MAX / _FINE_STEP)
_N_COARSE = round((_TABLE_MAX - _FINE_MAX) / _COARSE_STEP)
_N_DEAD_TIME = 1 << 14  # counts with a tabulated dead-time response
_N_TABLE = 1024
_LOG_FACT = np.array([math.lgamma(k + 1.0) for k in range(_N_TABLE)])
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

# ---------------------------------------------------------------------------- spots


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _edges(x: float, s: float, lo: int, hi: int, out: np.ndarray) -> None:
    """Per-pixel Gaussian mass of pixels ``lo..hi`` (window +-5 s, renormalised)."""
    scale = 1.0 / (s * math.sqrt(2.0))
    prev = -_ERF5
    for m in range(lo, hi + 1):
        edge = min(m + 0.5 - x, 5.0 * s)
        cur = math.erf(edge * scale)
        out[m - lo] = 0.5 * (cur - prev) / _ERF5
        prev = cur


@numba.njit(cache=True, nogil=True, error_model="numpy")
def add_spots(
    img: np.ndarray, fs: np.ndarray, ss: np.ndarray, counts: np.ndarray, sigma: np.ndarray
) -> None:
    """Add pixel-integrated 2-D Gaussians (``counts`` each) centred at ``(fs, ss)``.

    Pixel ``[i, j]`` covers ``j - 0.5 .. j + 0.5`` along fs and ``i - 0.5 .. i + 0.5``
    along ss.  The parts outside ``img`` are lost.
    """
    n_ss, n_fs = img.shape
    wx = np.empty(64)
    wy = np.empty(64)
    for k in range(fs.size):
        s = sigma[k]
        x, y, c = fs[k], ss[k], counts[k]
        jlo = math.floor(x - 5.0 * s + 0.5)
        jhi = math.floor(x + 5.0 * s + 0.5)
        ilo = math.floor(y - 5.0 * s + 0.5)
        ihi = math.floor(y + 5.0 * s + 0.5)
        if jhi < 0 or ihi < 0 or jlo >= n_fs or ilo >= n_ss or c == 0.0:
            continue
        if jhi - jlo + 1 > wx.size or ihi - ilo + 1 > wy.size:
            size = max(jhi - jlo, ihi - ilo) + 1
            wx = np.empty(size)
            wy = np.empty(size)
        _edges(x, s, jlo, jhi, wx)
        _edges(y, s, ilo, ihi, wy)
        for i in range(max(ilo, 0), min(ihi, n_ss - 1) + 1):
            ci = c * wy[i - ilo]
            for j in range(max(jlo, 0), min(jhi, n_fs - 1) + 1):
                img[i, j] += ci * wx[j - jlo]


# ---------------------------------------------------------------------------- radial


@numba.njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def add_radial(img: np.ndarray, a: np.ndarray, c1: float, g1: float, c2: float, g2: float) -> None:
    """Midpoint values of two Cauchy profiles: ``img += sum_k c_k / (r^2 + g_k^2)^1.5``.

    ``r`` is the length of ``a0 + j a1 + i a2`` (``a = (a0x, a0y, a1x, a1y, a2x, a2y)``,
    in profile pixels) at pixel ``[i, j]``.
    """
    n_ss, n_fs = img.shape
    g1s, g2s = g1 * g1, g2 * g2
    a0, a1, a2, a3, a4, a5 = a[0], a[1], a[2], a[3], a[4], a[5]  # locals: lets LLVM vectorise
    for i in range(n_ss):
        bx = a0 + i * a4
        by = a1 + i * a5
        row = img[i]
        for j in range(n_fs):
            x = bx + j * a2
            y = by + j * a3
            r2 = x * x + y * y
            t1 = r2 + g1s
            t2 = r2 + g2s
            row[j] += c1 / (t1 * math.sqrt(t1)) + c2 / (t2 * math.sqrt(t2))


@numba.njit(cache=True, nogil=True, error_model="numpy")
def refine_radial(
    img: np.ndarray,
    a: np.ndarray,
    c: float,
    g: float,
    box: np.ndarray,
    tol: float,
    half_diag: float,
    max_sub: int,
) -> int:
    """Replace midpoint values by n x n sub-sampled means where the midpoint rule is poor.

    The relative error of the midpoint rule for ``(r^2 + g^2)^-1.5`` on a unit pixel is
    ``|9 r^2 - 6 g^2| / (24 t^2) <= 0.375 / t`` with ``t = r^2 + g^2``; with ``t`` taken
    at the pixel's point nearest the centre, pixels where ``0.375 / t > tol`` are
    sub-sampled with ``n = ceil(sqrt(0.375 / (t tol)))`` (at most ``max_sub``) points per
    axis, which brings the estimate below ``tol``.  ``box = (i0, i1, j0, j1)`` limits the
    search.  Returns the number of refined pixels.
    """
    g2 = g * g
    limit = 0.375 / tol
    refined = 0
    for i in range(box[0], box[1]):
        for j in range(box[2], box[3]):
            x = a[0] + j * a[2] + i * a[4]
            y = a[1] + j * a[3] + i * a[5]
            r2 = x * x + y * y
            rmin = max(math.sqrt(r2) - half_diag, 0.0)
            t_min = rmin * rmin + g2
            if t_min >= limit:
                continue
            n = min(math.ceil(math.sqrt(limit / t_min)), max_sub)
            total = 0.0
            for p in range(n):
                dv = (p + 0.5) / n - 0.5
                for q in range(n):
                    du = (q + 0.5) / n - 0.5
                    xx = x + du * a[2] + dv * a[4]
                    yy = y + du * a[3] + dv * a[5]
                    t = xx * xx + yy * yy + g2
                    total += 1.0 / (t * math.sqrt(t))
            t_mid = r2 + g2
            img[i, j] += c * (total / (n * n) - 1.0 / (t_mid * math.sqrt(t_mid)))
            refined += 1
    return refined


# ---------------------------------------------------------------------------- folding


@numba.njit(cache=True, nogil=True, error_model="numpy")
def fold(block: np.ndarray, ss_map: np.ndarray, fs_map: np.ndarray, out: np.ndarray) -> None:
    """``out[ss_map[i], fs_map[j]] += block[i, j]`` for all mapped (non-negative) indices."""
    for i in range(block.shape[0]):
        ri = ss_map[i]
        if ri < 0:
            continue
        for j in range(block.shape[1]):
            rj = fs_map[j]
            if rj >= 0:
                out[ri, rj] += block[i, j]


# ---------------------------------------------------------------------------- random numbers


@numba.njit(inline="always", error_model="numpy")
def _rotl(x: np.uint64, k: int) -> np.uint64:
    return (x << uint64(k)) | (x >> uint64(64 - k))


@numba.njit(inline="always", error_model="numpy")
def _next(s0: U64, s1: U64, s2: U64, s3: U64) -> tuple[float, U64, U64, U64, U64]:
    """One xoshiro256** step: a uniform double in [0, 1) and the new state."""
    result = _rotl(s1 * uint64(5), 7) * uint64(9)
    t = s1 << uint64(17)
    s2 ^= s0
    s3 ^= s1
    s1 ^= s2
    s0 ^= s3
    s2 ^= t
    s3 = _rotl(s3, 45)
    return float64(result >> uint64(11)) * (1.0 / 9007199254740992.0), s0, s1, s2, s3


def seed_state(rng: np.random.Generator) -> np.ndarray:
    """A xoshiro256** state (4 uint64, not all zero) drawn from ``rng``."""
    words = rng.bit_generator.random_raw(4).astype(np.uint64)
    if not words.any():  # pragma: no cover - probability 2**-256
        words[0] = 1
    return words


@numba.njit(inline="always", error_model="numpy")
def _log_factorial(k: int, table: np.ndarray) -> float:
    if k < table.size:
        return table[k]
    x = k + 1.0
    x2 = x * x
    return (
        (x - 0.5) * math.log(x) - x + _HALF_LOG_2PI
        + 1.0 / (12.0 * x) - 1.0 / (360.0 * x * x2) + 1.0 / (1260.0 * x * x2 * x2)
    )  # fmt: skip


@numba.njit(inline="always", error_model="numpy")
def _ptrs(
    lam: float, s0: U64, s1: U64, s2: U64, s3: U64, table: np.ndarray
) -> tuple[float, U64, U64, U64, U64]:
    """Poisson deviate for ``lam >= 10``: PTRS (Hormann 1993), logs only when needed."""
    b = 0.931 + 2.53 * math.sqrt(lam)
    aa = -0.059 + 0.02483 * b
    vr = 0.9277 - 3.6224 / (b - 2.0)
    while True:
        u, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
        v, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
        u -= 0.5
        us = 0.5 - abs(u)
        if us < 0.013 and v > us:
            continue
        k = float64(math.floor((2.0 * aa / us + b) * u + lam + 0.43))
        if us >= 0.07 and v <= vr:
            return k, s0, s1, s2, s3
        if k < 0.0:
            continue
        lhs = math.log(v) + math.log(1.1239 + 1.1328 / (b - 3.4)) - math.log(aa / (us * us) + b)
        if lhs <= -lam + k * math.log(lam) - _log_factorial(int(k), table):
            return k, s0, s1, s2, s3


def _table_means() -> np.ndarray:
    """Means of the tabulated Poisson CDFs: steps of 0.02 below 10, of 0.1 up to 100."""
    fine = np.arange(_N_FINE) * _FINE_STEP
    coarse = _FINE_MAX + np.arange(_N_COARSE) * _COARSE_STEP
    return np.concatenate([fine, coarse])


@numba.njit(cache=True, error_model="numpy")
def _build_tables(means: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poisson CDFs of ``means`` with guide tables.

    Returns the concatenated CDFs, the concatenated guide tables (``guide[m]`` = first
    ``k`` with ``cdf[k] > m / L``, ``L`` the table's length) and the start of every table
    (CDF and guide tables have equal lengths).  Each CDF runs to ``lam + 10 sqrt(lam) + 40``
    (tail below 1e-17) and its last entry is set to 1.
    """
    n_tables = means.size
    starts = np.zeros(n_tables + 1, np.int64)
    for q in range(n_tables):
        lam = means[q]
        starts[q + 1] = starts[q] + int(lam + 10.0 * math.sqrt(lam) + 40.0)
    cdf = np.ones(starts[-1])
    guide = np.zeros(starts[-1], np.int32)
    for q in range(n_tables):
        lam, s0, length = means[q], starts[q], starts[q + 1] - starts[q]
        p = math.exp(-lam)
        f = p
        for k in range(length - 1):
            cdf[s0 + k] = min(f, 1.0)
            p *= lam / (k + 1)
            f += p
        k = 0
        for m in range(length):
            while cdf[s0 + k] <= m / length:
                k += 1
            guide[s0 + m] = k
    return cdf, guide, starts


@numba.njit(inline="always", error_model="numpy")
def _table_index(n: float) -> tuple[int, float]:
    """Index of the largest tabulated mean not above ``n`` (< _TABLE_MAX) and that mean."""
    if n < _FINE_MAX:
        q = int(n * (1.0 / _FINE_STEP))
        return q, q * _FINE_STEP
    c = int((n - _FINE_MAX) * (1.0 / _COARSE_STEP))
    return _N_FINE + c, _FINE_MAX + c * _COARSE_STEP


@numba.njit(inline="always", error_model="numpy")
def _tabled(q: int, u: float, cdf: np.ndarray, guide: np.ndarray, starts: np.ndarray) -> float:
    """Inversion of the ``q``-th tabulated Poisson CDF at ``u``."""
    s0 = starts[q]
    k = guide[s0 + int(u * (starts[q + 1] - s0))]
    k += 1 if cdf[s0 + k] <= u else 0  # usually enough: no branch to mispredict
    while cdf[s0 + k] <= u:
        k += 1
    return float64(k)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _respond(
    lam: np.ndarray,
    flat: np.ndarray,
    state: np.ndarray,
    noise: bool,
    tau_over_t: float,
    gain: float,
    saturation: float,
    out: np.ndarray,
    tables: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    dead_time: np.ndarray,
) -> None:
    """Flat field, Poisson counts, dead time, gain and saturation of every pixel.

    ``dead_time[k] = k exp(-k tau / T)`` for small integer counts ``k`` (faster than
    an exponential per pixel).

    Poisson deviates: a mean ``m < 100`` is split as ``m = m_q + d`` with ``m_q`` the
    largest tabulated mean not above ``m`` (steps of 0.02 below 10, of 0.1 above); a
    deviate of mean ``m_q`` comes from its tabulated CDF (guide-table inversion, about
    one comparison), one of mean ``d`` from one unit-rate Poisson process walked along
    the pixels (pixel ``i`` owns an interval of length ``d_i``; counts in disjoint
    intervals are independent Poisson deviates), which costs one subtraction per pixel
    and one exponential deviate per count.  Their sum is a Poisson deviate of mean
    ``m``.  Larger means use PTRS.
    """
    cdf, guide, starts, table = tables
    s0, s1, s2, s3 = state[0], state[1], state[2], state[3]
    use_flat = flat.size == lam.size
    u, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
    gap = -math.log1p(-u)  # distance to the next event of the walk, Exp(1)
    for i in range(lam.size):
        n = lam[i]
        if use_flat:
            n *= flat[i]
        if n <= 0.0:
            n = 0.0
        elif noise and n >= _TABLE_MAX:
            n, s0, s1, s2, s3 = _ptrs(n, s0, s1, s2, s3, table)
        elif noise:
            q, mean_q = _table_index(n)
            gap -= max(n - mean_q, 0.0)
            n = 0.0
            while gap <= 0.0:
                n += 1.0
                u, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
                gap -= math.log1p(-u)
            if q > 0:
                u, s0, s1, s2, s3 = _next(s0, s1, s2, s3)
                n += _tabled(q, u, cdf, guide, starts)
        if tau_over_t > 0.0 and n > 0.0:
            if noise and n < dead_time.size:  # integer counts: tabulated n exp(-n tau / T)
                n = dead_time[int(n)]
            else:
                n *= math.exp(-n * tau_over_t)
        out[i] = min(n * gain, saturation)


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CDF tables of :func:`_respond` (built on first use, about 2 MB)."""
    return (*_build_tables(_table_means()), _LOG_FACT)


def poisson_array(lam: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson deviates (float64, same shape) of the means ``lam`` with this module's sampler."""
    flat = np.ascontiguousarray(lam, dtype=np.float64).ravel()
    out = np.empty(flat.size)
    _respond(flat, np.empty(0, np.float32), seed_state(rng), True, 0.0, 1.0, math.inf, out,
             _tables(), np.empty(0))  # fmt: skip
    return out.reshape(np.shape(lam))


def respond(
    expected: np.ndarray,
    flat: np.ndarray | None,
    rng: np.random.Generator | None,
    tau_over_t: float,
    gain: float,
    saturation: float,
) -> np.ndarray:
    """Detector response of every pixel (float32, same shape as ``expected``).

    ``out = min(gain * m, saturation)`` with ``m = n exp(-n tau / T)`` (paralyzable dead
    time; ``tau_over_t = 0`` switches it off), ``n ~ Poisson(flat * expected)`` (or
    ``flat * expected`` itself when ``rng`` is None).
    """
    lam = np.ascontiguousarray(expected, dtype=np.float64).ravel()
    ff = np.empty(0, np.float32) if flat is None else np.ascontiguousarray(flat).ravel()
    state = seed_state(rng) if rng is not None else np.ones(4, np.uint64)
    out = np.empty(lam.size, dtype=np.float32)
    k = np.arange(_N_DEAD_TIME if tau_over_t > 0 else 0, dtype=np.float64)
    dead_time = k * np.exp(-k * tau_over_t)
    _respond(lam, ff, state, rng is not None, float(tau_over_t), float(gain), float(saturation),
             out, _tables(), dead_time)  # fmt: skip
    return out.reshape(expected.shape)
