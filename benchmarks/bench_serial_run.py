"""Benchmark: ``crystalscope serial run`` end to end, frames per second and peak memory.

Usage::

    python benchmarks/bench_serial_run.py [--crystals 270] [--budget-gb 2] [--workdir DIR]

1. Throughput: the demo data set (``crystalscope demo``'s simulation: 270 lysozyme-like
   crystals, 3 dose fractions each, 80 % hits, about 1000 raw 1556 x 516 frames at
   200 kV) is run through ``crystalscope serial run`` in a child process on 2 local
   threads; prints the time of every step, raw frames per second end to end (the issue's
   target: >= 20) and the CC of the merged data with the truth to 2.5 A.
2. Memory: a data set whose raw frames (float32, uncompressed) are ``4 x --budget-gb``
   is simulated and run the same way; the child's peak resident memory is read from
   ``/usr/bin/time -v`` (or ``getrusage`` where that is absent) and compared with the
   budget.

The simulations are kept in ``--workdir`` between invocations (delete it to start over).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from crystalscope.demo import demo_config, run_config, truth_cc
from crystalscope.simulate.serial import SerialSimulation, simulate_serial

FRAME_BYTES = 1556 * 516 * 4  # one raw frame as float32


def simulate(n_crystals: int, out: Path) -> tuple[Path, int]:
    """Simulate the demo's data set with ``n_crystals`` into ``out`` (kept if present)."""
    config = demo_config(n_crystals)
    frames = out / "sim" / "frames.h5"
    if not frames.is_file():
        t = time.perf_counter()
        simulate_serial(config, out / "sim", overwrite=True)
        print(f"  simulated in {time.perf_counter() - t:.0f} s")
    sim = SerialSimulation.build(config)
    cfg = run_config(sim)
    cfg["compute"] = {"progress": False, "n_workers": 2}
    (out / "serial-run.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return out / "serial-run.yaml", len(sim.shots)  # one row per raw frame (fraction)


def run(cfg: Path) -> tuple[float, float, dict[str, float]]:
    """Run ``serial run`` afresh in a child; wall seconds, peak RSS (GB), step seconds."""
    shutil.rmtree(cfg.parent / "runs", ignore_errors=True)
    cmd = [sys.executable, "-m", "crystalscope", "serial", "run", str(cfg)]
    timer = Path("/usr/bin/time")
    if timer.exists():
        cmd = [str(timer), "-v", *cmd]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    kb = int(found.group(1)) if found else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    steps = {}
    for record in sorted((cfg.parent / "runs" / "run-001").glob("*/step.json")):
        data = json.loads(record.read_text())
        steps[data["step"]] = float(data["seconds"])
    return wall, kb / 1024**2, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--crystals", type=int, default=270)
    parser.add_argument("--budget-gb", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/crystalscope-bench-run"))
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    print("== throughput: the demo data set")
    cfg, n_frames = simulate(args.crystals, args.workdir / "demo")
    wall, rss, steps = run(cfg)
    for name, seconds in steps.items():
        print(f"  {name:<13} {seconds:7.1f} s")
    cc = truth_cc(cfg.parent / "runs/run-001/merged/merged.mtz", SerialSimulation.build(
        demo_config(args.crystals)))  # fmt: skip
    print(
        f"  {n_frames} raw frames in {wall:.1f} s: {n_frames / wall:.1f} frames/s end to end "
        f"(target >= 20); peak RSS {rss:.2f} GB; CC with the truth to 2.5 A {cc:.4f}"
    )

    if args.skip_memory:
        return
    print(f"== memory: raw frames 4 x {args.budget_gb:g} GB")
    n_raw = int(4 * args.budget_gb * 1024**3 / FRAME_BYTES) + 1
    crystals = math.ceil(n_raw * 0.8 / 3)  # 3 fractions per shot, 80 % of shots are hits
    cfg, n_frames = simulate(crystals, args.workdir / f"memory-{args.budget_gb:g}gb")
    size = n_frames * FRAME_BYTES / 1024**3
    wall, rss, steps = run(cfg)
    for name, seconds in steps.items():
        print(f"  {name:<13} {seconds:7.1f} s")
    verdict = "within" if rss < args.budget_gb else "OVER"
    print(f"  {n_frames} raw frames ({size:.1f} GB as float32) in {wall:.0f} s "
          f"({n_frames / wall:.1f} frames/s); peak RSS {rss:.2f} GB: {verdict} the "
          f"{args.budget_gb:g} GB budget")  # fmt: skip


if __name__ == "__main__":
    main()
