"""Opening datasets: many files, glob patterns, .lst files, provenance, and every error."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pandas as pd
import pytest
from dsfixtures import make_dataset, make_frames

from crystalscope.dataset import Dataset
from crystalscope.dataset.reader import close_all
from crystalscope.errors import FormatError


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    a = make_dataset(seed=1)
    a.meta["instrument"]["detector"]["distance_mm"] = 500.0
    a.write(tmp_path / "run_a.h5")
    b = make_dataset(seed=2)
    b.write(tmp_path / "run_b.h5")
    return tmp_path / "run_a.h5", tmp_path / "run_b.h5"


def test_list_of_files_concatenates_lazily_with_provenance(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    ds = Dataset.open([a, b])
    assert ds.n_frames == 12
    assert ds.data.chunks[0] == (1,) * 12
    np.testing.assert_array_equal(
        ds.data.compute(), np.concatenate([make_frames(1), make_frames(2)])
    )
    assert ds.shots["file"].tolist() == [str(a)] * 6 + [str(b)] * 6
    assert ds.shots["event"].tolist() == list(range(6)) * 2
    # frame ids 0..5 occur in both files: the second file's are offset
    assert ds.shots["frame"].tolist() == list(range(12))
    assert ds.crystals["frame"].tolist() == [0, 2, 3, 3, 6, 8, 9, 9]
    assert ds["nPeaks"].shape == (12,)
    # metadata: common part in meta, every file's own in file_meta
    assert "distance_mm" not in ds.meta["instrument"]["detector"]
    assert ds.meta["sample"]["name"] == "lysozyme"
    ds.merge_meta("instrument/detector/distance_mm")
    assert ds.shots["instrument_detector_distance_mm"].tolist() == [500.0] * 6 + [530.5] * 6


def test_glob_pattern_sorted(two_runs: tuple[Path, Path]) -> None:
    a, b = two_runs
    ds = Dataset.open(str(a.parent / "run_*.h5"))
    assert ds.shots["file"].drop_duplicates().tolist() == [str(a), str(b)]
    with pytest.raises(FormatError, match="no file matches"):
        Dataset.open(str(a.parent / "nothing_*.h5"))


def test_lst_with_events_and_relative_paths(
    two_runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lst = tmp_path / "hits.lst"
    lst.write_text("run_b.h5 //5\nrun_a.h5 //1\nrun_a.h5 //3\nrun_b.h5 //0\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # names are not found here: fall back to the list's dir
    ds = Dataset.open(lst)
    assert ds.n_frames == 4
    assert ds.shots["event"].tolist() == [5, 1, 3, 0]
    assert ds.shots["file"].tolist() == [
        str(tmp_path / n) for n in ("run_b.h5", "run_a.h5", "run_a.h5", "run_b.h5")
    ]
    expected = np.stack(
        [make_frames(2)[5], make_frames(1)[1], make_frames(1)[3], make_frames(2)[0]]
    )
    np.testing.assert_array_equal(ds.data.compute(), expected)
    assert ds.data.chunks[0] == (1,) * 4
    # crystals follow their frames: run_a frame 3 has two crystals, run_b frame 0 one
    assert ds.crystals["frame"].tolist() == [3, 3, 0]
    assert ds.crystals["indexer"].tolist() == ["mosflm", "mosflm", "xgandalf"]
    np.testing.assert_array_equal(ds["nPeaks"].compute(), [2, 0, 1, 3])


def test_lst_prefers_current_directory(
    two_runs: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = two_runs
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "run_a.h5").write_bytes(b"not hdf5")  # beside the list, but cwd wins
    lst = lists / "x.lst"
    lst.write_text("run_a.h5 //0\n", encoding="utf-8")
    monkeypatch.chdir(a.parent)
    ds = Dataset.open(lst)
    assert ds.shots["file"].tolist() == ["run_a.h5"]
    np.testing.assert_array_equal(ds.data[0].compute(), make_frames(1)[0])


def test_lst_errors_name_list_and_line(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    a, _ = two_runs
    lst = tmp_path / "bad.lst"
    lst.write_text(f"{a} //0\nmissing.h5 //1\n", encoding="utf-8")
    with pytest.raises(FormatError, match="not found") as err:
        Dataset.open(lst)
    assert (err.value.path, err.value.line) == (str(lst), 2)
    lst.write_text(f"{a} //0\n{a} //6\n", encoding="utf-8")
    with pytest.raises(FormatError, match="out of range") as err:
        Dataset.open(lst)
    assert (err.value.path, err.value.line, err.value.field) == (str(lst), 2, "event")
    lst.write_text(f"{a} //0\n{a} //0\n", encoding="utf-8")
    with pytest.raises(FormatError, match="twice") as err:
        Dataset.open(lst)
    assert err.value.line == 2
    lst.write_text(f"{a} x//0\n", encoding="utf-8")
    with pytest.raises(FormatError, match="//N") as err:
        Dataset.open(lst)
    assert err.value.line == 1


def test_write_lst_round_trip(two_runs: tuple[Path, Path], tmp_path: Path) -> None:
    ds = Dataset.open(list(two_runs)).select("hit")
    lst = ds.write_lst(tmp_path / "hits.lst")
    again = Dataset.open(lst)
    pd.testing.assert_frame_equal(again.shots, ds.shots)
    np.testing.assert_array_equal(again.data.compute(), ds.data.compute())


def test_truncated_file(tmp_path: Path) -> None:
    path = make_dataset().write(tmp_path / "run.h5")
    data = path.read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FormatError, match="truncated") as err:
        Dataset.open(cut)
    assert err.value.path == str(cut)
    cut.write_bytes(data[:100])
    with pytest.raises(FormatError) as err:
        Dataset.open(cut)
    assert err.value.path == str(cut)
    (tmp_path / "text.h5").write_text("hello")
    with pytest.raises(FormatError, match="HDF5"):
        Dataset.open(tmp_path / "text.h5")


def _chunk_offset(path: Path, h5path: str, index: tuple[int, ...]) -> tuple[int, int]:
    with h5py.File(path, "r") as fh:
        info = fh[h5path].id.get_chunk_info_by_coord(index)
        return int(info.byte_offset), int(info.size)


def test_corrupt_frame_chunk_names_file_and_dataset(tmp_path: Path) -> None:
    path = make_dataset().write(tmp_path / "run.h5")
    offset, size = _chunk_offset(path, "/entry/data/data", (3, 0, 0))
    raw = bytearray(path.read_bytes())
    raw[offset : offset + size] = b"\xff" * size  # garbage where compressed frame 3 is
    bad = tmp_path / "bad.h5"
    bad.write_bytes(bytes(raw))
    ds = Dataset.open(bad)  # tables are intact: opening works, frames stay lazy
    np.testing.assert_array_equal(ds.data[2].compute(), make_frames()[2])
    with pytest.raises(FormatError, match="corrupt") as err:
        ds.data[3].compute()
    assert err.value.path == str(bad) and err.value.field == "/entry/data/data"
    with pytest.raises(FormatError):
        ds.map_frames(np.sum, compute=True)


def test_inconsistent_lengths(tmp_path: Path) -> None:
    path = make_dataset().write(tmp_path / "run.h5")
    broken = tmp_path / "broken.h5"
    shutil.copy(path, broken)
    with h5py.File(broken, "a") as fh:
        del fh["entry/data/peakXPosRaw"]
        fh["entry/data/peakXPosRaw"] = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(FormatError, match="5, 3") as err:
        Dataset.open(broken)
    assert err.value.field == "/entry/data/peakXPosRaw" and err.value.path == str(broken)
    shutil.copy(path, broken)
    with h5py.File(broken, "a") as fh:
        del fh["entry/shots/dose"]
        fh["entry/shots/dose"] = np.zeros(4)
    with pytest.raises(FormatError, match="differ in length") as err:
        Dataset.open(broken)
    assert err.value.field == "/entry/shots/dose"
    shutil.copy(path, broken)
    with h5py.File(broken, "a") as fh:
        del fh["entry/shots/frame"]
    with pytest.raises(FormatError, match="key column") as err:
        Dataset.open(broken)
    assert err.value.field == "/entry/shots/frame"
    shutil.copy(path, broken)
    with h5py.File(broken, "a") as fh:
        fh["entry/crystals/frame"][0] = 42
    with pytest.raises(FormatError, match="frame 42") as err:
        Dataset.open(broken)
    assert err.value.field == "/entry/crystals/frame"


def test_file_replaced_after_opening(tmp_path: Path) -> None:
    path = make_dataset(seed=1).write(tmp_path / "run.h5")
    ds = Dataset.open(path)
    np.testing.assert_array_equal(ds.data[0].compute(), make_frames(1)[0])  # handle cached
    make_dataset(seed=2).select([5, 4, 3, 2, 1, 0]).write(path, overwrite=True)
    # this process still holds the original file open: the old dataset reads the old data
    np.testing.assert_array_equal(ds.data[1].compute(), make_frames(1)[1])
    np.testing.assert_array_equal(Dataset.open(path).data[0].compute(), make_frames(2)[5])
    close_all()
    with pytest.raises(FormatError, match="replaced or modified") as err:
        ds.data[2].compute()
    assert err.value.path is not None and err.value.path.endswith("run.h5")


def test_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not found"):
        Dataset.open(tmp_path / "absent.h5")
    with pytest.raises(FormatError, match="not a file"):
        Dataset.open(tmp_path)
    with pytest.raises(FormatError, match="empty"):
        Dataset.open([])
    (tmp_path / "empty.lst").write_text("\n", encoding="utf-8")
    with pytest.raises(FormatError, match="empty"):
        Dataset.open(tmp_path / "empty.lst")


def test_mismatched_frame_shapes_between_files(tmp_path: Path) -> None:
    Dataset.from_arrays(np.zeros((2, 4, 4))).write(tmp_path / "a.h5")
    Dataset.from_arrays(np.zeros((2, 4, 5))).write(tmp_path / "b.h5")
    with pytest.raises(FormatError, match="shape") as err:
        Dataset.open([tmp_path / "a.h5", tmp_path / "b.h5"])
    assert err.value.path == str(tmp_path / "b.h5")


def test_peak_arrays_of_different_width_are_padded(tmp_path: Path) -> None:
    a = make_dataset()
    a.write(tmp_path / "a.h5")
    b = make_dataset()
    b.add_peaks(b.peaks(), max_peaks=1)
    b.add_stack("extra", np.zeros(6))
    b.write(tmp_path / "b.h5")
    with pytest.warns(UserWarning, match="extra"):
        ds = Dataset.open([tmp_path / "a.h5", tmp_path / "b.h5"])
    assert ds["peakXPosRaw"].shape == (12, 3)
    assert "extra" not in ds
    table = ds.peaks()
    assert len(table) == 7 + 4
