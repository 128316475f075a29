"""Writing datasets: atomic replacement, refusal to overwrite, progress, compression."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest
from dsfixtures import make_dataset, make_frames

from crystalscope.dataset import Dataset
from crystalscope.errors import CrystalscopeError


class Boom(RuntimeError):
    """Raised by a stack while it is being computed."""


def _failing_frames(n: int, fail_at: int) -> da.Array:
    frames = make_frames(n=n)

    def block(chunk: np.ndarray, block_id: tuple[int, ...] | None = None) -> np.ndarray:
        assert block_id is not None
        if block_id[0] == fail_at:
            raise Boom("detector readout failed")
        return chunk

    return da.from_array(frames, chunks=(1, *frames.shape[1:])).map_blocks(
        block, dtype=frames.dtype
    )


def test_failure_mid_write_leaves_no_file(tmp_path: Path) -> None:
    ds = Dataset.from_arrays(_failing_frames(6, fail_at=3))
    with pytest.raises(Boom):
        ds.write(tmp_path / "run.h5")
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_overwrite_keeps_the_old_file(tmp_path: Path) -> None:
    path = make_dataset().write(tmp_path / "run.h5")
    before = path.read_bytes()
    ds = Dataset.from_arrays(_failing_frames(6, fail_at=5))
    with pytest.raises(Boom):
        ds.write(path, overwrite=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]
    np.testing.assert_array_equal(Dataset.open(path).data.compute(), make_frames())


def test_existing_file_is_only_replaced_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    path.write_bytes(b"precious")
    with pytest.raises(CrystalscopeError, match="exists") as err:
        make_dataset().write(path)
    assert err.value.path == str(path)
    assert path.read_bytes() == b"precious"
    make_dataset().write(path, overwrite=True)
    assert Dataset.open(path).n_frames == 6
    with pytest.raises(CrystalscopeError, match="directory"):
        make_dataset().write(tmp_path / "no" / "such" / "dir.h5")


def test_overwrite_the_file_being_read(tmp_path: Path) -> None:
    path = make_dataset().write(tmp_path / "run.h5")
    ds = Dataset.open(path)
    ds.select("sample == 'thau'").write(path, overwrite=True)
    back = Dataset.open(path)
    np.testing.assert_array_equal(back.data.compute(), make_frames()[3:5])
    assert back.shots["frame"].tolist() == [3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]


def test_progress_reports_bytes(tmp_path: Path) -> None:
    ds = make_dataset()
    calls: list[tuple[int, int]] = []
    ds.write(tmp_path / "run.h5", progress=lambda done, total: calls.append((done, total)))
    total = sum(int(a.nbytes) for a in ds.stacks.values())
    assert calls[0] == (0, total)
    assert calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert len(calls) >= ds.n_frames + 1  # at least one call per frame


def test_uncompressed_and_float_frames(tmp_path: Path) -> None:
    frames = np.random.default_rng(3).normal(size=(3, 16, 16)).astype(np.float32)
    path = Dataset.from_arrays(frames).write(tmp_path / "f.h5", compression=False)
    with h5py.File(path, "r") as fh:
        assert fh["entry/data/data"].id.get_create_plist().get_nfilters() == 0
        assert fh["entry/data/data"].chunks == (1, 16, 16)
    np.testing.assert_array_equal(Dataset.open(path).data.compute(), frames)


def test_written_file_is_detected_as_dataset(tmp_path: Path) -> None:
    from crystalscope.io.detect import detect_format

    assert detect_format(make_dataset().write(tmp_path / "run.h5")) == "dataset"


def test_close_releases_handles_for_writing(tmp_path: Path) -> None:
    path = make_dataset().write(tmp_path / "run.h5")
    ds = Dataset.open(path)
    ds.data.sum().compute()  # opens a cached read handle
    ds.close()
    with h5py.File(path, "a") as fh:
        fh["entry/shots/dose"][0] = 9.0
    assert Dataset.open(path).shots["dose"][0] == 9.0
