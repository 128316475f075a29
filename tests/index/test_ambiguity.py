"""Indexing-ambiguity resolution (index.ambiguity) against simulator truth.

Per-crystal unmerged intensities come from the still simulator: every excited
reflection of a frame (expected counts with partiality) is Poisson-sampled with a
little background, and the hkl of a random subset of crystals are reindexed by an
ambiguity operator -- what an indexer that cannot tell the settings apart produces.
"""

from __future__ import annotations

import time
from pathlib import Path

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import ConfigError, DataError
from crystalscope.index.ambiguity import (
    UB_COLUMNS,
    AmbiguityResult,
    ambiguity_operators,
    resolve_ambiguity,
)
from crystalscope.model.crystal import Crystal
from crystalscope.model.orientation import random_rotations
from crystalscope.simulate._sf_atoms import RandomAtomModel, random_atom_structure
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation

IDENTITY = np.eye(3, dtype=np.int64)
TWIN = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1]])  # k,h,-l
BACKGROUND = 10.0  # counts under each spot, subtracted again (noise stays)


def _matrix(triplet: str) -> np.ndarray:
    """h' = M h for an hkl triplet (rows of M)."""
    return np.rint(np.array(gemmi.Op(triplet).rot).T / 24).astype(np.int64)


def _simulate(
    config: dict, settings: np.ndarray, seed: int
) -> tuple[SerialSimulation, pd.DataFrame]:
    """Unmerged intensities with a random setting (row of ``settings``) per crystal.

    Returns the simulation and the table: frame, crystal, h, k, l (as "indexed"),
    intensity, h0, k0, l0 (truth) and applied (index into ``settings``).
    """
    sim = SerialSimulation.build(SerialConfig.model_validate(config))
    rng = np.random.default_rng(seed)
    cols = ["frame", "crystal", "h", "k", "l", "counts"]
    parts = [sim.reflections(i) for i in range(len(sim.shots))]
    table = pd.concat([p[cols] for p in parts if len(p)], ignore_index=True)
    table["intensity"] = rng.poisson(table["counts"].to_numpy() + BACKGROUND) - BACKGROUND
    xtals = table[["frame", "crystal"]].drop_duplicates().reset_index(drop=True)
    xtals["applied"] = rng.integers(0, len(settings), len(xtals))
    table = table.merge(xtals, on=["frame", "crystal"])
    truth = table[["h", "k", "l"]].to_numpy()
    shown = np.einsum("nij,nj->ni", settings[table["applied"].to_numpy()], truth)
    table[["h0", "k0", "l0"]] = truth
    table[["h", "k", "l"]] = shown
    return sim, table.drop(columns="counts")


def _consistency(
    result: AmbiguityResult,
    table: pd.DataFrame,
    space_group: str,
    cell: gemmi.UnitCell,
    settings: np.ndarray,
) -> np.ndarray:
    """Per crystal (rows of result.crystals): are its reindexed reflections in the classes
    of the truth under the one global setting most crystals share?  (>= 99 % of them;
    crystals whose reflections are invariant under the ambiguity count in any setting.)"""
    xtal = Crystal(cell, space_group)
    final = xtal.to_asu(result.reindex_intensities(table)[["h", "k", "l"]].to_numpy())[0]
    truth = table[["h0", "k0", "l0"]].to_numpy()
    votes = np.column_stack(
        [np.all(xtal.to_asu(truth @ m.T)[0] == final, axis=1) for m in settings]
    )
    keys = [table["frame"].to_numpy(), table["crystal"].to_numpy()]
    per_crystal = pd.DataFrame(votes).groupby(keys).mean()
    per_crystal = per_crystal.reindex(
        pd.MultiIndex.from_frame(result.crystals[["frame", "crystal"]])
    )
    global_setting = int(np.argmax(per_crystal.to_numpy().sum(axis=0)))
    return per_crystal.to_numpy()[:, global_setting] >= 0.99


@pytest.fixture(scope="module")
def p63_electron() -> tuple[SerialSimulation, pd.DataFrame]:
    """600 partial 200 kV stills of the P 63 protein, half of them indexed k,h,-l."""
    config = {
        "n_crystals": 600,
        "seed": 5,
        "source": {"structure": "builtin:p63-protein", "d_min": 2.5},
    }
    return _simulate(config, np.array([IDENTITY, TWIN]), seed=5)


@pytest.fixture(scope="module")
def p63_resolved(p63_electron: tuple[SerialSimulation, pd.DataFrame]) -> AmbiguityResult:
    sim, table = p63_electron
    return resolve_ambiguity(table, sim.base.space_group, sim.base.cell, seed=1)


# ------------------------------------------------------------------------ operators


@pytest.mark.parametrize(
    ("space_group", "cell", "expected"),
    [
        ("P 63", (58.3, 58.3, 71.6, 90, 90, 120), ["h,k,l", "k,h,-l"]),
        ("P 43 21 2", (79.1, 79.1, 37.9, 90, 90, 90), ["h,k,l"]),
        ("P 3", (58.3, 58.3, 71.6, 90, 90, 120), ["h,k,l", "k,h,-l", "-h,-k,l", "-k,-h,-l"]),
        ("P 4", (50, 50, 60, 90, 90, 90), ["h,k,l", "k,h,-l"]),
        ("P 1 21/c 1", (7.92, 10.61, 13.84, 90, 104.5, 90), ["h,k,l"]),
        ("R 3:H", (50, 50, 60, 90, 90, 120), ["h,k,l", "k,h,-l"]),
        ("P 2 3", (50, 50, 50, 90, 90, 90), ["h,k,l", "h,l,-k"]),
    ],
)
def test_ambiguity_operators(space_group: str, cell: tuple, expected: list[str]) -> None:
    ops = ambiguity_operators(gemmi.UnitCell(*cell), space_group)
    assert [op.triplet() for op in ops] == expected
    assert all(op.is_hkl() for op in ops)


def test_ambiguity_operators_cover_the_lattice_symmetry() -> None:
    """Every lattice rotation of the hexagonal holohedry is some operator times a P 3
    rotation: the four settings of P 3 are all an indexer can produce."""
    cell = gemmi.UnitCell(58.3, 58.3, 71.6, 90, 90, 120)
    reps = [_matrix(op.triplet()) for op in ambiguity_operators(cell, "P 3")]
    group = [
        np.rint(np.array(op.rot).T / 24).astype(int)
        for op in gemmi.SpaceGroup("P 3").operations().sym_ops
    ]
    lattice = gemmi.find_lattice_symmetry(cell, "P", 1.0)
    for op in lattice.sym_ops:
        m = np.rint(np.array(op.rot).T / 24).astype(int)
        m = m if np.linalg.det(m) > 0 else -m
        hits = [any(np.array_equal(g @ k, m) for g in group) for k in reps]
        assert sum(hits) == 1, op.triplet()


def test_ambiguity_operators_reject_bad_input() -> None:
    with pytest.raises(ConfigError) as err:
        ambiguity_operators(gemmi.UnitCell(50, 60, 70, 90, 90, 90), "P 63")
    assert err.value.field == "cell"
    with pytest.raises(ConfigError) as err:
        ambiguity_operators((58.3, 58.3, 71.6, 90, 90, 120), "P 99 x")
    assert err.value.field == "space_group"


# ---------------------------------------------------------------------- resolution


def test_p63_electron_stills_end_up_consistent(
    p63_electron: tuple[SerialSimulation, pd.DataFrame], p63_resolved: AmbiguityResult
) -> None:
    """>= 95 % of 600 realistic partial 200 kV stills in one setting (issue 5)."""
    sim, table = p63_electron
    res = p63_resolved
    assert res.ops == ["h,k,l", "k,h,-l"]
    assert len(res.crystals) == 600
    applied = res.crystals.merge(table[["frame", "crystal", "applied"]].drop_duplicates())
    flipped = (res.operator == 1) ^ (applied["applied"].to_numpy() == 1)
    by_operator = max(flipped.mean(), 1 - flipped.mean())
    by_class = _consistency(res, table, "P 63", sim.base.cell, np.array([IDENTITY, TWIN]))
    wrong_confident = int((~by_class & res.confident).sum())
    message = (
        f"operator-consistent {100 * by_operator:.2f}%, class-consistent "
        f"{100 * by_class.mean():.2f}%, confident {res.confident.sum()}, wrong among "
        f"confident {wrong_confident}\n{res.summary()}"
    )
    assert by_operator >= 0.95 and by_class.mean() >= 0.95, message
    assert res.confident.mean() >= 0.9 and wrong_confident <= 0.01 * res.confident.sum(), message
    assert res.converged and res.fraction_changed[-1] == 0.0, message
    assert res.split_agreement >= 0.95, message
    # the f - g figure: the chosen setting correlates better, clearly for most crystals
    cc = res.correlation
    chosen = cc[np.arange(len(cc)), res.operator]
    assert np.all(chosen >= cc.min(axis=1)) and np.median(res.delta_cc) > 0.1, message
    assert np.all(res.crystals["p_wrong"][res.confident] <= 0.01)


def test_resolution_is_reproducible_and_seed_independent(
    p63_electron: tuple[SerialSimulation, pd.DataFrame], p63_resolved: AmbiguityResult
) -> None:
    sim, table = p63_electron
    again = resolve_ambiguity(table, "P 63", sim.base.cell, seed=1)
    assert np.array_equal(again.operator, p63_resolved.operator)
    other = resolve_ambiguity(table, "P 63", sim.base.cell, seed=7, n_partners=100)
    agree = np.mean(other.operator == p63_resolved.operator)
    assert max(agree, 1 - agree) > 0.97, f"seeds agree on {100 * agree:.1f}%"


def test_xray_stills_end_up_consistent() -> None:
    """12 keV stills of 2500 A crystals: ~130 reflections each, sparser overlaps."""
    config = {
        "n_crystals": 500, "seed": 9,
        "source": {"structure": "builtin:p63-protein", "d_min": 2.5},
        "beam": {"energy_kev": 12.0}, "detector": {"preset": "single", "distance_mm": 60.0},
        "crystal": {"thickness_a": 2500.0},
        "beam_effects": {"zero_order": False, "dose_e_per_a2": 1.0e4},
    }  # fmt: skip
    sim, table = _simulate(config, np.array([IDENTITY, TWIN]), seed=9)
    res = resolve_ambiguity(table, "P 63", sim.base.cell)
    ok = _consistency(res, table, "P 63", sim.base.cell, np.array([IDENTITY, TWIN]))
    per_crystal = table.groupby(["frame", "crystal"]).size().mean()
    message = (
        f"{per_crystal:.0f} reflections per crystal; consistent {100 * ok.mean():.2f}%; "
        f"wrong among confident {int((~ok & res.confident).sum())}\n{res.summary()}"
    )
    assert ok.mean() >= 0.95, message
    assert (~ok & res.confident).sum() <= 0.01 * max(res.confident.sum(), 1), message


@pytest.fixture(scope="module")
def p3_structure(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-atom P 3 protein (no built-in has a four-fold ambiguity)."""
    recipe = RandomAtomModel(
        "p3-protein", (58.3, 58.3, 71.6, 90.0, 90.0, 120.0), "P 3",
        {"C": 600, "N": 165, "O": 180, "S": 5}, 25.0, 20_260_003,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("p3") / "p3.pdb"
    random_atom_structure(recipe).write_pdb(str(path))
    return path


def test_p3_four_settings_end_up_consistent(p3_structure: Path) -> None:
    """P 3 in a hexagonal lattice: four settings, each crystal in a random one."""
    cell = gemmi.UnitCell(58.3, 58.3, 71.6, 90, 90, 120)
    ops = [op.triplet() for op in ambiguity_operators(cell, "P 3")]
    settings = np.array([_matrix(op) for op in ops])
    config = {
        "n_crystals": 400,
        "seed": 3,
        "source": {"structure": str(p3_structure), "d_min": 2.5},
    }
    sim, table = _simulate(config, settings, seed=3)
    res = resolve_ambiguity(table, "P 3", sim.base.cell)
    ok = _consistency(res, table, "P 3", sim.base.cell, settings)
    message = f"consistent {100 * ok.mean():.2f}%\n{res.summary()}"
    assert res.ops == ops and ok.mean() >= 0.95, message
    assert (~ok & res.confident).sum() <= 0.01 * max(res.confident.sum(), 1), message


def test_space_group_without_ambiguity_keeps_every_crystal() -> None:
    config = {
        "n_crystals": 12,
        "seed": 2,
        "source": {"structure": "builtin:lysozyme-like", "d_min": 3.0},
    }
    sim, table = _simulate(config, np.array([IDENTITY]), seed=2)
    res = resolve_ambiguity(table, sim.base.space_group, sim.base.cell)
    assert res.ops == ["h,k,l"]
    assert np.all(res.operator == 0) and len(res.crystals) == 12
    assert "no indexing ambiguity" in res.summary()
    same = res.reindex_intensities(table)
    assert same[["h", "k", "l"]].equals(table[["h", "k", "l"]])


# ------------------------------------------------------------------- small data sets


def _subsample(table: pd.DataFrame, n_crystals: int, per_crystal: int) -> pd.DataFrame:
    few = table[table["frame"] < n_crystals]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(few))
    shuffled = few.iloc[order]
    return shuffled[shuffled.groupby(["frame", "crystal"]).cumcount() < per_crystal]


def test_too_sparse_data_give_a_clear_error(
    p63_electron: tuple[SerialSimulation, pd.DataFrame],
) -> None:
    sim, table = p63_electron
    with pytest.raises(DataError, match="no two crystals share 4 or more reflections"):
        resolve_ambiguity(_subsample(table, 30, 20), "P 63", sim.base.cell)


@pytest.mark.parametrize(("n_crystals", "per_crystal"), [(20, 150), (60, 40)])
def test_small_data_sets_are_flagged_low_confidence(
    p63_electron: tuple[SerialSimulation, pd.DataFrame], n_crystals: int, per_crystal: int
) -> None:
    sim, table = p63_electron
    res = resolve_ambiguity(_subsample(table, n_crystals, per_crystal), "P 63", sim.base.cell)
    assert len(res.crystals) == n_crystals
    assert not res.confident.any(), res.summary()
    assert "LOW CONFIDENCE" in res.summary()


# ----------------------------------------------------------------------- reindexing


def _crystals_table(ub: np.ndarray, frames: np.ndarray, crystals: np.ndarray) -> pd.DataFrame:
    out = pd.DataFrame({"frame": frames, "crystal": crystals})
    flat = ub.transpose(0, 2, 1).reshape(-1, 9)  # columns a*, b*, c* one after another
    for c, name in enumerate(UB_COLUMNS):
        out[name] = flat[:, c]
    for name, value in zip(
        ("a", "b", "c", "alpha", "beta", "gamma"), (58.3, 58.3, 71.6, 90, 90, 120), strict=True
    ):
        out[name] = float(value)
    return out


def test_reindexed_ub_predicts_the_same_scattering_vectors(
    p63_electron: tuple[SerialSimulation, pd.DataFrame], p63_resolved: AmbiguityResult
) -> None:
    """UB' = UB K^-1 with h' = K h: q = UB' h' equals the true UB h_true for every
    observation, whichever setting the crystal was indexed in and reindexed to."""
    sim, table = p63_electron
    xt = sim.crystals.merge(table[["frame", "crystal", "applied"]].drop_duplicates())
    u = xt[[f"u{i}{j}" for i in range(3) for j in range(3)]].to_numpy(float).reshape(-1, 3, 3)
    ub_true = u @ sim.base.B
    settings = np.array([IDENTITY, TWIN])
    ub_indexed = ub_true @ np.linalg.inv(settings[xt["applied"].to_numpy()])
    indexed = _crystals_table(ub_indexed, xt["frame"].to_numpy(), xt["crystal"].to_numpy())
    reindexed = p63_resolved.reindex_crystals(indexed)
    hkl = p63_resolved.reindex_intensities(table)
    rows = pd.MultiIndex.from_frame(reindexed[["frame", "crystal"]]).get_indexer(
        pd.MultiIndex.from_frame(table[["frame", "crystal"]])
    )
    ub_new = reindexed[list(UB_COLUMNS)].to_numpy().reshape(-1, 3, 3).transpose(0, 2, 1)
    q_new = np.einsum("nij,nj->ni", ub_new[rows], hkl[["h", "k", "l"]].to_numpy(float))
    q_true = np.einsum("nij,nj->ni", ub_true[rows], table[["h0", "k0", "l0"]].to_numpy(float))
    assert np.max(np.abs(q_new - q_true)) < 1e-12
    assert np.all(np.linalg.det(ub_new) > 0)
    cells = reindexed[["a", "b", "c", "alpha", "beta", "gamma"]].to_numpy()
    assert np.allclose(cells, [58.3, 58.3, 71.6, 90, 90, 120], atol=1e-9)
    assert not reindexed[list(UB_COLUMNS)].equals(indexed[list(UB_COLUMNS)])


def test_reindex_crystals_with_every_hexagonal_operator() -> None:
    """P 1 in a hexagonal lattice: twelve settings, six-fold ones included (K != K^-1,
    K^T != K^-1), applied to random orientations."""
    cell = gemmi.UnitCell(58.3, 58.3, 71.6, 90, 90, 120)
    ops = [op.triplet() for op in ambiguity_operators(cell, "P 1")]
    assert len(ops) == 12
    n = len(ops)
    result = AmbiguityResult(
        ops, pd.DataFrame({"frame": np.arange(n), "crystal": 0, "operator": np.arange(n)})
    )
    ub = random_rotations(n, 4) @ np.array(cell.frac.mat).T
    table = _crystals_table(ub, np.arange(n), np.zeros(n, int))
    new = result.reindex_crystals(table)
    ub_new = new[list(UB_COLUMNS)].to_numpy().reshape(-1, 3, 3).transpose(0, 2, 1)
    hkl = np.random.default_rng(1).integers(-20, 21, (n, 3))
    moved = np.einsum("nij,nj->ni", result.matrices, hkl)
    q = np.einsum("nij,nj->ni", ub, hkl.astype(float))
    q_new = np.einsum("nij,nj->ni", ub_new, moved.astype(float))
    assert np.allclose(q_new, q, atol=1e-14, rtol=0)
    assert np.allclose(new[["a", "b", "c"]].to_numpy(), [58.3, 58.3, 71.6], atol=1e-9)
    assert np.allclose(new[["alpha", "beta", "gamma"]].to_numpy(), [90, 90, 120], atol=1e-9)


# --------------------------------------------------------------------------- errors


def _table(**columns: object) -> pd.DataFrame:
    base = {"frame": [0, 0, 1], "crystal": [0, 0, 0], "h": [1, 2, 1], "k": [0, 1, 0],
            "l": [3, 1, 3], "intensity": [10.0, 5.0, 8.0]}  # fmt: skip
    base.update(columns)
    return pd.DataFrame(base)


@pytest.mark.parametrize(
    ("table", "field"),
    [
        (_table().iloc[:0], "intensity"),
        (_table().drop(columns="l"), "l"),
        (_table().drop(columns="frame"), "frame"),
        (_table(h=[1.5, 2, 1]), "h"),
        (_table(intensity=["a", "b", "c"]), "intensity"),
        (_table(), "intensity"),  # two crystals, three reflections: nothing shared
    ],
)
def test_bad_intensity_tables(table: pd.DataFrame, field: str) -> None:
    with pytest.raises(DataError) as err:
        resolve_ambiguity(table, "P 63", (58.3, 58.3, 71.6, 90, 90, 120))
    assert err.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"n_partners": 0}, "n_partners"),
        ({"min_common": 2}, "min_common"),
        ({"n_iterations": 0}, "n_iterations"),
        ({"d_min": -1.0}, "d_min"),
        ({"d_max": float("nan")}, "d_max"),
        ({"max_error": 1.5}, "max_error"),
        ({"n_threads": 0}, "n_threads"),
        ({"seed": -1}, "seed"),
        ({"operators": ["h,-k,l"]}, "operators"),  # not a rotation of this lattice
        ({"operators": ["l,h,k"]}, "operators"),  # a = c is not true here
        ({"operators": ["x,y"]}, "operators"),
        ({"max_obliquity_deg": 45.0}, "max_obliquity_deg"),
    ],
)
def test_bad_parameters(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_ambiguity(_table(), "P 63", (58.3, 58.3, 71.6, 90, 90, 120), **kwargs)
    assert err.value.field == field


def test_explicit_operator_and_result_validation(
    p63_electron: tuple[SerialSimulation, pd.DataFrame], p63_resolved: AmbiguityResult
) -> None:
    sim, table = p63_electron
    # any member of the coset names the same setting; the simplest one is reported
    res = resolve_ambiguity(table, "P 63", sim.base.cell, operators=["-k,-h,-l"], seed=1)
    assert res.ops == ["h,k,l", "k,h,-l"]
    assert np.array_equal(res.operator, p63_resolved.operator)
    with pytest.raises(DataError) as err:
        p63_resolved.reindex_crystals(pd.DataFrame({"frame": [0], "crystal": [0]}))
    assert err.value.field == "astar_x"
    with pytest.raises(ConfigError):
        AmbiguityResult(["k,h,-l"], pd.DataFrame({"frame": [0], "crystal": [0], "operator": [0]}))
    with pytest.raises(DataError):
        AmbiguityResult(["h,k,l"], pd.DataFrame({"frame": [0], "crystal": [0], "operator": [1]}))


# ---------------------------------------------------------------------------- speed


@pytest.mark.slow
def test_ten_thousand_crystals_in_well_under_a_minute(
    p63_electron: tuple[SerialSimulation, pd.DataFrame],
) -> None:
    """10,000 crystals x 200 observations drawn from the P 63 intensities, each scaled
    by a random partiality and Poisson-sampled, half of them twinned."""
    sim, _ = p63_electron
    ref = sim.sf.table
    rng = np.random.default_rng(11)
    n, per = 10_000, 200
    pick = rng.integers(0, len(ref), (n, per)).ravel()
    expected = ref["F2"].to_numpy()[pick] / ref["F2"].mean() * 200.0 * rng.random(n * per)
    hkl = ref[["h", "k", "l"]].to_numpy()[pick]
    flipped = np.repeat(rng.random(n) < 0.5, per)
    hkl[flipped] = hkl[flipped] @ TWIN.T
    intensity = rng.poisson(expected + BACKGROUND) - BACKGROUND
    table = pd.DataFrame({"frame": np.repeat(np.arange(n), per), "crystal": 0,
                          "h": hkl[:, 0], "k": hkl[:, 1], "l": hkl[:, 2],
                          "intensity": intensity})  # fmt: skip
    start = time.perf_counter()
    res = resolve_ambiguity(table, "P 63", sim.base.cell)
    seconds = time.perf_counter() - start
    flips = (res.operator == 1) ^ flipped[::per]
    consistent = max(flips.mean(), 1 - flips.mean())
    message = f"{seconds:.1f} s, consistent {100 * consistent:.2f}%\n{res.summary()}"
    assert seconds < 40.0 and consistent >= 0.95, message
