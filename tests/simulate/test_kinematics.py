"""Still-pattern kinematics: positions, Friedel symmetry, zone axes, curvature, scale.

Every expectation is computed here from first principles (wavelengths from
scipy.constants, the reciprocal basis from the cell parameters, lab positions from the
panels' corner and fs/ss vectors, the Ewald construction and Bragg's law written out),
never with the functions under test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import gemmi
import numpy as np
import pandas as pd
import pytest
from scipy import constants as const
from scipy.integrate import quad
from scipy.spatial.transform import Rotation

from crystalscope.errors import DataError
from crystalscope.io.crystfel_geom import read_geom
from crystalscope.model.beam import Beam
from crystalscope.model.crystal import Crystal
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.panel import Panel
from crystalscope.model.projection import project_rays
from crystalscope.simulate.config import BeamEffects, CrystalConfig
from crystalscope.simulate.kinematics import (
    PREDICTION_COLUMNS,
    centre_px,
    partiality,
    predict_still,
    reflection_scale,
)
from crystalscope.simulate.structure_factors import StructureFactors

Cell = tuple[float, float, float, float, float, float]
Radiation = Literal["electron", "xray"]

KV = 200.0
KEV = 12.0
TRICLINIC: Cell = (40.0, 50.0, 60.0, 80.0, 95.0, 105.0)
TETRAGONAL: Cell = (50.0, 50.0, 70.0, 90.0, 90.0, 90.0)
FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))

# ------------------------------------------------------------ independent physics


def lam_electron(kv: float) -> float:
    """Relativistic de Broglie wavelength (A) written out with scipy.constants."""
    energy = const.e * kv * 1e3
    p = math.sqrt(2.0 * const.m_e * energy * (1.0 + energy / (2.0 * const.m_e * const.c**2)))
    return const.h / p * 1e10


def lam_xray(kev: float) -> float:
    return const.h * const.c / (kev * 1e3 * const.e) * 1e10


def gamma_electron(kv: float) -> float:
    return 1.0 + const.e * kv * 1e3 / (const.m_e * const.c**2)


def b_matrix(a: float, b: float, c: float, al: float, be: float, ga: float) -> np.ndarray:
    """Columns a*, b*, c*: inverse transpose of the real basis (a on x, b in the xy plane)."""
    al, be, ga = (math.radians(x) for x in (al, be, ga))
    cx = c * math.cos(be)
    cy = c * (math.cos(al) - math.cos(be) * math.cos(ga)) / math.sin(ga)
    real = np.array(
        [
            [a, b * math.cos(ga), cx],
            [0.0, b * math.sin(ga), cy],
            [0.0, 0.0, math.sqrt(c * c - cx * cx - cy * cy)],
        ]
    )
    return np.linalg.inv(real).T


def volume(cell: Cell) -> float:
    return float(abs(np.linalg.det(np.linalg.inv(b_matrix(*cell)))))


def rodrigues(axis: np.ndarray, angle: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def lab_position(
    det: Detector, panel: np.ndarray, fs_raw: np.ndarray, ss_raw: np.ndarray, shift: tuple
) -> np.ndarray:
    """Lab position (mm) of raw pixel-centre positions from corner, fs and ss vectors."""
    out = np.empty((len(panel), 3))
    for i, (pi, f, s) in enumerate(zip(panel, fs_raw, ss_raw, strict=True)):
        p = det.panels[pi]
        u, v = f - p.min_fs + 0.5, s - p.min_ss + 0.5  # CrystFEL corner convention
        xyz = np.array([p.corner_x, p.corner_y, 0.0]) + u * np.array(p.fs) + v * np.array(p.ss)
        clen = distance(det) if p.clen is None else p.clen
        out[i] = xyz * p.pixel_size_mm + [shift[0], shift[1], clen + p.coffset_mm]
    return out


def gaussian_p(s: np.ndarray, q: np.ndarray, t: float, mos_deg=0.0, div_mrad=0.0) -> np.ndarray:
    sigma0 = 1.0 / (t * math.sqrt(2 * math.pi))
    sb2 = (q * math.radians(mos_deg) / FWHM) ** 2 + (q * div_mrad * 1e-3 / FWHM) ** 2
    sig = np.sqrt(sigma0**2 + sb2)
    return sigma0 / sig * np.exp(-(s**2) / (2 * sig**2))


def distance(det: Detector) -> float:
    assert isinstance(det.clen, float)
    return det.clen


def beam_k(k: float) -> np.ndarray:
    """The incident wave vector (0, 0, k)."""
    return np.array([0.0, 0.0, k])


def hkl_of(table: pd.DataFrame) -> np.ndarray:
    return table[["h", "k", "l"]].to_numpy(dtype=float)


# ------------------------------------------------------------------ test objects


def make_sf(
    cell: Cell, d_min: float, radiation: Radiation = "electron", seed: int = 0
) -> StructureFactors:
    """A P1 structure-factor table with random amplitudes (the real class)."""
    refl = Crystal.from_parameters(*cell).enumerate_reflections(d_min)
    rng = np.random.default_rng(seed)
    f = rng.uniform(1.0, 10.0, len(refl))
    table = pd.DataFrame({"h": refl.h, "k": refl.k, "l": refl.l, "d": refl.d, "F": f, "F2": f * f})
    return StructureFactors(
        gemmi.UnitCell(*cell), gemmi.SpaceGroup("P 1"), radiation, table, d_min=d_min
    )


def crystal_with(cell: Cell, u: np.ndarray) -> Crystal:
    return Crystal.from_parameters(*cell, U=u)


def flat_detector(n: int, pixel_mm: float, distance_mm: float) -> Detector:
    return Detector.single_panel(n, n, pixel_mm, distance_mm, (n / 2 - 0.3, n / 2 + 0.2))


@pytest.fixture(scope="module")
def cspad(shared_data: Path) -> Detector:
    return read_geom(shared_data / "crystfel" / "cspad-single.geom")


def cspad_at(geom: Detector, total_mm: float) -> Detector:
    coffset = geom.panels[0].coffset_mm  # 573.224 mm in the file
    return geom.resolve(
        {"/LCLS/detectorPosition": total_mm - coffset, "/LCLS/photon_energy_eV": 1e4}
    )


def setup(
    radiation: Radiation, kind: str, cspad_geom: Detector | None
) -> tuple[Beam, Detector, float]:
    if radiation == "electron":
        beam, lam, distance = Beam.from_voltage_kv(KV), lam_electron(KV), 5000.0
        det = flat_detector(1400, 0.055, 1800.0)
    else:
        beam, lam, distance = Beam.from_energy_kev(KEV), lam_xray(KEV), 100.0
        det = flat_detector(1200, 0.1, 80.0)
    if kind == "cspad":
        assert cspad_geom is not None
        det = cspad_at(cspad_geom, distance)
    return beam, det, lam


# ------------------------------------------------------------------ positions


@pytest.mark.parametrize("radiation", ["electron", "xray"])
@pytest.mark.parametrize("kind", ["single", "cspad"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_positions_lie_on_the_diffracted_ray(
    radiation: Radiation, kind: str, seed: int, request: pytest.FixtureRequest
) -> None:
    geom = request.getfixturevalue("cspad") if kind == "cspad" else None
    beam, det, lam = setup(radiation, kind, geom)
    sf = make_sf(TRICLINIC, 2.5, radiation)
    u = Rotation.random(random_state=seed).as_matrix()
    cfg = CrystalConfig(thickness_a=400.0)
    shift = (0.31, -0.17)
    pred = predict_still(
        crystal_with(TRICLINIC, u), sf, beam, det, cfg, BeamEffects(),
        n_on_crystal=1e6, shift_mm=shift,
    )  # fmt: skip
    assert len(pred) > 20
    assert list(pred.columns) == list(PREDICTION_COLUMNS)
    k = 1.0 / lam
    q = hkl_of(pred) @ (u @ b_matrix(*TRICLINIC)).T
    ray = q + beam_k(k)
    r = lab_position(
        det, pred["panel"].to_numpy(), pred["fs"].to_numpy(), pred["ss"].to_numpy(), shift
    )
    unit_r = r / np.linalg.norm(r, axis=1)[:, None]
    unit_ray = ray / np.linalg.norm(ray, axis=1)[:, None]
    assert np.max(np.linalg.norm(unit_r - unit_ray, axis=1)) < 1e-6
    # Ewald: the scattering vector of the pixel is q projected radially onto the sphere
    q_pix = (unit_r - [0.0, 0.0, 1.0]) * k
    s_test = k - np.linalg.norm(ray, axis=1)
    assert np.max(np.abs(np.linalg.norm(q_pix + beam_k(k), axis=1) - k)) < 1e-6 * k
    assert (
        np.max(
            np.linalg.norm(
                q_pix - (ray * (k / np.linalg.norm(ray, axis=1))[:, None] - [0, 0, k]), axis=1
            )
        )
        < 1e-6 * k
    )
    np.testing.assert_allclose(pred["s"], s_test, rtol=0, atol=1e-9 * k)
    np.testing.assert_allclose(pred["d"], 1.0 / np.linalg.norm(q, axis=1), rtol=1e-9)
    two_theta = np.degrees(np.arctan2(np.hypot(r[:, 0], r[:, 1]), r[:, 2]))
    np.testing.assert_allclose(pred["two_theta_deg"], two_theta, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        pred["partiality"], gaussian_p(s_test, 1 / pred["d"].to_numpy(), 400.0), rtol=1e-9
    )


def any_profile_p(s: np.ndarray, q: np.ndarray, cfg: CrystalConfig, div_mrad: float) -> np.ndarray:
    """Gaussian profile in closed form; shape profile convolved by 80-point Gauss-Hermite."""
    t = cfg.thickness_a
    if cfg.profile == "gaussian":
        return gaussian_p(s, q, t, cfg.mosaicity_deg, div_mrad)
    sigma = q * math.hypot(math.radians(cfg.mosaicity_deg), div_mrad * 1e-3) / FWHM
    x, w = np.polynomial.hermite.hermgauss(80)
    u = math.sqrt(2.0) * sigma[:, None] * x
    return np.asarray(np.sinc(t * (s[:, None] - u)) ** 2 @ w / math.sqrt(math.pi))


@pytest.mark.parametrize("radiation", ["electron", "xray"])
@pytest.mark.parametrize(
    ("profile", "mosaicity", "divergence"),
    [("gaussian", 0.0, 0.0), ("gaussian", 0.2, 1.0), ("shape", 0.0, 0.0), ("shape", 0.1, 0.0)],
)
def test_every_excited_reflection_on_the_panel_is_predicted(
    radiation: Radiation, profile: Literal["gaussian", "shape"], mosaicity: float, divergence: float
) -> None:
    beam, det, lam = setup(radiation, "single", None)
    sf = make_sf(TRICLINIC, 2.5, radiation)
    cfg = CrystalConfig(thickness_a=400.0, profile=profile, mosaicity_deg=mosaicity)
    fx = BeamEffects(divergence_mrad=divergence)
    k, p = 1.0 / lam, det.panels[0]
    for seed in range(3):
        u = Rotation.random(random_state=10 + seed).as_matrix()
        pred = predict_still(crystal_with(TRICLINIC, u), sf, beam, det, cfg, fx, n_on_crystal=1.0)
        hkl = hkl_of(sf.table)
        ray = hkl @ (u @ b_matrix(*TRICLINIC)).T + beam_k(k)
        s = k - np.linalg.norm(ray, axis=1)
        near = np.flatnonzero(np.abs(s) < 0.05)  # p < 3e-4 beyond (t = 400 A)
        excited = near[
            any_profile_p(s[near], 1 / sf.table["d"].to_numpy()[near], cfg, divergence) >= 1e-3
        ]
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = distance(det) / (ray[:, 2] * p.pixel_size_mm)  # single panel at z = clen
        fs = ray[:, 0] * scale - p.corner_x - 0.5
        ss = ray[:, 1] * scale - p.corner_y - 0.5
        inside = (
            (ray[:, 2] > 0)
            & (fs >= -0.5)
            & (fs < p.n_fs - 0.5)
            & (ss >= -0.5)
            & (ss < p.n_ss - 0.5)
        )
        expected = {tuple(x) for x in hkl[excited[inside[excited]]].astype(int)}
        assert {tuple(x) for x in hkl_of(pred).astype(int)} == expected
        assert len(expected) > 10


@pytest.mark.parametrize("radiation", ["electron", "xray"])
@pytest.mark.parametrize("kind", ["single", "cspad"])
def test_braggs_law_for_reflections_put_exactly_on_the_sphere(
    radiation: Radiation, kind: str, request: pytest.FixtureRequest
) -> None:
    geom = request.getfixturevalue("cspad") if kind == "cspad" else None
    beam, det, lam = setup(radiation, kind, geom)
    sf = make_sf(TRICLINIC, 2.5, radiation)
    bmat = b_matrix(*TRICLINIC)
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(40):
        row = sf.table.iloc[rng.integers(len(sf.table))]
        h = np.array([row.h, row.k, row.l], dtype=float)
        u0 = Rotation.random(random_state=int(rng.integers(1 << 30))).as_matrix()
        q0 = u0 @ bmat @ h
        d = 1.0 / np.linalg.norm(q0)
        sin_theta = lam / (2.0 * d)
        phi = rng.uniform(0, 2 * math.pi)
        cos_theta = math.sqrt(1 - sin_theta**2)
        target = np.array([cos_theta * math.cos(phi), cos_theta * math.sin(phi), -sin_theta])
        start = q0 / np.linalg.norm(q0)
        axis = np.cross(start, target)
        u = rodrigues(axis, math.atan2(np.linalg.norm(axis), start @ target)) @ u0
        pred = predict_still(
            crystal_with(TRICLINIC, u), sf, beam, det, CrystalConfig(), BeamEffects(),
            n_on_crystal=1.0,
        )  # fmt: skip
        hit = pred[(pred.h == row.h) & (pred.k == row.k) & (pred.l == row.l)]
        if hit.empty:  # landed in a gap or beyond the panels
            continue
        assert abs(hit["s"].iat[0]) < 1e-10 / lam
        assert hit["partiality"].iat[0] == pytest.approx(1.0, abs=1e-12)
        r = lab_position(
            det, hit["panel"].to_numpy(), hit["fs"].to_numpy(), hit["ss"].to_numpy(), (0, 0)
        )[0]
        theta = 0.5 * math.atan2(math.hypot(r[0], r[1]), r[2])
        assert abs(2 * d * math.sin(theta) - lam) / lam < 1e-6
        checked += 1
    assert checked >= 10


# ---------------------------------------------------------------- electron patterns


def zone_axis_u(angle_deg: float, tilt_mrad: float = 0.0) -> np.ndarray:
    """c* along the beam (gemmi's frame has c* on z), turned by angle about z, then tilted."""
    u = rodrigues(np.array([0.0, 0.0, 1.0]), math.radians(angle_deg))
    if tilt_mrad:
        u = rodrigues(np.array([1.0, 0.3, 0.0]), tilt_mrad * 1e-3) @ u
    return u


def independent_centre(det: Detector, shift: tuple[float, float]) -> np.ndarray:
    """Beam centre of a single panel with fs = +x, ss = +y (pixel-centre)."""
    p = det.panels[0]
    assert p.fs == (1.0, 0.0, 0.0) and p.ss == (0.0, 1.0, 0.0)
    return np.array(
        [
            -p.corner_x - shift[0] / p.pixel_size_mm - 0.5,
            -p.corner_y - shift[1] / p.pixel_size_mm - 0.5,
        ]
    )


def friedel_pairs(pred: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    hkl = hkl_of(pred).astype(int)
    keys = {tuple(x): i for i, x in enumerate(hkl)}
    plus, minus = [], []
    for x, i in keys.items():
        j = keys.get((-x[0], -x[1], -x[2]))
        if j is not None and i < j:
            plus.append(i)
            minus.append(j)
    return pred.iloc[plus].reset_index(drop=True), pred.iloc[minus].reset_index(drop=True)


def test_friedel_mates_are_centrosymmetric_at_a_zone_axis() -> None:
    beam = Beam.from_voltage_kv(KV)
    det = flat_detector(1024, 0.055, 1200.0)
    sf = make_sf(TETRAGONAL, 2.0)
    shift = (0.4, -0.25)
    distortion = EllipticalDistortion(1.06, 25.0)
    pred = predict_still(
        crystal_with(TETRAGONAL, zone_axis_u(23.0)), sf, beam, det,
        CrystalConfig(thickness_a=300.0), BeamEffects(), n_on_crystal=1.0, shift_mm=shift,
        distortion=distortion,
    )  # fmt: skip
    centre = independent_centre(det, shift)
    assert centre_px(det, beam, shift) == pytest.approx(tuple(centre), abs=1e-9)
    a, b = friedel_pairs(pred)
    assert len(a) > 50
    mid = 0.5 * (a[["fs", "ss"]].to_numpy() + b[["fs", "ss"]].to_numpy())
    # at the zone axis q_z = 0 for both mates: exact mirror images (the distortion is linear)
    assert np.max(np.abs(mid - centre)) < 1e-8


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_friedel_mates_are_centrosymmetric_in_random_orientations(seed: int) -> None:
    """Off a zone axis the mates sit at L q_xy / (k + q_z) and -L q_xy / (k - q_z).

    Their midpoint is off the centre by ``rho |q_z| / k`` with ``|q_z| <= |q|^2 / (2k) + |s|``
    (both mates excited): at 200 kV and |q| < 0.5 1/A below 0.05 px at 300 px.
    """
    lam = lam_electron(KV)
    k = 1.0 / lam
    beam = Beam.from_voltage_kv(KV)
    det = flat_detector(1024, 0.055, 1200.0)
    sf = make_sf(TRICLINIC, 2.0)
    u = Rotation.random(random_state=seed).as_matrix()
    pred = predict_still(
        crystal_with(TRICLINIC, u), sf, beam, det, CrystalConfig(thickness_a=200.0), BeamEffects(),
        n_on_crystal=1.0, shift_mm=(0.2, 0.1),
    )  # fmt: skip
    centre = independent_centre(det, (0.2, 0.1))
    a, b = friedel_pairs(pred)
    assert len(a) >= 5
    mid = 0.5 * (a[["fs", "ss"]].to_numpy() + b[["fs", "ss"]].to_numpy())
    rho = np.linalg.norm(a[["fs", "ss"]].to_numpy() - centre, axis=1)
    q_abs = 1.0 / a["d"].to_numpy()
    s_max = np.maximum(np.abs(a["s"].to_numpy()), np.abs(b["s"].to_numpy()))
    bound = rho * (q_abs**2 / (2 * k) + s_max) / k * 1.01 + 1e-9
    off = np.linalg.norm(mid - centre, axis=1)
    assert np.all(off <= bound)
    assert off.max() < 0.05


def test_zone_axis_pattern_is_the_projected_2d_lattice() -> None:
    lam = lam_electron(KV)
    beam = Beam.from_voltage_kv(KV)
    det = flat_detector(1024, 0.055, 1200.0)
    shift = (-0.3, 0.2)
    angle = 23.0
    sf = make_sf(TETRAGONAL, 2.0)
    pred = predict_still(
        crystal_with(TETRAGONAL, zone_axis_u(angle)), sf, beam, det,
        CrystalConfig(thickness_a=300.0), BeamEffects(), n_on_crystal=1.0, shift_mm=shift,
    )  # fmt: skip
    assert (pred["l"] == 0).all()  # the l = +-1 layers are 1/70 1/A away from the flat sphere
    assert len(pred) > 200
    design = np.column_stack([np.ones(len(pred)), pred["h"], pred["k"]])
    xy = pred[["fs", "ss"]].to_numpy()
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    assert np.max(np.abs(design @ coef - xy)) < 0.1
    scale = distance(det) * lam / det.panels[0].pixel_size_mm  # px per 1/A
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    np.testing.assert_allclose(coef[1], scale / 50.0 * np.array([c, s]), atol=1e-6)
    np.testing.assert_allclose(coef[2], scale / 50.0 * np.array([-s, c]), atol=1e-6)
    np.testing.assert_allclose(coef[0], independent_centre(det, shift), atol=1e-6)


# ------------------------------------------------------------------ X-ray curvature


def test_xray_pattern_lies_on_the_curved_ewald_sphere() -> None:
    lam = lam_xray(KEV)
    k = 1.0 / lam
    beam = Beam.from_energy_kev(KEV)
    det = flat_detector(1400, 0.1, 100.0)
    t = 2000.0
    u = zone_axis_u(23.0)
    sf = make_sf(TETRAGONAL, 2.0, "xray")
    pred = predict_still(
        crystal_with(TETRAGONAL, u), sf, beam, det, CrystalConfig(thickness_a=t), BeamEffects(),
        n_on_crystal=1.0,
    )  # fmt: skip
    q = hkl_of(pred) @ (u @ b_matrix(*TETRAGONAL)).T
    s_cut = math.sqrt(2 * math.log(1e3)) / (t * math.sqrt(2 * math.pi))
    # on the sphere: |q + k0| = 1/lambda within the rel-point profile
    assert np.max(np.abs(np.linalg.norm(q + beam_k(k), axis=1) - k)) <= s_cut * (1 + 1e-9)
    # at the zone axis the sphere cuts the layers l < 0 in rings of radius sqrt(-2 k q_z - q_z^2)
    layers = sorted(set(pred["l"]))
    assert len([x for x in layers if x < 0]) >= 5 and max(layers) <= 0
    ring = np.sqrt(np.maximum(-2 * k * q[:, 2] - q[:, 2] ** 2, 0))
    q_xy = np.hypot(q[:, 0], q[:, 1])
    # |q_xy^2 - ring^2| = |2 k s'| with |s'| <= s_cut + rounding: thin rings
    assert np.max(np.abs(q_xy**2 - ring**2)) < 2.2 * k * s_cut
    assert (np.abs(q_xy[pred["l"] == 0]) < math.sqrt(2 * k * s_cut) * 1.01).all()
    # Bragg's law is non-linear: a paraxial (flat-sphere) prediction L lambda |q| fails
    centre = independent_centre(det, (0.0, 0.0))
    px = det.panels[0].pixel_size_mm
    rho = np.linalg.norm(pred[["fs", "ss"]].to_numpy() - centre, axis=1) * px
    two_theta = np.arctan2(rho, distance(det))
    q_abs = np.linalg.norm(q, axis=1)
    np.testing.assert_allclose(2 * np.sin(two_theta / 2) / lam, q_abs, atol=2 * s_cut)
    paraxial_px = np.abs(distance(det) * lam * q_abs - rho) / px
    assert paraxial_px.max() > 40.0


# -------------------------------------------------------------------- scale


def test_electron_counts_on_the_absolute_scale() -> None:
    lam, gamma = lam_electron(KV), gamma_electron(KV)
    beam = Beam.from_voltage_kv(KV)
    det = flat_detector(1024, 0.055, 1200.0)
    sf = make_sf(TRICLINIC, 2.0)
    t, n_x = 700.0, 3.7e7
    cfg = CrystalConfig(thickness_a=t, mosaicity_deg=0.05)
    fx = BeamEffects(divergence_mrad=0.4)
    u = Rotation.random(random_state=11).as_matrix()
    factor = np.linspace(0.5, 1.0, len(sf.table))
    pred = predict_still(
        crystal_with(TRICLINIC, u), sf, beam, det, cfg, fx, n_on_crystal=n_x, dose_factor=factor
    )
    v = volume(TRICLINIC)
    assert reflection_scale(beam, sf, cfg) == pytest.approx((lam * gamma * t / v) ** 2, rel=1e-9)
    q = hkl_of(pred) @ (u @ b_matrix(*TRICLINIC)).T
    s = 1 / lam - np.linalg.norm(q + beam_k(1 / lam), axis=1)
    p = gaussian_p(s, np.linalg.norm(q, axis=1), t, 0.05, 0.4)
    np.testing.assert_allclose(pred["partiality"], p, rtol=1e-9)
    row = {tuple(x): i for i, x in enumerate(hkl_of(sf.table).astype(int))}
    f = np.array([factor[row[tuple(x)]] for x in hkl_of(pred).astype(int)])
    f2 = np.array([sf.table["F2"].iat[row[tuple(x)]] for x in hkl_of(pred).astype(int)])
    np.testing.assert_allclose(pred["F2"], f2)
    expected = n_x * (lam * gamma * np.sqrt(f2) * t / v) ** 2 * p * f
    np.testing.assert_allclose(pred["counts"], expected, rtol=1e-9)


def test_xray_counts_with_thomson_scale_and_polarisation() -> None:
    lam = lam_xray(KEV)
    r_e = const.physical_constants["classical electron radius"][0] * 1e10
    beam = Beam.from_energy_kev(KEV)
    det = flat_detector(1400, 0.1, 100.0)
    sf = make_sf(TRICLINIC, 2.0, "xray")
    t, n_x = 5000.0, 1e9
    cfg = CrystalConfig(thickness_a=t, profile="shape")
    u = Rotation.random(random_state=12).as_matrix()
    pred = predict_still(
        crystal_with(TRICLINIC, u), sf, beam, det, cfg, BeamEffects(), n_on_crystal=n_x
    )
    v = volume(TRICLINIC)
    assert reflection_scale(beam, sf, cfg) == pytest.approx((r_e * lam * t / v) ** 2, rel=1e-9)
    r = lab_position(
        det, pred["panel"].to_numpy(), pred["fs"].to_numpy(), pred["ss"].to_numpy(), (0, 0)
    )
    cos2t = r[:, 2] / np.linalg.norm(r, axis=1)
    q = hkl_of(pred) @ (u @ b_matrix(*TRICLINIC)).T
    s = 1 / lam - np.linalg.norm(q + beam_k(1 / lam), axis=1)
    p = np.sinc(t * s) ** 2
    np.testing.assert_allclose(pred["partiality"], p, rtol=1e-9, atol=1e-15)
    assert (p >= 1e-3).all() and pred["two_theta_deg"].max() > 20
    expected = n_x * (r_e * lam * np.sqrt(pred["F2"]) * t / v) ** 2 * p * (1 + cos2t**2) / 2
    np.testing.assert_allclose(pred["counts"], expected, rtol=1e-9)


def _integral(cfg: CrystalConfig, fx: BeamEffects, q_abs: float) -> float:
    """integral p(s) ds on a dense grid plus the analytic sinc^2 tail beyond it."""
    t = cfg.thickness_a
    edge = 400.0 / t
    s = np.linspace(-edge, edge, 800_001)
    total = float(np.trapezoid(partiality(s, q_abs, cfg, fx), s))
    if cfg.profile == "shape":  # tail of sin^2(pi t s) / (pi t s)^2, sin^2 averaging 1/2
        total += 2 * 1.0 / (2 * math.pi**2 * t**2 * edge)
    return total


@pytest.mark.parametrize("profile", ["gaussian", "shape"])
@pytest.mark.parametrize(
    ("mosaicity", "divergence"), [(0.0, 0.0), (0.1, 0.0), (0.05, 0.8), (0.5, 2.0)]
)
def test_partiality_profiles_integrate_to_one_over_t(
    profile: str, mosaicity: float, divergence: float
) -> None:
    t = 800.0
    cfg = CrystalConfig(thickness_a=t, profile=profile, mosaicity_deg=mosaicity)  # type: ignore[arg-type]
    fx = BeamEffects(divergence_mrad=divergence)
    for q_abs in (0.1, 0.5):
        assert _integral(cfg, fx, q_abs) == pytest.approx(1.0 / t, rel=2e-5)
    peak = float(partiality(0.0, 0.5, cfg, fx))
    if mosaicity == divergence == 0.0:
        assert peak == pytest.approx(1.0, abs=1e-12)
    else:
        assert peak < 1.0  # broadening lowers the peak, keeping the integral


@pytest.mark.parametrize("sigma_t", [0.0, 0.01, 0.04, 0.06, 0.3, 2.0, 8.0])
def test_broadened_shape_profile_is_the_convolution(sigma_t: float) -> None:
    """sinc^2(t s) convolved with N(0, sigma_b), by direct numerical quadrature."""
    t = 1000.0
    q_abs = 0.4
    mosaicity = math.degrees(sigma_t / t * FWHM / q_abs)
    cfg = CrystalConfig(thickness_a=t, profile="shape", mosaicity_deg=mosaicity)
    sigma = sigma_t / t
    for st in (0.0, 0.37, 1.0, 2.5, 6.2, 14.9):
        s = st / t
        if sigma == 0:
            expected = float(np.sinc(st) ** 2)
        else:
            expected = quad(
                lambda u, s=s: np.sinc(t * (s - u)) ** 2
                * math.exp(-(u**2) / (2 * sigma**2))
                / (sigma * math.sqrt(2 * math.pi)),
                -12 * sigma, 12 * sigma, points=[s], limit=800, epsabs=1e-14, epsrel=1e-12,
            )[0]  # fmt: skip
        got = float(partiality(s, q_abs, cfg, BeamEffects()))
        assert got == pytest.approx(expected, abs=1e-10)


# ------------------------------------------------------------ shift and distortion


def test_shift_translates_the_pattern() -> None:
    beam = Beam.from_voltage_kv(KV)
    det = flat_detector(1024, 0.055, 1200.0)
    sf = make_sf(TRICLINIC, 2.0)
    xt = crystal_with(TRICLINIC, Rotation.random(random_state=3).as_matrix())
    args = (xt, sf, beam, det, CrystalConfig(), BeamEffects())
    base = predict_still(*args, n_on_crystal=1.0).set_index(["h", "k", "l"])
    moved = predict_still(*args, n_on_crystal=1.0, shift_mm=(0.55, -1.1)).set_index(["h", "k", "l"])
    common = base.index.intersection(moved.index)
    assert len(common) > 0.9 * len(base)
    np.testing.assert_allclose(moved.loc[common, "fs"], base.loc[common, "fs"] - 10.0, atol=1e-9)
    np.testing.assert_allclose(moved.loc[common, "ss"], base.loc[common, "ss"] + 20.0, atol=1e-9)
    np.testing.assert_allclose(moved.loc[common, "counts"], base.loc[common, "counts"])


def two_module_detector(distance_mm: float) -> Detector:
    """Two coplanar 200 x 200 modules side by side with a 10-pixel physical gap at x = 0."""

    def module(name: str, min_fs: int, corner_x: float) -> Panel:
        return Panel(
            name=name, min_fs=min_fs, max_fs=min_fs + 199, min_ss=0, max_ss=199,
            corner_x=corner_x, corner_y=-100.0, fs=(1.0, 0.0, 0.0), ss=(0.0, 1.0, 0.0),
            pixel_size_mm=0.055,
        )  # fmt: skip

    return Detector((module("left", 0, -205.0), module("right", 200, 5.0)), clen=distance_mm)


def test_distortion_acts_about_the_beam_centre_across_modules() -> None:
    lam = lam_electron(KV)
    k = 1.0 / lam
    beam = Beam.from_voltage_kv(KV)
    det = two_module_detector(700.0)
    ratio, angle = 1.08, 35.0
    a = math.radians(angle)
    v1, v2 = np.array([math.cos(a), -math.sin(a)]), np.array([math.sin(a), math.cos(a)])
    stretch = math.sqrt(ratio) * np.outer(v1, v1) + np.outer(v2, v2) / math.sqrt(ratio)
    sf = make_sf(TRICLINIC, 2.0)
    u = Rotation.random(random_state=9).as_matrix()
    cfg = CrystalConfig(thickness_a=200.0)
    pred = predict_still(
        crystal_with(TRICLINIC, u), sf, beam, det, cfg, BeamEffects(), n_on_crystal=1.0,
        distortion=EllipticalDistortion(ratio, angle),
    )  # fmt: skip
    hkl = hkl_of(sf.table)
    ray = hkl @ (u @ b_matrix(*TRICLINIC)).T + [0.0, 0.0, k]
    s = k - np.linalg.norm(ray, axis=1)
    xy = ray[:, :2] * (700.0 / ray[:, 2:3]) / 0.055  # lab x, y in pixels; beam at the origin
    xy_d = xy @ stretch.T
    on_left = (xy_d[:, 0] >= -205) & (xy_d[:, 0] < -5)
    on_right = (xy_d[:, 0] >= 5) & (xy_d[:, 0] < 205)
    keep = (gaussian_p(s, 1 / sf.table["d"].to_numpy(), 200.0) >= 1e-3) & (on_left | on_right)
    keep &= (np.abs(xy_d[:, 1]) < 100) & (ray[:, 2] > 0)
    expected = pd.DataFrame(
        {
            "h": hkl[keep, 0].astype(int),
            "k": hkl[keep, 1].astype(int),
            "l": hkl[keep, 2].astype(int),
            "panel": np.where(on_left, 0, 1)[keep],
            "fs": np.where(on_left, xy_d[:, 0] + 205 - 0.5, xy_d[:, 0] - 5 - 0.5 + 200)[keep],
            "ss": xy_d[keep, 1] + 100 - 0.5,
        }
    ).set_index(["h", "k", "l"]).sort_index()  # fmt: skip
    got = pred.set_index(["h", "k", "l"]).sort_index()
    assert len(expected) > 20 and set(expected["panel"]) == {0, 1}
    assert list(got.index) == list(expected.index)
    np.testing.assert_array_equal(got["panel"], expected["panel"])
    np.testing.assert_allclose(got[["fs", "ss"]], expected[["fs", "ss"]], atol=1e-6)


def test_project_rays_maps_directions_onto_the_modules() -> None:
    det = two_module_detector(700.0)
    ratio, angle = 1.1, -20.0
    a = math.radians(angle)
    v1, v2 = np.array([math.cos(a), -math.sin(a)]), np.array([math.sin(a), math.cos(a)])
    stretch = math.sqrt(ratio) * np.outer(v1, v1) + np.outer(v2, v2) / math.sqrt(ratio)
    rng = np.random.default_rng(1)
    xy = rng.uniform(-230, 230, size=(2000, 2))  # lab pixels at the detector, beam at 0
    dirs = np.column_stack([xy * 0.055, np.full(len(xy), 700.0)]) * rng.uniform(0.1, 3.0, (2000, 1))
    panel, fs, ss = project_rays(dirs, det, (0.0, 0.0), EllipticalDistortion(ratio, angle))
    xy_d = xy @ stretch.T
    left = (xy_d[:, 0] >= -205) & (xy_d[:, 0] < -5) & (np.abs(xy_d[:, 1]) < 100)
    right = (xy_d[:, 0] >= 5) & (xy_d[:, 0] < 205) & (np.abs(xy_d[:, 1]) < 100)
    np.testing.assert_array_equal(panel, np.where(left, 0, np.where(right, 1, -1)))
    np.testing.assert_allclose(fs[left], xy_d[left, 0] + 204.5, atol=1e-9)
    np.testing.assert_allclose(fs[right], xy_d[right, 0] - 5.5, atol=1e-9)
    np.testing.assert_allclose(ss[left | right], xy_d[left | right, 1] + 99.5, atol=1e-9)
    assert np.isnan(fs[panel < 0]).all()
    backwards = project_rays(-dirs[:5], det, (0.0, 0.0), EllipticalDistortion(ratio, angle))
    assert (backwards[0] == -1).all()
    with pytest.raises(DataError):
        project_rays(dirs, det, (0.0,), None)


def test_project_rays_agrees_with_the_detector_model(cspad: Detector) -> None:
    """The all-panels-at-once ray cast gives Detector.lab_to_pixel's panel and position."""
    det = cspad_at(cspad, 120.0)
    rng = np.random.default_rng(5)
    dirs = np.column_stack([rng.uniform(-0.9, 0.9, (5000, 2)), np.ones(5000)])
    shift = np.array([0.7, -0.4])
    panel, fs, ss = project_rays(dirs, det, shift)
    ref = det.lab_to_pixel(dirs, shift_mm=shift)
    np.testing.assert_array_equal(panel, ref.panel)
    assert 1000 < (panel >= 0).sum() < 5000  # rays in gaps and beyond the edges miss
    np.testing.assert_allclose(fs, ref.fs, atol=1e-9)
    np.testing.assert_allclose(ss, ref.ss, atol=1e-9)


def test_centre_on_a_multi_panel_detector_is_on_the_beam_axis(cspad: Detector) -> None:
    det = cspad_at(cspad, 150.0)
    beam = Beam.from_energy_kev(KEV)
    for panel in (0, 17, 63):
        fs, ss = centre_px(det, beam, (0.3, -0.4), panel=panel)
        r = lab_position(det, np.array([panel]), np.array([fs]), np.array([ss]), (0.3, -0.4))[0]
        assert abs(r[0]) < 1e-9 and abs(r[1]) < 1e-9


# ------------------------------------------------------------------ errors, speed


def test_invalid_arguments_raise_data_errors() -> None:
    beam = Beam.from_voltage_kv(KV)
    det = flat_detector(256, 0.055, 1200.0)
    sf = make_sf(TRICLINIC, 3.0)
    xt = crystal_with(TRICLINIC, np.eye(3))
    args = (xt, sf, beam, det, CrystalConfig(), BeamEffects())
    cases = [
        ({"n_on_crystal": -1.0}, "n_on_crystal"),
        ({"n_on_crystal": float("nan")}, "n_on_crystal"),
        ({"n_on_crystal": 1.0, "min_partiality": 0.0}, "min_partiality"),
        ({"n_on_crystal": 1.0, "shift_mm": (1.0, 2.0, 3.0)}, "shift_mm"),
        ({"n_on_crystal": 1.0, "shift_mm": (float("inf"), 0.0)}, "shift_mm"),
        ({"n_on_crystal": 1.0, "dose_factor": np.ones(3)}, "dose_factor"),
        ({"n_on_crystal": 1.0, "dose_factor": -np.ones(len(sf.table))}, "dose_factor"),
    ]
    for kwargs, field in cases:
        with pytest.raises(DataError) as info:
            predict_still(*args, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field
    along_beam = Panel(
        name="p0", min_fs=0, max_fs=9, min_ss=0, max_ss=9, corner_x=0.0, corner_y=-5.0,
        fs=(1.0, 0.0, 0.0), ss=(0.0, 0.0, 1.0), pixel_size_mm=0.1,
    )  # fmt: skip
    with pytest.raises(DataError) as info:
        centre_px(Detector((along_beam,), clen=100.0), beam, (0.0, 0.0))
    assert info.value.field == "panel"
    with pytest.raises(DataError):
        centre_px(det, beam, (0.0, 0.0), panel=3)


def test_empty_prediction_has_the_columns() -> None:
    beam = Beam.from_voltage_kv(KV)
    det = Detector.single_panel(8, 8, 0.055, 1200.0, (-500.0, -500.0))  # far off the pattern
    sf = make_sf(TRICLINIC, 3.0)
    pred = predict_still(
        crystal_with(TRICLINIC, np.eye(3)), sf, beam, det, CrystalConfig(), BeamEffects(),
        n_on_crystal=1.0,
    )  # fmt: skip
    assert pred.empty
    assert {c: str(t) for c, t in pred.dtypes.items()} == PREDICTION_COLUMNS


def test_prediction_for_a_protein_sized_table() -> None:
    """~124k P1 reflections (lysozyme cell to 2 A), many orientations (speed: see
    benchmarks, not tests)."""
    cell = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)
    sf = make_sf(cell, 2.0)
    assert len(sf.table) > 120_000
    beam = Beam.from_voltage_kv(KV)
    det = Detector.single_panel(1556, 516, 0.055, 1100.0, (778, 258))
    for seed in range(21):
        xt = crystal_with(cell, Rotation.random(random_state=seed).as_matrix())
        pred = predict_still(xt, sf, beam, det, CrystalConfig(), BeamEffects(), n_on_crystal=1e6)
        assert len(pred) > 50


def test_prediction_on_a_64_panel_detector(cspad: Detector) -> None:
    cell = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)
    sf = make_sf(cell, 2.0)
    beam = Beam.from_voltage_kv(KV)
    det = cspad_at(cspad, 3000.0)
    for seed in range(11):
        xt = crystal_with(cell, Rotation.random(random_state=seed).as_matrix())
        pred = predict_still(
            xt, sf, beam, det, CrystalConfig(), BeamEffects(), n_on_crystal=1e6,
            shift_mm=(0.1, 0.2),
        )  # fmt: skip
        assert len(pred) > 50
