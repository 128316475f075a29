"""Streak detection throughput on 2048 x 2048 frames: crystalscope against scikit-image.

Both label the 8-connected regions above a threshold; the reference then measures them
with ``skimage.measure.regionprops`` (area, weighted centroid, bbox, moments-based
orientation and axis lengths, as the seed's Methods 5.2.2 list), ours with
``crystalscope.image.streaks.region_table``.  Frames are processed two at a time on two
threads through dask, as the pipeline does.  Prints frames/s and the ratio.
"""

from __future__ import annotations

import time

import dask
import numpy as np
from skimage import measure

from crystalscope.image.streaks import find_streaks, label_regions

N_FRAMES = 16
SHAPE = (2048, 2048)


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(N_FRAMES):
        frame = rng.poisson(2.0, SHAPE).astype(np.float32)
        for _ in range(300):  # streaks: short bright bars at random angles
            x0, y0 = rng.uniform(50, 2000, 2)
            a = rng.uniform(0, np.pi)
            t = np.linspace(-15, 15, 61)
            xs = np.clip((x0 + t * np.cos(a)).astype(int), 0, SHAPE[1] - 1)
            ys = np.clip((y0 + t * np.sin(a)).astype(int), 0, SHAPE[0] - 1)
            for d in (-1, 0, 1):
                frame[np.clip(ys + d, 0, SHAPE[0] - 1), xs] += 40.0
        out.append(frame)
    return out


def _reference(frame: np.ndarray) -> int:
    labels, _ = label_regions(frame, 12.0)
    props = measure.regionprops(labels, intensity_image=frame)
    kept = [(p.area, p.centroid_weighted, p.bbox, p.orientation, p.axis_major_length,
             p.axis_minor_length) for p in props if p.area >= 10]  # fmt: skip
    return len(kept)


def _ours(frame: np.ndarray) -> int:
    return len(find_streaks(frame, 12.0, min_pixels=10))


def _rate(fn: object, frames: list[np.ndarray]) -> tuple[float, list[int]]:
    tasks = [dask.delayed(fn)(f) for f in frames]  # type: ignore[arg-type]
    start = time.perf_counter()
    counts = dask.compute(*tasks, scheduler="threads", num_workers=2)
    return len(frames) / (time.perf_counter() - start), list(counts)


def main() -> None:
    frames = _frames()
    _ours(frames[0])
    _reference(frames[0])
    ref, n_ref = _rate(_reference, frames)
    ours, n_ours = _rate(_ours, frames)
    assert n_ref == n_ours, (n_ref, n_ours)
    print(f"streak detection, {SHAPE[0]}x{SHAPE[1]} frames, 2 threads, {n_ours[0]} streaks/frame")
    print(f"  skimage regionprops: {ref:6.2f} frames/s")
    print(f"  crystalscope:        {ours:6.2f} frames/s   ratio {ours / ref:.1f}x")


if __name__ == "__main__":
    main()
