"""REDp .ed3d input: contents and round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from credtools import make_scan

from crystalscope.errors import FormatError
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.rotation.redp import read_ed3d, write_ed3d
from crystalscope.rotation.scan import axis_from_instamatic


def test_round_trip(tmp_path: Path) -> None:
    scan = make_scan(
        rotation_axis=axis_from_instamatic(np.radians(-128.4)),
        distortion=EllipticalDistortion(1.0243, 83.37),
    )
    files = {i: f"{i:05d}.mrc" for i in scan.data_frames}
    ed3d = read_ed3d(write_ed3d(tmp_path / "1.ed3d", scan, files))
    v = ed3d.values
    assert v["WAVELENGTH"] == pytest.approx(0.025079)
    assert v["ROTATIONAXIS"] == pytest.approx(-128.4, abs=1e-5)
    assert v["CCDPIXELSIZE"] == pytest.approx(scan.reciprocal_pixel_size, abs=1e-6)
    assert v["GONIOTILTSTEP"] == pytest.approx(0.5)
    assert v["BEAMTILTSTEP"] == 0 and v["BEAMTILTRANGE"] == 0
    assert v["STRETCHINGMP"] == pytest.approx(2.43) and v["STRETCHINGAZIMUTH"] == 83.37
    assert len(ed3d.files) == 27
    name, gonio, beam_tilt, total = ed3d.files[-1]
    assert name == "00029.mrc" and beam_tilt == 0.0
    assert gonio == total == pytest.approx(scan.frame_start_deg(29) + 0.25)


def test_axis_out_of_plane_is_refused(tmp_path: Path) -> None:
    from crystalscope.errors import DataError

    with pytest.raises(DataError, match="perpendicular"):
        write_ed3d(tmp_path / "1.ed3d", make_scan(rotation_axis=(0, 0.6, 0.8)), {1: "a.mrc"})
    assert not (tmp_path / "1.ed3d").exists()


def test_read_errors(tmp_path: Path) -> None:
    path = tmp_path / "1.ed3d"
    path.write_text("WAVELENGTH 0.025\nFILELIST\nFILE a.mrc 1.0 0\nENDFILELIST\n")
    with pytest.raises(FormatError) as info:
        read_ed3d(path)
    assert info.value.line == 3 and info.value.field == "FILE"
    path.write_text("WAVELENGTH abc\nFILELIST\nENDFILELIST\n")
    with pytest.raises(FormatError, match="number"):
        read_ed3d(path)
    path.write_text("WAVELENGTH 0.025\n")
    with pytest.raises(FormatError, match="FILELIST"):
        read_ed3d(path)
