"""Detector model: pixel <-> lab <-> q mapping, masks, metadata, distortion."""

from __future__ import annotations

import dataclasses
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from crystalscope.errors import DataError
from crystalscope.io.crystfel_geom import read_geom
from crystalscope.model.beam import electron_wavelength, photon_wavelength
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.panel import BadRegion, MaskSpec, MetadataRef, Panel, WavelengthSource

PX = 0.1  # mm
DIST = 100.0  # mm


@pytest.fixture
def camera() -> Detector:
    return Detector.single_panel(1000, 800, PX, DIST, (500.0, 400.0), wavelength=1.0)


@pytest.fixture(scope="module")
def cspad(shared_data: Path) -> Detector:
    det = read_geom(shared_data / "crystfel" / "cspad-single.geom")
    return det.resolve({"/LCLS/detectorPosition": -420.0, "/LCLS/photon_energy_eV": 9500.0})


def _panel(name: str, **kw: object) -> Panel:
    base: dict[str, object] = dict(
        name=name, min_fs=0, max_fs=9, min_ss=0, max_ss=7, corner_x=-5.0, corner_y=-4.0,
        fs=(1.0, 0.0, 0.0), ss=(0.0, 1.0, 0.0), pixel_size_mm=1.0,
    )  # fmt: skip
    base.update(kw)
    return Panel(**base)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- known values


def test_beam_centre_pixel_has_zero_q(camera: Detector) -> None:
    np.testing.assert_allclose(camera.pixel_to_q(0, 500.0, 400.0), [0.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(camera.pixel_to_lab("p0", 500.0, 400.0), [0.0, 0.0, DIST])
    assert camera.beam_centre() == pytest.approx((500.0, 400.0), abs=1e-9)
    assert camera.two_theta_deg(0, 500, 400) == 0.0
    assert camera.resolution(0, 500, 400) == math.inf


@pytest.mark.parametrize(("dfs", "dss"), [(100, 0), (0, -100), (-60, 80)])
def test_two_theta_and_q_of_pixel_100_px_off(camera: Detector, dfs: int, dss: int) -> None:
    two_theta = math.atan(100 * PX / DIST)  # 100 pixels away from the beam centre
    assert camera.two_theta_deg(0, 500 + dfs, 400 + dss) == pytest.approx(math.degrees(two_theta))
    q = camera.pixel_to_q(0, 500 + dfs, 400 + dss)
    assert np.linalg.norm(q) == pytest.approx(2 * math.sin(two_theta / 2) / 1.0)
    assert camera.resolution(0, 500 + dfs, 400 + dss) == pytest.approx(
        1.0 / (2 * math.sin(two_theta / 2))
    )
    # fs runs along +x and ss along +y: q points the same way in the plane
    assert np.sign(q[0]) == np.sign(dfs) and np.sign(q[1]) == np.sign(dss)
    assert q[2] < 0  # (r/|r| - z) has a negative z component off the beam


def test_q_convention_no_two_pi() -> None:
    det = Detector.single_panel(10, 10, 1.0, 100.0, (0.0, 0.0), photon_energy_ev=12398.42)
    r = det.pixel_to_lab(0, 7.0, 0.0)
    expected = (r / np.linalg.norm(r) - [0, 0, 1]) / photon_wavelength(12398.42)
    np.testing.assert_allclose(det.pixel_to_q(0, 7.0, 0.0), expected)
    assert det.wavelength == pytest.approx(1.0, abs=1e-5)


def test_pixel_centre_convention_first_pixel_centre_is_origin() -> None:
    # corner at (0, 0): the centre of the first pixel is half a pixel in along fs and ss
    det = Detector((_panel("a", corner_x=0.0, corner_y=0.0, pixel_size_mm=0.2),), clen=50.0)
    np.testing.assert_allclose(det.pixel_to_lab(0, 0.0, 0.0), [0.1, 0.1, 50.0])
    np.testing.assert_allclose(det.pixel_to_lab(0, -0.5, -0.5), [0.0, 0.0, 50.0])


def test_broadcasting_and_panel_names(cspad: Detector) -> None:
    lab = cspad.pixel_to_lab(["q0a0", "q3a15"], [[1.0], [2.0], [3.0]], 5.0)
    assert lab.shape == (3, 2, 3)
    np.testing.assert_allclose(lab[1, 1], cspad.pixel_to_lab(63, 2.0, 5.0))
    with pytest.raises(DataError, match="no panel named"):
        cspad.pixel_to_lab("nope", 0, 0)
    with pytest.raises(DataError, match="out of range"):
        cspad.pixel_to_lab(64, 0, 0)


def test_electron_wavelength_source() -> None:
    det = Detector.single_panel(10, 10, 0.05, 500.0, (5, 5), electron_voltage_kv=200.0)
    assert det.wavelength == pytest.approx(electron_wavelength(200.0))
    assert det.wavelength == pytest.approx(0.025079, abs=1e-6)


# ---------------------------------------------------------------------- inverse mapping


@settings(max_examples=200, deadline=None)
@given(
    angles=st.tuples(
        st.floats(-180, 180), st.floats(-30, 30), st.floats(-30, 30)
    ),  # rotation about z, tilts about x and y (degrees)
    px=st.floats(0.01, 1.0),
    corner=st.tuples(st.floats(-2000, 2000), st.floats(-2000, 2000)),
    uv=st.tuples(st.floats(0.001, 0.999), st.floats(0.001, 0.999)),
)
def test_pixel_to_lab_to_pixel_is_identity(
    angles: tuple[float, float, float],
    px: float,
    corner: tuple[float, float],
    uv: tuple[float, float],
) -> None:
    rot = Rotation.from_euler("zxy", angles, degrees=True).as_matrix()
    n_fs, n_ss = 300, 200
    panel = _panel(
        "t", max_fs=n_fs - 1, max_ss=n_ss - 1, corner_x=corner[0], corner_y=corner[1],
        fs=tuple(rot[:, 0]), ss=tuple(rot[:, 1]), pixel_size_mm=px,
    )  # fmt: skip
    # far enough that every pixel is downstream of the sample
    det = Detector((panel,), clen=2 * (n_fs + n_ss + 3000) * px)
    fs, ss = uv[0] * n_fs - 0.5, uv[1] * n_ss - 0.5
    hit = det.lab_to_pixel(det.pixel_to_lab(0, fs, ss))
    assert int(hit.panel) == 0
    assert float(hit.fs) == pytest.approx(fs, abs=1e-6)
    assert float(hit.ss) == pytest.approx(ss, abs=1e-6)


def test_cspad_round_trip_and_q_inverse(cspad: Detector) -> None:
    rng = np.random.default_rng(1)
    panel = rng.integers(0, 64, 20000)
    fs = rng.uniform(-0.499, 193.499, panel.size)
    ss = rng.uniform(-0.499, 184.499, panel.size)
    hit = cspad.lab_to_pixel(cspad.pixel_to_lab(panel, fs, ss))
    assert np.array_equal(hit.panel, panel)
    np.testing.assert_allclose(hit.fs, fs, atol=1e-8)
    np.testing.assert_allclose(hit.ss, ss, atol=1e-8)
    back = cspad.q_to_pixel(cspad.pixel_to_q(panel, fs, ss))
    np.testing.assert_allclose(back.fs, fs, atol=1e-8)
    # the beam goes through the central hole of the CSPAD
    assert int(cspad.lab_to_pixel([0.0, 0.0, 1.0]).panel) == -1


def test_lab_to_pixel_misses_give_minus_one(camera: Detector) -> None:
    hit = camera.lab_to_pixel(np.array([[0, 0, 1], [0, 0, -1], [1e6, 0, 1], [0, 0, 0]]))
    assert hit.panel.tolist() == [0, -1, -1, -1]
    assert np.isnan(hit.fs[1:]).all() and np.isnan(hit.ss[1:]).all()


def test_overlapping_panels_nearest_wins() -> None:
    near = _panel("near", coffset_mm=-10.0)
    far = _panel("far", corner_x=-6.0)
    det = Detector((far, near), clen=100.0)
    hit = det.lab_to_pixel([0.001, 0.001, 1.0])
    assert int(hit.panel) == 1  # both panels are in the way
    assert float(hit.fs) == pytest.approx(5.0 + 0.09 - 0.5)


# ---------------------------------------------------------------------- raw layout


def test_cspad_panel_and_pixel_counts(cspad: Detector) -> None:
    assert len(cspad.panels) == 64
    assert {p.shape for p in cspad.panels} == {(185, 194)}
    assert cspad.n_pixels == 64 * 185 * 194 == 2_296_960
    assert cspad.raw_shape == (1480, 1552)
    panel_map = cspad.panel_map()
    assert (panel_map >= 0).all()  # the panels tile the raw array without gaps
    assert np.bincount(panel_map.ravel()).tolist() == [185 * 194] * 64


def test_raw_to_panel_and_back(cspad: Detector) -> None:
    p = cspad.panel_index("q1a3")
    fs_raw, ss_raw = cspad.panel_to_raw(p, 10.25, 20.0)
    hit = cspad.raw_to_panel(fs_raw, ss_raw)
    assert (int(hit.panel), float(hit.fs), float(hit.ss)) == (p, 10.25, 20.0)
    given_panel = cspad.raw_to_panel(fs_raw, ss_raw, panel="q1a3")
    assert float(given_panel.fs) == 10.25
    assert int(cspad.raw_to_panel(5000.0, 0.0).panel) == -1


def test_raw_shape_with_event_and_fixed_axes() -> None:
    a = _panel("a", dims=("%", 0, "ss", "fs"))
    b = _panel("b", dims=("%", 2, "ss", "fs"), corner_x=20.0)
    det = Detector((a, b), clen=10.0)
    assert det.raw_shape == (3, 8, 10)
    assert det.raw_slices("b") == (2, slice(0, 8), slice(0, 10))
    assert det.q_map(wavelength=1.0).shape == (3, 8, 10, 3)
    c = _panel("c", data="/other")
    with pytest.raises(DataError, match="different data blocks"):
        _ = Detector((a, c), clen=10.0).raw_shape


def test_q_map_matches_pointwise_mapping(camera: Detector) -> None:
    qmap = camera.q_map()
    assert qmap.shape == (800, 1000, 3)
    np.testing.assert_allclose(qmap[123, 456], camera.pixel_to_q(0, 456, 123))
    d = camera.resolution_map()
    assert d[400, 500] == math.inf
    assert d[400, 600] == pytest.approx(camera.resolution(0, 600, 400))
    assert camera.two_theta_map()[400, 600] == pytest.approx(math.degrees(math.atan(0.1)))
    bigger = camera.q_map(shape=(801, 1002))
    assert np.isnan(bigger[800]).all() and np.isnan(bigger[:, 1000:]).all()
    np.testing.assert_array_equal(bigger[:800, :1000], qmap)
    assert (camera.panel_map(shape=(801, 1000))[800] == -1).all()
    with pytest.raises(DataError, match="cannot hold"):
        camera.q_map(shape=(800, 999))


# ---------------------------------------------------------------------- masks


def test_bad_regions_in_fs_ss_and_lab_coordinates() -> None:
    panel = _panel("a", max_fs=19, max_ss=9, corner_x=-10.0, corner_y=-5.0)
    det = Detector(
        (panel,),
        clen=10.0,
        bad_regions=(
            BadRegion("bad_box", min_fs=2, max_fs=4, min_ss=1, max_ss=2, panel="a"),
            BadRegion("bad_lab", min_x=-0.5, max_x=2.0, min_y=-10.0, max_y=-3.5),
        ),
    )
    mask = det.bad_pixel_mask()
    expected = np.zeros((10, 20), dtype=bool)
    expected[1:3, 2:5] = True
    # pixel corner x = -10 + fs in (-0.5, 2) -> fs 10, 11; y = -5 + ss in (-10, -3.5) -> ss 0, 1
    expected[0:2, 10:12] = True
    assert np.array_equal(mask, expected)
    assert det.bad_pixel_mask((12, 25)).shape == (12, 25)
    assert det.bad_pixel_mask((12, 25))[10:, :].all()  # outside every panel
    with pytest.raises(DataError, match="cannot hold"):
        det.bad_pixel_mask((5, 5))


def test_pilatus_bad_strips_and_beamstop(shared_data: Path) -> None:
    det = read_geom(shared_data / "crystfel" / "pilatus.geom")
    mask = det.bad_pixel_mask()
    expected = np.zeros((2527, 2463), dtype=bool)
    for lo in (487, 981, 1475, 1969):
        expected[:, lo : lo + 7] = True
    for lo in (195, 407, 619, 831, 1043, 1255, 1467, 1679, 1891, 2103, 2315):
        expected[lo : lo + 17, :] = True
    # beamstop: -2000 < -1272.37 + fs < 100 and -40 < -1243.8 + ss < 100
    expected[1204:1344, :1373] = True
    assert np.array_equal(mask, expected)


def test_no_index_edges_flags_and_mask_bits() -> None:
    a = _panel(
        "a", mask_edge_pixels=1, flags=(("lessthan", 0.0), ("equal", 7.0), ("morethan", 100.0)),
        masks=(MaskSpec(0, "/mask", None, goodbits=0x1, badbits=0x4),),
    )  # fmt: skip
    b = _panel("b", min_fs=10, max_fs=19, no_index=True)
    det = Detector((a, b), clen=10.0)
    assert det.bad_pixel_mask()[:, 10:].all()
    assert det.bad_pixel_mask()[1:-1, 1:9].sum() == 0
    data = np.full(det.raw_shape, 5.0)
    data[3, 3], data[3, 4], data[3, 5], data[3, 6], data[4, 3] = -1, 7.2, 101, np.nan, 100
    bits = np.ones(det.raw_shape, dtype=np.int32)
    bits[5, 2] = 0  # good bit missing
    bits[5, 3] = 0x5  # bad bit set
    mask = det.bad_pixel_mask(data=data, masks={0: bits})
    inner = np.argwhere(mask[1:-1, 1:9]) + 1
    assert sorted(map(tuple, inner.tolist())) == [(3, 3), (3, 4), (3, 5), (3, 6), (5, 2), (5, 3)]
    with pytest.raises(DataError, match="mask 0"):
        det.bad_pixel_mask(masks={1: bits})
    with pytest.raises(DataError, match="shape"):
        det.bad_pixel_mask(data=np.zeros((2, 2)))


# ---------------------------------------------------------------------- metadata


def test_resolve_fills_in_values_and_names_missing_fields(shared_data: Path) -> None:
    det = read_geom(shared_data / "crystfel" / "cspad-single.geom")
    assert not det.is_resolved
    assert set(det.metadata_refs()) == {"clen", "photon_energy"}
    with pytest.raises(DataError) as err:
        det.pixel_to_lab(0, 0, 0)
    assert err.value.field == "clen"
    with pytest.raises(DataError) as err:
        det.resolve({"/LCLS/photon_energy_eV": 9000.0})
    assert err.value.field == "clen" and "/LCLS/detectorPosition" in str(err.value)
    with pytest.raises(DataError) as err:
        det.resolve({"/LCLS/detectorPosition": -400.0})
    assert err.value.field == "photon_energy"
    with pytest.raises(DataError, match="not a number"):
        det.resolve({"/LCLS/detectorPosition": "far", "/LCLS/photon_energy_eV": 9000.0})
    with pytest.raises(DataError, match="one finite number"):
        det.resolve({"/LCLS/detectorPosition": [1, 2], "/LCLS/photon_energy_eV": 9000.0})
    res = det.resolve({"/LCLS/detectorPosition": np.float32(-400.0), "/LCLS/photon_energy_eV": 9e3})
    assert res.is_resolved and det.clen == MetadataRef("/LCLS/detectorPosition", "mm")
    assert res.clen == pytest.approx(-400.0)  # mm, the CrystFEL default for a header value
    assert res.wavelength == pytest.approx(photon_wavelength(9000.0))
    z = res.pixel_to_lab(0, 0, 0)[2]
    assert z == pytest.approx(-400.0 + 573.224)  # coffset 0.573224 m


def test_resolve_units_and_shift() -> None:
    det = dataclasses.replace(
        Detector.single_panel(10, 10, 1.0, 100.0, (5.0, 5.0)),
        clen=MetadataRef("/d", "m"),
        wavelength_source=WavelengthSource("wavelength", MetadataRef("/w", "m")),
        detector_shift_x=MetadataRef("/sx", "m"),
        detector_shift_y=2.0,
        bandwidth=MetadataRef("/bw"),
    )
    res = det.resolve({"/d": 0.25, "/w": 1.5e-10, "/sx": 0.003, "/bw": 0.01})
    assert res.clen == 250.0 and res.wavelength == pytest.approx(1.5)
    assert res.detector_shift_x == 3.0 and res.bandwidth == 0.01
    np.testing.assert_allclose(res.pixel_to_lab(0, 5.0, 5.0), [3.0, 2.0, 250.0])
    with pytest.raises(DataError) as err:
        _ = det.wavelength
    assert err.value.field == "wavelength"


def test_missing_wavelength_and_camera_length() -> None:
    det = Detector((_panel("a"),))
    with pytest.raises(DataError) as err:
        det.pixel_to_lab(0, 0, 0)
    assert err.value.field == "clen"
    det = Detector((_panel("a"),), clen=5.0)
    with pytest.raises(DataError, match="no wavelength"):
        det.pixel_to_q(0, 0, 0)
    assert np.isfinite(det.pixel_to_q(0, 0, 0, wavelength=0.5)).all()


# ---------------------------------------------------------------------- shifts and copies


def test_per_shot_shift_moves_the_detector(camera: Detector) -> None:
    shifts = np.array([[0.0, 0.0], [1.0, -2.0]])  # mm, one per shot
    lab = camera.pixel_to_lab(0, 500.0, 400.0, shift_mm=shifts)
    np.testing.assert_allclose(lab, [[0, 0, DIST], [1.0, -2.0, DIST]])
    hits = camera.lab_to_pixel([[0, 0, 1], [0, 0, 1]], shift_mm=shifts)
    np.testing.assert_allclose(hits.fs, [500.0, 490.0])
    np.testing.assert_allclose(hits.ss, [400.0, 420.0])
    moved = camera.shifted(1.0, -2.0)
    np.testing.assert_allclose(moved.pixel_to_lab(0, 500.0, 400.0), lab[1])
    in_px = camera.shifted(10.0, -20.0, unit="px")
    assert in_px.isclose(moved)
    centred = camera.with_beam_centre(123.0, 45.5)
    assert centred.beam_centre() == pytest.approx((123.0, 45.5))
    np.testing.assert_allclose(centred.pixel_to_q(0, 123.0, 45.5), 0.0, atol=1e-12)


def test_pickled_copy_is_usable(cspad: Detector) -> None:
    qmap = cspad.q_map()  # fills the cached per-panel arrays before pickling
    copy = pickle.loads(pickle.dumps(cspad))
    assert copy == cspad and hash(copy) == hash(cspad)
    np.testing.assert_array_equal(copy.q_map(), qmap)
    fresh = pickle.loads(pickle.dumps(dataclasses.replace(cspad)))  # nothing cached yet
    np.testing.assert_array_equal(fresh.pixel_to_q(5, 1.0, 2.0), cspad.pixel_to_q(5, 1.0, 2.0))


def test_isclose_and_validation() -> None:
    a = Detector((_panel("a"),), clen=10.0)
    b = Detector((_panel("a", corner_x=-5.0 * (1 + 1e-14)),), clen=10.0)
    assert a != b and a.isclose(b) and not a.isclose(b, rel_tol=1e-16, abs_tol=0.0)
    with pytest.raises(ValueError, match="unique"):
        Detector((_panel("a"), _panel("a")))
    with pytest.raises(ValueError, match="invalid panel name"):
        Detector((_panel("bad_panel"),))
    with pytest.raises(ValueError, match="parallel"):
        _panel("a", ss=(2.0, 0.0, 0.0))
    region = BadRegion("bad1", min_fs=0, max_fs=50, min_ss=0, max_ss=1, panel="a")
    with pytest.raises(ValueError, match="outside panel"):
        Detector((_panel("a"),), bad_regions=(region,))
    with pytest.raises(ValueError, match="mixed"):
        BadRegion("bad2", min_x=0.0, max_x=1.0, min_y=0.0, max_y=1.0, min_fs=1)


def test_group_expansion(cspad: Detector) -> None:
    assert cspad.group_panels("a0") == ("q0a0", "q0a1")
    assert len(cspad.group_panels("q1")) == 16
    assert set(cspad.group_panels("all")) == set(cspad.panel_names)
    with pytest.raises(DataError):
        cspad.group_panels("zz")


# ---------------------------------------------------------------------- distortion


def test_elliptical_distortion_apply_and_correct_are_inverse() -> None:
    dist = EllipticalDistortion(ratio=1.04, angle_deg=30.0)
    rng = np.random.default_rng(3)
    fs, ss = rng.uniform(0, 1000, (2, 50))
    centres = rng.uniform(400, 600, (50, 2))  # one centre per shot
    obs = dist.apply(fs, ss, centres)
    back = dist.correct(*obs, centres)
    np.testing.assert_allclose(back, (fs, ss))
    assert np.linalg.det(dist.correction_matrix) == pytest.approx(1.0)
    np.testing.assert_allclose(
        dist.correction_matrix @ dist.distortion_matrix, np.eye(2), atol=1e-15
    )


def test_elliptical_distortion_axes_and_diffractem_formula() -> None:
    ratio, angle = 1.21, 25.0
    dist = EllipticalDistortion(ratio, angle)
    a = math.radians(angle)
    major = np.array([math.cos(a), -math.sin(a)])  # stretched by sqrt(ratio)
    minor = np.array([math.sin(a), math.cos(a)])
    for axis, factor in ((major, 1.1), (minor, 1 / 1.1)):
        obs = dist.apply(10 + 50 * axis[0], 20 + 50 * axis[1], (10.0, 20.0))
        assert np.hypot(obs[0] - 10, obs[1] - 20) == pytest.approx(50 * factor)
    # diffractem's peak correction written out (proc_peaks.get_pk_data)
    x, y = 37.0, -12.0
    c, s = math.cos(a), math.sin(a)
    xr, yr = ratio**-0.5 * (c * x - s * y), ratio**0.5 * (s * x + c * y)
    expected = (c * xr + s * yr, -s * xr + c * yr)
    assert dist.correct(x, y, (0.0, 0.0)) == pytest.approx(expected)
    assert EllipticalDistortion().apply(3.0, 4.0, (1.0, 1.0)) == (3.0, 4.0)
    with pytest.raises(ValueError):
        EllipticalDistortion(ratio=0.0)
