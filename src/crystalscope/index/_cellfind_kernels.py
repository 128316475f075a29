"""Numba kernels of cell finding: within-pattern peak pairs, zones and candidate scoring.

Every pair kernel works on the peaks of all patterns concatenated in one ``(n, 3)``
array ``q`` (1/A), each pattern a contiguous slice ``start[p]:stop[p]`` sorted by
``qx``.  The sort lets the pair loops stop as soon as two peaks are further apart along
``qx`` than the largest length of interest, so dense patterns cost ``O(n k)`` (``k``
neighbours within range) instead of ``O(n^2)``.  The kernels are written with scalars
only (no ``numpy.linalg``, no containers), which keeps numba's compile time short.
"""

from __future__ import annotations

import numba
import numpy as np

MAX_CLUSTERS = 2048  # distinct difference vectors kept per pattern


@numba.njit(cache=True, nogil=True)
def nearest_neighbour_distances(
    q: np.ndarray, start: np.ndarray, stop: np.ndarray, floor: float
) -> np.ndarray:
    """Distance (1/A) from each peak to the nearest other peak of its pattern that is at
    least ``floor`` away (inf if none): closer pairs are split or repeated peaks."""
    out = np.full(q.shape[0], np.inf)
    floor2 = floor * floor
    for p in range(start.shape[0]):
        for i in range(start[p], stop[p]):
            best = np.inf
            for j in range(i + 1, stop[p]):
                dx = q[j, 0] - q[i, 0]
                if dx * dx >= best:
                    break
                d2 = dx * dx + (q[j, 1] - q[i, 1]) ** 2 + (q[j, 2] - q[i, 2]) ** 2
                if d2 >= floor2:
                    best = min(best, d2)
            for j in range(i - 1, start[p] - 1, -1):
                dx = q[i, 0] - q[j, 0]
                if dx * dx >= best:
                    break
                d2 = dx * dx + (q[j, 1] - q[i, 1]) ** 2 + (q[j, 2] - q[i, 2]) ** 2
                if d2 >= floor2:
                    best = min(best, d2)
            out[i] = np.sqrt(best)
    return out


@numba.njit(cache=True, nogil=True)
def pair_length_histogram(
    q: np.ndarray, start: np.ndarray, stop: np.ndarray, hi: float, nbins: int
) -> np.ndarray:
    """Counts of ``|q_j - q_i|`` over within-pattern pairs in ``nbins`` bins over ``[0, hi)``."""
    hist = np.zeros(nbins, np.int64)
    scale = nbins / hi
    for p in range(start.shape[0]):
        for i in range(start[p], stop[p]):
            for j in range(i + 1, stop[p]):
                dx = q[j, 0] - q[i, 0]
                if dx >= hi:
                    break
                d2 = dx * dx + (q[j, 1] - q[i, 1]) ** 2 + (q[j, 2] - q[i, 2]) ** 2
                k = int(np.sqrt(d2) * scale)
                if k < nbins:
                    hist[k] += 1
    return hist


@numba.njit(cache=True, nogil=True)
def pair_counts(q: np.ndarray, start: np.ndarray, stop: np.ndarray, hi: float) -> np.ndarray:
    """Number of within-pattern pairs closer than ``hi`` (1/A), per pattern."""
    out = np.zeros(start.shape[0], np.int64)
    hi2 = hi * hi
    for p in range(start.shape[0]):
        for i in range(start[p], stop[p]):
            for j in range(i + 1, stop[p]):
                dx = q[j, 0] - q[i, 0]
                if dx >= hi:
                    break
                if dx * dx + (q[j, 1] - q[i, 1]) ** 2 + (q[j, 2] - q[i, 2]) ** 2 < hi2:
                    out[p] += 1
    return out


@numba.njit(cache=True, nogil=True)
def distinct_vectors(
    q: np.ndarray, start: np.ndarray, stop: np.ndarray, hi: float, tol: float, offset: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct difference vectors of each pattern.

    All differences ``q_j - q_i`` of a pattern between ``tol`` and ``hi`` long are grouped
    (either sign) with the first group whose running mean is within ``tol`` (1/A); each group
    is one lattice vector seen ``count`` times, reported once by its mean with a
    canonical sign (``x >= 0``).  ``offset[p]`` is the first output row of pattern ``p``
    (an upper bound from :func:`pair_counts`).

    Returns
    -------
    vectors : (m, 3) float
        Mean vectors (1/A); rows of unused capacity are NaN.
    counts : (m,) int
        Number of differences merged (0 in unused rows).
    pattern : (m,) int
        Pattern (index into ``start``) of each.
    """
    total = offset[-1]
    vec = np.full((total, 3), np.nan)
    cnt = np.zeros(total, np.int64)
    pat = np.zeros(total, np.int64)
    acc = np.zeros((MAX_CLUSTERS, 4))
    hi2, tol2 = hi * hi, tol * tol
    for p in range(start.shape[0]):
        n = 0
        cap = min(offset[p + 1] - offset[p], MAX_CLUSTERS)
        for i in range(start[p], stop[p]):
            for j in range(i + 1, stop[p]):
                dx = q[j, 0] - q[i, 0]
                if dx >= hi:
                    break
                dy = q[j, 1] - q[i, 1]
                dz = q[j, 2] - q[i, 2]
                d2 = dx * dx + dy * dy + dz * dz
                if d2 >= hi2 or d2 < tol2:  # shorter than tol: a split or repeated peak
                    continue
                best = -1
                sign = 1.0
                for c in range(n):
                    mx, my, mz = acc[c, 0] / acc[c, 3], acc[c, 1] / acc[c, 3], acc[c, 2] / acc[c, 3]
                    if (dx - mx) ** 2 + (dy - my) ** 2 + (dz - mz) ** 2 < tol2:
                        best = c
                        break
                    if (dx + mx) ** 2 + (dy + my) ** 2 + (dz + mz) ** 2 < tol2:
                        best = c
                        sign = -1.0
                        break
                if best < 0:
                    if n == cap:
                        continue
                    best = n
                    n += 1
                    acc[best, 0] = 0.0
                    acc[best, 1] = 0.0
                    acc[best, 2] = 0.0
                    acc[best, 3] = 0.0
                acc[best, 0] += sign * dx
                acc[best, 1] += sign * dy
                acc[best, 2] += sign * dz
                acc[best, 3] += 1.0
        for c in range(n):
            row = offset[p] + c
            flip = -1.0 if acc[c, 0] < 0 or (acc[c, 0] == 0 and acc[c, 1] < 0) else 1.0
            vec[row, 0] = flip * acc[c, 0] / acc[c, 3]
            vec[row, 1] = flip * acc[c, 1] / acc[c, 3]
            vec[row, 2] = flip * acc[c, 2] / acc[c, 3]
            cnt[row] = int(acc[c, 3])
            pat[row] = p
    return vec, cnt, pat


@numba.njit(cache=True, nogil=True)
def zone_events(vec: np.ndarray, pattern: np.ndarray, min_sin: float) -> np.ndarray:
    """``(q1, q2, r, pattern)`` of the Gauss-reduced 2-D lattice of each vector pair.

    ``vec`` grouped by ``pattern``; pairs within a pattern closer to parallel than
    ``asin(min_sin)`` are skipped.  ``q1 <= q2`` (1/A^2) and ``r = u . w >= 0``.
    """
    n = vec.shape[0]
    size = 0
    i0 = 0
    while i0 < n:  # count pairs for the output size
        i1 = i0
        while i1 < n and pattern[i1] == pattern[i0]:
            i1 += 1
        size += (i1 - i0) * (i1 - i0 - 1) // 2
        i0 = i1
    out = np.empty((size, 4))
    count = 0
    i0 = 0
    while i0 < n:
        i1 = i0
        while i1 < n and pattern[i1] == pattern[i0]:
            i1 += 1
        for i in range(i0, i1):
            for j in range(i + 1, i1):
                ux, uy, uz = vec[i, 0], vec[i, 1], vec[i, 2]
                wx, wy, wz = vec[j, 0], vec[j, 1], vec[j, 2]
                uu = ux * ux + uy * uy + uz * uz
                ww = wx * wx + wy * wy + wz * wz
                cx, cy, cz = uy * wz - uz * wy, uz * wx - ux * wz, ux * wy - uy * wx
                if cx * cx + cy * cy + cz * cz < min_sin * min_sin * uu * ww:
                    continue
                for _ in range(100):  # Lagrange-Gauss reduction
                    if uu > ww:
                        ux, uy, uz, wx, wy, wz = wx, wy, wz, ux, uy, uz
                        uu, ww = ww, uu
                    m = np.round((ux * wx + uy * wy + uz * wz) / uu)
                    if m == 0:
                        break
                    wx, wy, wz = wx - m * ux, wy - m * uy, wz - m * uz
                    ww = wx * wx + wy * wy + wz * wz
                out[count, 0] = min(uu, ww)
                out[count, 1] = max(uu, ww)
                out[count, 2] = abs(ux * wx + uy * wy + uz * wz)
                out[count, 3] = pattern[i]
                count += 1
        i0 = i1
    return out[:count]


@numba.njit(cache=True, nogil=True)
def _inverse_diagonal(g: np.ndarray) -> tuple[float, float, float, float]:
    """Determinant and the diagonal of the inverse of a symmetric 3x3 matrix."""
    c00 = g[1, 1] * g[2, 2] - g[1, 2] * g[2, 1]
    c11 = g[0, 0] * g[2, 2] - g[0, 2] * g[2, 0]
    c22 = g[0, 0] * g[1, 1] - g[0, 1] * g[1, 0]
    det = (
        g[0, 0] * c00
        - g[0, 1] * (g[1, 0] * g[2, 2] - g[1, 2] * g[2, 0])
        + g[0, 2] * (g[1, 0] * g[2, 1] - g[1, 1] * g[2, 0])
    )
    if det <= 0.0:
        return det, 0.0, 0.0, 0.0
    return det, c00 / det, c11 / det, c22 / det


@numba.njit(cache=True, nogil=True)
def score_metrics(
    gstar: np.ndarray, excess: np.ndarray, bin_width: float, delta: float, max_length: float
) -> np.ndarray:
    """Line-excess score of candidate reciprocal metrics.

    For each metric ``G*`` (``(n, 3, 3)``, 1/A^2) the lengths ``sqrt(h^T G* h)`` of all
    lattice vectors up to ``max_length`` are stamped with a window of ``+-delta`` onto
    the length axis (bins of ``bin_width`` from 0); the score is the sum of ``excess``
    (observed minus background counts) over the covered bins, each bin counted once.
    Returns ``-inf`` for metrics that are not positive definite or too dense.
    """
    nb = excess.shape[0]
    out = np.empty(gstar.shape[0])
    stamp = np.full(nb, -1, np.int64)
    lim2 = max_length * max_length
    half = int(np.ceil(delta / bin_width))
    for c in range(gstar.shape[0]):
        g = gstar[c]
        det, r0, r1, r2 = _inverse_diagonal(g)
        if not (det > 0.0 and g[0, 0] > 0.0 and g[0, 0] * g[1, 1] - g[0, 1] ** 2 > 0.0):
            out[c] = -np.inf
            continue
        h0 = int(max_length * np.sqrt(r0)) + 1
        h1 = int(max_length * np.sqrt(r1)) + 1
        h2 = int(max_length * np.sqrt(r2)) + 1
        if (h0 + 1) * (2 * h1 + 1) * (2 * h2 + 1) > 200_000:
            out[c] = -np.inf
            continue
        total = 0.0
        for h in range(0, h0 + 1):
            for k in range(-h1, h1 + 1):
                for m in range(-h2, h2 + 1):
                    if h == 0 and (k < 0 or (k == 0 and m <= 0)):
                        continue
                    q2 = (
                        g[0, 0] * h * h
                        + g[1, 1] * k * k
                        + g[2, 2] * m * m
                        + 2.0 * (g[0, 1] * h * k + g[0, 2] * h * m + g[1, 2] * k * m)
                    )
                    if q2 > lim2:
                        continue
                    centre = int(np.sqrt(q2) / bin_width)
                    for b in range(max(centre - half, 0), min(centre + half + 1, nb)):
                        if stamp[b] != c:
                            stamp[b] = c
                            total += excess[b]
        out[c] = total
    return out


@numba.njit(cache=True, nogil=True)
def _dihedral_signal(
    metric: np.ndarray, window: np.ndarray, bin_width: float, max_length: float, coef: np.ndarray
) -> float:
    """Line signal collected by the vectors ``coef @ (g, u, w)`` of one metric."""
    lim2 = max_length * max_length
    s = 0.0
    for c in range(coef.shape[0]):
        a, b, d = coef[c, 0], coef[c, 1], coef[c, 2]
        q2 = (
            metric[0, 0] * a * a
            + metric[1, 1] * b * b
            + metric[2, 2] * d * d
            + 2.0 * (metric[0, 1] * a * b + metric[0, 2] * a * d + metric[1, 2] * b * d)
        )
        if 0.0 < q2 <= lim2:
            k = int(np.sqrt(q2) / bin_width)
            if k < window.shape[0]:
                s += window[k]
    return s


@numba.njit(cache=True, nogil=True)
def best_dihedrals(
    metrics: np.ndarray, window: np.ndarray, bin_width: float, max_length: float,
    coef: np.ndarray, n_psi: int,
) -> np.ndarray:  # fmt: skip
    """Complete metrics ``(g, u, w)`` whose ``u . w`` is unknown by a dihedral scan.

    ``metrics[n]`` holds ``|g|^2, |u|^2, |w|^2, g.u, g.w`` (the ``u . w`` entry is
    ignored); ``psi`` runs over ``(0, pi)`` in ``n_psi`` steps and the ``u . w`` that
    collects the most line signal (``window``) is written in place.  Returns the signal.
    """
    out = np.full(metrics.shape[0], -np.inf)
    for n in range(metrics.shape[0]):
        g = metrics[n]
        lg, lu, lw = np.sqrt(g[0, 0]), np.sqrt(g[1, 1]), np.sqrt(g[2, 2])
        ca, cb = g[0, 1] / (lg * lu), g[0, 2] / (lg * lw)
        if abs(ca) >= 1.0 or abs(cb) >= 1.0:
            continue
        sab = np.sqrt((1.0 - ca * ca) * (1.0 - cb * cb))
        best, best_r = -np.inf, 0.0
        for t in range(n_psi):
            psi = np.pi * (t + 0.5) / n_psi
            if np.sin(psi) < 0.1:
                continue
            r = lu * lw * (ca * cb + sab * np.cos(psi))
            g[1, 2] = r
            g[2, 1] = r
            s = _dihedral_signal(g, window, bin_width, max_length, coef)
            if s > best:
                best, best_r = s, r
        g[1, 2] = best_r
        g[2, 1] = best_r
        out[n] = best
    return out
