"""Tests of pixel-map files (crystalscope.io.pixel_mask): masks, flat fields."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from crystalscope.errors import ConfigError, CrystalscopeError, DataError, FormatError
from crystalscope.io.pixel_mask import read_pixel_map, read_pixel_mask, write_pixel_map

SHAPE = (24, 40)


def _mask() -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.random(SHAPE) < 0.05


def _flat() -> np.ndarray:
    rng = np.random.default_rng(8)
    return rng.lognormal(0.0, 0.05, SHAPE).astype(np.float32)


# ------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("suffix", [".h5", ".cxi", ".tif", ".npy"])
def test_round_trip_mask_and_flat(tmp_path: Path, suffix: str) -> None:
    mask, flat = _mask(), _flat()
    m_path = write_pixel_map(tmp_path / f"mask{suffix}", mask)
    f_path = write_pixel_map(tmp_path / f"flat{suffix}", flat)
    back = read_pixel_mask(m_path, shape=SHAPE)
    assert back.dtype == bool and np.array_equal(back, mask)
    flat_back = read_pixel_map(f_path, shape=SHAPE)
    assert flat_back.dtype == np.float32 and np.array_equal(flat_back, flat)
    # no temporary files are left beside the targets
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([m_path.name, f_path.name])


def test_hdf5_dataset_choice(tmp_path: Path) -> None:
    mask = _mask()
    path = tmp_path / "m.h5"
    write_pixel_map(path, mask, dataset="/entry/mask")
    assert np.array_equal(read_pixel_mask(path), mask)  # the only 2-D dataset
    with h5py.File(path, "a") as f:
        f["/data/data"] = (~mask).astype(np.int32)
        f["/entry/other"] = np.zeros(SHAPE)
        f["/entry/vector"] = np.arange(5)
    # several 2-D datasets: /data/data is the default, any other one by name
    assert np.array_equal(read_pixel_mask(path, bad="zero"), mask)
    assert np.array_equal(read_pixel_mask(path, dataset="/entry/mask"), mask)
    with h5py.File(path, "a") as f:
        del f["/data/data"]
    with pytest.raises(FormatError, match="several 2-D datasets") as err:
        read_pixel_map(path)
    assert "m.h5" in str(err.value) and "/entry/mask" in str(err.value)
    with pytest.raises(FormatError, match="not found") as err:
        read_pixel_map(path, dataset="/entry/missing")
    assert err.value.field == "/entry/missing" and "m.h5" in str(err.value)
    with pytest.raises(FormatError, match="not a dataset"):
        read_pixel_map(path, dataset="/entry")
    with pytest.raises(FormatError, match="2-D frame") as err:
        read_pixel_map(path, dataset="/entry/vector")
    assert err.value.field == "/entry/vector"


def test_single_frame_stack_and_conventions(tmp_path: Path) -> None:
    mask = _mask()
    path = tmp_path / "stack.h5"
    with h5py.File(path, "w") as f:
        f["/data/data"] = np.where(mask, 0.0, 1.0)[None].astype(np.float64)
    assert np.array_equal(read_pixel_mask(path, bad="zero"), mask)
    assert np.array_equal(read_pixel_mask(path, bad="nonzero"), ~mask)
    with pytest.raises(ConfigError) as err:
        read_pixel_mask(path, bad="odd", field="corrections.mask_file")  # type: ignore[arg-type]
    assert err.value.field == "corrections.mask_file.bad"
    # NaN counts as bad in both conventions
    values = np.where(mask, 1.0, 0.0)
    values[0, 0] = np.nan
    npy = tmp_path / "nan.npy"
    np.save(npy, values)
    for bad in ("nonzero", "zero"):
        assert read_pixel_mask(npy, bad=bad)[0, 0]  # type: ignore[arg-type]


def test_format_from_magic_bytes(tmp_path: Path) -> None:
    mask = _mask().astype(np.uint8)
    odd = tmp_path / "mask.dat"
    tifffile.imwrite(odd, mask)
    assert np.array_equal(read_pixel_map(odd), mask)
    renamed = tmp_path / "mask.bin"
    np.save(tmp_path / "m.npy", mask)
    (tmp_path / "m.npy").rename(renamed)
    assert np.array_equal(read_pixel_map(renamed), mask)
    # an HDF5 file with a user block (signature at byte 512)
    ub = tmp_path / "userblock.h5"
    with h5py.File(ub, "w", userblock_size=512) as f:
        f["/data/data"] = mask
    assert np.array_equal(read_pixel_map(ub), mask)


# ---------------------------------------------------------------------------- errors


def test_shape_mismatch_names_file_and_field(tmp_path: Path) -> None:
    path = write_pixel_map(tmp_path / "small.h5", _mask())
    with pytest.raises(DataError) as err:
        read_pixel_mask(path, shape=(516, 1556), field="corrections.mask_file")
    msg = str(err.value)
    assert err.value.field == "corrections.mask_file"
    assert "small.h5" in msg and "(24, 40)" in msg and "(516, 1556)" in msg and "/data/data" in msg


def test_wrong_dimensionality_and_dtype(tmp_path: Path) -> None:
    for name, array in [("cube.npy", np.zeros((2, 3, 4))), ("line.npy", np.zeros(5))]:
        np.save(tmp_path / name, array)
        with pytest.raises(FormatError, match="2-D frame") as err:
            read_pixel_map(tmp_path / name)
        assert name in str(err.value)
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    with pytest.raises(FormatError, match="not numeric"):
        read_pixel_map(tmp_path / "text.npy")
    tifffile.imwrite(
        tmp_path / "stack.tif", np.zeros((3, 4, 5), np.uint8), photometric="minisblack"
    )
    with pytest.raises(FormatError, match="2-D frame") as err:
        read_pixel_map(tmp_path / "stack.tif")
    assert "stack.tif" in str(err.value)
    with h5py.File(tmp_path / "strings.h5", "w") as f:
        f["/data/data"] = np.array([[b"a", b"b"]])
    with pytest.raises(FormatError, match="not numeric"):
        read_pixel_map(tmp_path / "strings.h5", dataset="/data/data")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["/data/vector"] = np.arange(3)
    with pytest.raises(FormatError, match="no 2-D numeric dataset") as err:
        read_pixel_map(tmp_path / "empty.h5")
    assert "empty.h5" in str(err.value)


@pytest.mark.parametrize("suffix", [".h5", ".tif", ".npy"])
def test_truncated_and_junk_files(tmp_path: Path, suffix: str) -> None:
    good = write_pixel_map(tmp_path / f"good{suffix}", np.arange(96 * 64).reshape(96, 64) * 1.5)
    raw = good.read_bytes()
    for cut in (8, len(raw) // 3, len(raw) - 100):
        bad = tmp_path / f"cut{cut}{suffix}"
        bad.write_bytes(raw[:cut])
        with pytest.raises(FormatError) as err:
            read_pixel_map(bad)
        assert bad.name in str(err.value), str(err.value)
    junk = tmp_path / f"junk{suffix}"
    junk.write_bytes(b"this is not a pixel map at all\n" * 10)
    with pytest.raises(FormatError, match=r"not an HDF5|not a TIFF|not a NumPy") as err:
        read_pixel_map(junk)
    assert junk.name in str(err.value)


def test_missing_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not found") as err:
        read_pixel_mask(tmp_path / "absent.h5", field="corrections.mask_file")
    assert "absent.h5" in str(err.value) and err.value.field == "corrections.mask_file"
    txt = tmp_path / "mask.txt"
    txt.write_text("0 1 0\n")
    with pytest.raises(FormatError, match="unknown pixel-map format"):
        read_pixel_map(txt)
    empty = tmp_path / "empty.npy"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="not a NumPy"):
        read_pixel_map(empty)


def test_write_errors(tmp_path: Path) -> None:
    path = write_pixel_map(tmp_path / "m.npy", _mask())
    with pytest.raises(CrystalscopeError, match="exists"):
        write_pixel_map(path, _mask())
    write_pixel_map(path, np.zeros(SHAPE), overwrite=True)
    assert not read_pixel_mask(path).any()
    with pytest.raises(DataError, match="2-D"):
        write_pixel_map(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(FormatError, match="suffix"):
        write_pixel_map(tmp_path / "mask.png", _mask())
    with pytest.raises(CrystalscopeError, match="directory"):
        write_pixel_map(tmp_path / "absent" / "mask.h5", _mask())
    with pytest.raises(ConfigError) as err:
        write_pixel_map(tmp_path / "m.h5", _mask(), dataset="")
    assert err.value.field == "dataset"
    assert not (tmp_path / "cube.npy").exists() and not (tmp_path / "m.h5").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npy"]


def test_damaged_hdf5_raises_only_format_errors(tmp_path: Path) -> None:
    """Random byte damage (mostly in the metadata) never escapes as another error."""
    src = tmp_path / "src.h5"
    with h5py.File(src, "w") as f:  # uncompressed, so that data damage reads back
        f["/data/data"] = np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) % 3
        f["/data/data"].attrs["note"] = "mask"
    raw = src.read_bytes()
    with h5py.File(src, "r") as f:
        data_at = f["/data/data"].id.get_offset()
    rng = np.random.default_rng(2024)
    path = tmp_path / "damaged.h5"
    outcomes = {"read": 0, "rejected": 0}
    for _ in range(300):
        damaged = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            where = (
                int(rng.integers(0, data_at))
                if rng.random() < 0.8
                else int(rng.integers(0, len(raw)))
            )
            damaged[where] = int(rng.integers(0, 256))
        if rng.random() < 0.1:
            damaged = damaged[: int(rng.integers(0, len(damaged)))]
        path.write_bytes(bytes(damaged))
        try:
            read_pixel_mask(path, shape=(32, 48))
            outcomes["read"] += 1
        except (FormatError, DataError) as err:
            assert "damaged.h5" in str(err), str(err)
            outcomes["rejected"] += 1
    assert outcomes["read"] > 0 and outcomes["rejected"] > 0, outcomes
