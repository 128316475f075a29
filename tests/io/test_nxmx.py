"""NXmx rotation series: structure, round trip, and what DIALS reads from it."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from crystalscope.acquire import timepix
from crystalscope.errors import CrystalscopeError, DataError, FormatError
from crystalscope.io.nxmx import MASK_DEAD, MASK_USER, read_nxmx, write_nxmx
from crystalscope.rotation.scan import RotationScanInfo

needs_dials = pytest.mark.skipif(
    shutil.which("dials.import") is None,
    reason="DIALS is not installed (Debian: apt-get install dials)",
)


def _scan(**changes: object) -> RotationScanInfo:
    values: dict[str, object] = {
        "wavelength_a": 0.025079,
        "camera_length_mm": 530.0,
        "pixel_size_mm": 0.055,
        "detector_shape": timepix.EXPANDED_SHAPE,
        "beam_centre_px": (241.3, 236.8),
        "rotation_axis": (0.6, -0.8, 0.0),
        "start_angle_deg": -20.0,
        "oscillation_deg": 0.5,
        "n_frames": 12,
        "exposure_s": 0.5,
        "excluded_frames": (5, 10),
        "untrusted_rectangles": timepix.cross_rectangles(),
    }
    values.update(changes)
    return RotationScanInfo(**values)  # type: ignore[arg-type]


def _frames(scan: RotationScanInfo) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(1)
    return {i: rng.poisson(5.0, scan.detector_shape) for i in scan.data_frames}


@pytest.mark.parametrize("compression", ["bslz4", "gzip", "none"])
def test_round_trip(tmp_path: Path, compression: str) -> None:
    scan = _scan()
    frames = _frames(scan)
    path = write_nxmx(tmp_path / "s.nxs", frames, scan, compression=compression)  # type: ignore[arg-type]
    back = read_nxmx(path)
    assert back.scan == scan
    assert back.probe == "electron"
    assert back.frames is not None and back.frames.shape == (12, 516, 516)
    for i in scan.data_frames:
        np.testing.assert_array_equal(back.frames[i - 1], frames[i])
    assert not back.frames[4].any() and not back.frames[9].any()
    assert back.pixel_mask is not None
    np.testing.assert_array_equal(back.pixel_mask != 0, timepix.cross_mask())


def test_nexus_structure(tmp_path: Path) -> None:
    scan = _scan()
    dead = np.zeros(scan.detector_shape, dtype=bool)
    dead[3, 7] = True
    path = write_nxmx(tmp_path / "s.nxs", _frames(scan), scan, mask=dead)
    with h5py.File(path, "r") as f:
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry/definition"][()] == b"NXmx"
        assert f["entry/data"].attrs["signal"] == "data"
        assert f["entry/instrument/detector/data"].id == f["entry/data/data"].id
        assert f["entry/instrument/source/probe"][()] == b"electron"
        assert f["entry/instrument/beam/incident_wavelength"].attrs["units"] == "angstrom"
        omega = f["entry/sample/transformations/omega"]
        np.testing.assert_allclose(omega[()], -20.0 + 0.5 * np.arange(12))
        np.testing.assert_allclose(omega.attrs["vector"], [0.6, -0.8, 0.0])
        assert omega.attrs["transformation_type"] == "rotation"
        assert f["entry/sample/depends_on"][()] == omega.name.encode()
        offset = f["entry/instrument/detector/module/module_offset"]
        np.testing.assert_allclose(offset.attrs["offset"], [-241.8 * 0.055, -237.3 * 0.055, 0])
        np.testing.assert_array_equal(f["entry/instrument/detector/module/data_size"], [516, 516])
        mask = f["entry/instrument/detector/pixel_mask"][()]
        assert mask[3, 7] == MASK_DEAD
        assert mask[0, 256] == MASK_USER and mask[0, 0] == 0
        np.testing.assert_array_equal(f["entry/crystalscope/excluded_frames"], [5, 10])


def test_full_stack_and_errors(tmp_path: Path) -> None:
    scan = _scan(n_frames=3, excluded_frames=(), untrusted_rectangles=())
    stack = np.arange(3 * 516 * 516, dtype=np.float64).reshape(3, 516, 516) / 7.0
    back = read_nxmx(write_nxmx(tmp_path / "f.nxs", stack, scan))
    assert back.frames is not None and back.frames.dtype == np.float32
    np.testing.assert_allclose(back.frames, stack, rtol=1e-6)
    with pytest.raises(CrystalscopeError, match="exists"):
        write_nxmx(tmp_path / "f.nxs", stack, scan)
    with pytest.raises(DataError, match="shape"):
        write_nxmx(tmp_path / "g.nxs", stack[:2], scan)
    with pytest.raises(DataError, match="compression"):
        write_nxmx(tmp_path / "g.nxs", stack, scan, compression="zip")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"1\.\.3"):
        write_nxmx(tmp_path / "g.nxs", {7: stack[0]}, scan)
    with pytest.raises(DataError, match="int32"):
        write_nxmx(tmp_path / "g.nxs", {1: np.full((516, 516), 2**40)}, scan)
    assert not (tmp_path / "g.nxs").exists()


def test_read_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not found"):
        read_nxmx(tmp_path / "missing.nxs")
    (tmp_path / "text.nxs").write_text("not hdf5")
    with pytest.raises(FormatError, match="HDF5"):
        read_nxmx(tmp_path / "text.nxs")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["entry/definition"] = "NXtomo"
    with pytest.raises(FormatError, match="not an NXmx"):
        read_nxmx(tmp_path / "other.h5")


def _import(tmp_path: Path, nxs: Path) -> Path:
    out = tmp_path / "imported.expt"
    proc = subprocess.run(
        ["dials.import", str(nxs), f"output.experiments={out}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return out


@needs_dials
@pytest.mark.parametrize("compression", ["bslz4", "gzip"])
def test_dials_reads_the_geometry(tmp_path: Path, compression: str) -> None:
    from crystalscope.rotation.process import dials_show

    scan = _scan()
    nxs = write_nxmx(tmp_path / "s.nxs", _frames(scan), scan, compression=compression)  # type: ignore[arg-type]
    geometry = dials_show(_import(tmp_path, nxs))
    # dxtbx: McStas -> imgCIF with diag(-1, 1, -1); beam centre from the first pixel's corner
    assert geometry.beam_centre_px == pytest.approx((241.8, 237.3), abs=0.006)
    assert geometry.distance_mm == pytest.approx(530.0)
    assert geometry.wavelength_a == pytest.approx(0.025079, rel=1e-5)
    assert geometry.rotation_axis == pytest.approx(scan.dials_nxmx_axis(), abs=1e-6)
    assert geometry.fast_axis == pytest.approx((-1.0, 0.0, 0.0))
    assert geometry.slow_axis == pytest.approx((0.0, 1.0, 0.0))
    assert geometry.image_range == (1, 12)
    assert geometry.oscillation == pytest.approx((-20.0, 0.5))
    assert geometry.image_size == (516, 516)


_PROBE = """
import json, sys
from dxtbx.model.experiment_list import ExperimentListFactory
iset = ExperimentListFactory.from_json_file(sys.argv[1])[0].imageset
index = int(sys.argv[2])
mask = iset.get_mask(index)[0]
data = iset.get_raw_data(index)[0]
print(json.dumps({"masked": mask.count(False), "sum": int(sum(data))}))
"""


def dxtbx_probe(expt: Path, frame: int) -> dict[str, int] | None:
    """Mask size and frame sum as dxtbx reads them (None without a dxtbx Python)."""
    exe = next(
        (
            shutil.which(n)
            for n in ("dials.python", "libtbx.python", "cctbx.python")
            if shutil.which(n)
        ),
        None,
    )
    if exe is None:
        return None
    proc = subprocess.run(
        [exe, "-c", _PROBE, str(expt), str(frame)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 and "filter" in proc.stderr:
        pytest.skip("DIALS's HDF5 cannot read bitshuffle/LZ4 (Debian: apt-get install bitshuffle)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_dials
def test_dials_masks_the_cross_and_reads_the_frames(tmp_path: Path) -> None:
    scan = _scan()
    frames = _frames(scan)
    nxs = write_nxmx(tmp_path / "s.nxs", frames, scan)
    result = dxtbx_probe(_import(tmp_path, nxs), frame=2)
    if result is None:
        pytest.skip("no Python interpreter with dxtbx (dials.python / libtbx.python) found")
    assert result["masked"] == int(timepix.cross_mask().sum())
    assert result["sum"] == int(frames[3].sum())
