"""Benchmark: simulating 1000 still frames of 1024 x 1024 with ~200 spots each.

Usage::

    python benchmarks/bench_simulate_stills.py [--frames 1000] [--reference-frames 20]

Ours: :class:`crystalscope.simulate.serial.SerialSimulation` frames computed through
dask on local threads (all cores), all beam and detector effects on, frames reduced to
their sum so that only simulation is timed (no disk).  Reference, in the same process:
the same spot list rendered by a plain numpy implementation (per-spot pixel-integrated
Gaussians with scipy.special.erf, a numpy radial background and numpy Poisson noise) on
one thread, for ``--reference-frames`` frames; both are reported in frames/s and the ratio
is printed.  Target: 1000 frames in under 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import time

import dask
import numpy as np
from scipy.special import erf

from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation

TARGET_S = 60.0


def _config(n_frames: int) -> SerialConfig:
    return SerialConfig.model_validate(
        {
            "n_crystals": n_frames,
            "seed": 7,
            "source": {"structure": "builtin:lysozyme-like", "d_min": 2.0},
            "crystal": {"thickness_a": 2500.0},
            "detector": {"preset": "single", "distance_mm": 1100.0},
            "beam_effects": {"centre_jitter_px": 0.5},
            "detector_effects": {"dead_pixel_fraction": 1e-3, "flat_field_rms": 0.02},
        }
    )


def _reference_frame(sim: SerialSimulation, frame: int, rng: np.random.Generator) -> np.ndarray:
    """Plain numpy rendering of the same physics (spots + radial zero order + noise)."""
    n_ss, n_fs = sim.detector.raw_shape
    image = np.zeros((n_ss, n_fs))
    spots = sim.reflections(frame)
    sigma = sim.config.detector_effects.psf_sigma_px
    edges_fs = np.arange(n_fs + 1) - 0.5
    edges_ss = np.arange(n_ss + 1) - 0.5
    for fs, ss, counts in spots[["fs", "ss", "counts"]].to_numpy():
        wx = np.diff(erf((edges_fs - fs) / (np.sqrt(2) * sigma))) / 2
        wy = np.diff(erf((edges_ss - ss) / (np.sqrt(2) * sigma))) / 2
        image += counts * np.outer(wy, wx)
    cy, cx = n_ss / 2, n_fs / 2
    yy, xx = np.mgrid[0:n_ss, 0:n_fs]
    r2 = (xx - cx) ** 2 + (yy - cy) ** 2
    g = sim.config.beam_effects.zero_order_width_px
    image += sim.n_incident * g / (2 * np.pi * (r2 + g * g) ** 1.5)
    return rng.poisson(image).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--reference-frames", type=int, default=20)
    args = parser.parse_args()

    sim = SerialSimulation.build(_config(args.frames))
    n = len(sim.shots)
    counts = [len(sim.reflections(i)) for i in range(min(n, 50))]
    print(f"detector {sim.detector.raw_shape}, {len(sim.sf.table)} reflections in P1 to 2 A")
    print(f"spots per frame (first 50 frames): mean {np.mean(counts):.0f}, "
          f"range {min(counts)}-{max(counts)}")  # fmt: skip

    sim.frame(0)  # compile numba kernels outside the timing
    t0 = time.perf_counter()
    sums = sim.frames().sum(axis=(1, 2))
    with dask.config.set(scheduler="threads"):
        totals = sums.compute()
    ours_s = time.perf_counter() - t0
    assert np.isfinite(totals).all()

    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for i in range(args.reference_frames):
        _reference_frame(sim, i, rng)
    ref_s = time.perf_counter() - t0

    ours_fps, ref_fps = n / ours_s, args.reference_frames / ref_s
    print(f"crystalscope : {n} frames in {ours_s:.1f} s = {ours_fps:.1f} frames/s (2 threads)")
    print(
        f"numpy ref.   : {args.reference_frames} frames in {ref_s:.1f} s = {ref_fps:.2f} frames/s"
    )
    print(f"speed-up     : {ours_fps / ref_fps:.1f} x")
    scaled = ours_s * 1000 / n
    verdict = "yes" if scaled < TARGET_S else "NO"
    print(f"1000 frames  : {scaled:.1f} s (target < {TARGET_S:.0f} s): {verdict}")


if __name__ == "__main__":
    main()
