"""numba kernels of :mod:`crystalscope.image.centre` (per-pixel and per-pair loops)."""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "block_means",
    "gather_disc",
    "levenberg_marquardt",
    "lorentzian_normal",
    "match_one_to_one",
    "pair_midpoints",
]


@numba.njit(cache=True, nogil=True)
def block_means(
    frame: np.ndarray, mask: np.ndarray, x: np.ndarray, use_maps: bool, b: int
) -> np.ndarray:
    """Sum of the usable pixels of every ``b x b`` block divided by ``b^2``."""
    ny, nx = frame.shape
    out = np.zeros(((ny + b - 1) // b, (nx + b - 1) // b), dtype=np.float64)
    rows = np.zeros(nx, dtype=np.float64)  # column sums of the current block row
    col_block = np.arange(nx) // b
    for i in range(ny):
        fr, mr, xr = frame[i], mask[i], x[i if use_maps else 0]
        for j in range(nx):  # branch-free so that LLVM vectorises it
            v = np.float64(fr[j])
            bad = mr[j] or not (v - v == 0.0)  # masked or non-finite
            if use_maps:
                bad = bad or not (xr[j] - xr[j] == 0.0)
            rows[j] += 0.0 if bad else v
        if (i + 1) % b == 0 or i == ny - 1:
            out_row = out[i // b]
            for j in range(nx):
                out_row[col_block[j]] += rows[j]
                rows[j] = 0.0
    return out / (b * b)


@numba.njit(cache=True, nogil=True)
def gather_disc(
    frame: np.ndarray,
    mask: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    use_maps: bool,
    gx: float,
    gy: float,
    radius: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values and positions of the usable pixels within ``radius`` of ``(gx, gy)``."""
    ny, nx = frame.shape
    r2 = radius * radius
    if use_maps:
        i0, i1, j0, j1 = 0, ny, 0, nx
    else:
        i0 = max(0, math.floor(gy - radius))
        i1 = min(ny, math.ceil(gy + radius) + 1)
        j0 = max(0, math.floor(gx - radius))
        j1 = min(nx, math.ceil(gx + radius) + 1)
    n = 0
    for _pass in range(2):
        if _pass == 1:
            vals = np.empty(n, np.float64)
            xs = np.empty(n, np.float64)
            ys = np.empty(n, np.float64)
            n = 0
        for i in range(i0, i1):
            for j in range(j0, j1):
                v = frame[i, j]
                if mask[i, j] or not np.isfinite(v):
                    continue
                px = x[i, j] if use_maps else float(j)
                py = y[i, j] if use_maps else float(i)
                d2 = (px - gx) ** 2 + (py - gy) ** 2
                if not d2 <= r2:  # also rejects NaN positions (gaps)
                    continue
                if _pass == 1:
                    vals[n] = v
                    xs[n] = px
                    ys[n] = py
                n += 1
    return vals, xs, ys


@numba.njit(cache=True, nogil=True)
def pair_midpoints(
    px: np.ndarray, py: np.ndarray, gx: float, gy: float, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``i < j`` whose mid-point lies within ``radius`` of ``(gx, gy)``."""
    n = px.size
    r2 = radius * radius
    count = 0
    for _pass in range(2):
        if _pass == 1:
            ii = np.empty(count, np.int64)
            jj = np.empty(count, np.int64)
            count = 0
        for i in range(n):
            for j in range(i + 1, n):
                mx = 0.5 * (px[i] + px[j]) - gx
                my = 0.5 * (py[i] + py[j]) - gy
                if mx * mx + my * my <= r2:
                    if _pass == 1:
                        ii[count] = i
                        jj[count] = j
                    count += 1
    return ii, jj


@numba.njit(cache=True, nogil=True)
def match_one_to_one(ii: np.ndarray, jj: np.ndarray, order: np.ndarray, n: int) -> np.ndarray:
    """Greedy matching: walk the pairs in ``order`` and keep those with both peaks free."""
    used = np.zeros(n, np.bool_)
    keep = np.zeros(ii.size, np.bool_)
    for k in order:
        if not used[ii[k]] and not used[jj[k]]:
            used[ii[k]] = True
            used[jj[k]] = True
            keep[k] = True
    return keep


@numba.njit(cache=True, nogil=True)
def lorentzian_normal(
    q: np.ndarray, xs: np.ndarray, ys: np.ndarray, vals: np.ndarray, sigma: np.ndarray
) -> tuple[float, np.ndarray, np.ndarray]:
    """Cost ``0.5 sum r^2``, ``J^T J`` and ``J^T r`` of the weighted residuals
    ``r = (m - vals) / sigma`` of ``m = B + K (g^2 + d^2)^-p`` in the solver parameters
    ``q = (cx, cy, ln K, ln g, p, B)`` (the model of ``centre._model``)."""
    cx, cy, ln_k, ln_g, p, b = q[0], q[1], q[2], q[3], q[4], q[5]
    g2 = math.exp(min(2.0 * ln_g, 700.0))
    jtj = np.zeros((6, 6))
    jtr = np.zeros(6)
    jac = np.empty(6)
    cost = 0.0
    for i in range(vals.size):
        dx, dy = xs[i] - cx, ys[i] - cy
        s = g2 + dx * dx + dy * dy
        ln_s = math.log(s)
        term = math.exp(min(ln_k - p * ln_s, 700.0))
        w = 1.0 / sigma[i]
        r = (b + term - vals[i]) * w
        jac[0] = 2.0 * p * term * dx / s * w
        jac[1] = 2.0 * p * term * dy / s * w
        jac[2] = term * w
        jac[3] = -2.0 * p * g2 * term / s * w
        jac[4] = -term * ln_s * w
        jac[5] = w
        cost += 0.5 * r * r
        for a in range(6):
            jtr[a] += jac[a] * r
            for c in range(a + 1):
                jtj[a, c] += jac[a] * jac[c]
    for a in range(6):
        for c in range(a):
            jtj[c, a] = jtj[a, c]
    return cost, jtj, jtr


@numba.njit(cache=True, nogil=True)
def levenberg_marquardt(
    q0: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    vals: np.ndarray,
    sigma: np.ndarray,
    max_iter: int,
) -> tuple[np.ndarray, float, np.ndarray, int]:
    """Levenberg-Marquardt fit of the Lorentzian (Marquardt's diagonal scaling).

    Returns ``(q, cost, J^T J, status)``; status 1: converged (relative cost change
    below 1e-10 or relative step below 1e-9; scipy's MINPACK
    defaults are 1e-8), 0: iteration limit, -1: non-finite.
    """
    q = q0.copy()
    cost, jtj, jtr = lorentzian_normal(q, xs, ys, vals, sigma)
    if not math.isfinite(cost):
        return q, cost, jtj, -1
    lam = 1e-3
    for _ in range(max_iter):
        a = jtj.copy()
        for k in range(6):
            a[k, k] += lam * max(jtj[k, k], 1e-300)
        step = np.linalg.solve(a, -jtr)
        trial = q + step
        new_cost, new_jtj, new_jtr = lorentzian_normal(trial, xs, ys, vals, sigma)
        if math.isfinite(new_cost) and new_cost <= cost:
            small = np.max(np.abs(step) / (np.abs(q) + 1e-8)) < 1e-9
            flat = cost - new_cost <= 1e-10 * cost
            q, cost, jtj, jtr = trial, new_cost, new_jtj, new_jtr
            lam = max(lam * 0.3, 1e-12)
            if small or flat:
                return q, cost, jtj, 1
        else:
            lam *= 10.0
            if lam > 1e12:
                return q, cost, jtj, 1
    return q, cost, jtj, 0
