"""Tests of the SMV (ADSC) image reader and writer (crystalscope.io.smv)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

from crystalscope.errors import DataError, FormatError
from crystalscope.io.smv import read_smv, read_smv_header, write_smv
from fuzzing import FUZZ_SETTINGS, assert_only_format_errors, mutations

# A complete 6 x 4 SMV file whose pixels happen to be printable bytes (0x4241 = "AB"),
# so that the text mutations of the fuzzer damage header and data alike.
_HEADER = """\
{
HEADER_BYTES=  512;
DIM=2;
BYTE_ORDER=little_endian;
TYPE=unsigned_short;
SIZE1=6;
SIZE2=4;
PIXEL_SIZE=0.055;
BIN=none;
DATE=Tue Mar 12 10:00:00 2024;
TIME=0.5;
DISTANCE=530.0;
OSC_RANGE=0.25;
PHI=-30.0;
OSC_START=-30.0;
TWOTHETA=0.0;
AXIS=phi;
WAVELENGTH=0.025079;
BEAM_CENTER_X=7.15;
BEAM_CENTER_Y=14.3;
DETECTOR_SN=unknown;
}
"""
SEED = _HEADER + " " * (512 - len(_HEADER)) + "AB" * 24


def test_seed_reads(tmp_path: Path) -> None:
    path = tmp_path / "seed.img"
    path.write_bytes(SEED.encode("ascii"))
    image = read_smv(path)
    assert image.data.shape == (4, 6) and image.data.dtype == np.uint16
    assert np.all(image.data == 0x4241)
    meta = image.metadata
    assert meta["pixel_size_mm"] == (0.055, 0.055)
    assert meta["distance_mm"] == 530.0 and meta["wavelength_a"] == 0.025079
    assert meta["exposure_time_s"] == 0.5
    assert (meta["phi_start_deg"], meta["phi_range_deg"]) == (-30.0, 0.25)
    # BEAM_CENTER_Y is along fs, BEAM_CENTER_X along ss, both from the pixel corner
    assert meta["beam_center_px"] == pytest.approx((14.3 / 0.055 - 0.5, 7.15 / 0.055 - 0.5))
    assert meta["header"]["DATE"] == "Tue Mar 12 10:00:00 2024"
    header, size = read_smv_header(path)
    assert size == 512 and list(header)[:3] == ["HEADER_BYTES", "DIM", "BYTE_ORDER"]


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "int16", "int32", "float32"])
@pytest.mark.parametrize("order", ["little_endian", "big_endian"])
def test_round_trip(tmp_path: Path, dtype: str, order: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 30000, (37, 53)).astype(dtype)
    meta = {
        "pixel_size_mm": (0.075, 0.075), "distance_mm": 200.25, "wavelength_a": 0.9795,
        "beam_center_px": (26.3, 18.1), "exposure_time_s": 0.1, "phi_start_deg": 12.5,
        "phi_range_deg": 0.1, "header": {"DATE": "Mon Jan  1 00:00:00 2024", "BIN": "2x2"},
    }  # fmt: skip
    path = tmp_path / "frame.img"
    write_smv(path, data, meta, byte_order=order)
    assert path.stat().st_size == 512 + data.nbytes
    image = read_smv(path)
    np.testing.assert_array_equal(image.data, data)
    assert image.data.dtype == np.dtype(dtype)
    for key, value in meta.items():
        if key == "header":
            for k, v in value.items():
                assert image.metadata["header"][k] == v
        else:
            assert image.metadata[key] == pytest.approx(value, rel=1e-10), key
    # reading and writing again gives the same bytes: the header round-trips exactly
    again = tmp_path / "again.img"
    write_smv(again, image.data, image.metadata, byte_order=order)
    assert again.read_bytes() == path.read_bytes()


def test_header_grows_in_512_byte_blocks(tmp_path: Path) -> None:
    header = {f"KEY_{i}": "x" * 40 for i in range(30)}
    path = tmp_path / "big.img"
    write_smv(path, np.zeros((2, 3), np.uint16), {"header": header})
    _, size = read_smv_header(path)
    assert size % 512 == 0 and size > 1024
    assert read_smv(path).metadata["header"]["KEY_29"] == "x" * 40


def test_lossless_casts_and_write_errors(tmp_path: Path) -> None:
    path = tmp_path / "a.img"
    write_smv(path, np.arange(6, dtype=np.int64).reshape(2, 3))
    assert read_smv(path).data.dtype == np.uint16
    with pytest.raises(DataError, match="exactly"):
        write_smv(path, np.full((2, 2), 0.1))  # 0.1 has no exact float32
    with pytest.raises(DataError, match="2-D"):
        write_smv(path, np.zeros((2, 2, 2), np.uint16))
    with pytest.raises(DataError, match="pixel_size_mm"):
        write_smv(path, np.zeros((2, 2), np.uint16), {"beam_center_px": (1, 1)})
    with pytest.raises(DataError, match="square"):
        write_smv(path, np.zeros((2, 2), np.uint16), {"pixel_size_mm": (0.1, 0.2)})
    with pytest.raises(DataError) as err:
        write_smv(path, np.zeros((2, 2), np.uint16), {"header": {"NOTE": "a;b"}})
    assert err.value.field == "NOTE"


def test_truncated_and_malformed_files(tmp_path: Path) -> None:
    good = tmp_path / "good.img"
    write_smv(good, np.ones((20, 30), np.uint16), {"pixel_size_mm": 0.1})
    raw = good.read_bytes()
    cut = tmp_path / "cut.img"
    cut.write_bytes(raw[:-7])
    with pytest.raises(FormatError, match="truncated") as err:
        read_smv(cut)
    assert "cut.img" in str(err.value)
    header_only = tmp_path / "header.img"
    header_only.write_bytes(raw[:300])
    with pytest.raises(FormatError, match=re.escape("header.img")):
        read_smv(header_only)
    bad = tmp_path / "bad.img"
    bad.write_bytes(raw.replace(b"SIZE1=30;", b"SIZE1=3x;"))
    with pytest.raises(FormatError) as err:
        read_smv(bad)
    assert err.value.field == "SIZE1"
    nokey = tmp_path / "nokey.img"
    nokey.write_bytes(raw.replace(b"DIM=2;", b"DIM 2;"))
    with pytest.raises(FormatError) as err:
        read_smv(nokey)
    assert err.value.line == 3
    text = tmp_path / "t.img"
    text.write_bytes(b"hello")
    with pytest.raises(FormatError, match="not an SMV"):
        read_smv(text)


@FUZZ_SETTINGS
@given(mutations(SEED))
def test_fuzz_smv_reader(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        assert_only_format_errors(read_smv, text, Path(tmp) / "fuzz.img")
