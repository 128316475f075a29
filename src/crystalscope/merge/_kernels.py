"""Numba kernels of scaling, post-refinement and delta-CC1/2 (private).

Observations are sorted by crystal and, within a crystal, by unique reflection, so that
crystal ``c`` owns rows ``starts[c]:starts[c + 1]``.  Per-crystal parameters are held in
an ``(n_crystals, 5)`` array ``x`` with columns :data:`LN_G`, :data:`B`, :data:`TILT_X`,
:data:`TILT_Y` (radians) and :data:`LN_R` (see ``docs/algorithms/merging.md``):

.. math::

    m_j = G\\, e^{-B h_j}\\, p\\bigl(s_j(\\alpha, \\beta), R\\bigr)\\, I_{\\mathrm{ref}, j},
    \\qquad h_j = 1 / (2 d_j^2),

    s_j = k - \\lvert \\mathbf{R}_y(\\beta) \\mathbf{R}_x(\\alpha) \\mathbf{q}_j
          + \\mathbf{k}_0 \\rvert .

Inside the per-crystal fit (``_fit_one`` and the functions it calls) column ``LN_G``
holds ``G`` itself, not ``ln G``: the model is linear in ``G``, so Gauss-Newton takes
that parameter in one step.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "LN_G",
    "LN_R",
    "MODEL_CODES",
    "N_PARAMS",
    "TILT_X",
    "TILT_Y",
    "B",
    "crystal_cc",
    "delta_cc_half",
    "evaluate",
    "fit_crystals",
]

LN_G, B, TILT_X, TILT_Y, LN_R = 0, 1, 2, 3, 4
N_PARAMS = 5
MODEL_CODES = {"unity": 0, "xsphere": 1, "gaussian": 2}

_HUBER = 2.0  # Huber threshold of the normalised residuals
_MAX_ITER = 40  # Levenberg-Marquardt iterations per crystal and weighting pass
_PASSES = 2  # weighting passes in the first cycle (the weights depend on G and B)
_TOLERANCE = 1e-6  # relative decrease of the cost below which the fit has converged
_GRID = 2  # tilt grid: 2 * _GRID + 1 points per angle, twice (coarse, fine)


@numba.njit(cache=True, nogil=True)
def _sphere_below(x: float, r: float) -> tuple[float, float, float]:
    """``F(x)`` (fraction of a sphere of radius ``r`` below ``x``), ``dF/dx``, ``dF/dr``."""
    u = (x + r) / (2.0 * r)
    if u <= 0.0:
        return 0.0, 0.0, 0.0
    if u >= 1.0:
        return 1.0, 0.0, 0.0
    slope = 6.0 * u * (1.0 - u)
    return u * u * (3.0 - 2.0 * u), slope / (2.0 * r), -slope * x / (2.0 * r * r)


@numba.njit(cache=True, nogil=True)
def partiality_derivatives(
    s: float, r: float, model: int, bandwidth: float
) -> tuple[float, float, float]:
    """``p(s, R)``, ``dp/ds`` and ``dp/d ln R`` of a model (``MODEL_CODES``)."""
    if model == 0:
        return 1.0, 0.0, 0.0
    t = s / r
    if model == 2:
        p = math.exp(-2.5 * t * t)
        return p, -5.0 * t / r * p, 5.0 * t * t * p
    if bandwidth == 0.0:
        if abs(t) >= 1.0:
            return 0.0, 0.0, 0.0
        return 1.0 - t * t, -2.0 * t / r, 2.0 * t * t
    half = 0.5 * bandwidth
    fa, dfa, ra = _sphere_below(s + half, r)
    fb, dfb, rb = _sphere_below(s - half, r)
    na, _, dna = _sphere_below(half, r)
    nb, _, dnb = _sphere_below(-half, r)
    top = fa - fb
    norm = na - nb
    p = top / norm
    if p > 1.0:
        p = 1.0
    dp_dr = ((ra - rb) * norm - top * (dna - dnb)) / (norm * norm)
    return max(p, 0.0), (dfa - dfb) / norm, dp_dr * r


@numba.njit(cache=True, nogil=True)
def _tilted(
    qx: float, qy: float, qz: float, q2: float, k: float, rot: np.ndarray
) -> tuple[float, float, float]:
    """``s`` of ``R_y(beta) R_x(alpha) q`` and its derivatives by ``alpha`` and ``beta``.

    ``rot = (cos a, sin a, cos b, sin b)``.  With ``q'_z = -sb qx + cb (sa qy + ca qz)``
    and ``A = |q|^2 + 2 k q'_z``, ``s = -A / (k + sqrt(k^2 + A))`` (cancellation-free
    ``k - |q' + k0|``) and ``ds/dtheta = -k (dq'_z/dtheta) / |q' + k0|``.
    """
    ca, sa, cb, sb = rot[0], rot[1], rot[2], rot[3]
    inner = sa * qy + ca * qz
    qz_t = -sb * qx + cb * inner
    a = q2 + 2.0 * k * qz_t
    root = math.sqrt(k * k + a)
    s = -a / (k + root)
    ds_da = -k * cb * (ca * qy - sa * qz) / root
    ds_db = -k * (-cb * qx - sb * inner) / root
    return s, ds_da, ds_db


@numba.njit(cache=True, nogil=True)
def _rotation(x: np.ndarray) -> np.ndarray:
    out = np.empty(4)
    out[0] = math.cos(x[TILT_X])
    out[1] = math.sin(x[TILT_X])
    out[2] = math.cos(x[TILT_Y])
    out[3] = math.sin(x[TILT_Y])
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def evaluate(
    starts: np.ndarray,
    x: np.ndarray,
    q: np.ndarray,
    q2: np.ndarray,
    h2: np.ndarray,
    k: float,
    model: int,
    bandwidth: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per observation: excitation error ``s``, partiality ``p`` and ``g = G exp(-B h)``."""
    n = q2.shape[0]
    s_out = np.empty(n)
    p_out = np.empty(n)
    g_out = np.empty(n)
    for c in numba.prange(starts.shape[0] - 1):
        rot = _rotation(x[c])
        g0 = math.exp(x[c, LN_G])
        r = math.exp(x[c, LN_R])
        for j in range(starts[c], starts[c + 1]):
            s, _, _ = _tilted(q[j, 0], q[j, 1], q[j, 2], q2[j], k, rot)
            s_out[j] = s
            p_out[j] = partiality_derivatives(s, r, model, bandwidth)[0]
            g_out[j] = g0 * math.exp(-x[c, B] * h2[j])
    return s_out, p_out, g_out


@numba.njit(cache=True, nogil=True)
def _model_row(
    j: int,
    x: np.ndarray,
    rot: np.ndarray,
    q: np.ndarray,
    q2: np.ndarray,
    h2: np.ndarray,
    ref: np.ndarray,
    k: float,
    model: int,
    bandwidth: float,
    jac: np.ndarray,
) -> float:
    """Model intensity ``m_j`` and its gradient (into ``jac``) by the 5 parameters."""
    s, ds_da, ds_db = _tilted(q[j, 0], q[j, 1], q[j, 2], q2[j], k, rot)
    p, dp_ds, dp_dlnr = partiality_derivatives(s, math.exp(x[LN_R]), model, bandwidth)
    full = x[LN_G] * math.exp(-x[B] * h2[j]) * ref[j]
    m = full * p
    jac[LN_G] = m / x[LN_G]
    jac[B] = -h2[j] * m
    jac[TILT_X] = full * dp_ds * ds_da
    jac[TILT_Y] = full * dp_ds * ds_db
    jac[LN_R] = full * dp_dlnr
    return m


@numba.njit(cache=True, nogil=True)
def _huber(r: float) -> tuple[float, float]:
    """Huber loss ``rho(r)`` and IRLS weight ``psi(r) / r``."""
    a = abs(r)
    if a <= _HUBER:
        return 0.5 * r * r, 1.0
    return _HUBER * a - 0.5 * _HUBER * _HUBER, _HUBER / a


@numba.njit(cache=True, nogil=True)
def _cost(
    j0: int,
    j1: int,
    x: np.ndarray,
    data: tuple,
    w0: np.ndarray,
    prior: np.ndarray,
) -> float:
    """Huber cost of one crystal's observations plus the Gaussian priors."""
    q, q2, h2, ref, obs, use, k, model, bandwidth = data
    rot = _rotation(x)
    jac = np.empty(N_PARAMS)
    total = 0.0
    for j in range(j0, j1):
        if use[j]:
            m = _model_row(j, x, rot, q, q2, h2, ref, k, model, bandwidth, jac)
            total += _huber((obs[j] - m) * math.sqrt(w0[j - j0]))[0]
    for i in range(N_PARAMS):
        if prior[1, i] > 0.0:
            d = (x[i] - prior[0, i]) / prior[1, i]
            total += 0.5 * d * d
    return total


@numba.njit(cache=True, nogil=True)
def _normal_equations(
    j0: int,
    j1: int,
    x: np.ndarray,
    data: tuple,
    w0: np.ndarray,
    prior: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """IRLS normal matrix ``J^T W J`` and gradient ``J^T W r`` (``r = I - m``)."""
    q, q2, h2, ref, obs, use, k, model, bandwidth = data
    rot = _rotation(x)
    jac = np.empty(N_PARAMS)
    a = np.zeros((N_PARAMS, N_PARAMS))
    g = np.zeros(N_PARAMS)
    for j in range(j0, j1):
        if not use[j]:
            continue
        m = _model_row(j, x, rot, q, q2, h2, ref, k, model, bandwidth, jac)
        sw = math.sqrt(w0[j - j0])
        res = (obs[j] - m) * sw
        wt = _huber(res)[1] * w0[j - j0]
        for u in range(N_PARAMS):
            g[u] += wt * jac[u] * (obs[j] - m)
            for v in range(u + 1):
                a[u, v] += wt * jac[u] * jac[v]
    for u in range(N_PARAMS):
        for v in range(u):
            a[v, u] = a[u, v]
        if prior[1, u] > 0.0:
            a[u, u] += 1.0 / prior[1, u] ** 2
            g[u] -= (x[u] - prior[0, u]) / prior[1, u] ** 2
    return a, g


@numba.njit(cache=True, nogil=True)
def _lm(
    j0: int,
    j1: int,
    x: np.ndarray,
    data: tuple,
    w0: np.ndarray,
    prior: np.ndarray,
    free: np.ndarray,
    bounds: np.ndarray,
) -> tuple[float, int]:
    """Bounded Levenberg-Marquardt on one crystal (``x`` updated in place).

    Returns the final cost and the number of iterations."""
    cost = _cost(j0, j1, x, data, w0, prior)
    lam = 1e-3
    trial = np.empty(N_PARAMS)
    iterations = 0
    for _ in range(_MAX_ITER):
        iterations += 1
        a, g = _normal_equations(j0, j1, x, data, w0, prior)
        for u in range(N_PARAMS):
            if not free[u] or a[u, u] <= 0.0:
                a[u, :] = 0.0
                a[:, u] = 0.0
                a[u, u] = 1.0
                g[u] = 0.0
        improved = False
        for _ in range(8):
            damped = a.copy()
            for u in range(N_PARAMS):
                damped[u, u] *= 1.0 + lam
            step = np.linalg.solve(damped, g)
            for u in range(N_PARAMS):
                trial[u] = min(max(x[u] + step[u], bounds[0, u]), bounds[1, u])
            new = _cost(j0, j1, trial, data, w0, prior)
            if new <= cost:
                improved = cost - new > _TOLERANCE * (1.0 + cost)
                x[:] = trial
                cost = new
                lam = max(lam / 4.0, 1e-9)
                break
            lam *= 8.0
        if not improved:
            break
    return cost, iterations


@numba.njit(cache=True, nogil=True)
def _base_weights(
    j0: int, j1: int, x: np.ndarray, data: tuple, sigma: np.ndarray, error_fraction: float
) -> np.ndarray:
    """``1 / (sigma^2 + (e G exp(-B h) I_ref)^2)`` at the current parameters."""
    h2, ref = data[2], data[3]
    w0 = np.empty(j1 - j0)
    for j in range(j0, j1):
        full = error_fraction * x[LN_G] * math.exp(-x[B] * h2[j]) * max(ref[j], 0.0)
        w0[j - j0] = 1.0 / (sigma[j] * sigma[j] + full * full + 1e-300)
    return w0


@numba.njit(cache=True, nogil=True)
def _scale_cost(
    j0: int, j1: int, ca: float, sa: float, cb: float, sb: float, r: float,
    data: tuple, full: np.ndarray, w0: np.ndarray,
) -> tuple[float, float]:  # fmt: skip
    """Best ``G`` (weighted least squares) at fixed tilts and its cost, ``(cost, G)``.

    ``full[j - j0] = exp(-B h_j) I_ref_j`` (0 for unusable observations).
    """
    q, q2, k, model, bandwidth, obs = data[0], data[1], data[6], data[7], data[8], data[4]
    sxy = 0.0
    syy = 0.0
    sxx = 0.0
    for j in range(j0, j1):
        f = full[j - j0]
        if f == 0.0:
            continue
        inner = sa * q[j, 1] + ca * q[j, 2]
        a = q2[j] + 2.0 * k * (-sb * q[j, 0] + cb * inner)
        s = -a / (k + math.sqrt(k * k + a))
        c = partiality_derivatives(s, r, model, bandwidth)[0] * f
        w = w0[j - j0]
        sxy += w * obs[j] * c
        syy += w * c * c
        sxx += w * obs[j] * obs[j]
    if sxy <= 0.0 or syy <= 0.0:
        return math.inf, 1.0
    return sxx - sxy * sxy / syy, sxy / syy


@numba.njit(cache=True, nogil=True)
def _grid_tilts(
    j0: int, j1: int, x: np.ndarray, data: tuple, w0: np.ndarray, bounds: np.ndarray
) -> None:
    """Start values of the tilts and ``ln G``: coarse-to-fine grid search.

    A ``(2 _GRID + 1)^2`` grid over the tilt bounds, then the same grid with a quarter
    of the step around the best point; ``G`` is solved for at each point.
    """
    h2, ref, use = data[2], data[3], data[5]
    full = np.zeros(j1 - j0)
    for j in range(j0, j1):
        if use[j]:
            full[j - j0] = math.exp(-x[B] * h2[j]) * ref[j]
    r = math.exp(x[LN_R])
    best, best_a, best_b, best_g = math.inf, x[TILT_X], x[TILT_Y], x[LN_G]
    step_a = bounds[1, TILT_X] / _GRID
    step_b = bounds[1, TILT_Y] / _GRID
    centre_a = 0.0
    centre_b = 0.0
    for _ in range(2):
        for ia in range(-_GRID, _GRID + 1):
            ta = min(max(centre_a + step_a * ia, bounds[0, TILT_X]), bounds[1, TILT_X])
            ca, sa = math.cos(ta), math.sin(ta)
            for ib in range(-_GRID, _GRID + 1):
                tb = min(max(centre_b + step_b * ib, bounds[0, TILT_Y]), bounds[1, TILT_Y])
                cost, g = _scale_cost(j0, j1, ca, sa, math.cos(tb), math.sin(tb), r, data,
                                      full, w0)  # fmt: skip
                if cost < best:
                    best, best_a, best_b, best_g = cost, ta, tb, g
        centre_a, centre_b = best_a, best_b
        step_a *= 0.25
        step_b *= 0.25
    if best < math.inf:
        x[TILT_X], x[TILT_Y], x[LN_G] = best_a, best_b, best_g


@numba.njit(cache=True, nogil=True)
def _fit_one(
    j0: int, j1: int, x: np.ndarray, data: tuple, sigma: np.ndarray, free: np.ndarray,
    bounds: np.ndarray, prior: np.ndarray, grid: bool, error_fraction: float,
) -> tuple[float, int]:  # fmt: skip
    """Fit one crystal (``x`` in place): start values, grid, weighting passes of LM."""
    xc = x.copy()  # with G itself in place of ln G: the model is linear in G
    xc[LN_G] = math.exp(xc[LN_G])
    lims = bounds.copy()
    lims[0, LN_G] = math.exp(lims[0, LN_G])
    lims[1, LN_G] = math.exp(lims[1, LN_G])
    w0 = _base_weights(j0, j1, xc, data, sigma, error_fraction)
    if free[LN_G]:
        full = np.zeros(j1 - j0)
        for j in range(j0, j1):
            if data[5][j]:
                full[j - j0] = math.exp(-xc[B] * data[2][j]) * data[3][j]
        rot = _rotation(xc)
        cost0, g0 = _scale_cost(
            j0, j1, rot[0], rot[1], rot[2], rot[3], math.exp(xc[LN_R]), data, full, w0
        )
        if cost0 < math.inf:
            xc[LN_G] = g0
    if grid:
        _grid_tilts(j0, j1, xc, data, w0, lims)
    for u in range(N_PARAMS):
        xc[u] = min(max(xc[u], lims[0, u]), lims[1, u])
    value = math.inf
    iterations = 0
    for _ in range(_PASSES if grid else 1):
        w0 = _base_weights(j0, j1, xc, data, sigma, error_fraction)
        value, its = _lm(j0, j1, xc, data, w0, prior, free, lims)
        iterations += its
    xc[LN_G] = math.log(xc[LN_G])
    x[:] = xc
    return value, iterations


@numba.njit(cache=True, nogil=True, parallel=True)
def fit_crystals(
    starts: np.ndarray,
    x: np.ndarray,
    active: np.ndarray,
    data: tuple,
    sigma: np.ndarray,
    free: np.ndarray,
    bounds: np.ndarray,
    prior: np.ndarray,
    grid: bool,
    error_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit every active crystal's parameters (rows of ``x``, in place).

    Returns the final cost and the number of Levenberg-Marquardt iterations per crystal.

    ``bounds[c]`` is ``(2, 5)`` (lower, upper), ``prior[c]`` ``(2, 5)`` (mean, width; width
    0: no prior).  ``data = (q, q2, h2, ref, obs, use, k, model, bandwidth)`` where
    ``use`` marks observations with a usable reference.
    """
    n = starts.shape[0] - 1
    cost = np.full(n, np.nan)
    iterations = np.zeros(n, dtype=np.int64)
    for c in numba.prange(n):
        if not active[c]:
            continue
        cost[c], iterations[c] = _fit_one(
            starts[c], starts[c + 1], x[c], data, sigma, free, bounds[c], prior[c], grid,
            error_fraction,
        )  # fmt: skip
    return cost, iterations


@numba.njit(cache=True, nogil=True, parallel=True)
def crystal_cc(starts: np.ndarray, a: np.ndarray, b: np.ndarray, use: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``a`` and ``b`` over each crystal's rows with ``use``."""
    n = starts.shape[0] - 1
    out = np.full(n, np.nan)
    for c in numba.prange(n):
        sa = sb = saa = sbb = sab = 0.0
        m = 0
        for j in range(starts[c], starts[c + 1]):
            if use[j]:
                m += 1
                sa += a[j]
                sb += b[j]
                saa += a[j] * a[j]
                sbb += b[j] * b[j]
                sab += a[j] * b[j]
        if m >= 3:
            va = saa - sa * sa / m
            vb = sbb - sb * sb / m
            if va > 0.0 and vb > 0.0:
                out[c] = (sab - sa * sb / m) / math.sqrt(va * vb)
    return out


@numba.njit(cache=True, nogil=True)
def _reflection_terms(
    s0: float, s1: float, s2: float, s3: float, n: float
) -> tuple[float, float, float]:
    """``(y, y^2, v)`` of a reflection (``v``: variance of a half-set mean), or zeros."""
    if n < 2.0 or s0 <= 0.0:
        return 0.0, 0.0, 0.0
    y = s1 / s0
    spread = max(s2 / s0 - y * y, 0.0) * n / (n - 1.0)
    return y, y * y, 2.0 * spread * s3 / (s0 * s0)


@numba.njit(cache=True, nogil=True)
def _sigma_tau(k: float, t1: float, t2: float, tv: float) -> float:
    """CC1/2 from the variance of the means and the mean error variance (sigma-tau)."""
    if k < 2.0:
        return math.nan
    var_y = t2 / k - (t1 / k) ** 2
    var_e = tv / k
    if var_y + 0.5 * var_e <= 0.0:
        return math.nan
    return (var_y - 0.5 * var_e) / (var_y + 0.5 * var_e)


@numba.njit(cache=True, nogil=True, parallel=True)
def delta_cc_half(
    sums: np.ndarray,
    run_hkl: np.ndarray,
    run_sums: np.ndarray,
    crystal_runs: np.ndarray,
) -> tuple[float, np.ndarray]:
    """CC1/2 (sigma-tau) of all data and, per crystal, CC1/2(all) - CC1/2(without it).

    ``sums`` is ``(n_hkl, 5)``: ``sum w, sum w x, sum w x^2, sum w^2, n`` of the merged
    observations; ``run_sums`` the same per (crystal, reflection) run, and crystal ``c``
    owns runs ``crystal_runs[c]:crystal_runs[c + 1]``.
    """
    nh = sums.shape[0]
    kk = t1 = t2 = tv = 0.0
    for h in range(nh):
        y, yy, v = _reflection_terms(sums[h, 0], sums[h, 1], sums[h, 2], sums[h, 3], sums[h, 4])
        if sums[h, 4] >= 2.0 and sums[h, 0] > 0.0:
            kk += 1.0
            t1 += y
            t2 += yy
            tv += v
    cc_all = _sigma_tau(kk, t1, t2, tv)
    n = crystal_runs.shape[0] - 1
    delta = np.full(n, np.nan)
    for c in numba.prange(n):
        k2, a1, a2, av = kk, t1, t2, tv
        for r in range(crystal_runs[c], crystal_runs[c + 1]):
            h = run_hkl[r]
            old = sums[h]
            if old[4] >= 2.0 and old[0] > 0.0:
                y, yy, v = _reflection_terms(old[0], old[1], old[2], old[3], old[4])
                k2 -= 1.0
                a1 -= y
                a2 -= yy
                av -= v
            rs = run_sums[r]
            n0, n1, n2, n3 = old[0] - rs[0], old[1] - rs[1], old[2] - rs[2], old[3] - rs[3]
            n4 = old[4] - rs[4]
            if n4 >= 2.0 and n0 > 1e-12 * old[0]:
                y, yy, v = _reflection_terms(n0, n1, n2, n3, n4)
                k2 += 1.0
                a1 += y
                a2 += yy
                av += v
        delta[c] = cc_all - _sigma_tau(k2, a1, a2, av)
    return cc_all, delta
