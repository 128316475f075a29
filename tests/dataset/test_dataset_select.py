"""Selection and aggregation keep every stack and table consistent; stack management."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from dsfixtures import make_dataset, make_frames

from crystalscope.dataset import Dataset
from crystalscope.errors import DataError


def test_query_selection_slices_everything() -> None:
    ds = make_dataset()
    sel = ds.select("dose >= 0.5 and sample == 'lyso' and hit")
    assert sel.shots["frame"].tolist() == [0, 2, 5]
    np.testing.assert_array_equal(sel.data.compute(), make_frames()[[0, 2, 5]])
    np.testing.assert_array_equal(sel["nPeaks"].compute(), [3, 1, 2])
    np.testing.assert_array_equal(
        sel["peakXPosRaw"].compute(), ds["peakXPosRaw"].compute()[[0, 2, 5]]
    )
    assert sel.crystals["frame"].tolist() == [0, 2]
    assert sel.shots.index.tolist() == [0, 1, 2]
    assert sel.meta == ds.meta and sel.meta is not ds.meta
    assert ds.n_frames == 6  # original unchanged


def test_mask_index_and_slice_selection() -> None:
    ds = make_dataset()
    by_mask = ds.select(ds.shots["crystal_id"] == 1)
    by_index = ds.select([3, 4])
    by_slice = ds.select(slice(3, 5))
    for sel in (by_mask, by_index, by_slice):
        assert sel.shots["frame"].tolist() == [3, 4]
        assert sel.crystals["crystal"].tolist() == [0, 1]
        np.testing.assert_array_equal(sel.data.compute(), make_frames()[3:5])
    reordered = ds.select(np.array([5, 0]))
    assert reordered.shots["frame"].tolist() == [5, 0]
    np.testing.assert_array_equal(reordered.data.compute(), make_frames()[[5, 0]])
    assert reordered.data.chunks[0] == (1, 1)
    assert ds.select([]).n_frames == 0
    assert ds.select(np.zeros(6, dtype=bool)).data.shape == (0, 24, 32)


def test_selection_errors() -> None:
    ds = make_dataset()
    with pytest.raises(DataError, match="invalid query"):
        ds.select("no_such_column > 3")
    with pytest.raises(DataError, match="invalid query"):
        ds.select("dose >>> 3")
    with pytest.raises(DataError, match="shape"):
        ds.select([True, False])
    with pytest.raises(DataError, match=r"0\.\.5"):
        ds.select([0, 6])
    with pytest.raises(DataError, match=r"0\.\.5"):
        ds.select([-1])
    with pytest.raises(DataError):
        ds.select([0.5, 1.5])


def test_selection_round_trip_keeps_frame_ids(tmp_path: Path) -> None:
    sel = make_dataset().select("sample == 'thau'")
    back = Dataset.open(sel.write(tmp_path / "thau.h5"))
    assert back.shots["frame"].tolist() == [3, 4]
    assert back.crystals["frame"].tolist() == [3, 3]


def test_aggregate_sums_dose_fractions() -> None:
    ds = make_dataset()
    frames = make_frames()
    agg = ds.aggregate(by="crystal_id", how="sum")
    assert agg.n_frames == 3
    np.testing.assert_array_equal(agg.data[0].compute(), frames[:3].sum(axis=0))
    np.testing.assert_array_equal(agg.data[1].compute(), frames[3:5].sum(axis=0))
    np.testing.assert_array_equal(agg.data[2].compute(), frames[5])
    assert agg.data.dtype == np.uint64  # NumPy's accumulator for uint16
    assert agg.data.chunks[0] == (1, 1, 1)
    assert agg.shots["frame_count"].tolist() == [3, 2, 1]
    assert agg.shots["frame"].tolist() == [0, 3, 5]  # first frame of each group
    assert agg.shots["dose"].tolist() == [0.5, 1.0, 4.0]  # first values
    assert agg.shots["note"].tolist() == ["λ=0.025 Å", "x", "ok"]
    assert all(name not in agg for name in ("nPeaks", "peakXPosRaw"))
    # crystals move to the group's frame; duplicates (frame, crystal) keep the first
    assert agg.crystals[["frame", "crystal"]].values.tolist() == [[0, 0], [3, 0], [3, 1]]
    assert agg.crystals["a"].tolist() == [79.1, 58.0, 58.1]


def test_aggregate_mean_query_columns_and_dtype() -> None:
    ds = make_dataset()
    frames = make_frames()
    agg = ds.aggregate(
        ["sample", "crystal_id"],
        "mean",
        query="hit",
        columns="mean",
        count_column="n",
        dtype=np.float64,
    )
    # hits: frames 0, 2 (lyso, 0), 3 (thau, 1), 5 (lyso, 2); groups sorted by key
    assert agg.shots[["sample", "crystal_id", "n"]].values.tolist() == [
        ["lyso", 0, 2],
        ["lyso", 2, 1],
        ["thau", 1, 1],
    ]
    np.testing.assert_allclose(agg.data[0].compute(), frames[[0, 2]].mean(axis=0))
    np.testing.assert_allclose(agg.data[2].compute(), frames[3])
    assert agg.shots["dose"].tolist() == [0.5, 4.0, 1.0]


def test_aggregate_drops_missing_keys_and_checks_arguments() -> None:
    ds = make_dataset()
    ds.shots["group"] = [1.0, np.nan, 1.0, 2.0, np.nan, 2.0]
    agg = ds.aggregate("group", stacks=["data"])
    assert agg.shots["frame_count"].tolist() == [2, 2]
    np.testing.assert_array_equal(agg.data[1].compute(), make_frames()[[3, 5]].sum(axis=0))
    with pytest.raises(DataError, match="no such column"):
        ds.aggregate("nothing")
    with pytest.raises(DataError, match="peak"):
        ds.aggregate("group", stacks=["nPeaks"])
    with pytest.raises(DataError, match="how"):
        ds.aggregate("group", how="median")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="already"):
        ds.aggregate("group", count_column="dose")
    empty = ds.aggregate("group", query="dose > 100")
    assert empty.n_frames == 0 and empty.data.shape == (0, 24, 32)


def test_add_replace_remove_stacks() -> None:
    ds = make_dataset()
    mask = da.zeros((6, 24, 32), dtype=bool, chunks=(3, 12, 32))
    ds.add_stack("mask", mask)
    assert ds["mask"].chunks == ((3, 3), (24,), (32,))  # small frames: whole frames per chunk
    with pytest.raises(DataError, match="exists"):
        ds.add_stack("mask", mask)
    ds.add_stack("mask", np.ones((6, 24, 32), dtype=bool), overwrite=True)
    assert bool(ds["mask"].all().compute())
    ds.replace_stack("mask", np.zeros((6, 24, 32), dtype=bool))
    with pytest.raises(DataError, match="no such stack"):
        ds.replace_stack("other", np.zeros(6))
    with pytest.raises(DataError, match="6 frames"):
        ds.add_stack("short", np.zeros(5))
    with pytest.raises(DataError, match="numeric"):
        ds.add_stack("text", np.array(["a"] * 6))
    with pytest.raises(DataError, match="'/'"):
        ds.add_stack("a/b", np.zeros(6))
    ds.remove_stack("mask")
    assert "mask" not in ds and "data" in ds
    with pytest.raises(DataError, match="no such stack"):
        ds["mask"]


def test_frames_are_one_per_chunk_and_small_stacks_batched() -> None:
    ds = Dataset.from_arrays(
        np.zeros((10, 8, 8), dtype=np.float32), stacks={"energy": np.arange(10.0)}
    )
    assert ds.data.chunks[0] == (1,) * 10
    assert ds["energy"].chunks[0] == (10,)
    big = Dataset.from_arrays(da.zeros((4, 512, 512), dtype=np.float32, chunks=(2, 256, 256)))
    assert big.data.chunks == ((1,) * 4, (512,), (512,))


def test_table_validation() -> None:
    frames = make_frames(n=3)
    with pytest.raises(DataError, match="3 entries along axis 0 but there are 2 frames"):
        Dataset.from_arrays(frames, pd.DataFrame({"x": [1, 2]}))
    with pytest.raises(DataError, match="unique"):
        Dataset.from_arrays(frames, pd.DataFrame({"frame": [1, 1, 2]}))
    with pytest.raises(DataError, match="whole numbers"):
        Dataset.from_arrays(frames, pd.DataFrame({"event": [0.5, 1, 2]}))
    with pytest.raises(DataError, match="not in the shots"):
        Dataset.from_arrays(frames, crystals=pd.DataFrame({"frame": [7]}))
    with pytest.raises(DataError, match="frame"):
        Dataset.from_arrays(frames, crystals=pd.DataFrame({"crystal": [0]}))
    with pytest.raises(DataError, match="unique"):
        Dataset.from_arrays(frames, crystals=pd.DataFrame({"frame": [0, 0], "crystal": [1, 1]}))
    ds = Dataset.from_arrays(frames, crystals=pd.DataFrame({"frame": [2, 2, 0]}))
    assert ds.crystals["crystal"].tolist() == [0, 1, 0]
    assert ds.shots.columns.tolist() == ["file", "event", "frame"]
    with pytest.raises(DataError):
        ds.shots = pd.DataFrame({"frame": [5, 6, 7]})  # crystals would lose their frames
    ds.shots = pd.DataFrame({"frame": [0, 1, 2], "score": [1.0, 2.0, 3.0]})
    assert ds.shots["score"].tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(DataError, match="twice"):
        Dataset.from_arrays(frames, stacks={"data": frames})


def test_repr_and_len() -> None:
    ds = make_dataset()
    assert len(ds) == 6
    assert "6 frames" in repr(ds) and "data (6, 24, 32) uint16" in repr(ds)
