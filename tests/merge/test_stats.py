"""Tests of the merging statistics (crystalscope.merge.stats, crystalscope.merge.fom).

Every figure of merit has a test against a value worked out by hand on a small table;
the definitions are CrystFEL's (check_hkl / compare_hkl, libcrystfel/src/fom.c).
"""

from __future__ import annotations

import math
from pathlib import Path

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import ConfigError, DataError
from crystalscope.merge.fom import epsilon_factor, hkl_rotations
from crystalscope.merge.stats import (
    CC_HALF_CUTOFF,
    Normalisation,
    _cutoff,
    cc_half,
    cc_star,
    merge_statistics,
    possible_reflections,
    r_split,
    shell_edges,
    shell_index,
    symmetry_keys,
    wilson_fit,
    wilson_scale,
)

CUBE = gemmi.UnitCell(10, 10, 10, 90, 90, 90)
HEWL_CELL = gemmi.UnitCell(79.34, 79.34, 37.81, 90, 90, 90)


def table(hkl: list[tuple[int, int, int]], i: list[float], sigma: list[float], **extra: object):
    data = {
        "h": [x[0] for x in hkl],
        "k": [x[1] for x in hkl],
        "l": [x[2] for x in hkl],
        "I": i,
        "sigma": sigma,
        **extra,
    }
    return pd.DataFrame(data)


# --------------------------------------------------------------------------- shells


def test_shell_edges_equal_volume_by_hand() -> None:
    # r from 0 to 1, two shells: r1^3 = 1/2
    assert shell_edges(1.0, math.inf, 2) == pytest.approx([0.0, 0.5 ** (1 / 3), 1.0])
    # d 4..2 A: r 0.25..0.5, r1^3 = 0.25^3 + (0.5^3 - 0.25^3)/2 = 0.0703125
    edges = shell_edges(2.0, 4.0, 2)
    assert edges == pytest.approx([0.25, 0.0703125 ** (1 / 3), 0.5])
    vol = np.diff(edges**3)
    assert np.allclose(vol, vol[0]), vol


def test_shell_edges_errors() -> None:
    with pytest.raises(ConfigError, match="n_shells"):
        shell_edges(2.0, 10.0, 0)
    with pytest.raises(ConfigError, match="d_max"):
        shell_edges(2.0, 1.0)
    with pytest.raises(ConfigError, match="d_min"):
        shell_edges(-1.0)


def test_shell_index_boundaries_as_crystfel() -> None:
    edges = np.array([0.1, 0.2, 0.3])
    # r_lo < r <= r_hi; the lower edge itself goes to the first shell
    got = shell_index([0.1, 0.15, 0.2, 0.2000001, 0.3, 0.05, 0.31], edges)
    assert got.tolist() == [0, 0, 0, 1, 1, 0, 1]


# --------------------------------------------------------------------------- symmetry


def test_hkl_rotations_act_as_gemmi() -> None:
    for name in ("P 43 21 2", "P 61 2 2", "R 3:H", "P 1 21 1", "F d -3 m"):
        sg = gemmi.SpaceGroup(name)
        rots = hkl_rotations(sg, anomalous=True)
        h = np.array([3, -2, 5])
        mine = {tuple(h @ r) for r in rots}
        ref = {tuple(op.apply_to_hkl([3, -2, 5])) for op in sg.operations().sym_ops}
        assert mine == ref, name
        laue = {tuple(h @ r) for r in hkl_rotations(sg)}
        assert laue == ref | {tuple(-np.array(x)) for x in ref}, name


def test_symmetry_keys_pair_any_asu_convention() -> None:
    sg = gemmi.SpaceGroup("P 61 2 2")
    rng = np.random.default_rng(3)
    hkl = rng.integers(-15, 16, size=(500, 3))
    ops = list(sg.operations().sym_ops)
    mates = np.array([ops[rng.integers(len(ops))].apply_to_hkl(list(map(int, x))) for x in hkl])
    mates[::2] *= -1  # Friedel mates
    assert np.array_equal(symmetry_keys(hkl, sg), symmetry_keys(mates, sg))
    asu = gemmi.ReciprocalAsu(sg)
    asu_hkl = np.array([asu.to_asu(list(map(int, x)), sg.operations())[0] for x in hkl])
    assert np.array_equal(symmetry_keys(hkl, sg), symmetry_keys(asu_hkl, sg))
    # Friedel mates differ when anomalous (acentric reflections)
    general = np.array([[1, 2, 3]])
    assert (
        symmetry_keys(general, sg, anomalous=True)[0]
        != symmetry_keys(-general, sg, anomalous=True)[0]
    )


def test_epsilon_crystfel_laue_convention() -> None:
    # check_hkl: e = |Laue group| / |equivalents| -> 00l in 4/mmm: 16 / 2 = 8
    rots = hkl_rotations("P 43 21 2")
    hkl = np.array([[0, 0, 4], [1, 0, 0], [1, 2, 0], [1, 2, 3], [1, 1, 1]])
    assert epsilon_factor(hkl, rots).tolist() == [8, 4, 2, 1, 2]


@pytest.mark.parametrize(
    ("space_group", "anomalous", "expected"),
    [
        ("P 1", False, 16),  # 32 lattice points with h^2+k^2+l^2 <= 4, Friedel pairs
        ("P 1", True, 32),
        ("P 2 3", False, 4),  # {100} {110} {111} {200}
        ("P 2 3", True, 5),  # 111 and -1-1-1 differ in point group 23
        ("I 2 3", False, 2),  # h+k+l even: {110} {200}
        ("F 2 3", False, 2),  # all even or all odd: {111} {200}
        ("F 2 3", True, 3),
        ("P 43 21 2", False, 7),  # screw-axis absences (100), (001) are counted
    ],
)
def test_possible_reflections_by_hand(space_group: str, anomalous: bool, expected: int) -> None:
    got = possible_reflections(CUBE, space_group, 5.0, anomalous=anomalous)
    assert len(got) == expected, got
    assert got["d"].min() >= 5.0 - 1e-12


def test_possible_reflections_match_a_literal_loop() -> None:
    """The vectorised count equals a literal loop over the box with gemmi's ASU."""
    cases = [
        (gemmi.UnitCell(30, 40, 50, 90, 100, 90), "C 1 2 1", False),
        (gemmi.UnitCell(30, 30, 70, 90, 90, 120), "R 3 2:H", False),
        (gemmi.UnitCell(30, 30, 45, 90, 90, 120), "P 31 1 2", True),
        (gemmi.UnitCell(25, 35, 45, 90, 90, 90), "I 2 2 2", False),
        (gemmi.UnitCell(31, 33, 37, 80, 95, 101), "P 1", True),
    ]
    for cell, name, anomalous in cases:
        sg = gemmi.SpaceGroup(name)
        d_min, d_max = 4.0, 12.0
        expected = _literal_possible(cell, sg, d_min, d_max, anomalous)
        got = possible_reflections(cell, sg, d_min, d_max, anomalous=anomalous)
        assert len(got) == expected, (name, len(got), expected)
        asu = gemmi.ReciprocalAsu(sg)
        assert all(
            asu.is_in(list(map(int, r))) or anomalous for r in got[["h", "k", "l"]].to_numpy()
        )


def _literal_possible(
    cell: gemmi.UnitCell, sg: gemmi.SpaceGroup, d_min: float, d_max: float, anomalous: bool
) -> int:
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    n = int(cell.a / d_min) + 1, int(cell.b / d_min) + 1, int(cell.c / d_min) + 1
    seen = set()
    for h in range(-n[0], n[0] + 1):
        for k in range(-n[1], n[1] + 1):
            for ell in range(-n[2], n[2] + 1):
                if (h, k, ell) == (0, 0, 0):
                    continue
                d = cell.calculate_d([h, k, ell])
                if not d_min <= d <= d_max:
                    continue
                if any((h * t[0] + k * t[1] + ell * t[2]) % 24 for t in ops.cen_ops):
                    continue
                mate, isym = asu.to_asu([h, k, ell], ops)
                friedel = anomalous and not ops.is_reflection_centric([h, k, ell])
                seen.add((tuple(mate), isym % 2 if friedel else 1))
    return len(seen)


def test_possible_hewl_differs_from_gemmi_by_the_screw_absences() -> None:
    ours = possible_reflections(HEWL_CELL, "P 43 21 2", 2.0)
    gemmi_unique = gemmi.make_miller_array(HEWL_CELL, gemmi.SpaceGroup("P 43 21 2"), 2.0)
    screw = ours[(ours.h == 0) & (ours.k == 0) & (ours.l % 4 != 0)]
    screw_h = ours[(ours.k == 0) & (ours.l == 0) & (ours.h % 2 != 0)]
    assert len(ours) == len(gemmi_unique) + len(screw) + len(screw_h), (
        len(ours),
        len(gemmi_unique),
        len(screw),
        len(screw_h),
    )


# --------------------------------------------------------------------------- figures of merit


def test_cc_half_by_hand() -> None:
    # x - <x> = (-1.5, -0.5, 0.5, 1.5), y - <y> = (-3, -1, 0, 4):
    # CC = 11 / sqrt(5 * 26)
    assert cc_half([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130), rel=1e-12)
    assert math.isnan(cc_half([1.0], [2.0]))
    assert math.isnan(cc_half([1.0, 1.0], [2.0, 3.0]))


def test_cc_star_by_hand() -> None:
    assert cc_star(0.5) == pytest.approx(math.sqrt(1 / 1.5))
    assert cc_star(1.0) == 1.0 and cc_star(0.0) == 0.0
    assert math.isnan(cc_star(-0.2))


def test_r_split_by_hand() -> None:
    # sqrt(2) * (2 + 4) / (22 + 36)
    assert r_split([10, 20], [12, 16]) == pytest.approx(100 * math.sqrt(2) * 6 / 58)
    assert math.isnan(r_split([], []))


def test_wilson_scale_recovers_scale_and_b() -> None:
    d = np.linspace(1.8, 20.0, 200)
    i1 = 1000.0 * np.exp(-10.0 / d**2)
    s2 = 0.25 / d**2
    i2 = i1 / 2.5 * np.exp(-2.0 * 7.0 * s2)  # list 2 weaker and falling off faster
    g, b = wilson_scale(i1, i2, d)
    assert g == pytest.approx(2.5, rel=1e-10) and b == pytest.approx(7.0, rel=1e-10), (g, b)
    assert wilson_scale([1.0], [2.0], [3.0]) == (1.0, 0.0)


# --------------------------------------------------------------------------- merge statistics

HKL4 = [(1, 0, 0), (1, 1, 0), (1, 1, 1), (2, 0, 0)]  # 1/d = 0.1, 0.1414, 0.1732, 0.2 in CUBE


def test_single_list_figures_by_hand() -> None:
    merged = table(HKL4, [100, 50, -10, 20], [10, 5, 2, 0], nobs=[5, 3, 1, 7])
    stats = merge_statistics(merged, None, None, CUBE, "P 1", n_shells=1)
    row = stats.overall
    assert row["n_possible"] == 16 and row["n_measured"] == 4, row  # P-1, 0.1 <= 1/d <= 0.2
    assert row["completeness"] == pytest.approx(25.0)
    assert row["n_obs"] == 16 and row["multiplicity"] == pytest.approx(4.0)
    assert row["mean_i"] == pytest.approx(40.0)
    assert row["snr"] == pytest.approx((10 + 10 - 5) / 3)  # sigma = 0 skipped, as check_hkl
    assert row["mean_i_over_sigma"] == pytest.approx(40.0 / (17 / 4))
    assert row["d_max"] == pytest.approx(10.0) and row["d_min"] == pytest.approx(5.0)
    assert math.isnan(row["cc_half"]) and row["n_common"] == 0
    # check_hkl leaves the three reflections at 1/d = r_min out of the possible count
    compat = merge_statistics(merged, None, None, CUBE, "P 1", n_shells=1, crystfel_compatible=True)
    assert compat.overall["n_possible"] == 13
    assert compat.overall["completeness"] == pytest.approx(100 * 4 / 13)


def test_two_shells_by_hand() -> None:
    merged = table(HKL4, [100, 50, -10, 20], [10, 5, 2, 1], nobs=[5, 3, 1, 7])
    stats = merge_statistics(merged, None, None, CUBE, "P 1", n_shells=2)
    s = stats.shells
    # edge r1 = (0.1^3 + (0.2^3 - 0.1^3) / 2)^(1/3) = 0.0045^(1/3) = 0.16510
    assert s.loc["1", "d_min"] == pytest.approx(1 / 0.0045 ** (1 / 3))
    # shell 1: |h|^2 = 1 (3 classes), 2 (6); shell 2: |h|^2 = 3 (4), 4 (3)
    assert s["n_possible"].tolist() == [9, 7, 16]
    assert s["n_measured"].tolist() == [2, 2, 4]
    assert s["n_obs"].tolist() == [8, 8, 16]
    assert s["mean_i"].tolist() == pytest.approx([75.0, 5.0, 40.0])
    assert list(s.index) == ["1", "2", "overall"]


def test_half_set_figures_by_hand() -> None:
    merged = table(HKL4, [95, 55, -5, 15], [1, 1, 1, 1])
    h1 = table(HKL4, [100, 50, -10, 20], [1, 1, 1, 1])
    # half 2 listed in another asymmetric unit (Friedel mates) and with an extra reflection
    h2 = table(
        [(-1, 0, 0), (-1, -1, 0), (1, 1, 1), (2, 0, 0), (0, 0, 1)],
        [90, 60, 0, 10, 7],
        [1, 1, 1, 1, 1],
    )
    stats = merge_statistics(merged, h1, h2, CUBE, "P 1", n_shells=1, scale_halves=False)
    row = stats.overall
    # dx = (60, 10, -50, -20), dy = (50, 20, -40, -30): CC = 5800 / sqrt(6600 * 5400)
    cc = 5800 / math.sqrt(6600 * 5400)
    assert row["cc_half"] == pytest.approx(cc, rel=1e-12)
    assert row["cc_star"] == pytest.approx(math.sqrt(2 * cc / (1 + cc)))
    assert row["r_split"] == pytest.approx(100 * math.sqrt(2) * 40 / 320)  # 17.678 %
    assert row["n_common"] == 4
    scaled = merge_statistics(merged, h1, h2, CUBE, "P 1", n_shells=1)
    assert scaled.half_scale != 1.0 and scaled.overall["cc_half"] != pytest.approx(cc)


def test_selection_as_check_hkl() -> None:
    merged = table([*HKL4, (2, 1, 0)], [100, np.nan, -10, 20, 5], [10, 5, -2, 1, 1])
    stats = merge_statistics(merged, None, None, CUBE, "P 1", n_shells=1, d_min=4.4, d_max=9.0)
    # NaN I and sigma < 0 dropped; (1,0,0) at d = 10 A outside the range
    assert stats.overall["n_measured"] == 2, stats.table()
    assert any("non-finite" in n for n in stats.notes) and any("outside" in n for n in stats.notes)
    assert stats.overall["d_max"] == pytest.approx(9.0)


def test_duplicate_reflections_rejected() -> None:
    merged = table([(1, 2, 3), (-1, -2, -3), (1, 0, 0)], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0])
    with pytest.raises(DataError, match="more than once"):
        merge_statistics(merged, None, None, CUBE, "P 1")
    stats = merge_statistics(merged, None, None, CUBE, "P 1", anomalous=True, n_shells=1)
    assert stats.overall["n_measured"] == 3


def test_missing_columns_and_empty_tables() -> None:
    with pytest.raises(DataError, match="sigma"):
        merge_statistics(
            pd.DataFrame({"h": [1], "k": [0], "l": [0], "I": [1.0]}), None, None, CUBE, "P 1"
        )
    with pytest.raises(DataError, match="no reflections"):
        merge_statistics(table([(1, 0, 0)], [np.nan], [1.0]), None, None, CUBE, "P 1")


def test_cutoff_interpolates_in_one_over_d() -> None:
    edges = np.array([0.0, 1.0, 2.0, 3.0])  # centres 0.5, 1.5, 2.5
    # between 1.5 (0.5) and 2.5 (0.1): r = 1.5 + (0.5 - 0.143) / 0.4
    got = _cutoff(edges, np.array([0.9, 0.5, 0.1]))
    assert got == pytest.approx(1 / (1.5 + (0.5 - CC_HALF_CUTOFF) / 0.4))
    assert _cutoff(edges, np.array([0.9, 0.5, 0.3])) is None
    assert _cutoff(edges, np.array([0.1, 0.5, 0.3])) is None
    assert _cutoff(edges, np.array([0.9, np.nan, 0.1])) == pytest.approx(
        1 / (0.5 + 2 * (0.9 - CC_HALF_CUTOFF) / 0.8)
    )


def test_table_text() -> None:
    merged = table(HKL4, [100, 50, -10, 20], [10, 5, 2, 1], nobs=[5, 3, 1, 7])
    text = merge_statistics(merged, merged, merged, CUBE, "P 1", n_shells=2).table()
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["shell", "d_max", "d_min", "possible"]
    assert lines[2].split()[0] == "1" and lines[4].split()[0] == "overall"
    assert "1.0000" in lines[4]  # CC1/2 of identical halves


# --------------------------------------------------------------------------- Wilson plot


def _wilson_table(b_factor: float, normalisation: Normalisation) -> pd.DataFrame:
    from crystalscope.merge.stats import _scattering

    sg = gemmi.SpaceGroup("P 43 21 2")
    ref = possible_reflections(HEWL_CELL, sg, 1.8)
    hkl = ref[["h", "k", "l"]].to_numpy()
    s2 = 0.25 / ref["d"].to_numpy() ** 2
    eps = epsilon_factor(hkl, hkl_rotations(sg))
    intensity = 500.0 * eps * _scattering(s2, normalisation) * np.exp(-2 * b_factor * s2)
    return table([tuple(x) for x in hkl], intensity.tolist(), [1.0] * len(hkl))


@pytest.mark.parametrize("normalisation", ["crystfel", "none", "xray", "electron"])
def test_wilson_fit_recovers_b(normalisation: Normalisation) -> None:
    merged = _wilson_table(25.0, normalisation)
    fit = wilson_fit(merged, HEWL_CELL, space_group="P 43 21 2", normalisation=normalisation)
    # within a bin ln<I> exceeds ln I(centre) (convexity): a small bias only
    assert fit.b_factor == pytest.approx(25.0, abs=0.2), fit.b_factor
    assert fit.ln_scale == pytest.approx(math.log(500.0), abs=0.02), fit.ln_scale
    assert len(fit.one_over_d2) == 50 and fit.n_reflections.sum() == len(merged)
    # bins beyond 4 A only (check_hkl: those wholly beyond 3.2 A)
    assert np.all(fit.one_over_d2[fit.used] > 1 / 16)


def test_wilson_fit_leaves_out_bins_of_noise() -> None:
    """Beyond the data's resolution the mean intensity is noise around zero; those bins
    must not bend the fit (check_hkl's fit, ``min_snr=None``, is bent by them)."""
    merged = _wilson_table(25.0, "crystfel")
    beyond = 1.0 / np.sqrt(_one_over_d2(merged)) < 2.2
    rng = np.random.default_rng(7)
    merged.loc[beyond, "I"] = np.abs(rng.normal(0.0, 1.0, int(beyond.sum())))
    merged["sigma"] = np.where(beyond, 1.0, 0.01 * merged["I"])
    fit = wilson_fit(merged, HEWL_CELL, space_group="P 43 21 2")
    # the one bin that straddles 2.2 A holds signal and noise: a small bias remains
    assert fit.b_factor == pytest.approx(25.0, abs=3.5), fit.b_factor
    assert np.all(fit.one_over_d2[fit.used] < 1 / 2.15**2)
    bent = wilson_fit(merged, HEWL_CELL, space_group="P 43 21 2", min_snr=None)
    assert abs(bent.b_factor - 25.0) > 5.0, bent.b_factor


def _one_over_d2(merged: pd.DataFrame) -> np.ndarray:
    hkl = merged[["h", "k", "l"]].to_numpy(dtype=int)
    return np.array([HEWL_CELL.calculate_1_d2(list(map(int, h))) for h in hkl])


def test_wilson_bins_as_check_hkl() -> None:
    merged = _wilson_table(20.0, "none")
    fit = wilson_fit(merged, HEWL_CELL, d_range=(3.2, None), n_bins=10, normalisation="none")
    r = 1 / possible_reflections(HEWL_CELL, "P 1", 1.8)["d"]
    s2min, s2max = ((r.min() - 1e-4) / 2) ** 2, ((r.max() + 1e-4) / 2) ** 2
    step = (s2max - s2min) / 10
    assert fit.one_over_d2 == pytest.approx(4 * (s2min + (np.arange(10) + 0.5) * step))
    first = int((0.25 / 3.2**2 - s2min) / step) + 1
    assert fit.used.tolist() == [i >= first for i in range(10)]


def test_wilson_needs_three_bins() -> None:
    merged = _wilson_table(20.0, "none")
    fit = wilson_fit(merged, HEWL_CELL, d_range=(1.9, None), n_bins=10)
    assert math.isnan(fit.b_factor) and fit.used.sum() < 3
    with pytest.raises(ConfigError, match="normalisation"):
        wilson_fit(merged, HEWL_CELL, normalisation="bogus")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- accuracy


@pytest.mark.shared
def test_cc_half_and_cc_star_against_truth(shared_data: Path) -> None:
    """Half-sets from the real HEWL intensities with Gaussian errors of known size.

    Expected CC1/2 = var(I) / (var(I) + s^2) per shell; CC* estimates the correlation of
    the merged data with the truth (Karplus & Diederichs 2012).
    """
    from crystalscope.io.mtz import read_mtz

    data = read_mtz(shared_data / "reciprocalspaceship/HEWL_SSAD_24IDC.mtz")
    assert data.cell is not None and data.space_group is not None
    truth = data.table[["h", "k", "l", "I", "sigma"]].dropna().reset_index(drop=True)
    rng = np.random.default_rng(11)
    noise = 0.5 * truth["I"].std()
    h1, h2 = truth.copy(), truth.copy()
    h1["I"] = truth["I"] + rng.normal(0, noise, len(truth))
    h2["I"] = truth["I"] + rng.normal(0, noise, len(truth))
    merged = truth.copy()
    merged["I"] = 0.5 * (h1["I"] + h2["I"])
    stats = merge_statistics(
        merged, h1, h2, data.cell, data.space_group, n_shells=5, scale_halves=False
    )
    var = truth["I"].var()
    expected = var / (var + noise**2)
    got = stats.overall["cc_half"]
    assert got == pytest.approx(expected, abs=0.01), (got, expected)
    true_cc = cc_half(merged["I"], truth["I"])
    assert stats.overall["cc_star"] == pytest.approx(true_cc, abs=0.01), (
        stats.overall["cc_star"],
        true_cc,
    )
    assert stats.overall["completeness"] == pytest.approx(100 * 12542 / 13732, abs=0.01)
    print(stats.table())


# --------------------------------------------------------------------------- CrystFEL, literally


def _crystfel_shells(table: pd.DataFrame, cell: gemmi.UnitCell, sg: gemmi.SpaceGroup, n: int):
    """check_hkl's plot_shells, transcribed loop by loop (fom.c: get_bin, calculate_possible)."""
    r = [1 / cell.calculate_d([int(x) for x in row]) for row in table[["h", "k", "l"]].values]
    rmin, rmax = min(r), max(r)
    vol = (rmax**3 - rmin**3) / n
    rmins, rmaxs = [rmin], []
    for _ in range(1, n):
        edge = (vol + rmins[-1] ** 3) ** (1 / 3)
        rmaxs.append(edge)
        rmins.append(edge)
    rmaxs.append(rmax)

    def get_bin(x: float) -> int:
        for j in range(n):
            if rmins[j] < x <= rmaxs[j]:
                return j
        return 0  # "allow for slight rounding errors"

    cts, nmeas, snr_num, snr_den, mean_num = [0] * n, [0] * n, [0.0] * n, [0] * n, [0.0] * n
    for x, (_, row) in zip(r, table.iterrows(), strict=True):
        b = get_bin(x)
        cts[b] += 1
        nmeas[b] += int(row["nobs"])
        if row["sigma"] != 0:
            snr_num[b] += row["I"] / row["sigma"]
            snr_den[b] += 1
        mean_num[b] += row["I"]
    possible = [0] * n
    counted = set()
    asu, ops = gemmi.ReciprocalAsu(sg), sg.operations()
    hmax, kmax, lmax = (int(rmaxs[-1] * x) for x in (cell.a, cell.b, cell.c))
    for h in range(-hmax, hmax + 1):
        for k in range(-kmax, kmax + 1):
            for ell in range(-lmax, lmax + 1):
                if (h, k, ell) == (0, 0, 0):
                    continue
                x = 1 / cell.calculate_d([h, k, ell])
                if any((h * t[0] + k * t[1] + ell * t[2]) % 24 for t in ops.cen_ops):
                    continue
                b = next((j for j in range(n) if rmins[j] < x <= rmaxs[j]), -1)
                mate = tuple(asu.to_asu([h, k, ell], ops)[0])
                if b == -1 or mate in counted:
                    continue
                counted.add(mate)
                possible[b] += 1
    return cts, possible, nmeas, snr_num, snr_den, mean_num


def test_shells_agree_with_a_literal_transcription_of_check_hkl() -> None:
    cell = gemmi.UnitCell(61.0, 61.0, 33.0, 90, 90, 90)
    sg = gemmi.SpaceGroup("I 4 2 2")
    ref = possible_reflections(cell, sg, 3.0, 40.0)
    rng = np.random.default_rng(4)
    data = ref.sample(frac=0.85, random_state=5).reset_index(drop=True)
    data["I"] = rng.normal(500, 400, len(data)).round(2)
    data["sigma"] = rng.uniform(0, 60, len(data)).round(2)
    data.loc[::17, "sigma"] = 0.0
    data["nobs"] = rng.integers(1, 40, len(data))
    n = 7
    cts, possible, nmeas, snr_num, snr_den, mean_num = _crystfel_shells(data, cell, sg, n)
    got = merge_statistics(data, None, None, cell, sg, n_shells=n, crystfel_compatible=True)
    s = got.shells.iloc[:-1]
    assert s["n_measured"].tolist() == cts and s["n_possible"].tolist() == possible
    assert s["n_obs"].tolist() == nmeas
    assert s["snr"].to_numpy() == pytest.approx(np.array(snr_num) / snr_den, rel=1e-12)
    assert s["mean_i"].to_numpy() == pytest.approx(np.array(mean_num) / cts, rel=1e-12)
    assert got.overall["completeness"] == pytest.approx(100 * sum(cts) / sum(possible))
    plain = merge_statistics(data, None, None, cell, sg, n_shells=n)
    extra = plain.shells["n_possible"].to_numpy() - got.shells["n_possible"].to_numpy()
    assert extra[0] >= 1 and not extra[1:-1].any(), extra  # the reflection(s) at r_min


def test_average_residue_scattering_at_zero_angle() -> None:
    from crystalscope.merge.stats import _scattering

    zero = np.array([0.0])
    # check_hkl: E(0) = 5 * 5.9992 + 1.35 * 6.9946 + 1.5 * 7.9994 + 8 * 0.999872 (sum a + c)
    assert _scattering(zero, "crystfel")[0] == pytest.approx(59.4368, abs=1e-3)
    # textbook sum n f(0)^2 ~ 5*36 + 1.35*49 + 1.5*64 + 8 = 350.15
    assert _scattering(zero, "xray")[0] == pytest.approx(350.15, rel=2e-3)
    assert _scattering(zero, "none")[0] == 1.0
