"""Detector presets: raw layouts, lab positions of chips and gaps, wavelength, .geom round trip."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.errors import ConfigError
from crystalscope.io.crystfel_geom import read_geom, write_geom
from crystalscope.model.beam import Beam
from crystalscope.simulate.presets import PRESET_NAMES, detector_preset, preset_description

ELECTRONS = Beam.from_voltage_kv(200.0)
PIXEL = 0.055


def test_single_panel_preset() -> None:
    det = detector_preset("single", 800.0, ELECTRONS)
    assert det.raw_shape == (1024, 1024)
    assert len(det.panels) == 1
    assert det.panels[0].pixel_size_mm == PIXEL
    assert det.beam_centre() == pytest.approx((511.5, 511.5), abs=1e-9)
    # a pixel 100 px right of the centre sits 5.5 mm along +x, at the camera length
    r = det.pixel_to_lab(0, 611.5, 511.5)
    assert r == pytest.approx([100 * PIXEL, 0.0, 800.0], abs=1e-9)


def test_timepix_quad_has_four_chips_with_a_four_pixel_physical_gap() -> None:
    det = detector_preset("timepix-quad", 700.0, ELECTRONS, beam_centre_px=(100.0, 50.0))
    assert det.raw_shape == (512, 512)
    assert [p.name for p in det.panels] == ["q0", "q1", "q2", "q3"]
    assert [(p.min_fs, p.min_ss) for p in det.panels] == [(0, 0), (256, 0), (0, 256), (256, 256)]
    assert det.beam_centre() == pytest.approx((100.0, 50.0), abs=1e-9)
    # raw column 256 (first pixel of chip 1) lies 260 physical pixels from raw column 0:
    # the 4-pixel gap is the extra width of the two 165 um cross pixels
    x0 = det.pixel_to_lab(0, 0.0, 0.0)[0]
    x1 = det.pixel_to_lab(1, 0.0, 0.0)[0]
    y2 = det.pixel_to_lab(2, 0.0, 0.0)[1] - det.pixel_to_lab(0, 0.0, 0.0)[1]
    assert (x1 - x0) / PIXEL == pytest.approx(260.0)
    assert y2 / PIXEL == pytest.approx(260.0)
    # a lab point in the gap hits no panel
    hit = det.lab_to_pixel(det.pixel_to_lab(0, 257.5, 10.0))
    assert int(hit.panel) == -1


def test_lambda_750k_layout_matches_the_raw_frame() -> None:
    det = detector_preset("lambda-750k", 1100.0, ELECTRONS)
    assert det.raw_shape == (516, 1556)
    assert len(det.panels) == 12
    assert det.panels[0].name == "m00" and det.panels[-1].name == "m15"
    starts = sorted({p.min_fs for p in det.panels})
    assert starts == [0, 260, 520, 780, 1040, 1300]
    assert sorted({p.min_ss for p in det.panels}) == [0, 260]
    # the raw frame is a uniform 55 um grid: lab x = (raw fs - centre) * pixel on every chip
    bc_fs, bc_ss = det.beam_centre()
    assert (bc_fs, bc_ss) == pytest.approx((760.0, 240.0))
    for i, p in enumerate(det.panels):
        r = det.pixel_to_lab(i, 7.0, 3.0)
        assert r[0] == pytest.approx((p.min_fs + 7.0 - bc_fs) * PIXEL, abs=1e-9)
        assert r[1] == pytest.approx((p.min_ss + 3.0 - bc_ss) * PIXEL, abs=1e-9)
    # raw gap pixels (columns 256-259, rows 256-259) belong to no panel
    pmap = det.panel_map()
    assert np.all(pmap[:, 256:260] == -1) and np.all(pmap[256:260, :] == -1)
    assert np.sum(pmap >= 0) == 12 * 256 * 256


def test_wavelength_follows_the_beam() -> None:
    xray = Beam.from_energy_kev(12.0)
    for name in PRESET_NAMES:
        assert detector_preset(name, 500.0, ELECTRONS).wavelength == pytest.approx(
            ELECTRONS.wavelength, rel=1e-9
        )
        assert detector_preset(name, 500.0, xray).wavelength == pytest.approx(
            xray.wavelength, rel=1e-9
        )
        assert preset_description(name)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_round_trip_through_crystfel_geometry(name: str, tmp_path_factory) -> None:
    det = detector_preset(name, 950.0, ELECTRONS, adu_per_count=2.0)
    path = tmp_path_factory.mktemp("geom") / f"{name}.geom"
    write_geom(det, path)
    back = read_geom(path)
    assert back.raw_shape == det.raw_shape
    fs = np.array([0.0, 17.25, 255.0])
    for i in range(len(det.panels)):
        np.testing.assert_allclose(
            back.pixel_to_lab(i, fs, fs[::-1]), det.pixel_to_lab(i, fs, fs[::-1]), atol=1e-9
        )
    assert back.panels[0].adu_per_photon == 2.0


def test_bad_preset_arguments() -> None:
    with pytest.raises(ConfigError, match="unknown detector preset") as info:
        detector_preset("pilatus", 100.0, ELECTRONS)
    assert info.value.field == "preset"
    with pytest.raises(ConfigError) as info:
        detector_preset("single", -1.0, ELECTRONS)
    assert info.value.field == "distance_mm"
    with pytest.raises(ConfigError):
        detector_preset("single", float("nan"), ELECTRONS)
    with pytest.raises(ConfigError):
        detector_preset("single", 100.0, ELECTRONS, beam_centre_px=(float("nan"), 1.0))
    with pytest.raises(ConfigError):
        detector_preset("single", 100.0, ELECTRONS, adu_per_count=0.0)
