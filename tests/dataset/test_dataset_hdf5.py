"""Dataset files: round trips, the exact NeXus/CXI layout CrystFEL reads, peaks-only files."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pandas as pd
import pytest
from dsfixtures import make_dataset, make_frames

from crystalscope.dataset import PEAK_STACKS, Dataset
from crystalscope.errors import DataError, FormatError

BITSHUFFLE_FILTER_ID = 32008
BITSHUFFLE_LZ4 = 2  # last filter option: 0 none, 2 LZ4, 3 zstd


def _assert_meta_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            _assert_meta_equal(a[key], b[key])
        else:
            np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))


def test_round_trip_everything(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.add_stack("background", da.from_array(np.full((6, 3), 1.5)), overwrite=False)
    path = ds.write(tmp_path / "run.h5")
    back = Dataset.open(path)
    assert list(back.stacks) == list(ds.stacks)
    for name in ds.stacks:
        np.testing.assert_array_equal(back[name].compute(), ds[name].compute())
        assert back[name].dtype == ds[name].dtype
    expected = ds.shots.assign(file=str(path), event=np.arange(6))
    pd.testing.assert_frame_equal(back.shots, expected)
    pd.testing.assert_frame_equal(back.crystals, ds.crystals)
    _assert_meta_equal(back.meta, ds.meta)
    assert isinstance(back.meta["instrument"]["source"]["voltage_kv"], float)
    assert back.meta["sample"]["name"] == "lysozyme"
    assert list(back.file_meta) == [str(path)]
    _assert_meta_equal(back.file_meta[str(path)], back.meta)
    assert back.frames_path == "/entry/data/data"


def test_nexus_layout_strings_and_compression(tmp_path: Path) -> None:
    path = make_dataset().write(tmp_path / "run.h5")
    with h5py.File(path, "r") as fh:
        assert fh.attrs["default"] == "entry"
        assert fh["entry"].attrs["NX_class"] == "NXentry"
        assert fh["entry/data"].attrs["NX_class"] == "NXdata"
        assert fh["entry/data"].attrs["signal"] == "data"
        assert fh["entry/instrument"].attrs["NX_class"] == "NXinstrument"
        assert fh["entry/instrument/detector"].attrs["NX_class"] == "NXdetector"
        assert fh["entry/sample"].attrs["NX_class"] == "NXsample"
        frames = fh["entry/data/data"]
        assert frames.shape == (6, 24, 32) and frames.dtype == np.uint16
        assert frames.chunks == (1, 24, 32)
        filter_id, _, options, _ = frames.id.get_create_plist().get_filter(0)
        assert filter_id == BITSHUFFLE_FILTER_ID
        assert options[-1] == BITSHUFFLE_LZ4
        note = fh["entry/shots/note"]
        string_info = h5py.check_string_dtype(note.dtype)
        assert string_info is not None and string_info.encoding == "utf-8"
        assert string_info.length is None  # variable length
        assert note.asstr()[0] == "λ=0.025 Å"
        assert list(fh["entry/shots"].attrs["columns"])[:3] == ["file", "event", "frame"]
        assert fh["entry/shots/event"][()].tolist() == list(range(6))
        assert fh["entry/instrument/detector/distance_mm"][()] == 530.5


def test_cxi_peak_lists_as_crystfel_reads_them(tmp_path: Path) -> None:
    """CrystFEL (image-hdf5.c) reads <peak_list>/nPeaks as a 1-D int dataset indexed by the
    event's first dimension, and peakXPosRaw/peakYPosRaw/peakTotalIntensity as 2-D float
    datasets (n_frames, >= nPeaks), all under the peak_list group (/entry/data)."""
    ds = make_dataset()
    path = ds.write(tmp_path / "run.h5")
    with h5py.File(path, "r") as fh:
        group = fh["/entry/data"]
        n_peaks = group["nPeaks"]
        assert n_peaks.ndim == 1 and n_peaks.shape == (6,) and n_peaks.dtype == np.int32
        assert n_peaks[()].tolist() == [3, 0, 1, 1, 0, 2]
        for name in ("peakXPosRaw", "peakYPosRaw", "peakTotalIntensity"):
            dset = group[name]
            assert dset.ndim == 2 and dset.shape == (6, 3) and dset.dtype == np.float32
        # frame 0: peaks sorted by decreasing intensity, pixel-centre positions as given
        assert group["peakTotalIntensity"][0].tolist() == [100.0, 75.0, 50.0]
        assert group["peakXPosRaw"][0].tolist() == [1.0, 20.5, 10.25]
        assert group["peakYPosRaw"][0].tolist() == [2.0, 23.0, 11.5]
        assert group["peakXPosRaw"][1].tolist() == [0.0, 0.0, 0.0]
        assert group["peakTotalIntensity"][5, :2].tolist() == [300.0, 5.0]
    table = Dataset.open(path).peaks()
    assert len(table) == 7
    assert table[table["frame"] == 5]["fs"].tolist() == [30.75, 0.0]


def test_add_peaks_keeps_the_strongest_when_limited() -> None:
    ds = make_dataset()
    ds.add_peaks(ds.peaks(), max_peaks=2)
    assert ds["nPeaks"].compute().tolist() == [2, 0, 1, 1, 0, 2]
    assert ds.shots["num_peaks"].tolist() == [2, 0, 1, 1, 0, 2]
    assert ds["peakTotalIntensity"][0].compute().tolist() == [100.0, 75.0]
    with pytest.raises(DataError, match="frame"):
        ds.add_peaks(pd.DataFrame({"frame": [99], "fs": [0.0], "ss": [0.0], "intensity": [1.0]}))
    with pytest.raises(DataError, match="intensity"):
        ds.add_peaks(pd.DataFrame({"frame": [0], "fs": [0.0], "ss": [0.0]}))


def test_empty_and_zero_width_stacks_round_trip(tmp_path: Path) -> None:
    ds = Dataset.from_arrays(make_frames(n=3))
    ds.add_peaks(pd.DataFrame({"frame": [], "fs": [], "ss": [], "intensity": []}))
    assert ds["peakXPosRaw"].shape == (3, 0)
    back = Dataset.open(ds.write(tmp_path / "nopeaks.h5"))
    assert back["peakXPosRaw"].shape == (3, 0)
    assert back.peaks().empty
    empty = Dataset.from_arrays(np.zeros((0, 4, 4), dtype=np.float32))
    back = Dataset.open(empty.write(tmp_path / "empty.h5"))
    assert back.n_frames == 0 and back.data.shape == (0, 4, 4)


def test_unsupported_content_fails_before_any_file_exists(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.shots["mixed"] = ["a", 1, "b", "c", "d", "e"]
    with pytest.raises(DataError, match="mixed"):
        ds.write(tmp_path / "bad.h5")
    ds = make_dataset()
    ds.meta["instrument"]["nothing"] = None
    with pytest.raises(DataError, match="instrument/nothing"):
        ds.write(tmp_path / "bad.h5")
    ds = make_dataset()
    ds.meta["shots"] = {"x": 1}
    with pytest.raises(DataError, match="reserved"):
        ds.write(tmp_path / "bad.h5")
    assert list(tmp_path.iterdir()) == []


def test_column_types_round_trip(tmp_path: Path) -> None:
    shots = pd.DataFrame(
        {
            "cat": pd.Categorical(["a", "b", "a"]),
            "nullable": pd.array([1, None, 3], dtype="Int64"),
            "complete": pd.array([1, 2, 3], dtype="Int64"),
            "f32": np.array([1.5, np.nan, 2.5], dtype=np.float32),
            "u8": np.array([1, 2, 255], dtype=np.uint8),
            "missing_text": ["x", None, "z"],
        }
    )
    back = Dataset.open(
        Dataset.from_arrays(make_frames(n=3), shots).write(tmp_path / "types.h5")
    ).shots
    assert back["cat"].tolist() == ["a", "b", "a"]
    assert np.isnan(back["nullable"][1]) and back["nullable"][2] == 3.0
    assert back["complete"].dtype == np.int64
    assert back["f32"].dtype == np.float32
    assert back["u8"].dtype == np.uint8
    assert back["missing_text"].tolist() == ["x", "", "z"]


def test_peaks_only_file_references_source_frames(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    raw = make_dataset().write(tmp_path / "raw" / "run.h5")
    ds = Dataset.open(raw).select([4, 1, 2])
    ds.shots["score"] = [1.0, 2.0, 3.0]
    out_dir = tmp_path / "processed"
    out_dir.mkdir()
    peaks_file = ds.write(out_dir / "peaks.h5", frames=False)
    with h5py.File(peaks_file, "r") as fh:
        assert "data" not in fh["entry/data"]
        assert fh["entry/data"].attrs["frames"] == "external"
        assert set(PEAK_STACKS) <= set(fh["entry/data"])
        assert fh["entry/shots/file"].asstr()[0] == "../raw/run.h5"
        assert fh["entry/shots/event"][()].tolist() == [4, 1, 2]
    back = Dataset.open(peaks_file)
    np.testing.assert_array_equal(back.data.compute(), make_frames()[[4, 1, 2]])
    assert back.shots["event"].tolist() == [4, 1, 2]
    assert back.shots["score"].tolist() == [1.0, 2.0, 3.0]
    assert Path(back.shots["file"][0]).resolve() == raw.resolve()
    np.testing.assert_array_equal(back["nPeaks"].compute(), ds["nPeaks"].compute())


def test_peaks_only_needs_frames_from_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="frames"):
        make_dataset().write(tmp_path / "p.h5", frames=False)


def test_real_cxi_file_with_data_path(shared_data: Path) -> None:
    path = shared_data / "cdtools" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
    ds = Dataset.open(path, data_path="/entry_1/instrument_1/detector_1/data")
    assert ds.n_frames == 200 and ds.data.shape == (200, 100, 100)
    assert ds.data.chunks[0] == (1,) * 200
    with h5py.File(path, "r") as fh:
        expected = fh["/entry_1/instrument_1/detector_1/data"][[0, 57, 199]]
    np.testing.assert_array_equal(ds.data[[0, 57, 199]].compute(), expected)
    assert ds.shots["event"].tolist() == list(range(200))
    assert set(ds.shots["file"]) == {str(path)}
    sums = ds.map_frames(np.sum, compute=True)
    assert sums[57] == expected[1].sum()
    with pytest.raises(FormatError, match="no /entry/shots") as err:
        Dataset.open(path)
    assert err.value.path == str(path)
    with pytest.raises(FormatError) as err:
        Dataset.open(path, data_path="/entry_1/data_1/missing")
    assert err.value.field == "/entry_1/data_1/missing" and err.value.path == str(path)
    with pytest.raises(FormatError, match="2 dimensions"):
        Dataset.open(path, data_path="/entry_1/instrument_1/detector_1/distance")


def test_cxi_peaks_from_foreign_file(tmp_path: Path) -> None:
    frames = make_frames(n=4)
    path = tmp_path / "cheetah.cxi"
    with h5py.File(path, "w") as fh:
        fh["entry_1/data_1/data"] = frames
        fh["entry_1/result_1/nPeaks"] = np.array([1, 0, 2, 0], dtype=np.int32)
        xs = np.zeros((4, 2048), dtype=np.float32)
        xs[0, 0], xs[2, :2] = 5.0, [6.0, 7.0]
        fh["entry_1/result_1/peakXPosRaw"] = xs
        fh["entry_1/result_1/peakYPosRaw"] = xs + 1
        fh["entry_1/result_1/peakTotalIntensity"] = xs * 10
    ds = Dataset.open(path, data_path="/entry_1/data_1/data", peaks_path="/entry_1/result_1")
    table = ds.peaks()
    assert table["fs"].tolist() == [5.0, 6.0, 7.0]
    assert table["frame"].tolist() == [0, 2, 2]
    with pytest.raises(FormatError, match="peaks_path"):
        Dataset.open(ds.write(tmp_path / "ours.h5"), peaks_path="/entry_1/result_1")
