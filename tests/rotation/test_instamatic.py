"""Instamatic-style cRED directories: cRED_log.txt, layout, numbering, round trip."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pytest
from credtools import make_frames, make_scan

from crystalscope.errors import CrystalscopeError, FormatError
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.rotation.instamatic import (
    CRED_LOG,
    CredLog,
    format_cred_log,
    new_experiment_directory,
    parse_cred_log,
    read_cred_directory,
    scan_from_log,
    write_cred_directory,
)

# A log as Instamatic writes it (values from seed 001, Table 1, and the Timepix config)
INSTAMATIC_LOG = """\
Program: instamatic version 1.10.0
Data Collection Time: 2018-06-13 14:03:12
Time Period Start: 1528891392.5
Time Period End: 1528891675.5
Starting angle: -64.06 degrees
Ending angle: 63.91 degrees
Rotation range: 127.97 degrees
Exposure Time: 0.500 s
Acquisition time: 0.512 s
Total time: 283.000 s
Spot Size: 2
Camera length: 250 mm
Pixelsize: 0.00838 px/Angstrom
Physical pixelsize: 0.055 um
Wavelength: 0.02508 Angstrom
Stretch amplitude: 83.37 %
Stretch azimuth: 2.43 degrees
Rotation axis: -2.24 radians
Oscillation angle: 0.2314 degrees
Number of frames: 554
Stage start: X  12345 | Y  -2345 | Z    100 | A -64.06 | B  0.00
Stage end:   X  12400 | Y  -2300 | Z    100 | A 63.91 | B  0.00
Image interval: every 10 frames an image with defocus 19993 (t=0.01 s).
Number of images: 55

References:
 - Cichocka et al. (2018)
"""


def test_instamatic_log(tmp_path: Path) -> None:
    path = tmp_path / CRED_LOG
    path.write_text(INSTAMATIC_LOG)
    log = parse_cred_log(path)
    assert log.starting_angle_deg == -64.06 and log.ending_angle_deg == 63.91
    assert log.oscillation_deg == 0.2314 and log.exposure_s == 0.5
    assert log.n_frames_diff == 554 and log.total_frames == round(127.97 / 0.2314)
    assert log.physical_pixel_size_mm == 0.055
    # Instamatic writes the azimuth after "Stretch amplitude": read back swapped
    assert log.stretch_amplitude_percent == 2.43 and log.stretch_azimuth_deg == 83.37
    assert log.image_interval == 10 and log.defocus == 19993 and log.exposure_image_s == 0.01
    assert log.n_images == 55 and log.spot_size == "2"
    assert log.stage_start == (12345.0, -2345.0, 100.0, -64.06, 0.0)
    assert log.effective_camera_length_mm == pytest.approx(0.055 / (0.02508 * 0.00838))


def test_log_round_trip(tmp_path: Path) -> None:
    scan = make_scan(distortion=EllipticalDistortion(1.02, 40.0))
    log = CredLog.from_scan(
        scan,
        spot_size="3",
        image_interval=10,
        defocus=1500.0,
        exposure_image_s=0.01,
        n_images=3,
        acquisition_time_s=0.512,
    )
    path = tmp_path / CRED_LOG
    path.write_text(format_cred_log(log))
    back = parse_cred_log(path)
    assert back.program.startswith("crystalscope")
    for name in (
        "starting_angle_deg",
        "ending_angle_deg",
        "oscillation_deg",
        "exposure_s",
        "wavelength_a",
        "rotation_axis_rad",
        "stretch_amplitude_percent",
        "stretch_azimuth_deg",
        "defocus",
        "exposure_image_s",
        "acquisition_time_s",
    ):
        assert getattr(back, name) == pytest.approx(getattr(log, name), rel=1e-6), name
    assert back.n_frames_diff == 27 and back.image_interval == 10 and back.n_images == 3
    assert back.effective_camera_length_mm == pytest.approx(530.0, rel=1e-7)
    rebuilt = scan_from_log(
        back, scan.data_frames, shape=(516, 516), beam_centre_px=scan.beam_centre_px
    )
    assert rebuilt.rotation_axis == pytest.approx(scan.rotation_axis, abs=1e-8)
    assert rebuilt.excluded_frames == scan.excluded_frames
    assert rebuilt.distortion is not None and rebuilt.distortion.ratio == pytest.approx(1.02)


def test_missing_item_names_field_and_file(tmp_path: Path) -> None:
    path = tmp_path / CRED_LOG
    path.write_text(INSTAMATIC_LOG.replace("Oscillation angle: 0.2314 degrees\n", ""))
    with pytest.raises(FormatError) as info:
        parse_cred_log(path)
    assert info.value.field == "Oscillation angle" and info.value.path == str(path)
    path.write_text(INSTAMATIC_LOG.replace("0.02508 Angstrom", "unknown"))
    with pytest.raises(FormatError) as bad:
        parse_cred_log(path)
    assert bad.value.field == "Wavelength" and bad.value.line == 15


def test_decreasing_rotation_flips_axis_and_angles(tmp_path: Path) -> None:
    path = tmp_path / CRED_LOG
    path.write_text(
        INSTAMATIC_LOG.replace("Starting angle: -64.06", "Starting angle: 63.91").replace(
            "Ending angle: 63.91", "Ending angle: -64.06"
        )
    )
    log = parse_cred_log(path)
    scan = scan_from_log(log, range(1, 554), shape=(516, 516), beam_centre_px=(258, 258))
    a = -2.24
    assert scan.rotation_axis == pytest.approx((-math.cos(a), math.sin(a), 0.0))
    assert scan.start_angle_deg == pytest.approx(-63.91) and scan.oscillation_deg > 0
    # the stage angle of frame i, -phi, decreases from 63.91 by 0.2314 per frame
    assert -scan.frame_start_deg(11) == pytest.approx(63.91 - 10 * 0.2314)


def test_experiment_directories_are_numbered_and_never_reused(tmp_path: Path) -> None:
    first = new_experiment_directory(tmp_path)
    second = new_experiment_directory(tmp_path)
    assert (first.name, second.name) == ("experiment_1", "experiment_2")
    (tmp_path / "experiment_7").mkdir()
    assert new_experiment_directory(tmp_path).name == "experiment_8"
    made: list[Path] = []
    threads = [
        threading.Thread(target=lambda: made.append(new_experiment_directory(tmp_path)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.name for p in made}) == 8


def test_directory_round_trip(tmp_path: Path) -> None:
    scan = make_scan()
    frames = make_frames(scan)
    defocused = {i: np.full(scan.detector_shape, 7, dtype=np.uint16) for i in (10, 20, 30)}
    out = new_experiment_directory(tmp_path)
    written = write_cred_directory(out, frames, scan, defocused=defocused)
    for sub in ("tiff", "tiff_image", "SMV/data", "RED", "NXmx"):
        assert (out / sub).is_dir(), sub
    assert sorted(p.name for p in (out / "tiff_image").iterdir()) == [
        "00010.tiff",
        "00020.tiff",
        "00030.tiff",
    ]
    assert (out / "SMV" / "XDS.INP").is_file() and (out / "RED" / "1.ed3d").is_file()
    centres = np.loadtxt(out / "beam_centers.txt")
    assert centres.shape == (30, 2) and np.isnan(centres[9]).all()
    np.testing.assert_allclose(centres[0], [236.8, 241.3])  # row, column
    back = read_cred_directory(out)
    assert back.kind == "tiff" and back.centre_source == "beam_centers.txt"
    assert sorted(back.frames) == list(scan.data_frames)
    assert sorted(back.defocused) == [10, 20, 30]
    expected = scan.replace(untrusted_rectangles=())
    assert back.scan.rotation_axis == pytest.approx(expected.rotation_axis)
    assert back.scan.excluded_frames == expected.excluded_frames
    assert back.scan.camera_length_mm == pytest.approx(530.0, rel=1e-6)
    assert back.scan.beam_centre_px == pytest.approx(scan.beam_centre_px)
    assert written.handoff is not None and written.handoff.nxmx is not None
    with pytest.raises(CrystalscopeError, match="exists"):
        write_cred_directory(out, frames, scan)


def test_mrc_only_directory_reads_frames_upright(tmp_path: Path) -> None:
    from crystalscope.rotation.instamatic import read_frame

    scan = make_scan()
    frames = make_frames(scan)
    write_cred_directory(tmp_path, frames, scan, handoff=("mrc",))
    for sub in ("tiff",):
        for p in (tmp_path / sub).iterdir():
            p.unlink()
        (tmp_path / sub).rmdir()
    back = read_cred_directory(tmp_path)
    assert back.kind == "mrc"
    np.testing.assert_array_equal(read_frame(back.frames[3], "mrc"), np.clip(frames[3], 0, 65535))


def test_unreadable_directory(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not a directory"):
        read_cred_directory(tmp_path / "nothing")
    (tmp_path / CRED_LOG).write_text(INSTAMATIC_LOG)
    with pytest.raises(FormatError, match="no diffraction frames"):
        read_cred_directory(tmp_path)
