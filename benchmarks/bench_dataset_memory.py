"""Larger-than-memory benchmark: a per-frame reduction over a dataset bigger than RAM allows.

Writes (once) a dataset of ``--size-gb`` GB of uint16 frames (1024 x 1024 by default)
with Poisson noise on a ring pattern, through ``Dataset.write`` (streamed, bitshuffle/LZ4),
then measures, each in its own fresh Python process so that the peak resident memory
(``ru_maxrss``) is clean:

* ``write``: generating and writing the file (only when it is not there yet);
* ``ours``: ``Dataset.open`` + per-frame sum and maximum through dask (``map_frames``);
* ``naive``: h5py reads the whole frame array into one NumPy array, then reduces it
  (skipped when the array would not fit in the available memory).

Usage::

    python benchmarks/bench_dataset_memory.py --size-gb 8 --workdir /tmp/cs-bench
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

FILE_NAME = "bench_frames.h5"


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


_LAMBDA: dict[tuple[int, int], np.ndarray] = {}


def _expected_counts(ny: int, nx: int) -> np.ndarray:
    """Mean counts per pixel: a flat background of 2 plus two powder-like rings."""
    if (ny, nx) not in _LAMBDA:
        y, x = np.ogrid[:ny, :nx]
        r = np.hypot(y - ny / 2, x - nx / 2)
        ring1 = 40.0 * np.exp(-(((r - ny / 5) / 4.0) ** 2))
        ring2 = 15.0 * np.exp(-(((r - ny / 3) / 6.0) ** 2))
        _LAMBDA[(ny, nx)] = 2.0 + ring1 + ring2
    return _LAMBDA[(ny, nx)]


def _frame(block: np.ndarray, block_id: tuple[int, ...] | None = None) -> np.ndarray:
    """One synthetic frame: Poisson counts, seeded by the frame index."""
    index = block_id[0] if block_id is not None else 0
    rng = np.random.default_rng(index)
    return rng.poisson(_expected_counts(*block.shape[1:])).astype(np.uint16)[None]


def phase_write(path: Path, n_frames: int, shape: tuple[int, int]) -> dict[str, Any]:
    import dask.array as da

    from crystalscope.dataset import Dataset

    template = da.zeros((n_frames, *shape), dtype=np.uint16, chunks=(1, *shape))
    frames = template.map_blocks(_frame, dtype=np.uint16)
    ds = Dataset.from_arrays(frames, meta={"sample": {"name": "synthetic"}})
    start = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 10 or done == total:
            last[0] = now
            print(f"  write: {done / 1e9:6.2f} / {total / 1e9:.2f} GB", file=sys.stderr)

    ds.write(path, progress=progress)
    return {"time_s": time.perf_counter() - start, "maxrss_mb": _maxrss_mb()}


def phase_ours(path: Path) -> dict[str, Any]:
    from crystalscope.dataset import Dataset

    ds = Dataset.open(path)
    baseline = _rss_mb()
    start = time.perf_counter()
    table = ds.map_frames(lambda f: {"sum": int(f.sum(dtype=np.int64)), "max": int(f.max())})
    elapsed = time.perf_counter() - start
    return {
        "time_s": elapsed,
        "maxrss_mb": _maxrss_mb(),
        "baseline_rss_mb": baseline,
        "checksum": int(table["sum"].sum()),
        "max": int(table["max"].max()),
    }


def phase_naive(path: Path) -> dict[str, Any]:
    import h5py
    import hdf5plugin  # noqa: F401

    baseline = _rss_mb()
    start = time.perf_counter()
    with h5py.File(path, "r") as fh:
        frames = fh["/entry/data/data"][()]
    sums = frames.sum(axis=(1, 2), dtype=np.int64)
    maxima = frames.max(axis=(1, 2))
    elapsed = time.perf_counter() - start
    return {
        "time_s": elapsed,
        "maxrss_mb": _maxrss_mb(),
        "baseline_rss_mb": baseline,
        "checksum": int(sums.sum()),
        "max": int(maxima.max()),
    }


def _run_phase(phase: str, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--phase", phase, "--workdir", str(args.workdir), *extra]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="uncompressed size (1e9 B)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the file is kept")
    parser.add_argument("--frame", type=int, nargs=2, default=(1024, 1024), metavar=("SS", "FS"))
    parser.add_argument("--phase", choices=["write", "ours", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--n-frames", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workdir is None:
        args.workdir = Path(tempfile.gettempdir()) / "crystalscope-bench-memory"
    path = args.workdir / FILE_NAME
    if args.phase is not None:
        result = {
            "write": lambda: phase_write(path, args.n_frames, tuple(args.frame)),
            "ours": lambda: phase_ours(path),
            "naive": lambda: phase_naive(path),
        }[args.phase]()
        print(json.dumps(result))
        return 0
    return _driver(args, path)


def _driver(args: argparse.Namespace, path: Path) -> int:
    import h5py
    import psutil

    frame_bytes = 2 * args.frame[0] * args.frame[1]
    n_frames = max(1, int(np.ceil(args.size_gb * 1e9 / frame_bytes)))
    args.workdir.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with h5py.File(path, "r") as fh:
            if fh["/entry/data/data"].shape != (n_frames, *args.frame):
                path.unlink()
    results: dict[str, dict[str, Any]] = {}
    if not path.exists():
        print(f"writing {n_frames} frames of {args.frame} uint16 to {path}", file=sys.stderr)
        frame_args = ["--frame", *map(str, args.frame)]
        results["write"] = _run_phase("write", args, ["--n-frames", str(n_frames), *frame_args])
    nbytes = n_frames * frame_bytes
    print(f"dataset: {nbytes / 1e9:.2f} GB in memory, {path.stat().st_size / 1e9:.2f} GB on disk")
    results["ours"] = _run_phase("ours", args, [])
    available = psutil.virtual_memory().available
    if nbytes < 0.8 * available:
        results["naive"] = _run_phase("naive", args, [])
    else:
        print(f"naive: skipped ({nbytes / 1e9:.1f} GB does not fit in {available / 1e9:.1f} GB)")
    _report(results, nbytes)
    return 0


def _report(results: dict[str, dict[str, Any]], nbytes: int) -> None:
    print(f"{'phase':<8} {'time (s)':>9} {'peak RSS (MB)':>14} {'GB/s':>6}")
    for name, res in results.items():
        rate = nbytes / 1e9 / res["time_s"]
        print(f"{name:<8} {res['time_s']:9.1f} {res['maxrss_mb']:14.0f} {rate:6.2f}")
    if "naive" in results:
        ours, naive = results["ours"], results["naive"]
        assert ours["checksum"] == naive["checksum"] and ours["max"] == naive["max"]
        print(
            f"peak RSS naive/ours: {naive['maxrss_mb'] / ours['maxrss_mb']:.1f}x; "
            f"time ours/naive: {ours['time_s'] / naive['time_s']:.2f}x (same results)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
