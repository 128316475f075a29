"""XDS.INP for electron rotation data, and the geometric correction tables."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from credtools import dials_python, make_scan

from crystalscope.errors import FormatError
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.rotation.scan import RotationScanInfo
from crystalscope.rotation.xds_input import (
    GEO_CORR_FILES,
    geo_corr_tables,
    parse_xds_inp,
    write_xds_inp,
    xds_inp_text,
    xds_rectangle,
)


def _one(keys: dict[str, list[str]], key: str) -> list[float]:
    assert len(keys[key]) == 1, key
    return [float(v) for v in keys[key][0].split()]


def test_keywords_parse_back(tmp_path: Path, scan: RotationScanInfo) -> None:
    (path,) = write_xds_inp(tmp_path, scan, d_min=0.8)
    keys = parse_xds_inp(path)
    assert keys["NAME_TEMPLATE_OF_DATA_FRAMES="] == ["data/?????.img SMV"]
    assert _one(keys, "DATA_RANGE=") == [1, 29]  # frame 30 (excluded) is left out
    assert keys["SPOT_RANGE="] == ["1 9", "11 19", "21 29"]
    assert keys["EXCLUDE_DATA_RANGE="] == ["10 10", "20 20"]
    assert _one(keys, "BACKGROUND_RANGE=") == [1, 9]
    assert _one(keys, "STARTING_ANGLE=") == [-20.0]
    assert _one(keys, "STARTING_FRAME=") == [1]
    assert _one(keys, "OSCILLATION_RANGE=") == [0.5]
    assert _one(keys, "ROTATION_AXIS=") == pytest.approx([0.6, -0.8, 0.0])
    assert _one(keys, "X-RAY_WAVELENGTH=") == pytest.approx([0.025079])
    assert _one(keys, "DETECTOR_DISTANCE=") == [530.0]
    assert _one(keys, "ORGX=") == [242.3] and _one(keys, "ORGY=") == [237.8]
    assert _one(keys, "NX=") == [516] and _one(keys, "NY=") == [516]
    assert _one(keys, "QX=") == [0.055] and _one(keys, "QY=") == [0.055]
    assert _one(keys, "DIRECTION_OF_DETECTOR_X-AXIS=") == [1, 0, 0]
    assert _one(keys, "DIRECTION_OF_DETECTOR_Y-AXIS=") == [0, 1, 0]
    assert _one(keys, "INCIDENT_BEAM_DIRECTION=") == [0, 0, 1]
    assert keys["UNTRUSTED_RECTANGLE="] == ["255 262 0 517", "0 517 255 262"]
    assert _one(keys, "SENSOR_THICKNESS=") == [0.0] and _one(keys, "AIR=") == [0.0]
    assert keys["DETECTOR="] == ["ADSC"] and _one(keys, "OVERLOAD=") == [65535]
    assert _one(keys, "INCLUDE_RESOLUTION_RANGE=") == [20.0, 0.8]
    assert "X-GEO_CORR=" not in keys
    for key in ("REFINE(IDXREF)=", "REFINE(INTEGRATE)=", "REFINE(CORRECT)="):
        assert "DISTANCE" not in keys[key][0] and "POSITION" not in keys[key][0]
    assert all(len(line) <= 80 for line in path.read_text().splitlines())


def test_rectangles_exclude_exactly_the_given_pixels() -> None:
    """XDS excludes X1 < IX < X2 with IX = fs + 1."""
    f0, f1 = 255, 260
    x1, x2, _, _ = xds_rectangle((f0, f1, 0, 515))
    ix = np.arange(1, 517)
    excluded = (ix > x1) & (ix < x2)
    np.testing.assert_array_equal(np.flatnonzero(excluded), np.arange(f0, f1 + 1))


def test_no_gaps_and_known_symmetry() -> None:
    scan = make_scan(excluded_frames=(), untrusted_rectangles=())
    text = xds_inp_text(scan, space_group=14, cell=(7.92, 10.61, 13.84, 90, 104.5, 90))
    assert "EXCLUDE_DATA_RANGE" not in text and "UNTRUSTED_RECTANGLE" not in text
    assert "SPACE_GROUP_NUMBER= 14" in text and "UNIT_CELL_CONSTANTS= 7.9200" in text
    assert "DATA_RANGE= 1 30" in text


def test_geometric_correction_tables(tmp_path: Path) -> None:
    from crystalscope.io.cbf import read_cbf

    dist = EllipticalDistortion(1.05, 30.0)
    scan = make_scan(distortion=dist)
    paths = write_xds_inp(tmp_path, scan)
    keys = parse_xds_inp(paths[0])
    assert keys["DETECTOR="] == ["PILATUS"]
    assert keys["X-GEO_CORR="] == [GEO_CORR_FILES[0]] and keys["Y-GEO_CORR="] == [GEO_CORR_FILES[1]]
    x = read_cbf(tmp_path / GEO_CORR_FILES[0]).data
    y = read_cbf(tmp_path / GEO_CORR_FILES[1]).data
    assert x.shape == (516, 516) and x.dtype.kind == "i"
    np.testing.assert_array_equal(np.stack([x, y]), np.stack(geo_corr_tables(scan)))
    # a circle distorted by the lens, then corrected with the tables, is a circle again
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    c = np.array(scan.beam_centre_px)
    obs_fs, obs_ss = dist.apply(c[0] + 150 * np.cos(angles), c[1] + 150 * np.sin(angles), c)
    ifs, iss = np.rint(obs_fs).astype(int), np.rint(obs_ss).astype(int)
    true_fs = ifs + x[iss, ifs] / 100.0
    true_ss = iss + y[iss, ifs] / 100.0
    radius = np.hypot(true_fs - c[0], true_ss - c[1])
    assert np.ptp(np.hypot(obs_fs - c[0], obs_ss - c[1])) > 5.0  # distorted: an ellipse
    assert np.ptp(radius) < 1.5  # corrected: a circle, to the pixel rounding


def test_parse_errors(tmp_path: Path) -> None:
    bad = tmp_path / "XDS.INP"
    bad.write_text("JOB= ALL\nthis is not a keyword ORGX= 1\n")
    with pytest.raises(FormatError) as info:
        parse_xds_inp(bad)
    assert info.value.line == 2
    with pytest.raises(FormatError, match="cannot read"):
        parse_xds_inp(tmp_path / "missing.INP")


def test_cctbx_reads_our_xds_inp(tmp_path: Path, scan: RotationScanInfo) -> None:
    """iotbx.xds.xds_inp (cctbx's XDS.INP reader) understands the file."""
    exe = dials_python()
    if exe is None:
        pytest.skip("DIALS is not installed (Debian: apt-get install dials)")
    (path,) = write_xds_inp(tmp_path, scan)
    code = (
        "import sys; from iotbx.xds import xds_inp; r = xds_inp.reader(); "
        "r.read_file(sys.argv[1]); print(r.orgx, r.orgy, r.detector_distance, "
        "' '.join(map(str, r.rotation_axis)), r.oscillation_range, "
        "' '.join(map(str, r.data_range)), len(r.untrusted_rectangle), r.sensor_thickness)"
    )
    out = subprocess.run([exe, "-c", code, str(path)], capture_output=True, text=True, check=True)
    values = [float(v) for v in out.stdout.split()]
    assert values == pytest.approx([242.3, 237.8, 530.0, 0.6, -0.8, 0.0, 0.5, 1, 29, 2, 0.0])
