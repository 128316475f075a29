"""Benchmark: scaling, post-refinement and merging of 1,000,000 still observations.

Usage::

    python benchmarks/bench_merge.py [--observations 1000000] [--cycles 3] [--threads 2]
                                     [--partialator PATH] [--workdir DIR]

Data: 200 kV lysozyme stills from the real HEWL intensities
(``../shared/data/reciprocalspaceship/HEWL_SSAD_24IDC.mtz``, P 43 21 2, to 2.5 A),
observation tables made without rendering frames (``tests/merge/obsgen.py``): every
reflection within twice the true profile radius of the Ewald sphere under an indexed
orientation that is off by 0.02 deg in plane and 0.15 deg (RMS) out of plane, Poisson
counts with background, per-crystal scales (ln G ~ N(0, 0.3)) and B factors (N(0, 4)
A^2).  The first ``--observations`` rows are kept.

Ours: :func:`crystalscope.merge.merging.merge_observations` with the default ``xsphere``
model, ``--cycles`` cycles of scaling + post-refinement (tilts, R, G, B) and delta-CC1/2
rejection, numba on ``--threads`` threads, timed after a warm-up on a small subset (the
just-in-time compilation is reported separately).  Target: <= 20 s on 2 cores.

Reference, in the same run: when CrystFEL's ``partialator`` is found (``--partialator``,
else on ``PATH``), the same observations are written as a CrystFEL stream
(:func:`crystalscope.io.crystfel_stream_write.write_stream`) and ``partialator -y 4/mmm
--model=xsphere --iterations=N -j THREADS --no-polarisation`` is timed on it; the ratio
of the times and both CCs against the true intensities are printed.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "merge"))

from obsgen import (
    SimulatedObservations,
    hewl_simulation,
    simulate_observations,
    true_intensities,
)

from crystalscope.io.crystfel_geom_write import format_geom
from crystalscope.io.crystfel_hkl import read_hkl
from crystalscope.io.crystfel_stream import Stream, StreamHeader
from crystalscope.io.crystfel_stream_write import write_stream
from crystalscope.merge.merging import MergeParams, MergeResult, merge_observations
from crystalscope.model.crystal import Crystal

TARGET_S = 20.0
OBS_PER_CRYSTAL = 400  # about, to 2.5 A


def make_data(n_obs: int) -> tuple[SimulatedObservations, pd.DataFrame, object]:
    sim = hewl_simulation(math.ceil(1.1 * n_obs / OBS_PER_CRYSTAL), seed=3, d_min=2.5)
    data = simulate_observations(sim, seed=4)
    while len(data.observations) < n_obs:  # pragma: no cover - more crystals needed
        sim = hewl_simulation(2 * len(sim.crystals), seed=3, d_min=2.5)
        data = simulate_observations(sim, seed=4)
    data.observations = data.observations.iloc[:n_obs].reset_index(drop=True)
    kept = data.crystals["crystal_id"].isin(data.observations["crystal_id"].unique())
    data.crystals = data.crystals[kept].reset_index(drop=True)
    return data, true_intensities(sim), sim


def cc_truth(merged: pd.DataFrame, truth: pd.DataFrame, data: SimulatedObservations) -> float:
    """CC of merged and true intensities on common ASU reflections (indices re-mapped)."""
    crystal = Crystal(data.cell, data.space_group)
    asu, _ = crystal.to_asu(merged[["h", "k", "l"]].to_numpy())
    mapped = pd.DataFrame({"h": asu[:, 0], "k": asu[:, 1], "l": asu[:, 2], "I": merged["I"]})
    both = mapped.merge(truth, on=["h", "k", "l"])
    return float(np.corrcoef(both["I"], both["F2"])[0, 1])


def cc_half(half1: pd.DataFrame, half2: pd.DataFrame) -> float:
    """Pearson CC of two half-sets on their common reflections."""
    both = half1.merge(half2, on=["h", "k", "l"])
    return float(np.corrcoef(both["I_x"], both["I_y"])[0, 1])


def run_ours(data: SimulatedObservations, cycles: int) -> tuple[float, float, MergeResult]:
    params = MergeParams(n_cycles=cycles)
    small = data.observations[
        data.observations["crystal_id"] < data.crystals["crystal_id"].iloc[50]
    ]
    t0 = time.perf_counter()
    merge_observations(small, data.cell, data.space_group, params, wavelength=data.wavelength)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = merge_observations(
        data.observations, data.cell, data.space_group, params, wavelength=data.wavelength
    )
    return time.perf_counter() - t0, compile_s, result


def write_crystfel_stream(data: SimulatedObservations, sim: object, path: Path) -> None:
    """The observations as a CrystFEL stream: one chunk per frame, indexed UB, reflections."""
    obs = data.observations
    detector = sim.detector  # type: ignore[attr-defined]
    names = np.array([p.name for p in detector.panels], dtype=object)
    frames = np.unique(obs["frame"].to_numpy())
    chunks = pd.DataFrame(
        {"chunk": frames, "file": [f"frame_{f:06d}.h5" for f in frames],
         "wavelength_A": data.wavelength, "has_peaks": False}
    )  # fmt: skip
    crystals = data.crystals.rename(columns={"crystal": "in_frame"}).copy()
    crystals["chunk"] = crystals["frame"]
    crystals["crystal"] = crystals["crystal_id"]
    crystals["lattice_type"], crystals["centering"], crystals["unique_axis"] = (
        "tetragonal", "P", "c",
    )  # fmt: skip
    keep = ["chunk", "crystal", "profile_radius", "lattice_type", "centering", "unique_axis"]
    keep += [f"{v}star_{x}" for v in "abc" for x in "xyz"]
    refls = obs[["h", "k", "l", "I", "sigma", "fs", "ss", "peak", "background"]].copy()
    refls["panel"] = names[obs["panel"].to_numpy()]
    refls["crystal"] = obs["crystal_id"].to_numpy()
    stream = Stream.from_tables(
        chunks, None, crystals[keep], refls,
        header=StreamHeader(generator="crystalscope benchmarks/bench_merge.py"),
        geometry_text=format_geom(detector),
    )  # fmt: skip
    write_stream(stream, path)


def run_partialator(
    exe: str, stream: Path, out: Path, cycles: int, threads: int
) -> tuple[float, subprocess.CompletedProcess[str]]:
    cmd = [
        exe, "-i", str(stream), "-o", str(out), "-y", "4/mmm", "--model=xsphere",
        f"--iterations={cycles}", "-j", str(threads), "--no-polarisation", "--no-logs",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent, check=False)
    return time.perf_counter() - t0, proc


def find_partialator(option: str | None) -> tuple[str | None, str]:
    if option:
        return (option, "") if Path(option).is_file() else (None, f"{option} does not exist")
    found = shutil.which("partialator")
    if found:
        return found, ""
    return None, "partialator is not on PATH (source /tmp/crystfel/env.sh, or --partialator)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--observations", type=int, default=1_000_000)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--partialator", default=None)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    data, truth, sim = make_data(args.observations)
    n_obs, n_cr = len(data.observations), len(data.crystals)
    print(
        f"data: {n_obs} observations of {n_cr} crystals, made in {time.perf_counter() - t0:.1f} s"
    )
    elapsed, compile_s, result = run_ours(data, args.cycles)
    ok = "meets" if elapsed <= TARGET_S else "MISSES"
    print(f"ours ({args.cycles} cycles, xsphere + post-refinement, {args.threads} threads): "
          f"{elapsed:.2f} s, {n_obs / elapsed:,.0f} observations/s ({ok} the {TARGET_S:g} s "
          f"target); JIT warm-up {compile_s:.1f} s")  # fmt: skip
    cc_ours = cc_truth(result.merged, truth, data)
    cc12 = cc_half(result.half1, result.half2)
    print(f"ours: CC(merged, true F2) = {cc_ours:.5f}, CC1/2 = {cc12:.4f} on "
          f"{len(result.merged)} reflections; {int(result.crystals['rejected'].sum())} "
          "crystals rejected")  # fmt: skip
    exe, why = find_partialator(args.partialator)
    if exe is None:
        print(f"partialator: skipped ({why})")
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_merge_"))
    workdir.mkdir(parents=True, exist_ok=True)
    stream = workdir / "observations.stream"
    t0 = time.perf_counter()
    write_crystfel_stream(data, sim, stream)
    size_mb = os.path.getsize(stream) / 1e6
    print(f"stream: {stream} ({size_mb:.0f} MB) written in {time.perf_counter() - t0:.1f} s")
    out = workdir / "partialator.hkl"
    p_s, proc = run_partialator(exe, stream, out, args.cycles, args.threads)
    if proc.returncode != 0 or not out.is_file():
        print(f"partialator: failed (status {proc.returncode}): {proc.stderr[-2000:]}")
        return
    cc_p = cc_truth(read_hkl(out), truth, data)
    h1, h2 = (read_hkl(out.with_name(out.name + n)) for n in ("1", "2"))
    print(f"partialator ({args.cycles} iterations, xsphere, -j {args.threads}): {p_s:.2f} s, "
          f"{n_obs / p_s:,.0f} observations/s; CC(merged, true F2) = {cc_p:.5f}, "
          f"CC1/2 = {cc_half(h1, h2):.4f}")  # fmt: skip
    print(f"ratio partialator / ours: {p_s / elapsed:.1f}x")


if __name__ == "__main__":
    main()
