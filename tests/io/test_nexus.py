"""Tests of frames and metadata from foreign HDF5 / NeXus / CXI files (crystalscope.io.nexus)."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from crystalscope.errors import FormatError
from crystalscope.io.images import open_frames, read_image
from crystalscope.io.nexus import (
    find_frames_dataset,
    nexus_frames,
    open_nexus_frames,
    read_nexus,
    read_nexus_metadata,
)
from crystalscope.model.beam import photon_wavelength

CXI = "cdtools/PETRAIII_P25_Near_Field_Ptycho.cxi"


# --------------------------------------------------------------------------- the real CXI


def test_real_cxi_frames(shared_data: Path) -> None:
    path = shared_data / CXI
    assert find_frames_dataset(path) == ["/entry_1/data_1/data"]  # a soft link in the file
    frames, meta = open_nexus_frames(path)
    assert frames.shape == (200, 100, 100) and frames.dtype == np.int32
    assert frames.chunks == ((1,) * 200, (100,), (100,))
    with h5py.File(path) as f:
        raw = f["/entry_1/instrument_1/detector_1/data"]
        np.testing.assert_array_equal(frames[17].compute(), raw[17])
        np.testing.assert_array_equal(frames[-1].compute(), raw[199])
        total = int(raw[()].astype(np.int64).sum())
    assert int(frames.sum(dtype=np.int64).compute()) == total == 1_933_520_759
    assert meta["frames_shape"] == (200,) and meta["dataset"] == "/entry_1/data_1/data"


def test_real_cxi_metadata(shared_data: Path) -> None:
    meta = read_nexus_metadata(shared_data / CXI, "/entry_1/data_1/data")
    # source_1/wavelength = 9.794912e-11 m; energy = 2.0280385e-15 J (12.658 keV)
    assert meta["wavelength_a"] == pytest.approx(0.9794912, rel=1e-6)
    assert meta["energy_ev"] == pytest.approx(12658.02, rel=1e-6)
    assert photon_wavelength(meta["energy_ev"]) == pytest.approx(meta["wavelength_a"], rel=1e-5)
    assert meta["distance_mm"] == pytest.approx(1120.0, rel=1e-6)
    assert meta["pixel_size_mm"] == pytest.approx((0.055, 0.055), rel=1e-6)
    mask = meta["mask"]
    assert mask.shape == (100, 100) and mask.dtype == np.uint32
    assert meta["bad_pixels"].sum() == 5
    assert [tuple(ix) for ix in np.argwhere(meta["bad_pixels"])] == [
        (17, 39), (21, 76), (62, 9), (76, 23), (85, 81),
    ]  # fmt: skip
    translations = meta["sample_translation_mm"]
    assert translations.shape == (200, 3)
    np.testing.assert_allclose(translations[0], [-0.0534, -0.0384, 0.0], atol=1e-6)
    assert meta["detector_basis_vectors_mm"].shape == (3, 2)
    np.testing.assert_allclose(np.abs(meta["detector_basis_vectors_mm"]).max(), 0.055, rtol=1e-6)


def test_real_cxi_through_images_module(shared_data: Path) -> None:
    frames, meta = open_frames(shared_data / CXI)
    image = read_image(shared_data / CXI)
    assert image.format == "hdf5" and image.data.shape == (200, 100, 100)
    np.testing.assert_array_equal(image.data[5], frames[5].compute())
    # masked pixels are dead: no counts in any frame
    assert image.data[:, meta["bad_pixels"]].max() == 0
    restored = pickle.loads(pickle.dumps(frames[:3]))
    np.testing.assert_array_equal(restored.compute(), image.data[:3])


# --------------------------------------------------------------------------- NeXus layouts


def _nexus(path: Path, data: np.ndarray) -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["default"] = "entry"
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["default"] = "plot"
        plot = entry.create_group("plot")
        plot.attrs["NX_class"] = "NXdata"
        plot.attrs["signal"] = "counts"
        plot.create_dataset("counts", data=data, chunks=(1, *data.shape[1:]), compression="gzip")
        det = entry.create_group("instrument/detector")
        det.create_dataset("distance", data=152.5).attrs["units"] = "mm"
        det.create_dataset("x_pixel_size", data=75.0).attrs["units"] = "um"
        det.create_dataset("y_pixel_size", data=75.0).attrs["units"] = "um"
        det.create_dataset("count_time", data=2.5).attrs["units"] = "ms"
        det.create_dataset("pixel_mask", data=np.eye(*data.shape[-2:], dtype=np.uint32) * 2)
        beam = entry.create_group("instrument/beam")
        beam.create_dataset("incident_energy", data=200.0).attrs["units"] = "keV"
    return path


def test_nexus_default_plot_and_units(tmp_path: Path) -> None:
    data = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)
    path = _nexus(tmp_path / "scan.nxs", data)
    frames, meta = nexus_frames(path)
    assert meta["dataset"] == "/entry/plot/counts"
    np.testing.assert_array_equal(frames[:], data)
    assert meta["distance_mm"] == 152.5
    assert meta["pixel_size_mm"] == pytest.approx((0.075, 0.075))
    assert meta["exposure_time_s"] == pytest.approx(0.0025)
    assert meta["energy_ev"] == 200_000.0
    assert meta["wavelength_a"] == pytest.approx(photon_wavelength(200_000.0))
    assert meta["bad_pixels"].sum() == 5


def test_eiger_parts_4dstem_and_explicit_paths(tmp_path: Path) -> None:
    path = tmp_path / "master.h5"
    parts = [np.full((n, 3, 4), i, dtype=np.int32) for i, n in enumerate((2, 3, 1), start=1)]
    scan = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5).astype(np.float32)
    with h5py.File(path, "w") as f:
        for i, part in enumerate(parts, start=1):
            f.create_dataset(f"entry/data/data_{i:06d}", data=part)
        f.create_dataset("stem/scan", data=scan)
    names = find_frames_dataset(path, "/entry/data")
    assert names == [
        "/entry/data/data_000001",
        "/entry/data/data_000002",
        "/entry/data/data_000003",
    ]
    frames, meta = open_nexus_frames(path, "/entry/data")
    assert frames.shape == (6, 3, 4) and meta["dataset"] == names
    assert frames[:, 0, 0].compute().tolist() == [1, 1, 2, 2, 2, 3]
    stem, meta = open_nexus_frames(path, "/stem/scan")
    assert stem.shape == (6, 4, 5) and meta["frames_shape"] == (2, 3)
    np.testing.assert_array_equal(stem.compute().reshape(scan.shape), scan)
    single = read_nexus(path, "/entry/data/data_000003")
    assert single.data.shape == (1, 3, 4)


def test_errors_name_file_and_hdf5_path(tmp_path: Path, shared_data: Path) -> None:
    path = tmp_path / "two.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a/images", data=np.zeros((2, 3, 3)))
        f.create_dataset("b/images", data=np.zeros((2, 3, 3)))
        f.create_dataset("b/names", data=np.array([b"x", b"y"]))
        f.create_dataset("b/vector", data=np.zeros(5))
    with pytest.raises(FormatError, match="candidates: /a/images, /b/images"):
        find_frames_dataset(path)
    with pytest.raises(FormatError) as err:
        open_nexus_frames(path, "/c/images")
    assert err.value.field == "/c/images" and "two.h5" in str(err.value)
    for name, message in (("/b/vector", "not image data"), ("/b/names", "not image data")):
        with pytest.raises(FormatError, match=message) as err:
            open_nexus_frames(path, name)
        assert err.value.field == name
    with pytest.raises(FormatError, match="without data_NNNNNN"):
        open_nexus_frames(path, "/a")
    raw = (shared_data / CXI).read_bytes()
    cut = tmp_path / "cut.cxi"
    cut.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(FormatError, match=re.escape("cut.cxi")):
        open_nexus_frames(cut)
    with pytest.raises(FormatError, match="not found"):
        open_nexus_frames(tmp_path / "missing.h5")


def test_bad_metadata_units(tmp_path: Path) -> None:
    path = _nexus(tmp_path / "units.nxs", np.zeros((1, 2, 2), np.uint8))
    with h5py.File(path, "a") as f:
        f["entry/instrument/detector/distance"].attrs["units"] = "furlong"
    with pytest.raises(FormatError) as err:
        nexus_frames(path)
    assert err.value.field == "/entry/instrument/detector/distance"
    assert "furlong" in str(err.value)
