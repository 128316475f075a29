"""Benchmark: reading a CrystFEL stream with crystalscope vs reciprocalspaceship.

Usage::

    python benchmarks/bench_stream_read.py [STREAM] [--repeat N] [--rs-parallel]

``STREAM`` defaults to ``../shared/data/crystfel/test.stream`` (70 chunks, 32 crystals).
crystalscope's :func:`~crystalscope.io.crystfel_stream.read_stream` parses everything
(chunks, peaks, crystals, reflections); reciprocalspaceship's ``rs.io.read_crystfel``
reads only the reflections (and computes Ewald offsets).  Both run in this process; the
best of ``--repeat`` runs is reported.  reciprocalspaceship runs with ``num_cpus=1``
(its default, ``-1``, starts a joblib process pool; add ``--rs-parallel`` to time that
too).  Exits with status 1 if crystalscope needs 1 s or more.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from crystalscope.io.crystfel_stream import read_stream

DEFAULT = (
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "crystfel" / "test.stream"
)
LIMIT_S = 1.0


def best_time(func: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Smallest wall time of ``repeat`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("stream", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rs-parallel", action="store_true")
    args = parser.parse_args(argv)
    path: Path = args.stream
    print(f"stream: {path} ({path.stat().st_size / 1e6:.2f} MB)")

    first = time.perf_counter()
    read_stream(path)  # warm caches; the first call also imports our parser modules
    print(f"crystalscope first call      : {time.perf_counter() - first:8.4f} s")
    ours, stream = best_time(lambda: read_stream(path), args.repeat)
    print(f"crystalscope read_stream     : {ours:8.4f} s  ({stream!r})")

    try:
        import reciprocalspaceship as rs
    except ImportError:
        print("reciprocalspaceship is not installed; no reference time")
        rs = None
    if rs is not None:
        ref, ds = best_time(lambda: rs.io.read_crystfel(str(path), num_cpus=1), args.repeat)
        print(f"rs.io.read_crystfel (1 cpu)  : {ref:8.4f} s  ({len(ds)} reflections)")
        print(f"speed-up (rs / crystalscope) : {ref / ours:8.1f} x")
        if len(ds) != len(stream.reflections):
            print("WARNING: the two readers found different numbers of reflections")
        if args.rs_parallel:
            par, _ = best_time(lambda: rs.io.read_crystfel(str(path)), 1)
            print(f"rs.io.read_crystfel (all)    : {par:8.4f} s")

    ok = ours < LIMIT_S
    print(f"crystalscope < {LIMIT_S:g} s: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
