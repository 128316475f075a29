"""Hand-off files: SMV frames, NXmx, MRC + .ed3d, XDS.INP and the DIALS scripts, and what
DIALS and dxtbx read from them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from credtools import dials_python, make_frames, make_scan, needs_dials

from crystalscope.errors import CrystalscopeError, DataError, FormatError
from crystalscope.io.mrc import read_mrc
from crystalscope.io.smv import read_smv
from crystalscope.rotation.dials_script import (
    DialsOptions,
    dials_commands,
    read_dials_script,
)
from crystalscope.rotation.handoff import read_scan_record, write_handoff
from crystalscope.rotation.redp import read_ed3d
from crystalscope.rotation.scan import RotationScanInfo


def test_smv_frames_carry_the_geometry(
    tmp_path: Path, scan: RotationScanInfo, frames: dict[int, np.ndarray]
) -> None:
    out = write_handoff(tmp_path / "h", frames, scan, formats=("smv",))
    assert len(out.smv_frames) == 30
    image = read_smv(tmp_path / "h" / "SMV" / "data" / "00011.img")
    assert image.data.dtype == np.uint16
    np.testing.assert_array_equal(image.data, np.clip(frames[11], 0, 65535))
    meta = image.metadata
    assert meta["beam_center_px"] == pytest.approx(scan.beam_centre_px)
    assert meta["distance_mm"] == 530.0 and meta["pixel_size_mm"] == (0.055, 0.055)
    assert meta["phi_start_deg"] == pytest.approx(-15.0) and meta["phi_range_deg"] == 0.5
    assert meta["wavelength_a"] == pytest.approx(0.025079)
    blank = read_smv(tmp_path / "h" / "SMV" / "data" / "00010.img")
    assert not blank.data.any() and blank.metadata["header"]["EXCLUDED"] == "1"
    clipped = sum(int(np.count_nonzero(frames[i] > 65535)) for i in scan.data_frames)
    assert out.clipped_pixels == clipped
    assert read_scan_record(tmp_path / "h" / "rotation_scan.yaml") == scan


def test_mrc_frames_for_redp_are_upside_down(
    tmp_path: Path, scan: RotationScanInfo, frames: dict[int, np.ndarray]
) -> None:
    out = write_handoff(tmp_path, frames, scan, formats=("mrc",))
    assert len(out.mrc_frames) == 27 and out.ed3d is not None
    data = read_mrc(tmp_path / "RED" / "00002.mrc").data
    np.testing.assert_array_equal(np.flipud(data), np.clip(frames[2], 0, 65535))
    ed3d = read_ed3d(out.ed3d)
    assert [f[0] for f in ed3d.files] == [f"{i:05d}.mrc" for i in scan.data_frames]
    assert ed3d.files[0][1] == pytest.approx(-19.75)  # middle of frame 1
    assert ed3d.values["GONIOTILTSTEP"] == pytest.approx(0.5)
    assert ed3d.values["CCDPIXELSIZE"] == pytest.approx(scan.reciprocal_pixel_size, rel=1e-4)
    a = np.radians(ed3d.values["ROTATIONAXIS"])
    assert (np.cos(a), -np.sin(a), 0.0) == pytest.approx(scan.rotation_axis, abs=1e-6)


def test_nothing_is_overwritten(
    tmp_path: Path, scan: RotationScanInfo, frames: dict[int, np.ndarray]
) -> None:
    write_handoff(tmp_path, frames, scan, formats=("smv",))
    before = (tmp_path / "SMV" / "XDS.INP").stat().st_mtime_ns
    with pytest.raises(CrystalscopeError, match="exists"):
        write_handoff(tmp_path, frames, scan, formats=("smv", "mrc"))
    assert not (tmp_path / "RED").exists()  # refused before writing anything
    assert (tmp_path / "SMV" / "XDS.INP").stat().st_mtime_ns == before
    write_handoff(tmp_path, frames, scan, formats=("smv",), overwrite=True)


def test_frames_must_match_the_scan(
    tmp_path: Path, scan: RotationScanInfo, frames: dict[int, np.ndarray]
) -> None:
    missing = {k: v for k, v in frames.items() if k != 4}
    with pytest.raises(DataError, match=r"\[4\]"):
        write_handoff(tmp_path / "a", missing, scan)
    with pytest.raises(DataError, match="shape"):
        write_handoff(tmp_path / "b", {**frames, 4: np.zeros((512, 512))}, scan, formats=("smv",))
    with pytest.raises(CrystalscopeError, match="format"):
        write_handoff(tmp_path / "c", frames, scan, formats=("cbf",))


def test_dials_commands() -> None:
    scan = make_scan(excluded_frames=(1, 2, 15, 16, 30))
    cmds = dials_commands(scan, options=DialsOptions(d_min=0.8, nproc=2, space_group="P 21/c"))
    names = [c[0] for c in cmds]
    assert names == [
        "dials.import",
        "dials.generate_mask",
        "dials.apply_mask",
        "dials.find_spots",
        "dials.index",
        "dials.refine",
        "dials.integrate",
        "dials.symmetry",
        "dials.scale",
        "dials.export",
        "dials.export",
    ]
    imp = cmds[0]
    assert "geometry.goniometer.axes=0.600000,0.800000,0.000000" in imp
    assert "geometry.scan.image_range=3,29" in imp
    assert "geometry.scan.oscillation=-19.000000,0.500000" in imp
    assert "untrusted.rectangle=255,261,0,516" in cmds[1]
    find = cmds[3]
    assert [a for a in find if a.startswith("scan_range")] == [
        "scan_range=3,14",
        "scan_range=17,29",
    ]
    assert "d_min=0.8" in find and "nproc=2" in find
    assert "space_group=P21/c" in cmds[4] and "detector.fix=distance" in cmds[4]
    assert "exclude_images=15,16" in cmds[6]
    assert "format=shelx" in cmds[10] and "mtz.hklout=scaled.mtz" in cmds[9]
    nx = dials_commands(scan, source="nxmx", image="cred.nxs")
    assert nx[0][:2] == ["dials.import", "cred.nxs"]
    assert not any(a.startswith("geometry.goniometer") for a in nx[0])
    assert nx[1][0] == "dials.find_spots"  # the NXmx file carries the mask


def test_script_is_executable_and_reads_back(
    tmp_path: Path, scan: RotationScanInfo, frames: dict[int, np.ndarray]
) -> None:
    out = write_handoff(tmp_path, frames, scan, formats=("smv", "nxmx"))
    smv_script, nxmx_script = out.dials_scripts
    assert smv_script.stat().st_mode & stat.S_IXUSR
    assert read_dials_script(smv_script) == dials_commands(scan)
    assert read_dials_script(nxmx_script) == dials_commands(scan, source="nxmx", image="cred.nxs")
    text = smv_script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    (tmp_path / "empty.sh").write_text("#!/bin/sh\necho nothing\n")
    with pytest.raises(FormatError, match="no dials"):
        read_dials_script(tmp_path / "empty.sh")


def _dials(tmp_path: Path, *args: str) -> None:
    proc = subprocess.run(list(args), cwd=tmp_path, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


_TO_XDS = """
import json, sys
from dxtbx.model.experiment_list import ExperimentListFactory
from dxtbx.serialize.xds import to_xds
c = to_xds(ExperimentListFactory.from_json_file(sys.argv[1], check_format=False)[0].imageset)
print(json.dumps({"org": list(c.detector_origin), "axis": list(c.rotation_axis),
                  "distance": c.detector_distance, "x": list(c.detector_x_axis),
                  "y": list(c.detector_y_axis), "start": c.starting_angle}))
"""


@needs_dials
def test_dials_imports_the_smv_series_with_our_geometry(tmp_path: Path) -> None:
    from crystalscope.rotation.process import dials_show

    scan = make_scan(excluded_frames=(1, 10, 20, 30), n_frames=30)
    write_handoff(tmp_path, make_frames(scan), scan, formats=("smv",))
    smv = tmp_path / "SMV"
    _dials(smv, *read_dials_script(smv / "dials_process.sh")[0])
    geometry = dials_show(smv / "imported.expt")
    # dxtbx's SMV frame: fast (1, 0, 0), slow (0, -1, 0), beam centre from the pixel corner
    assert geometry.beam_centre_px == pytest.approx((241.8, 237.3), abs=0.006)
    assert geometry.distance_mm == pytest.approx(530.0)
    assert geometry.fast_axis == pytest.approx((1, 0, 0)) and geometry.slow_axis == pytest.approx(
        (0, -1, 0)
    )
    assert geometry.rotation_axis == pytest.approx(scan.dials_smv_axis(), abs=1e-6)
    assert geometry.image_range == (2, 29)
    assert geometry.oscillation == pytest.approx((-19.5, 0.5))
    assert geometry.wavelength_a == pytest.approx(0.025079, rel=1e-5)
    exe = dials_python()
    if exe is None:
        return
    # dxtbx's own conversion to XDS gives our XDS.INP's origin, axis and frame
    proc = subprocess.run(
        [exe, "-c", _TO_XDS, str(smv / "imported.expt")],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    xds = json.loads(proc.stdout.strip().splitlines()[-1])
    assert xds["org"] == pytest.approx(scan.xds_origin(), abs=1e-6)
    assert xds["axis"] == pytest.approx(scan.xds_rotation_axis(), abs=1e-9)
    assert xds["x"] == pytest.approx([1, 0, 0], abs=1e-9)
    assert xds["y"] == pytest.approx([0, 1, 0], abs=1e-9)
    assert xds["distance"] == pytest.approx(530.0)
