"""Per-frame work through dask: arrays, tables, NaN checks, distributed, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
from dsfixtures import make_dataset, make_frames

from crystalscope.dataset import Dataset
from crystalscope.errors import DataError


def radial_profile(frame: np.ndarray, n_bins: int = 8) -> np.ndarray:
    ss, fs = np.indices(frame.shape)
    r = np.hypot(ss - frame.shape[0] / 2, fs - frame.shape[1] / 2)
    bins = np.minimum((r / r.max() * n_bins).astype(int), n_bins - 1)
    return np.bincount(bins.ravel(), weights=frame.ravel(), minlength=n_bins)


def test_array_results_are_lazy_and_exact(tmp_path: Path) -> None:
    ds = Dataset.open(make_dataset().write(tmp_path / "run.h5"))
    profiles = ds.map_frames(radial_profile, n_bins=5)
    assert isinstance(profiles, da.Array)
    assert profiles.shape == (6, 5) and profiles.chunks[0] == (1,) * 6
    expected = np.stack([radial_profile(f, 5) for f in make_frames()])
    np.testing.assert_allclose(profiles.compute(), expected)
    sums = ds.map_frames(np.sum, compute=True)
    assert isinstance(sums, np.ndarray)
    np.testing.assert_array_equal(sums, make_frames().sum(axis=(1, 2)))
    given = ds.map_frames(np.max, out_shape=(), out_dtype=np.uint16, compute=True)
    np.testing.assert_array_equal(given, make_frames().max(axis=(1, 2)))


def test_dict_results_form_a_table() -> None:
    ds = make_dataset()

    def stats(frame: np.ndarray, threshold: int) -> dict[str, object]:
        return {
            "total": int(frame.sum()),
            "mean": float(frame.mean()),
            "bright": bool((frame > threshold).any()),
        }

    table = ds.map_frames(stats, threshold=14)
    assert isinstance(table, pd.DataFrame)
    frames = make_frames()
    assert table["total"].tolist() == frames.sum(axis=(1, 2)).tolist()
    assert table["total"].dtype == np.int64 and table["bright"].dtype == bool
    assert table["bright"].tolist() == (frames > 14).any(axis=(1, 2)).tolist()
    ds.shots[table.columns] = table
    assert ds.select("total > 0").n_frames == 6


def test_map_over_another_stack_and_errors() -> None:
    ds = make_dataset()
    strongest = ds.map_frames(np.max, stack="peakTotalIntensity", compute=True)
    np.testing.assert_array_equal(strongest, [100.0, 0.0, 10.0, 20.0, 0.0, 300.0])
    calls = iter(range(100))
    with pytest.raises(DataError, match="same keys"):
        ds.map_frames(lambda f: {f"k{next(calls)}": 1.0})
    with pytest.raises(DataError, match="numbers"):
        ds.map_frames(lambda f: {"text": "x"})
    empty = ds.select([])
    with pytest.raises(DataError, match="out_shape"):
        empty.map_frames(np.sum)
    assert empty.map_frames(np.sum, out_shape=(), out_dtype=float, compute=True).shape == (0,)
    with pytest.raises(DataError, match="no such stack"):
        ds.map_frames(np.sum, stack="nothing")


def test_nan_frames_named_by_file_and_path(tmp_path: Path) -> None:
    frames = np.ones((4, 8, 8), dtype=np.float32)
    frames[2, 3, 3] = np.nan
    mem = Dataset.from_arrays(frames)
    with pytest.raises(DataError, match="frame position 2"):
        mem.check_finite()
    path = mem.write(tmp_path / "nan.h5")
    ds = Dataset.open(path)
    with pytest.raises(DataError, match="NaN") as err:
        ds.check_finite()
    assert err.value.path == str(path) and err.value.field == "/entry/data/data[2]"
    with pytest.raises(DataError) as err:
        ds.map_frames(np.sum, allow_nan=False, compute=True)
    assert err.value.path == str(path) and err.value.field == "/entry/data/data[2]"
    assert np.isnan(ds.map_frames(np.sum, compute=True)[2])  # allowed by default
    ds.select([0, 1, 3]).check_finite()
    Dataset.from_arrays(make_frames()).check_finite()  # integer frames are always finite


def test_distributed_client(tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    ds = Dataset.open(make_dataset().write(tmp_path / "run.h5"))
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        with distributed.get_task_stream(client) as explicit:
            sums = ds.map_frames(np.sum, client=client, compute=True)
            table = ds.map_frames(lambda f: {"max": int(f.max())}, client=client)
        with distributed.get_task_stream(client) as implicit:
            active = ds.map_frames(radial_profile).compute()  # active client is the default
    assert len(explicit.data) >= 12 and len(implicit.data) >= 6  # tasks ran on the cluster
    frames = make_frames()
    np.testing.assert_array_equal(sums, frames.sum(axis=(1, 2)))
    assert table["max"].tolist() == frames.max(axis=(1, 2)).tolist()
    np.testing.assert_allclose(active, np.stack([radial_profile(f) for f in frames]))


_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, sys, tracemalloc
    import numpy as np, dask.array as da
    from crystalscope.dataset import Dataset

    def frame(block, block_id=None):
        rng = np.random.default_rng(block_id[0])
        return rng.poisson(4.0, size=block.shape).astype(np.float32)

    phase, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if phase == "write":
        frames = da.zeros((n, 512, 512), dtype=np.float32, chunks=(1, 512, 512))
        ds = Dataset.from_arrays(frames.map_blocks(frame, dtype=np.float32))
        tracemalloc.start()
        ds.write(path)
    else:
        ds = Dataset.open(path)
        tracemalloc.start()
        out = ds.map_frames(lambda f: {"sum": float(f.sum()), "max": float(f.max())})
        assert len(out) == n and out["max"].min() > 0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    print(json.dumps({"peak_mb": peak}))
    """
)


@pytest.mark.slow
def test_reduction_runs_in_bounded_memory(tmp_path: Path) -> None:
    """600 MB of frames are written and reduced; neither step holds them all in memory.

    The peak is what Python and numpy hold at once (tracemalloc), which unlike the
    resident size does not depend on how the C allocator keeps freed buffers when the
    machine is busy; docs/benchmarks.md has resident-memory numbers for 8 GB.
    """
    n_frames = 600  # 512 x 512 float32 = 1 MiB each
    data_mb = n_frames * 512 * 512 * 4 / 2**20
    script = tmp_path / "memory.py"
    script.write_text(_MEMORY_SCRIPT, encoding="utf-8")
    path = tmp_path / "big.h5"
    for phase in ("write", "reduce"):
        run = subprocess.run(
            [sys.executable, str(script), phase, str(path), str(n_frames)],
            check=True,
            capture_output=True,
            text=True,
        )
        peak = json.loads(run.stdout.strip().splitlines()[-1])["peak_mb"]
        assert peak < 0.15 * data_mb, f"{phase}: {peak:.0f} MB held at once"
