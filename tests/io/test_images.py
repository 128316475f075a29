"""Tests of the image dispatch (crystalscope.io.images) and the TIFF, MRC and CBF modules."""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import dask
import fabio
import mrcfile
import numpy as np
import pytest
import tifffile

from crystalscope.errors import DataError, FormatError
from crystalscope.io.cbf import read_cbf, write_cbf
from crystalscope.io.image_data import ImageData
from crystalscope.io.images import image_format, open_frames, read_image, write_image
from crystalscope.io.mrc import read_mrc, write_mrc
from crystalscope.io.tiff import read_tiff, write_tiff

META: dict[str, Any] = {
    "pixel_size_mm": (0.172, 0.172),
    "distance_mm": 585.907,
    "wavelength_a": 0.97938,
    "beam_center_px": (1241.81, 1249.2),
    "exposure_time_s": 0.1,
    "phi_start_deg": -90.0,
    "phi_range_deg": 1.0,
}


def _stack(n: int = 5, shape: tuple[int, int] = (24, 32), dtype: str = "uint16") -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 5000, (n, *shape)).astype(dtype)


def _assert_meta(meta: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        assert meta[key] == pytest.approx(value, rel=1e-9), key


# --------------------------------------------------------------------------- TIFF


@pytest.mark.parametrize("dtype", ["uint16", "int32", "float32", "float64"])
def test_tiff_stack_round_trip(tmp_path: Path, dtype: str) -> None:
    data = _stack(dtype=dtype)
    path = tmp_path / "stack.tif"
    write_tiff(path, data, {**META, "note": "cRED run 3"})
    image = read_tiff(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.data.dtype == np.dtype(dtype) and image.n_frames == 5
    _assert_meta(image.metadata, META)
    assert image.metadata["note"] == "cRED run 3"
    assert isinstance(image.metadata["beam_center_px"], tuple)
    with tifffile.TiffFile(path) as tif:  # one page per frame, readable by anyone
        assert len(tif.series[0].pages) == 5


def test_tiff_single_page_and_foreign_file(tmp_path: Path) -> None:
    data = _stack(1)[0]
    path = tmp_path / "one.tiff"
    write_tiff(path, data)
    image = read_tiff(path)
    assert image.data.shape == (24, 32) and image.metadata == {}
    foreign = tmp_path / "foreign.tif"
    tifffile.imwrite(foreign, _stack(3), description="made elsewhere", metadata=None,
                     photometric="minisblack")  # fmt: skip
    image = read_tiff(foreign)
    assert image.data.shape == (3, 24, 32)
    assert image.metadata["header"]["ImageDescription"] == "made elsewhere"


def test_tiff_errors(tmp_path: Path) -> None:
    path = tmp_path / "s.tif"
    write_tiff(path, _stack())
    raw = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FormatError, match=re.escape("cut.tif")):
        read_tiff(cut)
    with pytest.raises(DataError, match="JSON"):
        write_tiff(path, _stack(), {"bad": object()})
    with pytest.raises(DataError, match="2-D or 3-D"):
        write_tiff(path, np.zeros(5))


# --------------------------------------------------------------------------- MRC


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint16", "float32"])
def test_mrc_stack_round_trip(tmp_path: Path, dtype: str) -> None:
    data = (_stack() % 100).astype(dtype)
    path = tmp_path / "stack.mrcs"
    write_mrc(path, data, {"voxel_size_a": (0.8, 0.8, 1.0), **META})
    image = read_mrc(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.data.dtype == np.dtype(dtype)
    assert image.metadata["voxel_size_a"] == pytest.approx((0.8, 0.8, 1.0))
    assert image.metadata["mrc_stack"] and not image.metadata["mrc_volume"]
    _assert_meta(image.metadata, META)
    with mrcfile.open(path) as mrc:  # a valid MRC2014 file for other programs
        assert mrc.is_image_stack()
    assert mrcfile.validate(str(path), print_file=io.StringIO())


def test_mrc_volume_single_image_and_conversions(tmp_path: Path) -> None:
    path = tmp_path / "vol.mrc"
    write_mrc(path, _stack(4).astype(np.float64) / 7, {"mrc_volume": True, "voxel_size_a": 2.0})
    image = read_mrc(path)
    assert image.metadata["mrc_volume"] and image.data.dtype == np.float32
    np.testing.assert_allclose(image.data, _stack(4) / 7, rtol=1e-6)
    single = tmp_path / "one.mrc"
    write_mrc(single, _stack(1)[0].astype(np.uint8), {"header": {"labels": ["frame 1"]}})
    image = read_mrc(single)
    assert image.data.shape == (24, 32) and image.data.dtype == np.uint16
    assert image.metadata["header"]["labels"][-1] == "frame 1"
    with pytest.raises(DataError, match="exactly"):
        write_mrc(single, np.full((2, 2), 2**40 + 1, dtype=np.int64))


def test_mrc_truncated(tmp_path: Path) -> None:
    path = tmp_path / "s.mrc"
    write_mrc(path, _stack())
    raw = path.read_bytes()
    cut = tmp_path / "cut.mrc"
    cut.write_bytes(raw[:-100])
    with pytest.raises(FormatError, match=re.escape("cut.mrc")):
        read_mrc(cut)
    with pytest.raises(FormatError, match=re.escape("cut.mrc")):
        open_frames(cut)[0][-1].compute()


# --------------------------------------------------------------------------- CBF


def test_cbf_round_trip(tmp_path: Path) -> None:
    data = _stack(1, dtype="int32")[0]
    data[0, 0], data[1, 1] = -1, -2  # PILATUS gap and bad-pixel markers
    path = tmp_path / "frame_00001.cbf"
    write_cbf(path, data, META)
    image = read_cbf(path)
    np.testing.assert_array_equal(image.data, data)
    _assert_meta(image.metadata, META)
    contents = image.metadata["header"]["_array_data.header_contents"]
    assert "# Beam_xy (1242.31, 1249.7) pixels" in contents  # pixel-corner on disk
    assert "# Detector_distance 0.585907 m" in contents
    # fabio (an independent reader) sees the same pixels
    np.testing.assert_array_equal(fabio.open(str(path)).data, data)


def test_cbf_keeps_other_header_lines(tmp_path: Path) -> None:
    contents = "# Detector: PILATUS 2M, S/N 24-0107\n# Tau = 199.1e-09 s\n# Wavelength 1.0 A"
    path = tmp_path / "a.cbf"
    write_cbf(
        path, np.zeros((3, 4), np.int32), {"header": {"_array_data.header_contents": contents}}
    )
    image = read_cbf(path)
    assert image.metadata["wavelength_a"] == 1.0
    assert image.metadata["pilatus"]["Detector"] == "PILATUS 2M, S/N 24-0107"
    write_cbf(path, image.data, {**image.metadata, "wavelength_a": 0.5})
    lines = read_cbf(path).metadata["header"]["_array_data.header_contents"].splitlines()
    assert lines == ["# Detector: PILATUS 2M, S/N 24-0107", "# Tau = 199.1e-09 s",
                     "# Wavelength 0.5 A"]  # fmt: skip


def test_cbf_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.cbf"
    write_cbf(path, _stack(1, dtype="int32")[0], META)
    raw = path.read_bytes()
    cut = tmp_path / "cut.cbf"
    cut.write_bytes(raw[:-200])
    with pytest.raises(FormatError, match=re.escape("cut.cbf")):
        read_cbf(cut)
    bad = tmp_path / "bad.cbf"
    bad.write_bytes(raw.replace(b"# Wavelength 0.97938 A", b"# Wavelength 0.97938 X"))
    with pytest.raises(FormatError) as err:
        read_cbf(bad)
    assert err.value.field == "Wavelength"
    with pytest.raises(DataError, match="exactly"):
        write_cbf(path, np.full((2, 2), 0.5))


# --------------------------------------------------------------------------- dispatch


@pytest.mark.parametrize(
    ("name", "fmt", "data"),
    [
        ("a.tif", "tiff", _stack()),
        ("a.mrc", "mrc", _stack().astype(np.int16)),
        ("a.img", "smv", _stack(1)),
        ("a.cbf", "cbf", _stack(1).astype(np.int32)),
    ],
)
def test_write_read_open_dispatch(tmp_path: Path, name: str, fmt: str, data: np.ndarray) -> None:
    path = tmp_path / name
    write_image(path, data, META)
    assert image_format(path) == fmt
    image = read_image(path)
    assert isinstance(image, ImageData) and image.format == fmt
    np.testing.assert_array_equal(image.frames(), data)
    _assert_meta(image.metadata, META)
    frames, meta = open_frames(path)
    assert frames.shape == data.shape and frames.chunks[0] == (1,) * len(data)
    assert frames.chunksize == (1, *data.shape[1:])
    np.testing.assert_array_equal(frames[-1].compute(), data[-1])
    np.testing.assert_array_equal(frames.sum(axis=(1, 2)).compute(), data.sum(axis=(1, 2)))
    _assert_meta(meta, META)
    # the graph is picklable (for distributed workers) and deterministic
    restored = pickle.loads(pickle.dumps(frames))
    np.testing.assert_array_equal(restored.compute(), data)
    assert dask.base.tokenize(open_frames(path)[0]) == dask.base.tokenize(frames)


def test_series_of_single_images(tmp_path: Path) -> None:
    data = _stack(4)
    paths = []
    for i, frame in enumerate(data):
        paths.append(tmp_path / f"frame_{i:05d}.img")
        write_image(paths[-1], frame, {**META, "phi_start_deg": -90.0 + i})
    frames, meta = open_frames(paths)
    assert frames.shape == (4, 24, 32) and meta["paths"] == [str(p) for p in paths]
    np.testing.assert_array_equal(frames.compute(), data)
    paths[2].write_bytes(paths[2].read_bytes()[:600])
    with pytest.raises(FormatError, match=re.escape("frame_00002.img")):
        open_frames(paths)[0][2].compute()


def test_dispatch_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="cannot write"):
        write_image(tmp_path / "a.png", np.zeros((2, 2)))
    with pytest.raises(FormatError, match="cannot write"):
        write_image(tmp_path / "a.h5", np.zeros((2, 2)))
    with pytest.raises(DataError, match="2-D"):
        write_image(tmp_path / "a.img", np.zeros((2, 2, 2), np.uint16))
    text = tmp_path / "notes.tif"
    text.write_text("not a tiff")
    with pytest.raises(FormatError, match=re.escape("notes.tif")):
        read_image(text)
    with pytest.raises(FormatError, match="not found"):
        open_frames(tmp_path / "missing.cbf")
    write_image(tmp_path / "b.tif", np.zeros((2, 2), np.uint8))
    with pytest.raises(FormatError, match="HDF5"):
        read_image(tmp_path / "b.tif", dataset="/entry/data")


def test_conversion_between_formats_keeps_standard_metadata(tmp_path: Path) -> None:
    """CBF -> SMV -> MRC -> TIFF -> CBF: pixels and standard keys survive, foreign headers
    are not written into other formats."""
    data = _stack(1, dtype="int32")[0]
    path = tmp_path / "start.cbf"
    write_image(path, data, META)
    for name in ("a.img", "b.mrc", "c.tif", "d.cbf"):
        image = read_image(path)
        path = tmp_path / name
        write_image(path, image.data, image.metadata)
    image = read_image(path)
    np.testing.assert_array_equal(image.data, data)
    _assert_meta(image.metadata, META)
    assert image.metadata["header_format"] == "cbf"
    smv_header = read_image(tmp_path / "a.img").metadata["header"]
    assert not any(key.startswith("_array_data") for key in smv_header)
