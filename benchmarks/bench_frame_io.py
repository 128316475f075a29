"""Benchmark: reading and writing bitshuffle/LZ4 frames, h5py against direct chunks.

Usage::

    python benchmarks/bench_frame_io.py [--frames 300] [--threads 2]

Simulated 1556 x 516 float32 frames (Poisson background of ~2 counts with Bragg-like
spots, as the demo writes them) are stored one frame per chunk with bitshuffle/LZ4.

* Read: ``--threads`` threads read every frame, (1) with plain h5py ``dset[i]`` (the
  reference: HDF5 decompresses inside h5py's global lock) and (2) with
  :class:`crystalscope.dataset.reader.H5Array`, which fetches the compressed chunk under
  the lock and decompresses it outside (:mod:`crystalscope.dataset.chunks`).
* Write: the same frames written (1) with h5py ``dset[i] = frame`` (compression inside
  the lock) and (2) compressed by the threads with
  :func:`crystalscope.dataset.chunks.encode_chunk` and written with
  ``write_direct_chunk``.

Prints ms per frame for both and the ratio; the two read results are checked equal.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

from crystalscope.dataset.chunks import chunk_plan, encode_chunk
from crystalscope.dataset.reader import H5Array, close_all

SHAPE = (516, 1556)


def make_frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    frames = rng.poisson(2.0, (n, *SHAPE)).astype(np.float32)
    for frame in frames:
        ss, fs = rng.integers(0, SHAPE[0], 150), rng.integers(0, SHAPE[1], 150)
        frame[ss, fs] += rng.poisson(200.0, 150)
    return frames


def create(path: Path, n: int) -> tuple[h5py.File, h5py.Dataset]:
    f = h5py.File(path, "w")
    d = f.create_dataset(
        "data", shape=(n, *SHAPE), dtype="f4", chunks=(1, *SHAPE),
        **hdf5plugin.Bitshuffle(cname="lz4"),
    )  # fmt: skip
    return f, d


def timed(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    n, threads = args.frames, args.threads
    frames = make_frames(n)
    with tempfile.TemporaryDirectory() as tmp:
        ref_path, our_path = Path(tmp) / "ref.h5", Path(tmp) / "ours.h5"
        f, d = create(ref_path, n)
        with ThreadPoolExecutor(threads) as ex:

            def write_ref() -> None:
                list(ex.map(lambda i: d.__setitem__(i, frames[i]), range(n)))

            w_ref = timed(write_ref, n)
        f.close()
        f, d = create(our_path, n)
        plan, lock = chunk_plan(d), threading.Lock()
        assert plan is not None

        def put(i: int) -> None:
            data = encode_chunk(frames[i], plan)
            with lock:
                d.id.write_direct_chunk((i, 0, 0), data)

        with ThreadPoolExecutor(threads) as ex:
            w_ours = timed(lambda: list(ex.map(put, range(n))), n)
        f.close()

        with h5py.File(ref_path) as f, ThreadPoolExecutor(threads) as ex:
            dset = f["data"]
            lock = threading.Lock()

            def get_ref(i: int) -> np.ndarray:
                with lock:
                    return dset[i]

            start = time.perf_counter()
            ref = list(ex.map(get_ref, range(n)))
            r_ref = (time.perf_counter() - start) / n * 1e3
        arr = H5Array.from_file(str(our_path), "/data")
        with ThreadPoolExecutor(threads) as ex:
            start = time.perf_counter()
            ours = list(ex.map(arr.__getitem__, range(n)))
            r_ours = (time.perf_counter() - start) / n * 1e3
        close_all()
        assert all(np.array_equal(a, b) for a, b in zip(ref, ours, strict=True))
        assert all(np.array_equal(a, b) for a, b in zip(ref, frames, strict=True))
    print(f"{n} frames of {SHAPE[0]} x {SHAPE[1]} float32, bitshuffle/LZ4, {threads} threads")
    print(f"read : h5py {r_ref:6.2f} ms/frame   direct chunks {r_ours:6.2f} ms/frame   "
          f"ratio {r_ref / r_ours:4.1f}x")  # fmt: skip
    print(f"write: h5py {w_ref:6.2f} ms/frame   direct chunks {w_ours:6.2f} ms/frame   "
          f"ratio {w_ref / w_ours:4.1f}x")  # fmt: skip


if __name__ == "__main__":
    main()
