"""numba kernels of still indexing: seed rotations from vector pairs, peak assignment.

All vectors are in 1/A.  Lattice vectors are in the crystal Cartesian frame
(``v = B h``), observed vectors in the lab frame, rotations map the former onto the
latter (``q = R B h``).  See :mod:`crystalscope.index.stills` for the method.
"""

from __future__ import annotations

import numba
import numpy as np

from crystalscope.index._stills_grid import best_in_grid, shell_grids

__all__ = ["assign_peaks", "quick_refine", "seed_rotations"]


@numba.njit(cache=True, nogil=True)
def _frame_into(u: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
    """Orthonormal frame (columns of ``out``) from two unit vectors, symmetric in them.

    ``e1`` bisects the vectors, ``e2`` is along their difference and ``e3 = e1 x e2``,
    so that matching two frames splits an angle mismatch evenly between the vectors.
    """
    e1x, e1y, e1z = u[0] + v[0], u[1] + v[1], u[2] + v[2]
    e2x, e2y, e2z = u[0] - v[0], u[1] - v[1], u[2] - v[2]
    n1 = np.sqrt(e1x * e1x + e1y * e1y + e1z * e1z)
    n2 = np.sqrt(e2x * e2x + e2y * e2y + e2z * e2z)
    e1x, e1y, e1z = e1x / n1, e1y / n1, e1z / n1
    e2x, e2y, e2z = e2x / n2, e2y / n2, e2z / n2
    out[0, 0], out[1, 0], out[2, 0] = e1x, e1y, e1z
    out[0, 1], out[1, 1], out[2, 1] = e2x, e2y, e2z
    out[0, 2] = e1y * e2z - e1z * e2y
    out[1, 2] = e1z * e2x - e1x * e2z
    out[2, 2] = e1x * e2y - e1y * e2x


@numba.njit(cache=True, nogil=True)
def _polar(h: np.ndarray) -> np.ndarray:
    """Proper rotation maximising ``tr(R^T H)`` (Wahba / Kabsch through the SVD)."""
    u, _, vt = np.linalg.svd(h)
    if _det3(u) * _det3(vt) < 0:
        for k in range(3):
            u[k, 2] = -u[k, 2]
    return _matmul3(u, vt)


@numba.njit(cache=True, nogil=True)
def _det3(m: np.ndarray) -> float:
    """Determinant of a 3x3 matrix."""
    return (
        m[0, 0] * (m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1])
        - m[0, 1] * (m[1, 0] * m[2, 2] - m[1, 2] * m[2, 0])
        + m[0, 2] * (m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0])
    )


@numba.njit(cache=True, nogil=True)
def _inv3(m: np.ndarray) -> np.ndarray:
    """Inverse of a 3x3 matrix (adjugate over determinant; NaN when singular)."""
    det = _det3(m)
    out = np.empty((3, 3))
    for r in range(3):
        for c in range(3):
            r1, r2 = (c + 1) % 3, (c + 2) % 3  # cofactor of (c, r), cyclic form
            c1, c2 = (r + 1) % 3, (r + 2) % 3
            out[r, c] = (m[r1, c1] * m[r2, c2] - m[r1, c2] * m[r2, c1]) / det
    return out


@numba.njit(cache=True, nogil=True)
def _fine_score(
    rot: np.ndarray,
    lat_unit: np.ndarray,
    grids: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    unit: np.ndarray,
    tol_ang: np.ndarray,
    cos_tol: np.ndarray,
) -> float:
    """Number of observed directions within ``tol_ang`` of a lattice direction of their
    shell after ``rot``, plus one minus their mean squared angle in units of the
    tolerance (a tie-breaker in ``[0, 1]``)."""
    n = 0
    chi = 0.0
    for c in range(unit.shape[0]):
        k, cos = best_in_grid(rot, lat_unit, grids, c, unit[c], cos_tol[c])
        if k < 0:
            continue
        chi += (np.arccos(min(1.0, cos)) / tol_ang[c]) ** 2
        n += 1
    if n == 0:
        return 0.0
    return n + 1.0 - chi / n


@numba.njit(cache=True, nogil=True)
def _add_outer(acc: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
    for r in range(3):
        for c in range(3):
            acc[r, c] += u[r] * v[c]


@numba.njit(cache=True, nogil=True)
def _extend(
    rot: np.ndarray,
    acc: np.ndarray,
    a: int,
    b: int,
    need: int,
    unit: np.ndarray,
    lat_unit: np.ndarray,
    grids: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    cos_ext: np.ndarray,
) -> int:
    """Score of a pair rotation: 2 plus the other observed vectors that find a lattice
    direction in their shell within ``arccos(cos_ext[c])``; their matches are added to
    ``acc``.  Stops (returning a score below ``need``) once ``need`` is out of reach."""
    m = unit.shape[0]
    score = 2
    left = m - 2
    for c in range(m):
        if c == a or c == b:
            continue
        if score + left < need:
            return score
        left -= 1
        k, _ = best_in_grid(rot, lat_unit, grids, c, unit[c], cos_ext[c])
        if k >= 0:
            score += 1
            _add_outer(acc, unit[c], lat_unit[k])
    return score


@numba.njit(cache=True, nogil=True)
def seed_rotations(
    obs: np.ndarray,
    tol_ang: np.ndarray,
    shell_lo: np.ndarray,
    shell_hi: np.ndarray,
    lat_vec: np.ndarray,
    lat_unique: np.ndarray,
    min_angle: float,
    min_score: int,
    max_out: int,
    n_pair: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Rotations that map pairs of lattice vectors onto pairs of observed vectors.

    ``shell_lo[c]:shell_hi[c]`` are the lattice vectors (sorted by length) whose length
    matches observed vector ``c``.  For every pair ``(a, b)`` of the first ``n_pair``
    observed vectors at an angle in ``[min_angle, pi - min_angle]`` (radians), every
    lattice vector ``L1`` in the shell of ``a`` that represents its orbit under the
    lattice rotations (``lat_unique``) and every ``L2`` in the shell of ``b`` whose angle
    to ``L1`` differs from the observed one by at most ``tol_ang[a] + tol_ang[b]``
    (radians), the rotation ``R0`` matching the two frames (:func:`_frame_into`) is
    extended: each other observed vector ``c`` takes the lattice vector of its shell
    closest in direction to ``R0^T q_c``, if within ``tol_ang[a] + tol_ang[b] +
    tol_ang[c]``.  The score is the number of matched vectors (2 + the others);
    extensions stop early once a rotation cannot reach ``max(min_score, best - max(2,
    best // 5))`` (``best``: the best score so far) and such rotations are dropped.
    The others are re-fitted to all their matches (Wahba's problem on unit vectors) and
    ranked by :func:`_fine_score`.

    Returns
    -------
    rotations : (max_out, 3, 3)
    scores : (max_out,) float, fine scores
    n : int
        Number stored (the best ``max_out`` when more scored ``>= min_score``).
    """
    m = obs.shape[0]
    norms = np.sqrt(np.sum(obs * obs, axis=1))
    unit = obs / norms[:, None]
    lat_len = np.sqrt(np.sum(lat_vec * lat_vec, axis=1))
    lat_unit = lat_vec / lat_len[:, None]
    rots = np.zeros((max_out, 3, 3))
    scores = np.zeros(max_out)
    state = np.zeros(3, np.int64)  # stored, slot of the worst stored, best score
    widest = 2.0 * np.max(tol_ang[: min(m, n_pair)]) + tol_ang  # cos_ext of any pair
    grids = shell_grids(lat_unit, shell_lo, shell_hi, widest)
    shells = (shell_lo, shell_hi)
    for a in range(min(m, n_pair)):
        for b in range(a + 1, min(m, n_pair)):
            cos_ab = unit[a, 0] * unit[b, 0] + unit[a, 1] * unit[b, 1] + unit[a, 2] * unit[b, 2]
            theta = np.arccos(min(1.0, max(-1.0, cos_ab)))
            if min_angle <= theta <= np.pi - min_angle:
                _pair_rotations(
                    a, b, theta, unit, tol_ang, lat_unit, lat_unique, shells, grids,
                    min_angle, min_score, rots, scores, state,
                )  # fmt: skip
    return rots, scores, int(state[0])


@numba.njit(cache=True, nogil=True)
def _pair_rotations(
    a: int,
    b: int,
    theta: float,
    unit: np.ndarray,
    tol_ang: np.ndarray,
    lat_unit: np.ndarray,
    lat_unique: np.ndarray,
    shells: tuple[np.ndarray, np.ndarray],
    grids: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    min_angle: float,
    min_score: int,
    rots: np.ndarray,
    scores: np.ndarray,
    state: np.ndarray,
) -> None:
    """The rotations of observed pair ``(a, b)`` at angle ``theta`` (see
    :func:`seed_rotations`), stored into ``rots``/``scores`` (``state``: number stored,
    slot of the worst, best score so far; updated in place)."""
    shell_lo, shell_hi = shells
    dth = tol_ang[a] + tol_ang[b]
    # lattice pairs must not be collinear either (their frame is undefined)
    c_lo = max(np.cos(min(np.pi, theta + dth)), -np.cos(min_angle))
    c_hi = min(np.cos(max(0.0, theta - dth)), np.cos(min_angle))
    cos_ext = np.cos(dth + tol_ang)
    cos_tol = np.cos(tol_ang)
    f_obs = np.empty((3, 3))
    f_lat = np.empty((3, 3))
    rot = np.empty((3, 3))
    acc = np.empty((3, 3))
    _frame_into(unit[a], unit[b], f_obs)
    for i in range(shell_lo[a], shell_hi[a]):
        if not lat_unique[i]:
            continue
        li = lat_unit[i]
        for j in range(shell_lo[b], shell_hi[b]):
            lj = lat_unit[j]
            cos_l = li[0] * lj[0] + li[1] * lj[1] + li[2] * lj[2]
            if j == i or cos_l < c_lo or cos_l > c_hi:
                continue
            _frame_into(li, lj, f_lat)
            for r in range(3):
                for c in range(3):
                    rot[r, c] = (
                        f_obs[r, 0] * f_lat[c, 0]
                        + f_obs[r, 1] * f_lat[c, 1]
                        + f_obs[r, 2] * f_lat[c, 2]
                    )
                    acc[r, c] = unit[a, r] * li[c] + unit[b, r] * lj[c]
            need = max(min_score, state[2] - max(2, state[2] // 5))
            score = _extend(rot, acc, a, b, need, unit, lat_unit, grids, cos_ext)
            if score < need:
                continue
            state[2] = max(state[2], score)
            fitted = _polar(acc) if score > 2 else rot.copy()
            fine = _fine_score(fitted, lat_unit, grids, unit, tol_ang, cos_tol)
            _store(rots, scores, state, fitted, fine)


@numba.njit(cache=True, nogil=True)
def _store(
    rots: np.ndarray, scores: np.ndarray, state: np.ndarray, rot: np.ndarray, score: float
) -> None:
    """Keep the best ``len(scores)`` rotations (``state[0]`` stored, ``state[1]`` the
    slot of the worst once full)."""
    max_out = len(scores)
    if state[0] == max_out and score <= scores[state[1]]:
        return
    slot = state[0] if state[0] < max_out else state[1]
    rots[slot] = rot
    scores[slot] = score
    if state[0] < max_out:
        state[0] += 1
    if state[0] == max_out:
        state[1] = int(np.argmin(scores))


@numba.njit(cache=True, nogil=True)
def _residual(
    ub: np.ndarray, a_inv: np.ndarray, q: np.ndarray, k: float
) -> tuple[float, float, float, float, float, float, float]:
    """``h`` nearest to ``q`` and the tangential distance, excitation error and length
    mismatch of its lattice point (see :func:`assign_peaks`)."""
    h0 = np.round(a_inv[0, 0] * q[0] + a_inv[0, 1] * q[1] + a_inv[0, 2] * q[2])
    h1 = np.round(a_inv[1, 0] * q[0] + a_inv[1, 1] * q[1] + a_inv[1, 2] * q[2])
    h2 = np.round(a_inv[2, 0] * q[0] + a_inv[2, 1] * q[1] + a_inv[2, 2] * q[2])
    px = ub[0, 0] * h0 + ub[0, 1] * h1 + ub[0, 2] * h2
    py = ub[1, 0] * h0 + ub[1, 1] * h1 + ub[1, 2] * h2
    pz = ub[2, 0] * h0 + ub[2, 1] * h1 + ub[2, 2] * h2
    uz = pz + k
    rho = np.sqrt(px * px + py * py + uz * uz)
    f = k / rho
    dx = q[0] - f * px
    dy = q[1] - f * py
    dz = q[2] - (f * uz - k)
    dt = np.sqrt(dx * dx + dy * dy + dz * dz)
    dlen = np.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2]) - np.sqrt(px * px + py * py + pz * pz)
    return h0, h1, h2, dt, k - rho, dlen, px * px + py * py + pz * pz


@numba.njit(cache=True, nogil=True)
def quick_refine(
    rot: np.ndarray,
    b_mat: np.ndarray,
    q: np.ndarray,
    wavelength: float,
    tol_t: np.ndarray,
    tol_s: float,
    ang_start: float,
    shift_allow: float,
    n_iter: int,
    shrink: float,
) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Re-index and re-fit a rotation and an in-plane offset of the observed vectors.

    Round ``t`` assigns every vector ``q'_i = q_i - c`` (``c = (c_x, c_y, 0)``, the
    offset a beam-centre error causes) to the lattice point nearest in ``h`` and keeps it
    when its length matches within ``tol_t[i] + a_t`` and its distance from the lattice
    point's peak on the Ewald sphere is within ``tol_t[i] + ang_t |q_i| + a_t`` and its
    excitation error within ``tol_s + ang_t |q_i|``; ``ang_t`` and ``a_t`` start at
    ``ang_start`` and ``shift_allow`` and shrink by ``shrink`` each round (zero in the
    last).  Wahba's
    problem ``max tr(R^T sum q'_i (B h_i)^T)`` then gives the rotation and the mean of
    ``q_i - R B h_i`` (x, y) the offset.

    Returns
    -------
    rot : (3, 3)
    offset : (2,) ``c_x, c_y`` (1/A)
    n : int
        Vectors within the final tolerances.
    s2 : float
        Their summed squared excitation errors.
    """
    n = q.shape[0]
    k = 1.0 / wavelength
    norms = np.sqrt(np.sum(q * q, axis=1))
    ang = ang_start
    allow = shift_allow
    cx = 0.0
    cy = 0.0
    qi = np.empty(3)
    used = 0
    s2 = 0.0
    for it in range(n_iter + 1):
        ub = _matmul3(rot, b_mat)
        a_inv = _inv3(ub)
        acc = np.zeros((3, 3))
        sx = 0.0
        sy = 0.0
        used = 0
        s2 = 0.0
        for i in range(n):
            qi[0] = q[i, 0] - cx
            qi[1] = q[i, 1] - cy
            qi[2] = q[i, 2]
            h0, h1, h2, dt, s, dlen, p2 = _residual(ub, a_inv, qi, k)
            if p2 == 0.0 or abs(dlen) > tol_t[i] + allow:
                continue
            if dt > tol_t[i] + ang * norms[i] + allow or abs(s) > tol_s + ang * norms[i]:
                continue
            used += 1
            s2 += s * s
            for r in range(3):
                lat = b_mat[r, 0] * h0 + b_mat[r, 1] * h1 + b_mat[r, 2] * h2
                for c in range(3):
                    acc[c, r] += qi[c] * lat
            sx += q[i, 0] - (ub[0, 0] * h0 + ub[0, 1] * h1 + ub[0, 2] * h2)
            sy += q[i, 1] - (ub[1, 0] * h0 + ub[1, 1] * h1 + ub[1, 2] * h2)
        if it == n_iter or used < 3:
            break
        rot = _polar(acc)
        cx = sx / used
        cy = sy / used
        ang *= shrink
        allow *= shrink
        if it == n_iter - 1:
            ang = 0.0
            allow = 0.0
    return rot, np.array([cx, cy]), used, s2


@numba.njit(cache=True, nogil=True)
def assign_peaks(
    ub: np.ndarray, q: np.ndarray, wavelength: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest lattice point of each observed vector and its residuals on the Ewald sphere.

    For ``h = round(UB^-1 q)`` the lattice point ``p = UB h`` is projected radially onto
    the Ewald sphere (centre ``-k0``, radius ``k = 1/lambda``),
    ``p' = k (p + k0) / |p + k0| - k0``, which is where its peak appears.

    Returns
    -------
    hkl : (n, 3) float (integer values)
    resid : (n, 3) ``q - p'`` (tangent to the sphere up to second order)
    s : (n,) excitation errors ``k - |p + k0|`` (positive inside the sphere)
    """
    n = q.shape[0]
    k = 1.0 / wavelength
    a = _inv3(ub)
    hkl = np.empty((n, 3))
    resid = np.empty((n, 3))
    s = np.empty(n)
    for i in range(n):  # scalar 3x3 products: no temporaries, no BLAS call per peak
        q0, q1, q2 = q[i, 0], q[i, 1], q[i, 2]
        h0 = np.round(a[0, 0] * q0 + a[0, 1] * q1 + a[0, 2] * q2)
        h1 = np.round(a[1, 0] * q0 + a[1, 1] * q1 + a[1, 2] * q2)
        h2 = np.round(a[2, 0] * q0 + a[2, 1] * q1 + a[2, 2] * q2)
        ux = ub[0, 0] * h0 + ub[0, 1] * h1 + ub[0, 2] * h2
        uy = ub[1, 0] * h0 + ub[1, 1] * h1 + ub[1, 2] * h2
        uz = ub[2, 0] * h0 + ub[2, 1] * h1 + ub[2, 2] * h2 + k
        rho = np.sqrt(ux * ux + uy * uy + uz * uz)
        f = k / rho
        resid[i, 0] = q0 - f * ux
        resid[i, 1] = q1 - f * uy
        resid[i, 2] = q2 - (f * uz - k)
        s[i] = k - rho
        hkl[i, 0], hkl[i, 1], hkl[i, 2] = h0, h1, h2
    return hkl, resid, s


@numba.njit(cache=True, nogil=True)
def normal_equations(
    rot: np.ndarray,
    b_mat: np.ndarray,
    d_b: np.ndarray,
    hkl: np.ndarray,
    r0: np.ndarray,
    jx: np.ndarray,
    jy: np.ndarray,
    shift: np.ndarray,
    wavelength: float,
    sigma_t: float,
    sigma_s: float,
    refine_shift: bool,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Normal equations ``J^T J``, ``J^T r`` and ``chi^2`` of the still model.

    Parameters are ordered: small rotation ``w`` (3, radians, ``R <- exp([w]x) R``), the
    free cell groups (``d_b[j] = dB/dc_j``), then the shift ``(dx, dy)`` in mm when
    ``refine_shift``.  Residuals per peak: ``(q - p') / sigma_t`` (3) and
    ``s / sigma_s`` (see :mod:`crystalscope.index._stills_refine`).
    """
    n_par = 3 + d_b.shape[0] + (2 if refine_shift else 0)
    jtj = np.zeros((n_par, n_par))
    jtr = np.zeros(n_par)
    chi2 = 0.0
    cols = np.zeros((n_par, 4))
    res = np.zeros(4)
    scales = np.array([wavelength, sigma_t, sigma_s])
    ub = _matmul3(rot, b_mat)
    d_ub = np.empty_like(d_b)  # d (R B) / d c_j = R dB/dc_j
    for j in range(d_b.shape[0]):
        d_ub[j] = _matmul3(rot, d_b[j])
    r = np.empty(3)
    for i in range(hkl.shape[0]):
        for c in range(3):
            r[c] = r0[i, c] + shift[0] * jx[i, c] + shift[1] * jy[i, c]
        _peak_columns(ub, d_ub, hkl[i], r, jx[i], jy[i], scales, refine_shift, cols, res)
        for a in range(n_par):
            for b in range(a, n_par):
                jtj[a, b] += (
                    cols[a, 0] * cols[b, 0] + cols[a, 1] * cols[b, 1]
                    + cols[a, 2] * cols[b, 2] + cols[a, 3] * cols[b, 3]
                )  # fmt: skip
            jtr[a] += cols[a, 0] * res[0] + cols[a, 1] * res[1] + cols[a, 2] * res[2]
            jtr[a] += cols[a, 3] * res[3]
        chi2 += res[0] ** 2 + res[1] ** 2 + res[2] ** 2 + res[3] ** 2
    for a in range(n_par):
        for b in range(a):
            jtj[a, b] = jtj[b, a]
    return jtj, jtr, chi2


@numba.njit(cache=True, nogil=True)
def _matmul3(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x @ y`` of two 3x3 matrices by explicit sums."""
    out = np.empty((3, 3))
    for r in range(3):
        for c in range(3):
            out[r, c] = x[r, 0] * y[0, c] + x[r, 1] * y[1, c] + x[r, 2] * y[2, c]
    return out


@numba.njit(cache=True, nogil=True)
def _peak_columns(
    ub: np.ndarray,
    d_ub: np.ndarray,
    h: np.ndarray,
    r: np.ndarray,
    jx: np.ndarray,
    jy: np.ndarray,
    scales: np.ndarray,
    refine_shift: bool,
    cols: np.ndarray,
    res: np.ndarray,
) -> None:
    """Weighted residuals (``res``, 4) and their derivatives (``cols``, one row per
    parameter) of one peak at lab position ``r`` (mm) indexed as ``h``; ``ub = R B`` and
    ``d_ub[j] = R dB/dc_j``.  Scalar arithmetic only (called once per peak)."""
    wavelength, sigma_t, sigma_s = scales[0], scales[1], scales[2]
    k = 1.0 / wavelength
    h0, h1, h2 = h[0], h[1], h[2]
    p0 = ub[0, 0] * h0 + ub[0, 1] * h1 + ub[0, 2] * h2
    p1 = ub[1, 0] * h0 + ub[1, 1] * h1 + ub[1, 2] * h2
    p2 = ub[2, 0] * h0 + ub[2, 1] * h1 + ub[2, 2] * h2
    u2 = p2 + k
    rho = np.sqrt(p0 * p0 + p1 * p1 + u2 * u2)
    uh0, uh1, uh2 = p0 / rho, p1 / rho, u2 / rho
    rn = np.sqrt(r[0] ** 2 + r[1] ** 2 + r[2] ** 2)
    rh0, rh1, rh2 = r[0] / rn, r[1] / rn, r[2] / rn
    res[0] = (rh0 * k - k * uh0) / sigma_t
    res[1] = (rh1 * k - k * uh1) / sigma_t
    res[2] = ((rh2 - 1.0) * k - (k * uh2 - k)) / sigma_t
    res[3] = (k - rho) / sigma_s
    n_cell = d_ub.shape[0]
    g = -k / rho / sigma_t
    for m in range(3 + n_cell):
        if m == 0:  # d p / d w_m = e_m x p
            d0, d1, d2 = 0.0, -p2, p1
        elif m == 1:
            d0, d1, d2 = p2, 0.0, -p0
        elif m == 2:
            d0, d1, d2 = -p1, p0, 0.0
        else:
            e = d_ub[m - 3]
            d0 = e[0, 0] * h0 + e[0, 1] * h1 + e[0, 2] * h2
            d1 = e[1, 0] * h0 + e[1, 1] * h1 + e[1, 2] * h2
            d2 = e[2, 0] * h0 + e[2, 1] * h1 + e[2, 2] * h2
        along = uh0 * d0 + uh1 * d1 + uh2 * d2
        # d p' / d p = (k / rho) (I - uh uh^T); e = q - p'
        cols[m, 0] = g * (d0 - along * uh0)
        cols[m, 1] = g * (d1 - along * uh1)
        cols[m, 2] = g * (d2 - along * uh2)
        cols[m, 3] = -along / sigma_s  # d s / d p = -uh^T
    if refine_shift:
        scale = 1.0 / (rn * wavelength * sigma_t)
        for m in range(2):  # d q / d r = (I - rh rh^T) / (|r| lambda)
            jv = jx if m == 0 else jy
            along = rh0 * jv[0] + rh1 * jv[1] + rh2 * jv[2]
            row = 3 + n_cell + m
            cols[row, 0] = (jv[0] - along * rh0) * scale
            cols[row, 1] = (jv[1] - along * rh1) * scale
            cols[row, 2] = (jv[2] - along * rh2) * scale
            cols[row, 3] = 0.0


@numba.njit(cache=True, nogil=True)
def distinct_rotations(
    rots: np.ndarray, order: np.ndarray, sym: np.ndarray, cos_tol: float, n_max: int
) -> tuple[np.ndarray, np.ndarray]:
    """Rotations that differ pairwise by more than ``arccos(cos_tol)`` modulo the
    lattice rotations ``sym`` (``R' = R S``), taken in ``order``, and their votes.

    Returns the indices of up to ``n_max`` kept rotations and, for each, how many of
    the rotations in ``order`` lie within the tolerance of it (itself included; later
    rotations count for the first kept one they match, also after ``n_max`` are kept).
    """
    kept = np.empty(n_max, np.int64)
    votes = np.zeros(n_max, np.int64)
    n_kept = 0
    for idx in order:
        rot = rots[idx]
        match = -1
        for t in range(n_kept):
            rel = rots[kept[t]].T @ rot
            for s in range(sym.shape[0]):
                tr = 0.0
                for i in range(3):
                    for j in range(3):
                        tr += sym[s, i, j] * rel[i, j]
                if (tr - 1.0) / 2.0 >= cos_tol:
                    match = t
                    break
            if match >= 0:
                break
        if match >= 0:
            votes[match] += 1
        elif n_kept < n_max:
            kept[n_kept] = idx
            votes[n_kept] = 1
            n_kept += 1
    return kept[:n_kept], votes[:n_kept]
