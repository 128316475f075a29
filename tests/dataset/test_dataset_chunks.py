"""Whole-frame chunks decoded outside HDF5's lock give exactly what h5py gives."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np
import pytest

from crystalscope.dataset import chunks
from crystalscope.dataset.reader import H5Array, close_all, read_h5
from crystalscope.errors import FormatError

# frames of 5 x 13 = 65 elements: not a multiple of 8, so bitshuffle leaves a remainder
SHAPE = (6, 5, 13)

PIPELINES: dict[str, dict[str, Any]] = {
    "none": {},
    "bitshuffle-lz4": dict(hdf5plugin.Bitshuffle(cname="lz4")),
    "bitshuffle-plain": dict(hdf5plugin.Bitshuffle(cname="none")),
    "gzip": {"compression": "gzip", "compression_opts": 4},
    "shuffle-gzip": {"compression": "gzip", "shuffle": True},
}
DTYPES = ["<f4", ">f4", "<u2", ">i4", "<f8", "u1"]


def _frames(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.poisson(3.0, SHAPE) * rng.integers(1, 400, SHAPE)
    return values.astype(dtype)


def _write(path: Path, data: np.ndarray, chunk: tuple[int, ...] | None = None, **kw: Any) -> str:
    with h5py.File(path, "w") as f:
        f.create_dataset("entry/data/data", data=data, chunks=chunk or (1, *data.shape[1:]), **kw)
    return str(path)


@pytest.mark.parametrize("name", sorted(PIPELINES))
@pytest.mark.parametrize("dtype", DTYPES)
def test_direct_decode_matches_h5py(tmp_path: Path, name: str, dtype: str) -> None:
    data = _frames(dtype)
    path = _write(tmp_path / "f.h5", data, **PIPELINES[name])
    with h5py.File(path) as f:
        node = f["entry/data/data"]
        plan = chunks.chunk_plan(node)
        assert plan is not None
        for i in range(SHAPE[0]):
            _, raw = node.id.read_direct_chunk((i, 0, 0))
            got = chunks.decode_chunk(raw, plan)
            np.testing.assert_array_equal(got, node[i])
            assert got.dtype == np.dtype(dtype).newbyteorder("=") and got.flags.writeable
    arr = H5Array.from_file(path, "/entry/data/data")
    np.testing.assert_array_equal(arr[1:4], data[1:4])
    np.testing.assert_array_equal(arr[-1], data[-1])
    np.testing.assert_array_equal(arr[(slice(2, 3), slice(None), slice(0, 13))], data[2:3])
    np.testing.assert_array_equal(arr[0:0], data[0:0])
    close_all()


def test_plan_refuses_what_it_cannot_decode(tmp_path: Path) -> None:
    data = _frames("<f4")
    cases = {
        "two-frame chunks": _write(tmp_path / "a.h5", data, chunk=(2, 5, 13)),
        "lzf": _write(tmp_path / "b.h5", data, compression="lzf"),
        "zstd": _write(tmp_path / "c.h5", data, **hdf5plugin.Bitshuffle(cname="zstd")),
    }
    for why, path in cases.items():
        with h5py.File(path) as f:
            assert chunks.chunk_plan(f["entry/data/data"]) is None, why
        arr = H5Array.from_file(path, "/entry/data/data")
        np.testing.assert_array_equal(arr[1:5], data[1:5])  # read by h5py instead
    close_all()


def test_partial_selections_are_read_by_h5py(tmp_path: Path) -> None:
    data = _frames("<f4")
    path = _write(tmp_path / "f.h5", data, **PIPELINES["bitshuffle-lz4"])
    arr = H5Array.from_file(path, "/entry/data/data")
    np.testing.assert_array_equal(arr[1:3, 1:4, :], data[1:3, 1:4, :])
    np.testing.assert_array_equal(arr[0:6:2], data[0:6:2])
    np.testing.assert_array_equal(arr[2, :, 5], data[2, :, 5])
    close_all()


def test_corrupt_chunk_gives_the_hdf5_error(tmp_path: Path) -> None:
    data = _frames("<f4") + 1
    path = _write(tmp_path / "f.h5", data, **PIPELINES["bitshuffle-lz4"])
    with h5py.File(path) as f:
        info = f["entry/data/data"].id.get_chunk_info(2)
    with open(path, "r+b") as fh:  # garble the LZ4 stream of frame 2
        fh.seek(info.byte_offset + 16)
        fh.write(b"\xff" * (info.size - 16))
    arr = H5Array.from_file(path, "/entry/data/data")
    np.testing.assert_array_equal(arr[1], data[1])
    with pytest.raises(FormatError, match="cannot read data") as err:
        arr[2]
    assert path in str(err.value) and "/entry/data/data" in str(err.value)
    close_all()


def test_threads_read_the_same_frames(tmp_path: Path) -> None:
    data = np.random.default_rng(3).poisson(2.0, (40, 64, 96)).astype("<f4")
    path = _write(tmp_path / "f.h5", data, **PIPELINES["bitshuffle-lz4"])
    got: dict[int, np.ndarray] = {}

    def work(start: int) -> None:
        for i in range(start, 40, 4):
            got[i] = read_h5(path, "/entry/data/data", i)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(np.stack([got[i] for i in range(40)]), data)
    close_all()
