"""Benchmark: the whole SerialED pre-processing chain on 1556 x 516 LAMBDA frames.

Usage::

    python benchmarks/bench_preprocess.py [--frames 400] [--workers 2]

Frames are simulated once (LAMBDA 750K preset, ~150 spots per frame, dead/hot pixels,
flat field, 0.5 px centre jitter, 2 % ellipticity) into a Dataset file in a temporary
directory, with a dead/hot pixel mask file and a flat-field file.  Then, timed:

* analysis: corrections, centre (COM + Lorentzian + Friedel), peakfinder8, through dask
  on ``--workers`` local threads, reading the frames from the file;
* finishing: corrections again and the radial background subtraction of every frame,
  computed (not written), as when the output file is written;
* the ellipticity fit over all peaks;

and written to disk in a separate line (compression and I/O).  Prints frames/s of the
chain (analysis + finishing) and of each part, and the peak resident memory.
Target: >= 100 frames/s on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import dask
import numpy as np

from crystalscope.io.pixel_mask import write_pixel_map
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.inputs import open_input
from crystalscope.serial.output import write_preprocessed
from crystalscope.serial.preprocess import preprocess
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation, simulate_serial

TARGET_FPS = 100.0


def _simulate(out: Path, n: int) -> None:
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": n,
            "seed": 3,
            "beam_effects": {
                "centre_jitter_px": 0.5,
                "ellipticity": 0.02,
                "ellipticity_angle_deg": 30.0,
                "dose_e_per_a2": 0.1,
            },
            "detector_effects": {
                "dead_pixel_fraction": 1e-3,
                "hot_pixel_fraction": 1e-4,
                "flat_field_rms": 0.03,
            },
        }
    )
    simulate_serial(cfg, out)
    sim = SerialSimulation.build(cfg)
    write_pixel_map(out / "mask.h5", (sim.state.dead | sim.state.hot).astype(np.uint8))
    write_pixel_map(out / "flat.h5", sim.state.flat)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        t0 = time.perf_counter()
        _simulate(out, args.frames)
        print(f"simulated {args.frames} frames in {time.perf_counter() - t0:.1f} s")
        rss_before = _peak_rss_mb()
        cfg = PreprocessConfig.model_validate(
            {
                "input": {"files": [str(out / "frames.h5")]},
                "corrections": {
                    "mask_file": str(out / "mask.h5"),
                    "flat_field": str(out / "flat.h5"),
                },
                "compute": {"n_workers": args.workers, "progress": False},
            }
        )
        raw = open_input(cfg.input)
        warm = dataclasses.replace(raw, dataset=raw.dataset.select(slice(0, 4)))
        preprocess(warm, cfg)  # warm-up: numba compilation and caches
        t0 = time.perf_counter()
        result = preprocess(raw, cfg)
        t_analysis = time.perf_counter() - t0
        t0 = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=args.workers):
            data = result.dataset.data
            total = float(data.sum().compute())
        t_finish = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_preprocessed(result, out / "pre", progress=False)
        t_write = time.perf_counter() - t0
        n = args.frames
        chain = t_analysis + t_finish
        print(result.summary())
        print(f"analysis (corrections, centre, peaks, Friedel, ellipticity): "
              f"{t_analysis:.2f} s = {n / t_analysis:.1f} frames/s")  # fmt: skip
        print(f"finishing (corrections, background subtraction): {t_finish:.2f} s = "
              f"{n / t_finish:.1f} frames/s (checksum {total:.3g})")  # fmt: skip
        print(f"chain on {args.workers} threads: {n / chain:.1f} frames/s "
              f"(target >= {TARGET_FPS:.0f})")  # fmt: skip
        print(f"writing everything to disk (compressed, incl. finishing again): {t_write:.2f} s"
              f" = {n / t_write:.1f} frames/s")  # fmt: skip
        print(f"peak RSS {_peak_rss_mb():.0f} MB (after simulation: {rss_before:.0f} MB)")


if __name__ == "__main__":
    main()
