"""The small numerical kernels of still indexing agree with numpy and gemmi."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from crystalscope.index._stills_gn import b_matrix, gauss_newton_steps
from crystalscope.index._stills_grid import best_in_grid, shell_grids
from crystalscope.index._stills_kernels import _det3, _inv3, _polar
from crystalscope.index._stills_setup import FrameGeometry


def _cells() -> list[tuple[float, ...]]:
    rng = np.random.default_rng(3)
    fixed = [(79.1, 79.1, 37.9, 90, 90, 90), (10, 12, 15, 80, 95, 105), (5, 5, 5, 60, 60, 60)]
    random = [tuple(np.r_[rng.uniform(3, 100, 3), rng.uniform(70, 110, 3)]) for _ in range(50)]
    return fixed + random


def test_b_matrix_is_gemmi_fractionalisation_transposed() -> None:
    for p in _cells():
        expect = np.array(gemmi.UnitCell(*p).frac.mat).T
        np.testing.assert_allclose(b_matrix(np.array(p, float)), expect, rtol=1e-13, atol=1e-16)


def test_small_matrix_kernels_match_numpy() -> None:
    rng = np.random.default_rng(5)
    for _ in range(20):
        m = rng.normal(size=(3, 3))
        np.testing.assert_allclose(_inv3(m), np.linalg.inv(m), rtol=1e-9, atol=1e-12)
        assert _det3(m) == pytest.approx(np.linalg.det(m), rel=1e-12)
        rot = _polar(m)
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(rot) == pytest.approx(1.0)


def _frame(
    rot: np.ndarray, cell: np.ndarray, wavelength: float
) -> tuple[FrameGeometry, np.ndarray]:
    """Peaks of lattice points near the Ewald sphere, as lab positions on a flat detector."""
    ub = rot @ b_matrix(cell)
    k = 1.0 / wavelength
    hkl = np.array([(h, kk, 0) for h in range(-6, 7) for kk in range(-6, 7) if (h, kk) != (0, 0)])
    hkl = hkl.astype(float)  # a zone-axis pattern: the l = 0 layer
    p = hkl @ ub.T
    u = p + np.array([0.0, 0.0, k])
    on = k * u / np.linalg.norm(u, axis=1)[:, None]  # radially onto the sphere
    r = on / on[:, 2:3] * 500.0  # detector at 500 mm
    zeros = np.zeros_like(r)
    jx, jy = zeros + np.array([1.0, 0.0, 0.0]), zeros + np.array([0.0, 1.0, 0.0])
    return FrameGeometry(r, jx, jy, np.full(len(r), 1e-4), wavelength), hkl


def _residuals(
    params: np.ndarray,
    rot: np.ndarray,
    cell: np.ndarray,
    geom: FrameGeometry,
    hkl: np.ndarray,
    sigmas: tuple[float, float],
) -> np.ndarray:
    """The weighted residuals of the still model (``_stills_refine`` docstring) at a small
    rotation ``params[:3]``, cell change ``params[3:5]`` (a, b) and shift ``params[5:]``."""
    w = params[:3]
    angle = np.linalg.norm(w)
    kx = np.array([[0, -w[2], w[1]], [w[2], 0, -w[0]], [-w[1], w[0], 0]]) / max(angle, 1e-300)
    turn = np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx
    moved = cell.copy()
    moved[:2] += params[3:5]
    k = 1.0 / geom.wavelength
    p = hkl @ (turn @ rot @ b_matrix(moved)).T
    u = p + np.array([0.0, 0.0, k])
    rho = np.linalg.norm(u, axis=1)
    on = k * u / rho[:, None] - np.array([0.0, 0.0, k])
    resid = (geom.q(params[5:]) - on) / sigmas[0]
    return np.concatenate([resid.ravel(), (k - rho) / sigmas[1]])


def test_gauss_newton_step_is_newton_on_the_documented_model() -> None:
    """One step equals a Gauss-Newton step with a numerical Jacobian of the residuals."""
    cell = np.array([40.0, 50.0, 60.0, 90.0, 90.0, 90.0])
    wavelength = 0.0251
    geom, hkl = _frame(np.eye(3), cell, wavelength)
    c, s = np.cos(0.004), np.sin(0.004)
    start = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    sigmas = (1e-4, 1e-3)
    groups = np.array([[0, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1]])
    x0 = np.zeros(7)
    r0 = _residuals(x0, start, cell, geom, hkl, sigmas)
    jac = np.empty((len(r0), 7))
    for j in range(7):
        step = np.zeros(7)
        step[j] = 1e-7 if j < 3 or j > 4 else 1e-4
        jac[:, j] = (_residuals(x0 + step, start, cell, geom, hkl, sigmas) - r0) / step[j]
    jtj, jtr = jac.T @ jac, jac.T @ r0
    for j in range(2):  # the 1 % prior on the known cell (at the start: no pull)
        jtj[3 + j, 3 + j] += 1.0 / (0.01 * cell[j]) ** 2
    jtj[np.diag_indices(7)] *= 1.0 + 1e-6
    expect = -np.linalg.solve(jtj, jtr)
    rot, got, shift = gauss_newton_steps(
        start, cell, np.zeros(2), cell, groups, 2, (geom.r0, geom.jx, geom.jy, wavelength),
        hkl, sigmas, True, 1,
    )  # fmt: skip
    np.testing.assert_allclose(got[:2] - cell[:2], expect[3:5], rtol=1e-3, atol=1e-9)
    np.testing.assert_allclose(shift, expect[5:], rtol=1e-3, atol=1e-9)
    turned = rot @ start.T  # exp([w]x)
    w = np.array([turned[2, 1] - turned[1, 2], turned[0, 2] - turned[2, 0],
                  turned[1, 0] - turned[0, 1]]) / 2  # fmt: skip
    np.testing.assert_allclose(w, expect[:3], rtol=1e-3, atol=1e-9)
    # and the steps lower chi^2
    chi2 = [float(np.sum(r0**2))]
    rot, got, shift = start, cell, np.zeros(2)
    for _ in range(3):
        rot, got, shift = gauss_newton_steps(
            rot, got, shift, cell, groups, 2, (geom.r0, geom.jx, geom.jy, wavelength), hkl,
            sigmas, True, 1,
        )  # fmt: skip
        x = np.r_[0.0, 0.0, 0.0, got[:2] - cell[:2], shift]
        chi2.append(float(np.sum(_residuals(x, rot, cell, geom, hkl, sigmas) ** 2)))
    assert chi2[1] < chi2[0] and chi2[-1] <= chi2[1]


def _scan(rot: np.ndarray, lat_unit: np.ndarray, lo: int, hi: int, target: np.ndarray,
          cos_min: float) -> tuple[int, float]:  # fmt: skip
    """The closest direction by a scan of the whole shell (first index among ties)."""
    t = [rot[0, i] * target[0] + rot[1, i] * target[1] + rot[2, i] * target[2] for i in range(3)]
    best, best_cos = -1, cos_min
    for j in range(lo, hi):
        c = lat_unit[j, 0] * t[0] + lat_unit[j, 1] * t[1] + lat_unit[j, 2] * t[2]
        if c > best_cos:
            best, best_cos = j, c
    return best, best_cos


@pytest.mark.parametrize("max_deg", [0.5, 3.0, 20.0, 200.0])
def test_shell_grid_query_equals_a_full_scan(max_deg: float) -> None:
    rng = np.random.default_rng(11)
    vec = rng.normal(size=(3000, 3))
    vec[2000:2010] = vec[1990]  # repeated directions: ties go to the lowest index
    lat_unit = vec / np.linalg.norm(vec, axis=1)[:, None]
    lo = np.array([0, 500, 1500, 1990])
    hi = np.array([500, 1500, 1990, 3000])
    max_angle = np.radians(np.full(4, max_deg))
    grids = shell_grids(lat_unit, lo, hi, max_angle)
    for _ in range(300):
        rot = _polar(rng.normal(size=(3, 3)))
        c = int(rng.integers(4))
        target = rng.normal(size=3)
        target /= np.linalg.norm(target)
        if rng.random() < 0.3:  # right onto a lattice direction
            target = rot @ lat_unit[rng.integers(lo[c], hi[c])]
        cos_min = float(np.cos(np.radians(max_deg) * rng.random()))
        assert best_in_grid(rot, lat_unit, grids, c, target, cos_min) == _scan(
            rot, lat_unit, lo[c], hi[c], target, cos_min
        )
