"""Tests of the comparison of two merged sets (crystalscope.merge.compare), as compare_hkl.

(Named test_compare_sets.py: tests/index/test_compare.py exists and the test folders
are not packages.)
"""

from __future__ import annotations

import math

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import ConfigError, DataError
from crystalscope.merge.compare import COMPARE_COLUMNS, compare_sets, r1_f, r1_i
from crystalscope.merge.stats import possible_reflections

CUBE = gemmi.UnitCell(10, 10, 10, 90, 90, 90)
HEWL_CELL = gemmi.UnitCell(79.34, 79.34, 37.81, 90, 90, 90)


def table(hkl: list[tuple[int, int, int]], i: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "h": [x[0] for x in hkl],
            "k": [x[1] for x in hkl],
            "l": [x[2] for x in hkl],
            "I": i,
            "sigma": [1.0] * len(i),
        }
    )


def test_r1_by_hand() -> None:
    a, b = np.array([100.0, 25.0]), np.array([81.0, 36.0])
    assert r1_i(a, b) == pytest.approx(100 * (19 + 11) / 125)  # 24 %
    assert r1_f(a, b) == pytest.approx(100 * (1 + 1) / 15)  # |10-9| + |5-6| over 10 + 5
    assert math.isnan(r1_i(np.zeros(0), np.zeros(0)))


def test_compare_unscaled_by_hand() -> None:
    hkl = [(1, 0, 0), (1, 1, 0), (1, 1, 1)]
    a = table(hkl, [100.0, 25.0, -4.0])
    b = table([(-1, 0, 0), (0, 1, 1), (1, 1, 1), (2, 0, 0)], [81.0, 36.0, 9.0, 50.0])
    got = compare_sets(a, b, CUBE, "P 2 3", n_shells=1, scale=False)
    row = got.loc["overall"]
    assert list(got.columns) == COMPARE_COLUMNS and list(got.index) == ["1", "overall"]
    assert row["n_common"] == 3
    assert row["r1_i"] == pytest.approx(100 * (19 + 11 + 13) / 121)
    assert row["r1_f"] == pytest.approx(100 * 2 / 15)  # pair with I_a < 0 left out
    assert row["r_split"] == pytest.approx(100 * math.sqrt(2) * 43 / (121 + 126))
    # dx = (59.67, -15.33, -44.33), dy = (39, -6, -33) about the means 40.33 and 42
    x, y = np.array([100.0, 25, -4]), np.array([81.0, 36, 9])
    dx, dy = x - x.mean(), y - y.mean()
    cc = dx @ dy / math.sqrt((dx @ dx) * (dy @ dy))
    assert row["cc"] == pytest.approx(cc) and row["cc_star"] == pytest.approx(
        math.sqrt(2 * cc / (1 + cc))
    )
    assert row["scale"] == 1.0 and row["b_factor"] == 0.0
    zero = compare_sets(a, b, CUBE, "P 2 3", n_shells=1, scale=False, negatives="zero")
    assert zero.loc["overall", "r1_f"] == pytest.approx(100 * (1 + 1 + 3) / 15)


def test_scaling_recovers_scale_and_b() -> None:
    ref = possible_reflections(HEWL_CELL, "P 43 21 2", 2.5)
    rng = np.random.default_rng(5)
    i_a = rng.gamma(1.0, 1000.0, len(ref)) * np.exp(-10.0 / ref["d"] ** 2)
    s2 = 0.25 / ref["d"].to_numpy() ** 2
    i_b = i_a / 3.0 * np.exp(-2 * 12.0 * s2)
    a = ref.assign(I=i_a, sigma=1.0)
    b = ref.assign(I=i_b, sigma=1.0)
    got = compare_sets(a, b, HEWL_CELL, "P 43 21 2")
    assert got["scale"].iloc[0] == pytest.approx(3.0, rel=1e-9), got
    assert got["b_factor"].iloc[0] == pytest.approx(12.0, rel=1e-9)
    assert np.allclose(got["cc"], 1.0) and np.allclose(got["r1_i"], 0.0, atol=1e-9)
    assert np.allclose(got["r_split"], 0.0, atol=1e-9) and np.allclose(got["r1_f"], 0, atol=1e-9)
    assert got.loc["overall", "n_common"] == len(ref) == got["n_common"].iloc[:-1].sum()
    # the shells span the common reflections (compare_hkl's resolution_limits)
    assert got.loc["1", "d_max"] == pytest.approx(ref["d"].max())
    assert got.loc["overall", "d_min"] == pytest.approx(ref["d"].min())


def test_noisy_copy_numbers_are_sensible() -> None:
    ref = possible_reflections(HEWL_CELL, "P 43 21 2", 2.0)
    rng = np.random.default_rng(8)
    truth = rng.gamma(1.0, 1000.0, len(ref))
    a = ref.assign(I=truth + rng.normal(0, 100, len(ref)), sigma=100.0)
    b = ref.assign(I=2 * (truth + rng.normal(0, 100, len(ref))), sigma=200.0)
    got = compare_sets(a, b, HEWL_CELL, "P 43 21 2", n_shells=5)
    row = got.loc["overall"]
    # var(truth) = 1e6, noise variance 1e4 each: CC = 1e6 / (1e6 + 1e4) = 0.990
    assert row["cc"] == pytest.approx(0.990, abs=0.003), row
    assert row["scale"] == pytest.approx(0.5, rel=0.05)
    # E|e1 - e2| = 2 * 100 / sqrt(pi): Rsplit = sqrt2 * 112.8 / (2 * 1000) = 7.98 %
    assert row["r_split"] == pytest.approx(7.98, rel=0.05), row


def test_errors() -> None:
    a = table([(1, 0, 0)], [1.0])
    b = table([(2, 0, 0)], [1.0])
    with pytest.raises(DataError, match="no reflections"):
        compare_sets(a, b, CUBE, "P 1")
    with pytest.raises(ConfigError, match="negatives"):
        compare_sets(a, a, CUBE, "P 1", negatives="drop")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="unknown space group"):
        compare_sets(a, a, CUBE, "P 7")
