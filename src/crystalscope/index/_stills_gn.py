"""numba kernels of the still refinement's Gauss-Newton steps (one call per round).

:func:`gauss_newton_steps` takes the steps of :mod:`crystalscope.index._stills_refine`
(its module docstring has the model and the objective) without returning to Python
between them: the ``B`` matrix of the cell parameters, its numerical derivatives for the
free cell groups, the normal equations, the 1 % prior on the known cell and the update
``R <- exp([w]x) R``.  :func:`b_matrix` is ``B`` in gemmi's (PDB) orthogonalisation
convention: ``a`` along x, ``b`` in the x-y plane; ``B = F^T`` with ``F`` the
fractionalisation matrix, so the columns of ``B`` are ``a*``, ``b*``, ``c*``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from crystalscope.index._stills_kernels import normal_equations

__all__ = ["b_matrix", "gauss_newton_steps"]


@numba.njit(cache=True, nogil=True)
def b_matrix(cell: np.ndarray) -> np.ndarray:
    """``B`` (columns a*, b*, c*, 1/A) of ``cell = (a, b, c, alpha, beta, gamma)`` (A, deg)."""
    a, b, c = cell[0], cell[1], cell[2]
    ca = math.cos(math.radians(cell[3]))
    cb = math.cos(math.radians(cell[4]))
    cg = math.cos(math.radians(cell[5]))
    sb = math.sin(math.radians(cell[4]))
    sg = math.sin(math.radians(cell[5]))
    cas = (cb * cg - ca) / (sb * sg)  # cos(alpha*)
    sas = math.sqrt(1.0 - cas * cas)
    # orthogonalisation (upper triangular) and its explicit inverse
    o11, o12, o13 = a, b * cg, c * cb
    o22, o23 = b * sg, -c * cas * sb
    o33 = c * sb * sas
    out = np.zeros((3, 3))
    out[0, 0] = 1.0 / o11
    out[1, 0] = -o12 / (o11 * o22)
    out[2, 0] = (o12 * o23 - o13 * o22) / (o11 * o22 * o33)
    out[1, 1] = 1.0 / o22
    out[2, 1] = -o23 / (o22 * o33)
    out[2, 2] = 1.0 / o33
    return out


@numba.njit(cache=True, nogil=True)
def _rotvec_matrix(w: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation by ``|w|`` radians about ``w``."""
    angle = math.sqrt(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    out = np.eye(3)
    if angle < 1e-15:
        return out
    kx, ky, kz = w[0] / angle, w[1] / angle, w[2] / angle
    s, c1 = math.sin(angle), 1.0 - math.cos(angle)
    skew = np.array([[0.0, -kz, ky], [kz, 0.0, -kx], [-ky, kx, 0.0]])
    for r in range(3):
        for c in range(3):
            sq = skew[r, 0] * skew[0, c] + skew[r, 1] * skew[1, c] + skew[r, 2] * skew[2, c]
            out[r, c] += s * skew[r, c] + c1 * sq
    return out


@numba.njit(cache=True, nogil=True)
def _cell_jacobian(cell: np.ndarray, groups: np.ndarray, n_cell: int) -> np.ndarray:
    """``d B / d c_j`` for the first ``n_cell`` groups (rows of ``groups``, padded with
    -1), by forward differences of step ``1e-4`` times the group's first parameter."""
    out = np.empty((n_cell, 3, 3))
    b0 = b_matrix(cell)
    for j in range(n_cell):
        step = 1e-4 * cell[groups[j, 0]]
        moved = cell.copy()
        for idx in groups[j]:
            if idx >= 0:
                moved[idx] += step
        out[j] = (b_matrix(moved) - b0) / step
    return out


@numba.njit(cache=True, nogil=True)
def gauss_newton_steps(
    rot: np.ndarray,
    cell: np.ndarray,
    shift: np.ndarray,
    cell0: np.ndarray,
    groups: np.ndarray,
    n_cell: int,
    geometry: tuple[np.ndarray, np.ndarray, np.ndarray, float],
    hkl: np.ndarray,
    sigmas: tuple[float, float],
    refine_shift: bool,
    n_steps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_steps`` damped Gauss-Newton steps on the peaks ``hkl`` (all rows used).

    ``geometry = (r0, jx, jy, wavelength)`` as in
    :class:`~crystalscope.index._stills_setup.FrameGeometry`, ``sigmas = (sigma_t,
    sigma_s)``; ``groups`` (rows padded with -1) are the free cell groups, of which the
    first ``n_cell`` are refined with a prior of width 1 % of ``cell0``.  A singular
    system ends the steps.  Returns the new ``(rot, cell, shift)`` (inputs unchanged).
    """
    r0, jx, jy, wavelength = geometry
    rot = rot.copy()
    cell = cell.copy()
    shift = shift.copy()
    for _ in range(n_steps):
        d_b = _cell_jacobian(cell, groups, n_cell) if n_cell > 0 else np.zeros((0, 3, 3))
        jtj, jtr, _ = normal_equations(
            rot, b_matrix(cell), d_b, hkl, r0, jx, jy, shift, wavelength, sigmas[0],
            sigmas[1], refine_shift,
        )  # fmt: skip
        for j in range(n_cell):
            g0 = groups[j, 0]
            width = 0.01 * cell0[g0]  # prior: the known cell within 1 %
            jtj[3 + j, 3 + j] += 1.0 / width**2
            jtr[3 + j] += (cell[g0] - cell0[g0]) / width**2
        for d in range(jtr.shape[0]):
            jtj[d, d] *= 1.0 + 1e-6
        try:
            step = -np.linalg.solve(jtj, jtr)
        except Exception:  # singular: keep the model as it is
            break
        turn = _rotvec_matrix(step[:3])
        rot = turn @ rot
        for j in range(n_cell):
            for idx in groups[j]:
                if idx >= 0:
                    cell[idx] += step[3 + j]
        if refine_shift:
            shift[0] += step[3 + n_cell]
            shift[1] += step[4 + n_cell]
    return rot, cell, shift
