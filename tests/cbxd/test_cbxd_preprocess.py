"""CBXD pre-processing: detector efficiency, median background, bad and saturated pixels."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.cbxd.preprocess import (
    correct_frame,
    find_bad_pixels,
    median_background,
    relative_efficiency,
)
from crystalscope.errors import DataError


def test_relative_efficiency_is_eq_9_over_its_axial_value() -> None:
    mu, t = 0.5, 0.45  # e.g. silicon at ~17 keV, 450 um sensor (per mm, mm)
    tt = np.radians([0.0, 20.0, 45.0])
    rel = relative_efficiency(tt, mu, t)
    expect = (1 - np.exp(-mu * t / np.cos(tt))) / (1 - np.exp(-mu * t))
    np.testing.assert_allclose(rel, expect)
    assert rel[0] == 1.0 and np.all(np.diff(rel) > 0)  # oblique rays see more sensor
    with pytest.raises(DataError):
        relative_efficiency(np.radians([95.0]), mu, t)
    with pytest.raises(DataError):
        relative_efficiency(tt, 0.0, t)


def _scan(n: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """Frames: a smooth background, Poisson noise, a streak moving across the frames,
    a dead pixel and a hot pixel."""
    rng = np.random.default_rng(3)
    yy, xx = np.indices((64, 80))
    background = 20.0 + 10.0 * np.exp(-((xx - 40) ** 2 + (yy - 32) ** 2) / 800.0)
    frames = rng.poisson(np.broadcast_to(background, (n, 64, 80))).astype(np.float32)
    for i in range(n):  # the streak sweeps over 3 columns per frame
        frames[i, 10:50, 2 + 3 * i : 4 + 3 * i] += 500.0
    frames[:, 5, 7] = 0.0  # dead
    frames[:, 60, 70] += 400.0  # hot
    return frames, background


def test_median_background_and_bad_pixels() -> None:
    frames, truth = _scan()
    med = median_background(frames, tile=32)
    good = np.ones(truth.shape, bool)
    good[5, 7] = good[60, 70] = False
    # the median of 21 Poisson counts (mean ~20): spread ~1.2 counts, bias about -1/3
    err = med[good] - truth[good]
    assert np.abs(err).mean() < 1.5 and abs(err.mean()) < 0.7
    assert np.abs(med[10:50, 2:64] - truth[10:50, 2:64]).max() < 12  # streak rejected
    bad = find_bad_pixels(med, frames.max(axis=0))
    assert np.argwhere(bad.dead).tolist() == [[5, 7]]
    assert np.argwhere(bad.hot).tolist() == [[60, 70]]
    with pytest.raises(DataError, match="stack"):
        median_background(np.zeros((4, 4)))


def test_correct_frame_masks_and_divides() -> None:
    frames, _ = _scan(5)
    med = median_background(frames)
    bad = find_bad_pixels(med, frames.max(axis=0)).mask
    eff = np.full(med.shape, 0.5, np.float32)
    frame = frames[2].copy()
    frame[30, 30] = 70000.0
    out, mask = correct_frame(frame, med, eff, bad, saturation=65000.0)
    assert mask[30, 30] and mask[5, 7] and mask[60, 70] and out[30, 30] == 0.0
    free = ~mask
    np.testing.assert_allclose(out[free], ((frame - med) / 0.5)[free], rtol=1e-6)
    with pytest.raises(DataError, match="shape"):
        correct_frame(frame[:10], med, None, None, None)
