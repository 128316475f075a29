"""Merging (crystalscope.merge.merging): estimator, ASU, half-sets, errors, and accuracy
against the simulator's truth (2000 lysozyme stills from the real HEWL intensities)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import gemmi
import numpy as np
import pandas as pd
import pytest
from obsgen import (
    HEWL,
    SimulatedObservations,
    hewl_simulation,
    simulate_observations,
    true_intensities,
)

from crystalscope.errors import DataError
from crystalscope.integrate.observations import FLAG_OVERLAP, FLAG_SATURATED, make_observations
from crystalscope.merge.merging import MERGED_COLUMNS, MergeParams, MergeResult, merge_observations

WAVELENGTH = 0.02508
K = 1.0 / WAVELENGTH
R = 1e-3
CELL = gemmi.UnitCell(79.1, 79.1, 37.9, 90, 90, 90)
SG = "P 43 21 2"
PLAIN = MergeParams(
    partiality="unity", scale=False, b_factor=False, n_cycles=0, reject_delta_cc=None,
    min_observations=1,
)  # fmt: skip


def _table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Observation table; each row gives h, k, l, I, crystal_id and optionally sigma,
    s (excitation error, 1/A), R and flags.  ``q`` is built to give that ``s``."""
    columns: dict[str, list[Any]] = {}
    for row in rows:
        s = row.get("s", 0.0)
        qx = 0.2
        qz = math.sqrt((K - s) ** 2 - qx**2) - K
        values: dict[str, Any] = {
            "h": row["h"], "k": row["k"], "l": row["l"], "I": row["I"],
            "sigma": row.get("sigma", 1.0), "frame": row["crystal_id"], "crystal": 0,
            "crystal_id": row["crystal_id"], "panel": 0, "fs": 0.0, "ss": 0.0, "d": 5.0,
            "qx": qx, "qy": 0.0, "qz": qz, "excitation_error": s,
            "profile_radius": row.get("R", R), "partiality": 1.0, "background": 0.0,
            "bg_sigma": 0.0, "n_peak": 29, "n_bg": 80, "peak": 0.0,
            "flags": row.get("flags", 0),
        }  # fmt: skip
        for name, value in values.items():
            columns.setdefault(name, []).append(value)
    return make_observations(columns)


def _merge(rows: list[dict[str, Any]], params: MergeParams = PLAIN) -> MergeResult:
    return merge_observations(_table(rows), CELL, SG, params, wavelength=WAVELENGTH)


def _row(table: pd.DataFrame, hkl: tuple[int, int, int]) -> pd.Series:
    sel = (table["h"] == hkl[0]) & (table["k"] == hkl[1]) & (table["l"] == hkl[2])
    assert sel.sum() == 1, f"{hkl} not found once in\n{table}"
    return table[sel].iloc[0]


# ----------------------------------------------------------- hand-computed values


def test_plain_average_has_the_standard_error_of_the_mean() -> None:
    rows: list[dict[str, Any]] = [
        {"h": 2, "k": 1, "l": 3, "I": v, "crystal_id": c} for c, v in enumerate([10, 14, 18])
    ]
    rows.append({"h": 3, "k": 2, "l": 4, "I": 7.0, "sigma": 5.0, "crystal_id": 0})
    result = _merge(rows)
    assert list(result.merged.columns) == list(MERGED_COLUMNS)
    row = _row(result.merged, (2, 1, 3))
    # mean 14, sample standard deviation 4, standard error 4 / sqrt(3)
    assert (row["I"], row["nobs"]) == (14.0, 3)
    assert row["sigma"] == pytest.approx(4.0 / math.sqrt(3.0), rel=1e-12)
    single = _row(result.merged, (3, 2, 4))
    assert (single["I"], single["sigma"], single["nobs"]) == (7.0, 5.0, 1)
    assert row["d"] == pytest.approx(CELL.calculate_d([2, 1, 3]), rel=1e-12)


def test_partiality_estimator_weights_by_squared_partiality() -> None:
    rows = [
        {"h": 2, "k": 1, "l": 3, "I": 100.0, "s": 0.0, "crystal_id": 0},  # p = 1
        {"h": 2, "k": 1, "l": 3, "I": 60.0, "s": 0.5 * R, "crystal_id": 1},  # p = 0.75
        {"h": 2, "k": 1, "l": 3, "I": 500.0, "s": -0.96 * R, "crystal_id": 2},  # p < 0.1
    ]
    params = MergeParams(n_cycles=0, reject_delta_cc=None, min_observations=1)
    result = _merge(rows, params)
    row = _row(result.merged, (2, 1, 3))
    # I = (1 * 100 + 0.75 * 60) / (1 + 0.75^2) = 92.8; x = (100, 80), w = (1, 0.5625):
    # s_w^2 = 2 * ((1e4 + 0.5625 * 6400) / 1.5625 - 92.8^2) = 184.32,
    # n_eff = 1.5625^2 / (1 + 0.5625^2) = 1.854599..., sigma = sqrt(184.32 / n_eff)
    assert row["I"] == pytest.approx(92.8, rel=1e-9)
    assert row["sigma"] == pytest.approx(math.sqrt(184.32 * 1.31640625 / 1.5625**2), rel=1e-9)
    assert row["nobs"] == 2
    obs = result.observations.sort_values("crystal_id")
    np.testing.assert_allclose(obs["partiality_model"], [1.0, 0.75], rtol=1e-9)
    np.testing.assert_allclose(obs["I_full"], [100.0, 80.0], rtol=1e-9)
    np.testing.assert_allclose(obs["sigma_full"], [1.0, 1.0 / 0.75], rtol=1e-9)


def test_symmetry_equivalents_merge_into_the_gemmi_asu_with_isym() -> None:
    equivalents = [(1, 2, 3), (-1, -2, 3), (2, 1, -3), (-1, -2, -3), (-2, 1, 3)]
    rows = [{"h": hkl[0], "k": hkl[1], "l": hkl[2], "I": 5.0, "crystal_id": i}
            for i, hkl in enumerate(equivalents)]  # fmt: skip
    rows.append({"h": 0, "k": 3, "l": 1, "I": 1.0, "crystal_id": 0})
    result = _merge(rows)
    sg = gemmi.SpaceGroup(SG)
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    expected = sorted({tuple(asu.to_asu(list(hkl), ops)[0]) for hkl in [*equivalents, (0, 3, 1)]})
    assert [tuple(x) for x in result.merged[["h", "k", "l"]].to_numpy()] == [
        tuple(x) for x in expected
    ]
    h, k, l = asu.to_asu([1, 2, 3], ops)[0]  # noqa: E741
    target = (h, k, l)
    assert _row(result.merged, target)["nobs"] == len(equivalents)
    for _, obs in result.observations.iterrows():
        hkl_asu, isym = asu.to_asu([int(obs["h"]), int(obs["k"]), int(obs["l"])], ops)
        assert (obs["h_asu"], obs["k_asu"], obs["l_asu"]) == tuple(hkl_asu)
        assert obs["isym"] == isym


def test_absences_flags_and_resolution_limits_exclude_observations() -> None:
    rows = [
        {"h": 2, "k": 1, "l": 3, "I": 10.0, "crystal_id": 0},
        {"h": 2, "k": 1, "l": 3, "I": 99.0, "crystal_id": 1, "flags": FLAG_SATURATED},
        {"h": 2, "k": 1, "l": 3, "I": 20.0, "crystal_id": 2, "flags": FLAG_OVERLAP},
        {"h": 0, "k": 0, "l": 1, "I": 5.0, "crystal_id": 0},  # 00l absent unless l = 4n
        {"h": 0, "k": 0, "l": 4, "I": 5.0, "crystal_id": 0},
        {"h": 30, "k": 0, "l": 10, "I": 5.0, "crystal_id": 0},  # d = 2.25 A
    ]
    result = _merge(rows, dataclasses.replace(PLAIN, d_min=2.5))
    assert _row(result.merged, (2, 1, 3))["I"] == 15.0
    assert {tuple(x) for x in result.merged[["h", "k", "l"]].to_numpy()} == {(2, 1, 3), (0, 0, 4)}
    assert "1 flagged" in result.log[0] and "1 absent" in result.log[0], result.log[0]


def test_half_sets_alternate_crystals_by_rank_of_crystal_id() -> None:
    ids = [10, 3, 7, 20]
    rows = [{"h": 2, "k": 1, "l": 3, "I": float(c), "crystal_id": c} for c in ids]
    result = _merge(rows)
    assert _row(result.half1, (2, 1, 3))["I"] == pytest.approx((3 + 10) / 2)
    assert _row(result.half2, (2, 1, 3))["I"] == pytest.approx((7 + 20) / 2)
    assert _row(result.half1, (2, 1, 3))["nobs"] == 2


def test_crystals_with_too_few_observations_are_rejected_with_a_reason() -> None:
    rows = [{"h": 2, "k": 1, "l": n, "I": 10.0, "crystal_id": 0} for n in range(1, 5)]
    rows += [{"h": 2, "k": 1, "l": n, "I": 1000.0, "crystal_id": 1} for n in range(1, 3)]
    params = dataclasses.replace(PLAIN, min_observations=3)
    result = _merge(rows, params)
    crystals = result.crystals.set_index("crystal_id")
    assert not crystals.loc[0, "rejected"] and crystals.loc[0, "reason"] == ""
    assert crystals.loc[1, "rejected"]
    assert crystals.loc[1, "reason"] == "too few observations (2 < 3)"
    assert (result.merged["I"] == 10.0).all()
    assert set(result.observations["crystal_id"]) == {0}


def test_user_errors_name_the_field() -> None:
    rows = [{"h": 2, "k": 1, "l": 3, "I": 10.0, "crystal_id": 0}]
    table = _table(rows)
    with pytest.raises(DataError) as info:
        merge_observations(table.drop(columns="qz"), CELL, SG, PLAIN, wavelength=WAVELENGTH)
    assert info.value.field == "qz"
    with pytest.raises(DataError) as info:
        merge_observations(table, CELL, SG, PLAIN, wavelength=-1.0)
    assert info.value.field == "wavelength"
    far = _table([{"h": 2, "k": 1, "l": 3, "I": 10.0, "crystal_id": 0, "s": 5e-4}])
    with pytest.raises(DataError) as info:  # excitation errors made for another wavelength
        merge_observations(far, CELL, SG, PLAIN, wavelength=0.0197)
    assert info.value.field == "wavelength"
    with pytest.raises(DataError) as info:
        merge_observations(table, CELL, "P 99 9", PLAIN, wavelength=WAVELENGTH)
    assert info.value.field == "space_group"
    with pytest.raises(DataError) as info:
        merge_observations(table, (79.1, 79.1, 37.9), SG, PLAIN, wavelength=WAVELENGTH)  # type: ignore[arg-type]
    assert info.value.field == "cell"
    with pytest.raises(DataError) as info:  # every crystal has too few observations
        merge_observations(table, CELL, SG, MergeParams(), wavelength=WAVELENGTH)
    assert info.value.field == "crystal_id"
    text = table.assign(h=table["h"].astype(str))
    with pytest.raises(DataError) as info:
        merge_observations(text, CELL, SG, PLAIN, wavelength=WAVELENGTH)
    assert info.value.field == "h"


def test_empty_table_is_a_data_error() -> None:
    empty = _table([{"h": 2, "k": 1, "l": 3, "I": 10.0, "crystal_id": 0}]).iloc[:0]
    with pytest.raises(DataError):
        merge_observations(empty, CELL, SG, PLAIN, wavelength=WAVELENGTH)


# ---------------------------------------------------------- simulator truth (HEWL)

N_CRYSTALS = 2000
BAD = (17,)


@pytest.fixture(scope="module")
def simulated(shared_data: Any) -> tuple[SimulatedObservations, pd.DataFrame]:
    if not HEWL.is_file():
        pytest.skip(f"{HEWL} is absent")
    sim = hewl_simulation(N_CRYSTALS, seed=1, d_min=2.5)
    data = simulate_observations(sim, bad_crystals=BAD, seed=0)
    return data, true_intensities(sim)


@pytest.fixture(scope="module")
def merged(simulated: tuple[SimulatedObservations, pd.DataFrame]) -> dict[str, MergeResult]:
    data, _ = simulated
    out = {}
    for model in ("xsphere", "unity"):
        params = MergeParams(partiality=model)
        out[model] = merge_observations(
            data.observations, data.cell, data.space_group, params, wavelength=data.wavelength
        )
    return out


def _cc_truth(result: MergeResult, truth: pd.DataFrame, d_min: float = 2.5) -> tuple[float, int]:
    both = result.merged.merge(truth, on=["h", "k", "l"])
    both = both[both["d_x"] >= d_min]
    return float(np.corrcoef(both["I"], both["F2"])[0, 1]), len(both)


@pytest.mark.shared
def test_merged_intensities_correlate_with_the_truth(
    simulated: tuple[SimulatedObservations, pd.DataFrame], merged: dict[str, MergeResult]
) -> None:
    data, truth = simulated
    cc, n = _cc_truth(merged["xsphere"], truth)
    n_obs = len(data.observations)
    assert cc >= 0.98, f"CC(merged, true F2) = {cc:.5f} on {n} reflections ({n_obs} obs)"
    n_possible = len(truth[truth["d"] >= 2.5])
    assert n >= 0.99 * n_possible, f"{n} of {n_possible} reflections merged"


@pytest.mark.shared
def test_partiality_model_beats_plain_averaging(
    simulated: tuple[SimulatedObservations, pd.DataFrame], merged: dict[str, MergeResult]
) -> None:
    _, truth = simulated
    cc_x, _ = _cc_truth(merged["xsphere"], truth)
    cc_u, _ = _cc_truth(merged["unity"], truth)
    assert cc_x > cc_u, f"CC vs truth: xsphere {cc_x:.5f}, unity {cc_u:.5f}"
    # the difference is in the weak, high-resolution data: R-factor against the truth
    r = {}
    for name, res in merged.items():
        both = res.merged.merge(truth, on=["h", "k", "l"])
        k = np.sum(both["I"] * both["F2"]) / np.sum(both["F2"] ** 2)
        r[name] = np.sum(np.abs(both["I"] - k * both["F2"])) / np.sum(k * both["F2"])
    assert r["xsphere"] < 0.5 * r["unity"], f"R(I, truth): {r}"


@pytest.mark.shared
def test_scale_b_factor_and_tilts_are_recovered(
    simulated: tuple[SimulatedObservations, pd.DataFrame], merged: dict[str, MergeResult]
) -> None:
    data, _ = simulated
    got = merged["xsphere"].crystals.merge(data.crystals, on="crystal_id", suffixes=("", "_true"))
    kept = got[~got["rejected"]]
    cc_g = np.corrcoef(np.log(kept["scale"]), np.log(kept["scale_true"]))[0, 1]
    cc_b = np.corrcoef(kept["b_factor"], kept["b_factor_true"])[0, 1]
    # the model undoes the indexing error: refined tilt = -(error tilt)
    tilt_err = np.hypot(
        kept["tilt_x_deg"] + kept["err_x_deg"], kept["tilt_y_deg"] + kept["err_y_deg"]
    )
    rms_in = float(np.sqrt(np.mean(kept["err_x_deg"] ** 2 + kept["err_y_deg"] ** 2)))
    rms_out = float(np.sqrt(np.median(tilt_err**2)))
    msg = (f"CC(ln G) {cc_g:.4f}, CC(B) {cc_b:.4f}, tilt error RMS {rms_in:.3f} deg -> "
           f"median {rms_out:.4f} deg")  # fmt: skip
    assert cc_g > 0.95 and cc_b > 0.8 and rms_out < 0.01, msg
    radius = kept["profile_radius"].median()
    assert radius == pytest.approx(data.true_radius, rel=0.2), (radius, data.true_radius)


@pytest.mark.shared
def test_random_crystal_is_rejected_and_few_good_ones(
    simulated: tuple[SimulatedObservations, pd.DataFrame], merged: dict[str, MergeResult]
) -> None:
    crystals = merged["xsphere"].crystals.set_index("crystal_id")
    for bad in BAD:
        assert crystals.loc[bad, "rejected"], crystals.loc[bad].to_dict()
        reason = crystals.loc[bad, "reason"]
        assert "no correlation" in reason or "delta-CC1/2" in reason, reason
    good = crystals.drop(index=list(BAD))
    fraction = good["rejected"].mean()
    assert fraction < 0.03, f"{fraction:.2%} of the good crystals rejected"
    assert crystals.loc[BAD[0], "cc_ref"] < 0.2 < good["cc_ref"].min()


@pytest.mark.shared
def test_half_sets_and_sigmas_are_consistent(merged: dict[str, MergeResult]) -> None:
    result = merged["xsphere"]
    both = result.half1.merge(result.half2, on=["h", "k", "l"])
    cc_half = np.corrcoef(both["I_x"], both["I_y"])[0, 1]
    full = result.merged.set_index(["h", "k", "l"])["nobs"]
    halves = pd.concat([result.half1, result.half2]).groupby(["h", "k", "l"])["nobs"].sum()
    assert (halves.reindex(full.index) == full).all()
    z = (both["I_x"] - both["I_y"]) / np.hypot(both["sigma_x"], both["sigma_y"])
    spread = float(np.std(z))
    assert cc_half > 0.99 and 0.7 < spread < 1.4, f"CC1/2 {cc_half:.4f}, std(dI/sigma) {spread:.3f}"
    kept = ~result.crystals["rejected"]
    assert result.observations["crystal_id"].isin(result.crystals.loc[kept, "crystal_id"]).all()
    assert (result.observations["partiality_model"] >= result.params.min_partiality).all()
