"""cred_import: Instamatic-style directory -> hand-off files with the right geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from credtools import make_frames, make_scan

from crystalscope.acquire import timepix
from crystalscope.errors import FormatError
from crystalscope.io.smv import read_smv
from crystalscope.rotation.cred_import import cred_import, estimate_beam_centre, simulated_series
from crystalscope.rotation.handoff import read_scan_record
from crystalscope.rotation.instamatic import write_cred_directory
from crystalscope.rotation.xds_input import parse_xds_inp


def test_import_keeps_the_geometry(tmp_path: Path) -> None:
    scan = make_scan()
    write_cred_directory(tmp_path / "exp", make_frames(scan), scan, handoff=())
    result = cred_import(tmp_path / "exp", tmp_path / "out")
    assert result.centre_source == "beam_centers.txt" and not result.warnings
    got = result.scan
    assert got.beam_centre_px == pytest.approx(scan.beam_centre_px)
    assert got.rotation_axis == pytest.approx(scan.rotation_axis, abs=1e-7)
    assert got.excluded_frames == scan.excluded_frames
    assert got.untrusted_rectangles == timepix.cross_rectangles()
    assert got.camera_length_mm == pytest.approx(530.0, rel=1e-6)
    assert read_scan_record(tmp_path / "out" / "rotation_scan.yaml") == got
    keys = parse_xds_inp(tmp_path / "out" / "SMV" / "XDS.INP")
    assert keys["ORGX="] == ["242.300"] and keys["EXCLUDE_DATA_RANGE="] == ["10 10", "20 20"]
    assert (tmp_path / "out" / "NXmx" / "cred.nxs").is_file()
    assert "beam centre (fs, ss) = (241.30, 236.80)" in result.summary()


def test_beam_centre_is_estimated_without_the_table(tmp_path: Path) -> None:
    scan = make_scan()
    frames = make_frames(scan)
    write_cred_directory(tmp_path / "exp", frames, scan, handoff=())
    (tmp_path / "exp" / "beam_centers.txt").unlink()
    result = cred_import(tmp_path / "exp", tmp_path / "out", formats=("smv",))
    assert result.centre_source == "the direct beam in the frames"
    assert result.scan.beam_centre_px == pytest.approx(scan.beam_centre_px, abs=0.1)
    given = cred_import(
        tmp_path / "exp", tmp_path / "out2", formats=("smv",), beam_centre_px=(250.0, 250.0)
    )
    assert given.scan.beam_centre_px == (250.0, 250.0)


def test_raw_quad_frames_are_expanded(tmp_path: Path) -> None:
    expanded_scan = make_scan(beam_centre_px=(304.2, 236.8))
    expanded = make_frames(expanded_scan)
    raw = {i: np.rint(timepix.compress_quad(f)).astype(np.int64) for i, f in expanded.items()}
    fs, ss = timepix.expanded_to_raw(304.2, 236.8)
    raw_scan = expanded_scan.replace(
        detector_shape=timepix.RAW_SHAPE,
        beam_centre_px=(float(fs), float(ss)),
        untrusted_rectangles=(),
    )
    write_cred_directory(tmp_path / "exp", raw, raw_scan, handoff=())
    result = cred_import(tmp_path / "exp", tmp_path / "out", formats=("smv",))
    assert result.scan.detector_shape == timepix.EXPANDED_SHAPE
    assert result.scan.beam_centre_px == pytest.approx((304.2, 236.8))
    assert result.scan.untrusted_rectangles == timepix.cross_rectangles()
    smv = read_smv(tmp_path / "out" / "SMV" / "data" / "00003.img").data
    np.testing.assert_array_equal(smv, np.clip(timepix.expand_quad(raw[3], integer=True), 0, 65535))
    assert smv.sum() == np.clip(raw[3], 0, 65535).sum()  # the beam is not on the cross


def test_log_and_frames_disagree(tmp_path: Path) -> None:
    scan = make_scan()
    write_cred_directory(tmp_path / "exp", make_frames(scan), scan, handoff=())
    (tmp_path / "exp" / "tiff" / "00005.tiff").unlink()
    result = cred_import(tmp_path / "exp", tmp_path / "out", formats=("smv",))
    assert 5 in result.scan.excluded_frames
    assert result.warnings == ["the log lists 27 diffraction frames, 26 files were found"]


def test_estimate_needs_a_beam() -> None:
    from crystalscope.errors import DataError

    with pytest.raises(DataError, match="direct beam"):
        estimate_beam_centre({1: np.zeros((64, 64))})


def _simulate(tmp_path: Path, **changes: object) -> Path:
    from crystalscope.simulate.config import RotationConfig
    from crystalscope.simulate.rotation_output import simulate_rotation

    values: dict[str, object] = {
        "n_frames": 12,
        "oscillation_deg": 0.5,
        "start_deg": -3.0,
        "defocus_every": 4,
        "source": {"structure": "builtin:corundum", "d_min": 1.5},
        "detector": {"preset": "timepix-quad", "distance_mm": 600.0},
    }
    values.update(changes)
    simulate_rotation(RotationConfig(**values), tmp_path / "sim", progress=False)  # type: ignore[arg-type]
    return tmp_path / "sim"


def test_simulated_series(tmp_path: Path) -> None:
    from crystalscope.io.images import read_image

    sim = simulated_series(_simulate(tmp_path, dead_time_deg=0.1))
    scan = sim.scan
    assert scan.excluded_frames == (4, 8, 12)
    assert scan.oscillation_deg == pytest.approx(0.6)  # exposure + dead time: the frame step
    assert scan.start_angle_deg == -3.0
    assert scan.detector_shape == timepix.EXPANDED_SHAPE
    assert sorted(sim.frames) == list(scan.data_frames) and sorted(sim.defocused) == [4, 8, 12]
    raw = read_image(tmp_path / "sim" / "frames" / "00002.img").data
    np.testing.assert_array_equal(sim.frames[2], timepix.expand_quad(raw, integer=True))
    with pytest.raises(FormatError, match="evenly spaced"):
        simulated_series(_simulate(tmp_path / "b", defocus_cost_deg=0.2))
