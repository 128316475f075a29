"""Outlier statistics of the delta-CC1/2 rejection (crystalscope.merge.scaling)."""

from __future__ import annotations

import numpy as np

from crystalscope.merge.scaling import clipped_mean_std


def test_clipped_statistics_ignore_wild_values() -> None:
    """A few wild crystals must not widen the threshold until they pass it (seen on the
    demo: deltas of +0.73 and -0.12 among 268 crystals of spread 1e-4 gave mean - 3 std
    = -0.17, and the -0.12 crystal with a scale of 1.6e-4 was merged)."""
    rng = np.random.default_rng(3)
    values = np.r_[rng.normal(5e-5, 1e-4, 266), 0.725, -0.115]
    mean, std = clipped_mean_std(values, 3.0)
    assert abs(mean - 5e-5) < 3e-5 and 0.7e-4 < std < 1.3e-4
    assert mean - 3.0 * std > -0.115  # the bad crystal falls below the threshold
    plain = float(np.mean(values) - 3.0 * np.std(values))
    assert plain < -0.115  # what the plain statistics did


def test_clipped_statistics_of_clean_values_are_the_plain_ones() -> None:
    values = np.random.default_rng(4).normal(0.0, 1.0, 500)
    mean, std = clipped_mean_std(values, 5.0)
    assert mean == np.mean(values) and std == np.std(values)
