"""Writing cRED experiments: layout, never overwriting, faults, the CLI, and DIALS."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from acqsim import make_scope

from crystalscope.acquire.cred import CredRecord, CredSettings, collect_cred
from crystalscope.acquire.cred_output import diffracted_intensity, write_cred
from crystalscope.acquire.sim_camera import SimulatedCamera
from crystalscope.acquire.sim_microscope import SimulatedMicroscope
from crystalscope.acquire.timepix import expand_quad, raw_to_expanded
from crystalscope.cli.main import main
from crystalscope.io.smv import read_smv
from crystalscope.io.tiff import read_tiff
from crystalscope.rotation.dials_script import DialsOptions
from crystalscope.rotation.instamatic import parse_cred_log

CRYSTAL = {"x_um": 0.0, "y_um": 0.0, "z_um": 0.5, "shape": "disc", "size_um": 0.5,
           "thickness_um": 0.2}  # fmt: skip
TRUE_CELL = (7.92, 10.61, 13.84, 90.0, 104.5, 90.0)  # builtin:monoclinic-organic, P 21/c


def _collect(range_deg: float = 12.0, timeout_at: int | None = None, **changes: object
             ) -> tuple[CredRecord, SimulatedMicroscope, SimulatedCamera]:  # fmt: skip
    mic, cam = make_scope(CRYSTAL)
    if timeout_at is not None:
        cam.timeout_at_frame = timeout_at
    settings = CredSettings.model_validate(
        {"exposure_s": 0.5, "rotation_range_deg": range_deg, "rotation_speed_deg_per_s": 2.0,
         "defocus_every": 5, **changes}
    )  # fmt: skip
    return collect_cred(mic, cam, settings), mic, cam


def test_experiment_layout_and_log(tmp_path: Path) -> None:
    record, mic, cam = _collect()
    out = write_cred(record, tmp_path, call_log=mic.call_log)
    d = out.directory
    assert d == tmp_path / "experiment_1" and out.scan is not None
    for name in ("cRED_log.txt", "events.log", "calls.jsonl", "slots.csv", "tracking.csv",
                 "settings.yaml", "cred.png", "SMV/XDS.INP", "SMV/dials_process.sh",
                 "NXmx/cred.nxs", "RED/1.ed3d", "beam_centers.txt"):  # fmt: skip
        assert (d / name).is_file(), name
    scan = out.scan
    assert scan.detector_shape == (516, 516) and scan.untrusted_rectangles  # Timepix expanded
    assert set(scan.excluded_frames) == set(record.defocused)
    frames = sorted((d / "tiff").glob("*.tiff"))
    assert len(frames) == len(record.frames) and len(list((d / "tiff_image").glob("*"))) == 2
    first = min(record.frames)
    smv = read_smv(d / "SMV" / "data" / f"{first:05d}.img")
    assert smv.data.shape == (516, 516)
    assert smv.data.sum() == pytest.approx(record.frames[first].sum(), rel=1e-6)
    assert read_tiff(frames[0]).data.shape == (516, 516)
    log = parse_cred_log(d / "cRED_log.txt")
    assert log.starting_angle_deg == pytest.approx(record.slot_start_deg(1), abs=0.01)
    assert log.oscillation_deg == pytest.approx(record.oscillation_deg, rel=1e-3)
    assert log.n_frames_diff == len(record.frames) and log.image_interval == 5
    assert "rotation started" in (d / "events.log").read_text()
    slots = pd.read_csv(d / "slots.csv")
    diff = slots[slots["kind"] == "diffraction"]
    assert len(diff) == len(record.frames) and diff["intensity_scale"].median() == pytest.approx(
        1.0
    )
    assert slots.loc[slots["kind"] == "defocused", "diffracted"].isna().all()
    assert diff["diffracted"].iloc[0] == pytest.approx(
        diffracted_intensity(expand_quad(record.frames[first], integer=True), scan.beam_centre_px)
    )
    # the beam centre found in the frames is the simulated camera's (expanded grid)
    truth = np.ravel(raw_to_expanded(*cam.beam_centre_px))
    assert np.hypot(*(np.array(scan.beam_centre_px) - truth)) < 1.0, (scan.beam_centre_px, truth)


def test_calibrated_distortion_reaches_xds_and_the_log(tmp_path: Path) -> None:
    record = _collect(range_deg=4.0, defocus_every=0, stretch_percent=2.0,
                      stretch_azimuth_deg=30.0)[0]  # fmt: skip
    out = write_cred(record, tmp_path, formats=("smv",))
    assert out.scan is not None and out.scan.distortion is not None
    assert out.scan.distortion.ratio == pytest.approx(1.02)
    xds = (out.directory / "SMV" / "XDS.INP").read_text()
    assert "X-GEO_CORR=" in xds and "Y-GEO_CORR=" in xds
    log = parse_cred_log(out.directory / "cRED_log.txt")
    assert log.stretch_amplitude_percent == pytest.approx(2.0)
    assert log.stretch_azimuth_deg == pytest.approx(30.0)


def test_experiments_never_overwrite(tmp_path: Path) -> None:
    first = _collect(range_deg=4.0, defocus_every=0)[0]
    second = _collect(range_deg=4.0, defocus_every=0)[0]
    a = write_cred(first, tmp_path)
    stamp = (a.directory / "cRED_log.txt").stat().st_mtime_ns
    b = write_cred(second, tmp_path)
    assert (a.directory.name, b.directory.name) == ("experiment_1", "experiment_2")
    assert (a.directory / "cRED_log.txt").stat().st_mtime_ns == stamp


def test_a_fault_leaves_every_frame_written(tmp_path: Path) -> None:
    record, mic, _ = _collect(range_deg=20.0, timeout_at=8)
    assert record.status.startswith("aborted: camera timeout")
    out = write_cred(record, tmp_path, call_log=mic.call_log)
    assert out.scan is not None and out.scan.n_frames == record.n_slots
    for slot in record.frames:
        read_smv(out.directory / "SMV" / "data" / f"{slot:05d}.img")
    events = (out.directory / "events.log").read_text()
    assert "camera timeout" in events and "status: aborted" in events

    nothing = _collect(range_deg=20.0, timeout_at=0)[0]
    empty = write_cred(nothing, tmp_path)
    assert empty.scan is None and (empty.directory / "events.log").is_file()
    assert "no diffraction frame" in empty.summary()


def test_cli_collects_and_reports_faults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["acquire", "cred", "--simulate", "--out", str(tmp_path), "--rotation-range",
                 "6", "--speed", "2", "--defocus-every", "0", "--formats", "smv"])  # fmt: skip
    assert code == 0 and (tmp_path / "experiment_1" / "SMV" / "XDS.INP").is_file()
    assert "experiment_1" in capsys.readouterr().out
    assert main(["acquire", "cred", "--out", str(tmp_path)]) == 2
    assert "add --simulate" in capsys.readouterr().err
    assert main(["acquire", "cred", "--simulate", "--out", str(tmp_path), "--tracking", "x"]) == 2
    capsys.readouterr()
    assert main(["cred", "import", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err


needs_dials = pytest.mark.skipif(
    shutil.which("dials.import") is None,
    reason="DIALS is not installed (Debian: apt-get install dials)",
)


@pytest.mark.slow
@needs_dials
def test_dials_processes_a_simulated_experiment_and_its_import(tmp_path: Path) -> None:
    """Issue 8: DIALS on our own simulated frames (with defocus gaps): >= 90 % of the
    spots indexed, the cell within 1 %, Laue group 2/m; the same after `cred import` of
    the experiment directory (Instamatic layout)."""
    from crystalscope.rotation.process import run_dials

    record = _collect(range_deg=30.0, defocus_every=8)[0]
    out = write_cred(record, tmp_path / "data", dials=DialsOptions(d_min=0.9, nproc=2))
    assert len(record.defocused) == 3
    direct = run_dials(out.directory, say=lambda text: None)
    code = main(["cred", "import", str(out.directory), "--out", str(tmp_path / "imported"),
                 "--formats", "smv", "--d-min", "0.9"])  # fmt: skip
    assert code == 0
    imported = run_dials(tmp_path / "imported", say=lambda text: None)
    for result in (direct, imported):
        assert result.indexed_fraction is not None and result.indexed_fraction >= 0.9
        assert result.cell is not None
        np.testing.assert_allclose(result.cell, TRUE_CELL, rtol=0.01)
        assert result.laue_group == "2/m", result.laue_group
