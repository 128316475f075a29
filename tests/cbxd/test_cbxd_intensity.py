"""Streak intensities (seed Eqs. 4, 5, 9-11) and silicon structure factors."""

from __future__ import annotations

import dataclasses

import gemmi
import numpy as np
import pytest

from crystalscope.cbxd.geometry import direction_to_angles, kossel_circle, rotation_matrix
from crystalscope.cbxd.intensity import (
    b12_like_structure_factors,
    detector_efficiency,
    lorentz_factor,
    polarisation_eq10,
    polarisation_factor,
    rocking_width,
    sampling_factor,
    silicon_structure_factors,
)
from crystalscope.cbxd.shapes import VoxelShape
from crystalscope.simulate.cbxd import CbxdSimulation
from crystalscope.simulate.cbxd_config import CbxdConfig

HKL = np.array([2.0, 2.0, 0.0])


def test_simple_factors() -> None:
    th = np.radians(10.0)
    assert lorentz_factor(th) == pytest.approx(1 / np.sin(np.radians(20.0)))
    # Eq. 4: 0.71 A over 10 um at 2 theta = 20 deg
    assert rocking_width(0.71, 1e5, th) == pytest.approx(0.71e-5 / np.sin(np.radians(20.0)))
    assert sampling_factor(0.0) == 1.0 and sampling_factor(np.pi / 3) == pytest.approx(2.0)
    assert detector_efficiency(0.0, 0.0, 0.45) == 1.0
    assert detector_efficiency(0.0, 2.0, 0.5) == pytest.approx(1 - np.exp(-1.0))
    assert detector_efficiency(np.radians(60), 2.0, 0.5) == pytest.approx(1 - np.exp(-2.0))


def test_polarisation_equals_eq10() -> None:
    tt = np.radians(35.0)
    for xi in np.radians([0.0, 20.0, 45.0, 90.0]):
        k = np.array([np.sin(tt) * np.cos(xi), np.sin(tt) * np.sin(xi), np.cos(tt)])
        assert polarisation_factor(k) == pytest.approx(polarisation_eq10(tt, xi), abs=1e-12)


def test_silicon_structure_factors() -> None:
    sf = silicon_structure_factors(0.8)
    f = np.sqrt(sf.lookup([[1, 1, 1], [2, 2, 0], [2, 2, 2], [4, 0, 0], [2, 0, 0]]))
    # known X-ray values at room temperature (IT92 form factors, B = 0.46 A^2):
    assert 58.0 < f[0] < 60.0 and 66.5 < f[1] < 68.5 and 55.0 < f[3] < 57.5
    assert f[2] == 0.0 and f[4] == 0.0  # 222 forbidden by the special position, 200 absent
    # diamond structure: F(111) = 4 sqrt(2) f(s) exp(-B s^2 / 4), F(220) = 8 f(s) ...
    el = gemmi.Element("Si")
    for hkl, mult, got in (((1, 1, 1), 4 * np.sqrt(2), f[0]), ((2, 2, 0), 8.0, f[1])):
        s2 = sum(h * h for h in hkl) / 5.43102**2
        expect = mult * el.it92.calculate_sf(s2 / 4) * np.exp(-0.4632 * s2 / 4)
        assert got == pytest.approx(expect, rel=2e-3)
    b = silicon_structure_factors(0.8, b_factor=1.0)
    assert np.sqrt(b.lookup([[2, 2, 0]]))[0] < f[1]


def test_b12_like_structure_factors() -> None:
    sf = b12_like_structure_factors(3.0)
    assert sf.space_group.hm == "P 21 21 21"
    assert sf.cell.a == pytest.approx(15.70) and sf.cell.c == pytest.approx(24.96)
    assert sf.lookup([[1, 0, 0], [3, 0, 0]]).tolist() == [0.0, 0.0]  # screw absences
    assert np.all(sf.table["F"] > 0)


def _bragg_sim(
    mu_per_mm: float = 0.0, psi: float = 0.0, efficiency: tuple[float, float] = (1.0, 1.0)
) -> tuple[CbxdSimulation, np.ndarray]:
    """Simulation whose Si 220 is exactly at Bragg for the chief ray, G in azimuth psi;
    crystal: a uniform slab 60 x 60 x 4 um."""
    cfg = CbxdConfig.model_validate(
        {
            "lens": {
                "kind": "on_axis",
                "na_x": 0.02,
                "na_y": 0.02,
                "efficiency_x": efficiency[0],
                "efficiency_y": efficiency[1],
            },
            "sample": {"mu_per_mm": mu_per_mm, "d_min": 1.5},
            "detector": {"shape": (512, 512), "pixel_mm": 0.3},
        }
    )
    sim = CbxdSimulation.build(cfg)
    b = np.asarray(sim.sf.cell.frac.mat, dtype=float).T
    gc = b @ HKL
    lam = sim.wavelength
    tt = 2 * np.arcsin(lam * np.linalg.norm(gc) / 2)
    k_out = np.array([np.sin(tt) * np.cos(psi), np.sin(tt) * np.sin(psi), np.cos(tt)]) / lam
    gt = k_out - np.array([0, 0, 1 / lam])
    u1, u2 = gc / np.linalg.norm(gc), gt / np.linalg.norm(gt)
    axis = np.cross(u1, u2)
    u = rotation_matrix(axis, np.arccos(np.clip(u1 @ u2, -1, 1)))
    slab = VoxelShape(np.ones((60, 60, 4)), 1.0, "slab")
    return dataclasses.replace(sim, ub=u @ b, shape=slab), k_out


def _row(table, hkl=HKL, component=0):  # type: ignore[no-untyped-def]
    m = (table["h"] == hkl[0]) & (table["k"] == hkl[1]) & (table["l"] == hkl[2])
    m &= table["component"] == component
    assert m.sum() == 1
    return table[m].iloc[0]


def test_chief_ray_streak_passes_through_chief_ray_k_out() -> None:
    sim, k_out = _bragg_sim()
    image, table = sim.still(0.0)
    row = _row(table)
    hit = sim.detector.hit(np.zeros(3), k_out, sim.config.sample.defocus_mm)
    fs, ss = sim.detector.to_pixels(hit)
    assert abs(row["fs"] - fs) < 1.0 and abs(row["ss"] - ss) < 1.0
    assert abs(row["phi_x"]) < 1e-3 and abs(row["phi_y"]) < 1e-3
    window = image[round(ss) - 1 : round(ss) + 2, round(fs) - 1 : round(fs) + 2]
    assert window.sum() > 0.02 * row["counts"]
    # Eq. 10 with xi = 0: G horizontal, P = cos^2(2 theta)
    assert row["polarisation"] == pytest.approx(np.cos(np.radians(row["two_theta_deg"])) ** 2,
                                                rel=1e-3)  # fmt: skip
    assert image.sum() == pytest.approx(table["counts"].sum(), rel=1e-9)


def test_streak_integral_is_eq5_times_slab_thickness() -> None:
    sim, _ = _bragg_sim()
    _, table = sim.still(0.0)
    row = _row(table)
    # independent integral of Eq. 5 along the Kossel circle, slab projection t / cos(phi)
    g = sim.ub @ HKL
    circle = kossel_circle(g, sim.wavelength)
    chi = np.linspace(-np.pi, np.pi, 2_000_001)
    k_in = circle.k_in(chi[:, None])[:, 0]
    k_out = circle.k_out(chi[:, None])[:, 0]
    px, py = direction_to_angles(k_in)
    inside = sim.pupil.contains(px, py)
    t_a = 4e4  # 4 um in A
    proj = t_a * np.linalg.norm(k_in, axis=-1) / k_in[:, 2]
    theta = circle.theta[0]
    dchi = chi[1] - chi[0]
    f2 = sim.sf.lookup([HKL.astype(int)])[0]
    expected = np.sum(
        (sim.c * polarisation_factor(k_out) * lorentz_factor(theta) * f2 * proj
         * np.cos(theta) * dchi)[inside]
    )  # fmt: skip
    assert row["counts"] == pytest.approx(expected, rel=1e-3)
    assert row["projection_um"] == pytest.approx(4.0, rel=2e-3)
    assert row["lorentz"] == pytest.approx(1 / np.sin(2 * theta), rel=1e-6)


def test_absorption_reduces_the_streak_by_eq11() -> None:
    mu = 100.0
    free, _ = _bragg_sim()
    absorbed, _ = _bragg_sim(mu_per_mm=mu)
    c_free = _row(free.still(0.0)[1])
    c_abs = _row(absorbed.still(0.0)[1])
    # slab of t = 4 um, incident ~ normal, exit through the back face at 2 theta
    t = 0.004
    c = np.cos(np.radians(c_free["two_theta_deg"]))
    k = mu * (1 - 1 / c)
    transmission = np.exp(-mu * t / c) * (1 - np.exp(-k * t)) / (k * t)
    assert c_abs["counts"] / c_free["counts"] == pytest.approx(transmission, rel=5e-3)
    assert transmission < 0.7


def test_line_foci_of_an_mll_pair() -> None:
    """G at Bragg for the chief ray with azimuth 45 deg: the deficiency line crosses both
    line foci at (0, 0) at 45 deg; each gives N_l kin P L |F|^2 t / (Delta phi sin 45)."""
    ex, ey = 0.8, 0.6
    sim, k_out = _bragg_sim(psi=np.pi / 4, efficiency=(ex, ey))
    full, _ = _bragg_sim(psi=np.pi / 4)
    image, table = sim.still(0.0)
    focus = _row(table)
    assert focus["counts"] == pytest.approx(ex * ey * _row(full.still(0.0)[1])["counts"])
    pol = polarisation_factor(k_out)
    lor = 1 / np.sin(np.arccos(k_out[2] * sim.wavelength))
    f2 = sim.sf.lookup([HKL.astype(int)])[0]
    width = 2 * np.arcsin(0.02)
    n = sim.config.lens.photons_per_frame
    for component, weight in ((1, ex * (1 - ey)), (2, (1 - ex) * ey)):
        row = _row(table, component=component)
        expect = n * weight * sim.kinematic * pol * lor * f2 * 4e4 / (width * np.sin(np.pi / 4))
        assert row["counts"] == pytest.approx(expect, rel=1e-6)
        assert abs(row["phi_x"]) < 1e-9 and abs(row["phi_y"]) < 1e-9
        assert row["projection_um"] == pytest.approx(4.0)
        hit = sim.detector.to_pixels(sim.detector.hit(np.zeros(3), k_out, 0.94))
        assert abs(row["fs"] - hit[0]) < 0.2 and abs(row["ss"] - hit[1]) < 0.2
    assert image.sum() == pytest.approx(table["counts"].sum())
