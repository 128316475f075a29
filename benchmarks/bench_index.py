"""Benchmark: orientation indexing of simulated stills for a known cell.

Usage::

    python benchmarks/bench_index.py [--frames 200] [--reference-frames 3]
                                     [--reference-rotations 300000]

Data: lysozyme-like stills (P 43 21 2, a = 79.1, c = 37.9 A, to 2.5 A) with 0.5 px
centre jitter that the indexer is not told, 0.05 deg mosaicity and ideal peaks with
0.25 px centroid errors (``crystalscope.simulate.peaks.ideal_peaks``); frames with at
least 15 peaks.  200 kV electrons on a LAMBDA 750K at 1100 mm, and 12 keV X-rays on a
1024 x 1024 panel at 60 mm (2.4 A at the edge).

Ours: :func:`crystalscope.index.stills.index_frame` frame by frame on one core
(``numba.set_num_threads(1)``; the kernels are serial, dask runs frames in parallel),
timed per frame after a warm-up, then :func:`~crystalscope.index.stills.index_peaks`
on one dask worker for the throughput.  Reported: median (and mean) time per pattern,
indexing rate (first lattice within 2 deg of the truth), median misorientation and the
rate of wrong solutions (misorientation > 2 deg).  Target: median <= 0.5 s per pattern.

Reference, in the same process: a plain brute-force orientation search in numpy on the
first ``--reference-frames`` electron frames: ``--reference-rotations`` uniformly random
orientations (with the 8 rotations of 4/mmm about 1.8 deg apart), each scored by the
number of peaks within ``1 px + 2 deg |q|`` of a lattice point, the best one re-fitted by
three rounds of Wahba's problem on the peaks it indexes.  Its time per pattern and its
misorientation are printed next to ours, with the ratio.
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np
import pandas as pd

from crystalscope.config import ComputeConfig
from crystalscope.index.compare import misorientation_deg
from crystalscope.index.peaks import peak_vectors
from crystalscope.index.stills import IndexingParams, index_frame, index_peaks
from crystalscope.model.orientation import random_rotations
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.peaks import ideal_peaks
from crystalscope.simulate.serial import SerialSimulation

TARGET_S = 0.5
LATTICE = "P 43 21 2"


def simulate(kind: str, n: int) -> tuple[SerialSimulation, pd.DataFrame]:
    cfg: dict = {
        "n_crystals": n, "seed": 5, "source": {"structure": "builtin:lysozyme-like", "d_min": 2.5},
        "beam_effects": {"centre_jitter_px": 0.5, "dose_e_per_a2": 0.02},
        "crystal": {"thickness_a": 1000, "mosaicity_deg": 0.05},
    }  # fmt: skip
    if kind == "X-ray 12 keV":
        cfg["beam"] = {"energy_kev": 12.0}
        cfg["detector"] = {"preset": "single", "distance_mm": 60.0}
        cfg["crystal"] = {"thickness_a": 5000, "mosaicity_deg": 0.02}
        cfg["beam_effects"]["dose_e_per_a2"] = 1e4
    sim = SerialSimulation.build(SerialConfig.model_validate(cfg))
    peaks = ideal_peaks(sim, min_counts=20, position_sigma_px=0.25)
    size = peaks.groupby("frame")["fs"].transform("size")
    return sim, peaks[size >= 15].reset_index(drop=True)


def true_ubs(sim: SerialSimulation) -> dict[int, list[np.ndarray]]:
    u = sim.crystals[[f"u{i}{j}" for i in range(3) for j in range(3)]].to_numpy(float)
    out: dict[int, list[np.ndarray]] = {}
    for frame, ub in zip(sim.crystals["frame"], u.reshape(-1, 3, 3) @ sim.base.B, strict=True):
        out.setdefault(int(frame), []).append(ub)
    return out


def misorientation(ub: np.ndarray, truth: list[np.ndarray]) -> float:
    return min(float(misorientation_deg(ub, t, LATTICE)) for t in truth)


def bench_ours(sim: SerialSimulation, peaks: pd.DataFrame, params: IndexingParams) -> dict:
    groups = [g for _, g in peaks.groupby("frame")]
    index_frame(groups[0], sim.detector, params)  # compile outside the timing
    truth = true_ubs(sim)
    times, first = [], []
    for group in groups:
        t0 = time.perf_counter()
        sols = index_frame(group, sim.detector, params)
        times.append(time.perf_counter() - t0)
        first.append(
            misorientation(sols[0].UB, truth[int(group["frame"].iloc[0])]) if sols else np.nan
        )
    t0 = time.perf_counter()
    index_peaks(peaks, sim.detector, params, compute_config=ComputeConfig(n_workers=1))
    throughput = (time.perf_counter() - t0) / len(groups)
    mis = np.array(first)
    right = mis[mis < 2.0]
    return {
        "frames": len(groups), "peaks": float(np.median([len(g) for g in groups])),
        "median_s": float(np.median(times)), "mean_s": float(np.mean(times)),
        "index_peaks_s": throughput, "rate": len(right) / len(mis),
        "median_mis": float(np.median(right)) if len(right) else np.nan,
        "wrong": float(np.sum(mis >= 2.0)) / len(mis),
    }  # fmt: skip


def brute_force(
    q: np.ndarray, b_mat: np.ndarray, rotations: np.ndarray, px_q: float, chunk: int = 4000
) -> np.ndarray:
    """The plain reference: score every rotation, re-fit the best (numpy only)."""
    length = np.linalg.norm(q, axis=1)
    tol = px_q + np.radians(2.0) * length
    best_score, best = -1, rotations[0]
    b_inv = np.linalg.inv(b_mat)
    for start in range(0, len(rotations), chunk):
        rots = rotations[start : start + chunk]
        frac = np.einsum("ij,rkj,nk->rni", b_inv, rots, q)  # B^-1 R^T q
        hkl = np.round(frac)
        pred = np.einsum("rij,jk,rnk->rni", rots, b_mat, hkl)
        hit = (np.linalg.norm(pred - q, axis=2) < tol) & np.any(hkl != 0, axis=2)
        score = hit.sum(axis=1)
        k = int(np.argmax(score))
        if score[k] > best_score:
            best_score, best = int(score[k]), rots[k]
    for tol_deg in (1.0, 0.5, 0.0):  # re-fit: Wahba on the indexed peaks
        hkl = np.round(np.linalg.solve(best @ b_mat, q.T).T)
        lat = hkl @ b_mat.T
        near = np.linalg.norm(lat @ best.T - q, axis=1) < px_q + np.radians(tol_deg) * length
        u, _, vt = np.linalg.svd(q[near].T @ lat[near])
        d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
        best = u @ d @ vt
    return best @ b_mat


def bench_reference(
    sim: SerialSimulation, peaks: pd.DataFrame, n_frames: int, n_rot: int
) -> tuple[float, list[float]]:
    vec = peak_vectors(peaks, sim.detector)
    truth = true_ubs(sim)
    rotations = random_rotations(n_rot, 3)
    px_q = sim.detector.panels[0].pixel_size_mm / 1100.0 / sim.beam.wavelength
    times, mis = [], []
    for frame in sorted(vec["frame"].unique())[:n_frames]:
        q = vec.loc[vec["frame"] == frame, ["qx", "qy", "qz"]].to_numpy()
        t0 = time.perf_counter()
        ub = brute_force(q, sim.base.B, rotations, px_q)
        times.append(time.perf_counter() - t0)
        mis.append(misorientation(ub, truth[int(frame)]))
    return float(np.median(times)), mis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--reference-frames", type=int, default=3)
    parser.add_argument("--reference-rotations", type=int, default=300_000)
    args = parser.parse_args()
    numba.set_num_threads(1)
    results = {}
    for kind in ("electrons 200 kV", "X-ray 12 keV"):
        sim, peaks = simulate(kind, args.frames)
        params = IndexingParams(sim.base.cell, LATTICE)
        results[kind] = r = bench_ours(sim, peaks, params)
        print(
            f"{kind}: {r['frames']} frames, median {r['peaks']:.0f} peaks; ours median "
            f"{r['median_s'] * 1e3:.1f} ms/pattern (mean {r['mean_s'] * 1e3:.1f}; index_peaks, "
            f"1 worker: {r['index_peaks_s'] * 1e3:.1f}); indexed {r['rate']:.1%}, median "
            f"misorientation {r['median_mis']:.3f} deg, wrong {r['wrong']:.1%}"
        )
        if kind.startswith("electrons"):
            ref_s, ref_mis = bench_reference(
                sim, peaks, args.reference_frames, args.reference_rotations
            )
            print(
                f"  reference (numpy brute force, {args.reference_rotations} orientations) on "
                f"{len(ref_mis)} frames: {ref_s:.2f} s/pattern, misorientation "
                f"{', '.join(f'{m:.2f}' for m in ref_mis)} deg; "
                f"ours is {ref_s / r['median_s']:.0f}x faster"
            )
    worst = max(r["median_s"] for r in results.values())
    verdict = "meets" if worst <= TARGET_S else "MISSES"
    print(f"target: median <= {TARGET_S} s per pattern on one core: {verdict} ({worst:.3f} s)")


if __name__ == "__main__":
    main()
