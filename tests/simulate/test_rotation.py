"""Rotation series: Ewald crossings, Lorentz factor, partials, gaps, aperture, output files.

Expectations are computed independently in the tests: crossings by direct evaluation of
``Crystal.excitation_error`` of the rotated crystal, derivatives by finite differences,
rocking-curve integrals by numerical quadrature of the excitation error, overlaps by
Monte Carlo.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.signal import fftconvolve
from scipy.spatial.transform import Rotation

from crystalscope.dataset import Dataset
from crystalscope.errors import ConfigError, CrystalscopeError, FormatError
from crystalscope.io.smv import read_smv
from crystalscope.io.tiff import read_tiff
from crystalscope.model.crystal import Crystal
from crystalscope.model.orientation import random_rotation
from crystalscope.simulate.config import BeamEffects, CrystalConfig, RotationConfig
from crystalscope.simulate.rotation import (
    RotationScan,
    crossing_table,
    ewald_crossings,
    frame_partials,
    profile_cdf,
    unit_axis,
)
from crystalscope.simulate.rotation_output import read_rotation_truth, simulate_rotation
from crystalscope.simulate.rotation_sim import (
    DEFOCUS_BLUR_PX,
    DEFOCUS_FILL,
    RotationSimulation,
    aperture_scales,
    crystal_position_a,
    disc_overlap_area,
    offset_basis,
)

ELECTRON_LAMBDA = 0.025079  # 200 kV, A
XRAY_LAMBDA = 1.0  # 12.4 keV, A


def _crystal(seed: int = 1) -> Crystal:
    return Crystal.from_parameters(38.0, 45.0, 52.0, 90.0, 103.0, 90.0, U=random_rotation(seed))


def _hkl(crystal: Crystal, d_min: float = 3.0) -> np.ndarray:
    return crystal.enumerate_reflections(d_min)[["h", "k", "l"]].to_numpy()


def _scan(**changes: object) -> RotationScan:
    data: dict[str, object] = {"n_frames": 30, "oscillation_deg": 0.5, "axis": (1.0, 0.2, 0.1)}
    data.update(changes)
    return RotationScan.from_config(RotationConfig.model_validate(data))


def _s_at(crystal: Crystal, axis: np.ndarray, hkl: np.ndarray, phi_deg: float, lam: float) -> float:
    return float(crystal.rotated(axis, phi_deg).excitation_error(hkl, lam))


# ----------------------------------------------------------------------- crossings


@pytest.mark.parametrize(
    ("lam", "axis"),
    [
        (ELECTRON_LAMBDA, (1.0, 0.0, 0.0)),
        (ELECTRON_LAMBDA, (0.3, -1.0, 0.45)),
        (XRAY_LAMBDA, (0.0, 1.0, 0.0)),
        (XRAY_LAMBDA, (0.2, 0.5, -1.0)),
    ],
)
def test_crossings_put_reflections_on_the_ewald_sphere(lam: float, axis: tuple) -> None:
    crystal = _crystal(2)
    e = unit_axis(axis)
    scan = _scan(axis=axis, n_frames=40, start_deg=-5.0)
    table = crossing_table(
        _hkl(crystal), crystal.UB, scan, lam, "xray", CrystalConfig(), BeamEffects()
    )
    assert len(table) > 50
    step = 1e-4  # degrees
    for row in table.sample(120, random_state=0).itertuples():
        hkl = np.array([row.h, row.k, row.l])
        assert abs(_s_at(crystal, e, hkl, row.phi0_deg, lam)) < 1e-9
        before = _s_at(crystal, e, hkl, row.phi0_deg - step, lam)
        after = _s_at(crystal, e, hkl, row.phi0_deg + step, lam)
        assert before * after < 0  # the excitation error changes sign at phi0
        assert np.sign(after) == np.sign(row.ds_dphi)


def test_all_crossings_are_found_by_a_brute_force_scan() -> None:
    crystal = _crystal(3)
    e = unit_axis((0.4, 1.0, -0.2))
    hkl = _hkl(crystal, 4.0)
    phi, crosses = ewald_crossings(hkl @ crystal.UB.T, e, XRAY_LAMBDA)
    # independent: excitation errors of the rotated crystal on a 0.25 degree grid
    grid = np.arange(0.0, 360.0, 0.25)
    s = np.stack([crystal.rotated(e, p).excitation_error(hkl, XRAY_LAMBDA) for p in grid])
    changes = np.sign(s) != np.sign(np.roll(s, -1, axis=0))  # (grid, reflection)
    np.testing.assert_array_equal(changes.sum(axis=0), 2 * crosses[:, 0])
    step, refl = np.nonzero(changes)
    mid = np.radians(grid[step] + 0.125)
    dist = np.abs((phi[refl] - mid[:, None] + math.pi) % (2 * math.pi) - math.pi).min(axis=1)
    assert np.all(dist <= math.radians(0.125) + 1e-12)
    assert crosses[:, 0].sum() > 500


def test_lorentz_factor_matches_numerical_derivative() -> None:
    crystal = _crystal(4)
    for lam, axis in ((ELECTRON_LAMBDA, (1.0, 0.1, 0.0)), (XRAY_LAMBDA, (0.0, 0.6, 1.0))):
        e = unit_axis(axis)
        table = crossing_table(
            _hkl(crystal), crystal.UB, _scan(axis=axis), lam, "xray", CrystalConfig(), BeamEffects()
        )
        h = 1e-3  # degrees
        for row in table.sample(60, random_state=1).itertuples():
            hkl = np.array([row.h, row.k, row.l])
            plus = _s_at(crystal, e, hkl, row.phi0_deg + h, lam)
            minus = _s_at(crystal, e, hkl, row.phi0_deg - h, lam)
            slope = (plus - minus) / (2 * math.radians(h))
            assert row.ds_dphi == pytest.approx(slope, rel=1e-5, abs=1e-12)
            assert row.lorentz == pytest.approx(1.0 / abs(slope), rel=1e-5)


def test_zeta_is_dials_definition() -> None:
    crystal = _crystal(5)
    e = unit_axis((1.0, 0.0, 0.0))
    table = crossing_table(
        _hkl(crystal),
        crystal.UB,
        _scan(axis=(1, 0, 0)),
        XRAY_LAMBDA,
        "xray",
        CrystalConfig(),
        BeamEffects(),
    )
    q = table[["qx", "qy", "qz"]].to_numpy()
    s0 = np.array([0.0, 0.0, 1.0 / XRAY_LAMBDA])
    s1 = q + s0
    cross = np.cross(s1, s0)
    zeta = cross @ e / np.linalg.norm(cross, axis=1)
    np.testing.assert_allclose(table["zeta"], zeta, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------- rocking curves


def _inside(table: pd.DataFrame, scan: RotationScan) -> pd.DataFrame:
    """Simulated crossings whose whole rocking window lies inside the series."""
    lo = table["phi0_deg"] - table["window_deg"]
    hi = table["phi0_deg"] + table["window_deg"]
    keep = table["simulated"] & (lo > scan.phi_start_deg[0]) & (hi < scan.phi_end_deg[-1])
    return table[keep]


def _gauss_integral(
    crystal: Crystal, e: np.ndarray, row: object, lo: float, hi: float, lam: float, t: float
) -> float:
    """Numerical integral over phi (rad) of the Gaussian profile at the exact s(phi)."""
    sigma = 1.0 / (t * math.sqrt(2 * math.pi))
    phis = np.linspace(lo, hi, 801)
    hkl = np.array([row.h, row.k, row.l])  # type: ignore[attr-defined]
    s = np.array([_s_at(crystal, e, hkl, p, lam) for p in phis])
    return float(np.trapezoid(np.exp(-(s**2) / (2 * sigma**2)), np.radians(phis)))


def test_partials_integrate_the_rocking_curve_of_the_exact_excitation_error() -> None:
    crystal = _crystal(6)
    e = unit_axis((1.0, 0.2, 0.1))
    t = 400.0
    cfg = CrystalConfig(thickness_a=t)
    scan = _scan(oscillation_deg=0.2, n_frames=60)
    table = crossing_table(
        _hkl(crystal), crystal.UB, scan, ELECTRON_LAMBDA, "electron", cfg, BeamEffects()
    )
    parts = frame_partials(table, scan, t, "gaussian", np.ones(len(table)), np.ones(60))
    inside = _inside(table, scan)
    for idx, row in inside.sample(12, random_state=2).iterrows():
        mine = parts[parts["crossing"] == idx]
        assert mine["fraction"].sum() == pytest.approx(1.0, abs=1e-9)
        best = mine.loc[mine["fraction"].idxmax()]
        j = int(best["frame"])
        lo, hi = scan.phi_start_deg[j], scan.phi_end_deg[j]
        numeric = _gauss_integral(crystal, e, row, lo, hi, ELECTRON_LAMBDA, t)
        # fraction of the whole curve = integral / (L / t)
        assert best["fraction"] == pytest.approx(numeric * t / row["lorentz"], rel=2e-3)


def test_gaps_lose_exactly_the_rocking_curve_inside_them() -> None:
    crystal = _crystal(7)
    t = 300.0
    cfg = CrystalConfig(thickness_a=t)
    scan = _scan(
        n_frames=60, oscillation_deg=0.3, dead_time_deg=0.05, defocus_every=5, defocus_cost_deg=0.4
    )
    table = crossing_table(
        _hkl(crystal), crystal.UB, scan, ELECTRON_LAMBDA, "electron", cfg, BeamEffects()
    )
    parts = frame_partials(table, scan, t, "gaussian", np.ones(len(table)), np.ones(60))
    assert not scan.defocused[parts["frame"]].any()
    start, end = scan.phi_start_deg, scan.phi_end_deg
    # lost: dead time after every frame, defocused exposures and the defocus cost
    lost_ranges = [(end[j], start[j + 1]) for j in range(59)]
    lost_ranges += [(start[j], end[j]) for j in np.flatnonzero(scan.defocused)]
    sigma0 = 1.0 / (t * math.sqrt(2 * math.pi))
    inside = _inside(table, scan)
    sums = parts.groupby("crossing")["fraction"].sum()
    checked = 0
    for idx, row in inside.iterrows():
        sig_deg = math.degrees(sigma0 / abs(row["ds_dphi"]))
        lost = 0.0
        for a, b in lost_ranges:
            za, zb = (a - row["phi0_deg"]) / sig_deg, (b - row["phi0_deg"]) / sig_deg
            lost += 0.5 * (math.erf(zb / math.sqrt(2)) - math.erf(za / math.sqrt(2)))
        assert sums.get(idx, 0.0) == pytest.approx(1.0 - lost, abs=1e-9)
        checked += lost > 0.05
    assert checked > 10  # many reflections lose a real part of their curve


def test_shape_profile_integral_is_that_of_sinc_squared() -> None:
    t = 500.0
    s = np.linspace(-0.02, 0.02, 4001)
    cdf = profile_cdf(s, 0.0, t, "shape")
    numeric = np.gradient(cdf, s)
    np.testing.assert_allclose(numeric[5:-5], np.sinc(t * s[5:-5]) ** 2, atol=2e-4)
    assert profile_cdf(np.array([1e3]), 0.0, t, "shape")[0] == pytest.approx(1 / t, rel=1e-3)
    assert profile_cdf(np.array([-1e3]), 0.0, t, "shape")[0] == pytest.approx(0, abs=1e-6)
    # broadened: its derivative is the sinc^2 convolved with the Gaussian (numerically)
    sigma_b = 4e-4
    cdf_b = profile_cdf(s, sigma_b, t, "shape")
    grid = np.linspace(-0.05, 0.05, 20001)
    kernel = np.exp(-(grid**2) / (2 * sigma_b**2)) / (sigma_b * math.sqrt(2 * math.pi))
    conv = fftconvolve(np.sinc(t * grid) ** 2, kernel, mode="same") * (grid[1] - grid[0])
    expected = np.interp(s, grid, conv)
    np.testing.assert_allclose(np.gradient(cdf_b, s)[5:-5], expected[5:-5], atol=2e-4)


def test_gaussian_profile_integrates_to_one_over_thickness() -> None:
    t = 800.0
    values = profile_cdf(np.array([-1.0, 0.0, 1.0]), np.array([0.0, 3e-4, 1e-3]), t, "gaussian")
    np.testing.assert_allclose(values, [0.0, 0.5 / t, 1.0 / t], atol=1e-15)


# ----------------------------------------------------------------------- frame timing


def test_frame_angles_dead_time_and_defocus_cost() -> None:
    scan = _scan(
        n_frames=7,
        start_deg=10.0,
        oscillation_deg=0.5,
        dead_time_deg=0.1,
        defocus_every=3,
        defocus_cost_deg=2.0,
    )
    np.testing.assert_array_equal(scan.defocused, [0, 0, 1, 0, 0, 1, 0])
    expected = [10.0, 10.6, 11.2, 13.8, 14.4, 15.0, 17.6]
    np.testing.assert_allclose(scan.phi_start_deg, expected)
    np.testing.assert_allclose(scan.phi_end_deg - scan.phi_start_deg, 0.5)
    assert len(scan.exposed_intervals_deg()) == 5


# ----------------------------------------------------------------------- aperture


@pytest.mark.parametrize(
    ("d", "r1", "r2"),
    [
        (0.0, 1.0, 2.0),
        (1.5, 1.0, 2.0),
        (2.5, 1.0, 2.0),
        (0.7, 1.0, 1.0),
        (3.5, 1.0, 2.0),
        (1.2, 2.0, 0.5),
    ],
)
def test_disc_overlap_against_monte_carlo(d: float, r1: float, r2: float) -> None:
    rng = np.random.default_rng(0)
    n = 400_000
    pts = rng.uniform(-r1, r1, size=(n, 2))
    in1 = np.hypot(pts[:, 0], pts[:, 1]) <= r1
    in2 = np.hypot(pts[:, 0] - d, pts[:, 1]) <= r2
    frac = np.mean(in1 & in2)
    box = (2 * r1) ** 2
    err = box * math.sqrt(frac * (1 - frac) / n) + 1e-12
    assert float(disc_overlap_area(d, r1, r2)) == pytest.approx(box * frac, abs=4 * err)


def test_aperture_scale_follows_the_crystal_through_the_aperture() -> None:
    cfg = RotationConfig(
        n_frames=12,
        oscillation_deg=5.0,
        start_deg=-30.0,
        axis=(0.0, 1.0, 0.0),
        crystal_offset_a=(2000.0, 1500.0),
        aperture_diameter_a=5000.0,
        crystal={"lateral_size_a": 2000.0},
    )
    scan = RotationScan.from_config(cfg)
    scales = aperture_scales(cfg, scan)
    rng = np.random.default_rng(1)
    for j in (0, 5, 11):
        # Monte Carlo over the crystal disc and over the exposure
        phi = rng.uniform(scan.phi_start_deg[j], scan.phi_end_deg[j], 200_000)
        pos = crystal_position_a((2000.0, 1500.0), (0.0, 1.0, 0.0), phi)
        rad = 1000.0 * np.sqrt(rng.uniform(0, 1, phi.size))
        ang = rng.uniform(0, 2 * math.pi, phi.size)
        x = pos[:, 0] + rad * np.cos(ang)
        y = pos[:, 1] + rad * np.sin(ang)
        mc = np.mean(np.hypot(x, y) <= 2500.0)
        assert scales[j] == pytest.approx(mc, abs=4 * math.sqrt(mc * (1 - mc) / phi.size) + 1e-9)
    assert scales.max() - scales.min() > 0.2  # it drifts out of the aperture


def test_offset_basis_and_positions() -> None:
    u, w = offset_basis((1.0, 0.0, 0.0))
    np.testing.assert_allclose(u, [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(w, [0, 0, 1], atol=1e-15)
    # a right-handed quarter turn about x takes y to z
    pos = crystal_position_a((100.0, 0.0), (1.0, 0.0, 0.0), 90.0)
    np.testing.assert_allclose(pos, [0.0, 0.0, 100.0], atol=1e-9)
    u, w = offset_basis((0.0, 0.0, 2.0))  # axis along the beam
    assert abs(u @ w) < 1e-12 and abs(u[2]) < 1e-12 and abs(w[2]) < 1e-12


def test_tables_are_sorted_and_typed() -> None:
    crystal = _crystal(8)
    table = crossing_table(
        _hkl(crystal),
        crystal.UB,
        _scan(),
        ELECTRON_LAMBDA,
        "electron",
        CrystalConfig(),
        BeamEffects(),
    )
    assert table["phi0_deg"].is_monotonic_increasing
    assert table["h"].dtype == np.int32
    assert isinstance(table, pd.DataFrame)


# ----------------------------------------------------------------------- whole series

U_START = Rotation.from_euler("zyx", [20.0, -35.0, 50.0], degrees=True).as_matrix()


def _config(**changes: object) -> RotationConfig:
    data: dict[str, object] = {
        "n_frames": 12,
        "start_deg": -3.0,
        "oscillation_deg": 0.4,
        "axis": (0.9, 0.3, 0.05),
        "orientation_u": tuple(U_START.ravel()),
        "seed": 5,
        "source": {"structure": "builtin:lysozyme-like", "d_min": 3.0},
        "crystal": {"thickness_a": 600.0, "lateral_size_a": 4000.0},
        "detector": {"preset": "timepix-quad", "distance_mm": 700.0},
    }
    for key, value in changes.items():
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})  # type: ignore[assignment]
        node[last] = value  # type: ignore[index]
    return RotationConfig.model_validate(data)


GAPPY = {
    "dead_time_deg": 0.05,
    "defocus_every": 4,
    "defocus_cost_deg": 0.5,
    "aperture_diameter_a": 7000.0,
    "crystal_offset_a": (1800.0, 900.0),
    "beam_effects.ellipticity": 0.03,
}


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RotationConfig]:
    out = tmp_path_factory.mktemp("rotation")
    cfg = _config(**GAPPY)
    simulate_rotation(cfg, out, progress=False)
    return out, cfg


def test_every_reflection_appears_where_its_excitation_error_changes_sign() -> None:
    cfg = _config(**GAPPY)
    sim = RotationSimulation.build(cfg)
    hkl = sim.sf.table[["h", "k", "l"]].to_numpy()
    lam = sim.beam.wavelength
    e = unit_axis(cfg.axis)
    frames = sim.frames
    seen = set(zip(sim.partials["crossing"], sim.partials["frame"], strict=True))
    n_checked = 0
    for j in np.flatnonzero(~frames["defocused"].to_numpy()):
        a, b = frames["phi_start_deg"].iat[j], frames["phi_end_deg"].iat[j]
        # independent: excitation errors of the rotated crystal at the frame's edges
        s_a = Crystal(sim.sf.cell, "P 1", U_START).rotated(e, a).excitation_error(hkl, lam)
        s_b = Crystal(sim.sf.cell, "P 1", U_START).rotated(e, b).excitation_error(hkl, lam)
        crossing = np.flatnonzero(np.sign(s_a) != np.sign(s_b))
        listed = sim.crossings[(sim.crossings["phi0_deg"] >= a) & (sim.crossings["phi0_deg"] < b)]
        assert sorted(listed["ref"]) == sorted(crossing)
        for idx, row in listed.iterrows():
            if row["simulated"]:
                assert (idx, j) in seen  # recorded on the frame where s changes sign
                n_checked += 1
    assert n_checked > 100


def test_partials_sum_to_full_intensity_without_gaps() -> None:
    for beam in ({"voltage_kv": 200.0}, {"energy_kev": 12.4}):
        cfg = _config(
            beam=beam,
            n_frames=40,
            oscillation_deg=0.25,
            **{"detector.distance_mm": 700.0 if "voltage_kv" in beam else 60.0},
        )
        sim = RotationSimulation.build(cfg)
        x = sim.crossings
        inside = _inside(x, sim.scan)
        assert len(inside) > 50
        np.testing.assert_allclose(inside["recorded_counts"], inside["full_counts"], rtol=1e-9)
        # the full intensity, independently: N per radian * scale * F2 * P * L / t
        lam, t = sim.beam.wavelength, cfg.crystal.thickness_a
        volume = sim.sf.cell.volume
        n_rad = cfg.beam_effects.dose_e_per_a2 * math.pi * 2000.0**2 / math.radians(0.25)
        if sim.beam.radiation == "electron":
            gamma = 1.0 + 200e3 / 510998.95
            scale = (lam * gamma * t / volume) ** 2
            pol = np.ones(len(inside))
        else:
            scale = (2.8179403e-5 * lam * t / volume) ** 2
            two_theta = 2.0 * np.arcsin(lam / (2.0 * inside["d"].to_numpy()))
            pol = (1.0 + np.cos(two_theta) ** 2) / 2.0
        e = unit_axis(cfg.axis)
        base = Crystal(sim.sf.cell, "P 1", U_START)
        for n, (_, row) in enumerate(inside.head(15).iterrows()):
            hkl = np.array([row["h"], row["k"], row["l"]])
            h = 1e-3
            ds = base.rotated(e, row["phi0_deg"] + h).excitation_error(hkl, lam) - base.rotated(
                e, row["phi0_deg"] - h
            ).excitation_error(hkl, lam)
            lorentz = 2 * math.radians(h) / abs(float(ds))
            expected = n_rad * scale * row["F2"] * pol[n] * lorentz / t
            assert row["full_counts"] == pytest.approx(expected, rel=1e-5)


def test_gaps_and_aperture_in_the_recorded_counts() -> None:
    sim = RotationSimulation.build(_config(**GAPPY))
    parts = sim.partials
    assert not sim.frames["defocused"].to_numpy()[parts["frame"]].any()
    scale = sim.frames["aperture_scale"].to_numpy()[parts["frame"]]
    np.testing.assert_allclose(
        parts["counts"], parts["full_counts"] * parts["fraction"] * scale, rtol=1e-12
    )
    x = sim.crossings
    inside = _inside(x, sim.scan)
    assert (inside["recorded_fraction"] < 1 - 1e-3).sum() > 20  # gaps lose intensity
    assert (inside["recorded_fraction"] <= 1 + 1e-12).all()
    # electrons on the crystal follow the aperture overlap
    area = math.pi * 2000.0**2
    np.testing.assert_allclose(sim.frames["n_on_crystal"], area * sim.frames["aperture_scale"])
    assert sim.frames["aperture_scale"].min() < 0.999


def test_defocused_frames_show_the_crystal() -> None:
    cfg = _config(**GAPPY)
    sim = RotationSimulation.build(cfg)
    defocused = sim.frames["defocused"].to_numpy()
    np.testing.assert_array_equal(np.flatnonzero(defocused), [3, 7, 11])
    j = 7
    image = sim.frame(j, expected_only=True).astype(float)
    n_x = sim.frames["n_on_crystal"].iat[j]
    assert image.sum() == pytest.approx(n_x, rel=0.01)  # the electrons on the crystal
    # the centroid sits at the crystal's projected position (independent rotation)
    mid = 0.5 * (sim.frames["phi_start_deg"].iat[j] + sim.frames["phi_end_deg"].iat[j])
    e = unit_axis(cfg.axis)
    w = np.array([0.0, 0.0, 1.0]) - e[2] * e
    w /= np.linalg.norm(w)
    r0 = 1800.0 * np.cross(w, e) + 900.0 * w
    pos = Rotation.from_rotvec(e * math.radians(mid)).apply(r0)
    px_per_a = DEFOCUS_FILL * 512 / 7000.0
    # Monte Carlo: centroid of the part of the crystal's disc inside the aperture
    rng = np.random.default_rng(3)
    rad = 2000.0 * np.sqrt(rng.uniform(0, 1, 400_000))
    ang = rng.uniform(0, 2 * math.pi, rad.size)
    pts = pos[:2] + np.column_stack([rad * np.cos(ang), rad * np.sin(ang)])
    pts = pts[np.hypot(pts[:, 0], pts[:, 1]) <= 3500.0]
    expected = np.array([240.0, 240.0]) + pts.mean(axis=0) * px_per_a  # fs = +x, ss = +y
    ss, fs = np.indices(image.shape)
    centroid = np.array([(image * fs).sum(), (image * ss).sum()]) / image.sum()
    np.testing.assert_allclose(centroid, expected, atol=0.5)
    assert DEFOCUS_BLUR_PX > 0
    assert len(pts) / rad.size == pytest.approx(sim.frames["aperture_scale"].iat[j], abs=5e-3)
    # a diffraction frame has its zero-order beam at the centre instead
    diffraction = sim.frame(6, expected_only=True)
    assert np.unravel_index(np.argmax(diffraction), diffraction.shape) == (240, 240)


def test_written_files_read_back(written: tuple[Path, RotationConfig]) -> None:
    out, cfg = written
    log = yaml.safe_load((out / "rotation.yaml").read_text())
    assert log["n_frames"] == 12 and log["defocus_frames"] == [3, 7, 11]
    assert log["rotation_axis"] == pytest.approx(list(unit_axis(cfg.axis)))
    assert log["oscillation_deg"] == 0.4 and log["dead_time_deg"] == 0.05
    ds = Dataset.open(out / "rotation.h5")
    shots = ds.shots
    assert len(ds) == 12
    np.testing.assert_allclose(shots["phi_start_deg"], [f["phi_start_deg"] for f in log["frames"]])
    np.testing.assert_allclose(
        shots["aperture_scale"], [f["aperture_scale"] for f in log["frames"]]
    )
    np.testing.assert_array_equal(shots["defocused"], [f["defocused"] for f in log["frames"]])
    for j in (0, 3, 10):
        image = read_smv(out / log["frames"][j]["file"])
        assert image.metadata["phi_start_deg"] == pytest.approx(shots["phi_start_deg"].iat[j])
        assert image.metadata["phi_range_deg"] == pytest.approx(0.4)
        assert image.metadata["wavelength_a"] == pytest.approx(log["wavelength_a"])
        assert image.metadata["beam_center_px"] == pytest.approx((240.0, 240.0))
        assert image.metadata["header"]["DEFOCUSED"] == str(int(j == 3))
        np.testing.assert_array_equal(image.data, ds.data[j].compute())
    reflections, crossings = read_rotation_truth(out / "truth.h5")
    assert (reflections["counts"] > 0).all()
    assert set(reflections["frame"]).isdisjoint({3, 7, 11})
    sums = reflections.groupby("crossing")["counts"].sum()
    np.testing.assert_allclose(crossings.loc[sums.index, "recorded_counts"], sums, rtol=1e-12)
    # the crystal table holds UB at the middle of each exposure
    ub = ds.crystals[[f"{v}star_{c}" for v in "abc" for c in "xyz"]].to_numpy()
    e = unit_axis(cfg.axis)
    base = Crystal(Crystal.from_parameters(*ds.meta["sample"]["cell"]).cell, "P 1", U_START)
    for j in (0, 5, 11):
        mid = 0.5 * (shots["phi_start_deg"].iat[j] + shots["phi_end_deg"].iat[j])
        expected = Rotation.from_rotvec(e * math.radians(mid)).as_matrix() @ base.UB
        np.testing.assert_allclose(ub[j].reshape(3, 3).T, expected, atol=1e-12)
        assert ds.crystals["phi_deg"].iat[j] == pytest.approx(mid)


def test_outputs_are_not_overwritten_unless_asked(tmp_path: Path) -> None:
    cfg = _config(n_frames=3, **{"source.structure": "builtin:silicon", "source.d_min": 1.0})
    simulate_rotation(cfg, tmp_path, progress=False)
    with pytest.raises(CrystalscopeError, match="exists"):
        simulate_rotation(cfg, tmp_path, progress=False)
    cfg2 = _config(n_frames=2, **{"source.structure": "builtin:silicon", "source.d_min": 1.0})
    result = simulate_rotation(cfg2, tmp_path, progress=False, overwrite=True, frame_format="tiff")
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["00001.tiff", "00002.tiff"]
    image = read_tiff(result.frame_files[1])
    assert image.metadata["phi_start_deg"] == pytest.approx(-2.6)
    assert Dataset.open(result.dataset).data.shape == (2, 512, 512)


def test_deterministic_with_the_seed() -> None:
    cfg = _config(n_frames=2, orientation_u=None)
    a, b = RotationSimulation.build(cfg), RotationSimulation.build(cfg)
    np.testing.assert_array_equal(a.crystal.U, b.crystal.U)
    np.testing.assert_array_equal(a.frame(1), b.frame(1))
    c = RotationSimulation.build(_config(n_frames=2, orientation_u=None, seed=6))
    assert not np.allclose(a.crystal.U, c.crystal.U)


def test_spot_positions_follow_the_crossing_and_the_distortion() -> None:
    plain = RotationSimulation.build(_config())
    parts = plain.partials[plain.partials["panel"] == 0]
    assert len(parts) > 20
    q = plain.crossings.loc[parts["crossing"], ["qx", "qy", "qz"]].to_numpy()
    lam = plain.beam.wavelength
    ray = lam * q + np.array([0.0, 0.0, 1.0])
    x_mm, y_mm = 700.0 * ray[:, 0] / ray[:, 2], 700.0 * ray[:, 1] / ray[:, 2]
    # panel 0 of the quad: fs along +x, ss along +y, beam centre (240, 240)
    np.testing.assert_allclose(parts["fs"], 240.0 + x_mm / 0.055, atol=1e-6)
    np.testing.assert_allclose(parts["ss"], 240.0 + y_mm / 0.055, atol=1e-6)
    bent = RotationSimulation.build(
        _config(**{"beam_effects.ellipticity": 0.05, "beam_effects.ellipticity_angle_deg": 30.0})
    )
    both = plain.partials.merge(bent.partials, on=["crossing", "frame"], suffixes=("", "_d"))
    both = both[(both["panel"] == 0) & (both["panel_d"] == 0)]
    ratio, angle = 1.05, math.radians(30.0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    dist = rot.T @ np.diag([ratio**0.5, ratio**-0.5]) @ rot
    offset = np.column_stack([both["fs"] - 240.0, both["ss"] - 240.0]) @ dist.T
    np.testing.assert_allclose(both["fs_d"], 240.0 + offset[:, 0], atol=1e-6)
    np.testing.assert_allclose(both["ss_d"], 240.0 + offset[:, 1], atol=1e-6)


def test_shape_profile_with_mosaicity_records_nearly_all() -> None:
    cfg = _config(
        n_frames=30,
        oscillation_deg=1.0,
        **{"source.d_min": 4.0, "crystal.profile": "shape", "crystal.mosaicity_deg": 0.05},
    )
    sim = RotationSimulation.build(cfg)
    x = sim.crossings
    inside = _inside(x, sim.scan)
    assert len(inside) > 20
    assert inside["recorded_fraction"].min() > 1 - 6e-3  # sinc^2 tails beyond the window
    assert inside["recorded_fraction"].max() < 1 + 1e-9


def test_configuration_errors() -> None:
    with pytest.raises(ConfigError, match="orientation_u"):
        RotationSimulation.build(_config(orientation_u=(1, 0, 0, 0, 1, 0, 0, 0, 2)))
    with pytest.raises(ConfigError, match="orientation_u"):
        RotationSimulation.build(_config(**{"crystal.orientations": "u.txt"}))
    with pytest.raises(ConfigError, match="axis"):
        unit_axis((0.0, 0.0, 0.0))
    with pytest.raises(ConfigError, match="frame format"):
        simulate_rotation(_config(), Path("unused"), frame_format="cbf")  # type: ignore[arg-type]


def test_truth_reader_errors(tmp_path: Path) -> None:
    import h5py

    with pytest.raises(FormatError, match="not found"):
        read_rotation_truth(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not HDF5")
    with pytest.raises(FormatError, match="HDF5"):
        read_rotation_truth(tmp_path / "text.h5")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_group("truth")
    with pytest.raises(FormatError) as info:
        read_rotation_truth(tmp_path / "empty.h5")
    assert info.value.field == "truth/reflections"
