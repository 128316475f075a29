"""numba kernels of :mod:`crystalscope.index.ambiguity`: pair correlations and sweeps.

Observations are grouped per crystal (CSR: ``offsets``); ``keys[k, o]`` is the
reflection class (asymmetric-unit index) of observation ``o`` after reindexing its
crystal with operator ``k`` (``k = 0``: as indexed), ``values[o]`` its normalised
intensity.  A pair ``(i, j)`` with ``i < j`` stores ``cc[p, k]``, Pearson's correlation
of crystal ``i`` reindexed by ``K_k`` with crystal ``j`` as indexed, over the
reflections they share; seen from ``j`` the same pair gives operator ``inverse[k]``.
The sweep kernels read a copy per directed edge (``edge_cc``, CSR by crystal, float32)
so that they stream through memory.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "counting_order",
    "mean_correlations",
    "pair_correlations",
    "paired_differences",
    "sweep",
    "total_score",
]


@numba.njit(cache=True, nogil=True)
def pair_correlations(
    rows: np.ndarray,
    offsets: np.ndarray,
    keys: np.ndarray,
    values: np.ndarray,
    post_start: np.ndarray,
    post_crystal: np.ndarray,
    post_value: np.ndarray,
    min_common: int,
    keep: float,
    seed: int,
    first: np.ndarray,
    second: np.ndarray,
    cc: np.ndarray,
) -> tuple[int, int]:
    """Correlations of every crystal ``i`` in ``rows`` (ascending) with all ``j > i``.

    The observations of all crystals as indexed are also stored per reflection class
    (``post_*``: CSR over classes, crystals ascending).  For each operator ``K_k`` and
    observation of ``i`` the matching observations of the other crystals are found in
    that inverted index, so the cost is the number of shared reflections, not of
    observations; sums for Pearson's correlation accumulate per partner.  A pair is
    looked at with probability ``keep`` (decided by a hash of ``i``, ``j`` and ``seed``
    before anything is summed, so independent of the data and reproducible) and kept
    when some operator has ``min_common`` shared reflections.

    Kept pairs fill ``first`` (= i), ``second`` (= j) and ``cc (capacity, n_ops)`` (NaN
    for operators with fewer than ``min_common`` shared reflections or constant
    intensities).  Rows are processed while a whole row (at most ``n_crystals`` pairs)
    still fits; returns the number of rows done and of pairs written.
    """
    n_ops = keys.shape[0]
    n = offsets.shape[0] - 1
    sums = np.zeros((n, n_ops, 6))
    mark = np.full(n, -1, dtype=np.int32)  # 2 i + 1: pair (i, j) selected, 2 i: not
    touched = np.empty(n, dtype=np.int64)
    m = 0
    for r in range(rows.shape[0]):
        if first.shape[0] - m < n:
            return r, m
        i = rows[r]
        n_touched = 0
        for k in range(n_ops):
            for o in range(offsets[i], offsets[i + 1]):
                c = keys[k, o]
                x = values[o]
                e0 = _first_after(post_crystal, post_start[c], post_start[c + 1], i)
                for e in range(e0, post_start[c + 1]):
                    j = post_crystal[e]
                    if mark[j] < 2 * i:
                        if keep < 1.0 and _uniform(i, j, seed) >= keep:
                            mark[j] = 2 * i
                            continue
                        mark[j] = 2 * i + 1
                        touched[n_touched] = j
                        n_touched += 1
                        sums[j, :, :] = 0.0
                    elif mark[j] == 2 * i:
                        continue
                    y = post_value[e]
                    s = sums[j, k]
                    s[0] += 1.0
                    s[1] += x
                    s[2] += y
                    s[3] += x * x
                    s[4] += y * y
                    s[5] += x * y
        for t in range(n_touched):
            j = touched[t]
            enough = False
            for k in range(n_ops):
                enough = enough or sums[j, k, 0] >= min_common
            if not enough:
                continue
            first[m], second[m] = i, j
            for k in range(n_ops):
                cc[m, k] = _pearson(sums[j, k], min_common)
            m += 1
    return rows.shape[0], m


@numba.njit(inline="always")
def _first_after(sorted_values: np.ndarray, lo: int, hi: int, value: int) -> int:
    """First index in ``lo:hi`` of ascending ``sorted_values`` with an entry > ``value``."""
    while lo < hi:
        mid = (lo + hi) // 2
        if sorted_values[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(inline="always")
def _uniform(i: int, j: int, seed: int) -> float:
    """A reproducible uniform number in [0, 1) for the pair (i, j) (splitmix64)."""
    z = np.uint64(i) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(j) + np.uint64(seed)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) / 9007199254740992.0


@numba.njit(inline="always")
def _pearson(s: np.ndarray, min_common: int) -> float:
    n = s[0]
    if n < min_common:
        return np.nan
    vx = n * s[3] - s[1] * s[1]
    vy = n * s[4] - s[2] * s[2]
    if vx <= 0.0 or vy <= 0.0:
        return np.nan
    return (n * s[5] - s[1] * s[2]) / math.sqrt(vx * vy)


@numba.njit(cache=True, nogil=True)
def _scores(
    i: int,
    start: np.ndarray,
    other: np.ndarray,
    edge_cc: np.ndarray,
    relative: np.ndarray,
    assign: np.ndarray,
    out: np.ndarray,
) -> None:
    """``out[p]``: summed correlation of crystal ``i`` under ``K_p`` with its partners."""
    out[:] = 0.0
    n_ops = out.shape[0]
    for e in range(start[i], start[i + 1]):
        row = relative[assign[other[e]]]
        for p in range(n_ops):
            value = edge_cc[e, row[p]]
            if value == value:
                out[p] += value


@numba.njit(cache=True, nogil=True)
def sweep(
    order: np.ndarray,
    start: np.ndarray,
    other: np.ndarray,
    edge_cc: np.ndarray,
    relative: np.ndarray,
    assign: np.ndarray,
) -> int:
    """One Gauss-Seidel pass: each crystal in ``order`` takes its best operator.

    The assignment of crystal ``i`` becomes ``argmax_p sum_j cc(i^{K_p}, j^{K_{a_j}})``
    over its partners ``j`` in their current assignments ``a_j`` (updated in place);
    ``edge_cc[e, k]`` is ``cc(i^{K_k}, j)`` of edge ``e`` from ``i`` to ``j``, and
    ``relative[r, p]`` the coset of ``K_r^-1 K_p``.  Ties keep the current operator.
    Returns the number of crystals that changed.
    """
    n_ops = relative.shape[0]
    scores = np.zeros(n_ops)
    changed = 0
    for i in order:
        _scores(i, start, other, edge_cc, relative, assign, scores)
        best = assign[i]
        for p in range(n_ops):
            if scores[p] > scores[best] + 1e-9:
                best = p
        if best != assign[i]:
            assign[i] = best
            changed += 1
    return changed


@numba.njit(cache=True, nogil=True)
def total_score(
    start: np.ndarray,
    other: np.ndarray,
    edge_cc: np.ndarray,
    relative: np.ndarray,
    assign: np.ndarray,
) -> float:
    """Sum over all crystals of their summed correlation in the current assignment."""
    scores = np.zeros(relative.shape[0])
    total = 0.0
    for i in range(start.shape[0] - 1):
        _scores(i, start, other, edge_cc, relative, assign, scores)
        total += scores[assign[i]]
    return total


@numba.njit(cache=True, nogil=True)
def mean_correlations(
    start: np.ndarray,
    other: np.ndarray,
    edge_cc: np.ndarray,
    relative: np.ndarray,
    assign: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count ``(n, n_ops)`` of the valid ``cc(i^{K_p}, j^{K_{a_j}})`` per crystal."""
    n, n_ops = start.shape[0] - 1, relative.shape[0]
    total = np.zeros((n, n_ops))
    count = np.zeros((n, n_ops), dtype=np.int64)
    for i in range(n):
        for e in range(start[i], start[i + 1]):
            row = relative[assign[other[e]]]
            for p in range(n_ops):
                value = edge_cc[e, row[p]]
                if value == value:
                    total[i, p] += value
                    count[i, p] += 1
    return total, count


@numba.njit(cache=True, nogil=True)
def paired_differences(
    start: np.ndarray,
    other: np.ndarray,
    edge_cc: np.ndarray,
    relative: np.ndarray,
    assign: np.ndarray,
    runner_up: np.ndarray,
) -> np.ndarray:
    """Sum, sum of squares and count ``(n, 3)`` of ``cc`` under ``a_i`` minus ``cc``
    under ``runner_up[i]`` over the partners valid for both (``runner_up < 0``: none)."""
    n = start.shape[0] - 1
    out = np.zeros((n, 3))
    for i in range(n):
        b = runner_up[i]
        if b < 0:
            continue
        a = assign[i]
        for e in range(start[i], start[i + 1]):
            row = relative[assign[other[e]]]
            d = float(edge_cc[e, row[a]]) - float(edge_cc[e, row[b]])
            if d == d:
                out[i, 0] += d
                out[i, 1] += d * d
                out[i, 2] += 1.0
    return out


@numba.njit(cache=True, nogil=True)
def counting_order(src: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Stable order of ``src`` (values in ``0..n-1``) by counting sort, and CSR starts."""
    start = np.zeros(n + 1, dtype=np.int64)
    for s in src:
        start[s + 1] += 1
    for i in range(n):
        start[i + 1] += start[i]
    fill = start[:-1].copy()
    order = np.empty(src.shape[0], dtype=np.int64)
    for e in range(src.shape[0]):
        order[fill[src[e]]] = e
        fill[src[e]] += 1
    return order, start
