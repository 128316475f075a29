"""Cell finding without a prior (index.cell_find) against simulator truth."""

from __future__ import annotations

import time

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import ConfigError, DataError
from crystalscope.index._cellfind_bravais import BRAVAIS, bravais_matches
from crystalscope.index._cellfind_kernels import distinct_vectors, pair_counts
from crystalscope.index._cellfind_refine import (
    TRICLINIC_BASIS,
    cell_of_metric,
    de_wolff,
    fit_metric,
    lattice_vectors,
    metric_of_cell,
)
from crystalscope.index._cellfind_zones import folded_mean
from crystalscope.index.cell_find import CellSearch, find_cell
from crystalscope.index.peaks import peak_vectors
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.peaks import ideal_peaks
from crystalscope.simulate.serial import SerialSimulation

LYSOZYME = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)
MONOCLINIC = (7.92, 10.61, 13.84, 90.0, 104.5, 90.0)


def _simulate(structure: str, d_min: float, seed: int, **detector: float) -> SerialSimulation:
    cfg = {
        "n_crystals": 1000, "seed": seed, "source": {"structure": structure, "d_min": d_min},
        "beam_effects": {"centre_jitter_px": 0.5}, "crystal": {"thickness_a": 1000.0},
        "detector": detector,
    }  # fmt: skip
    return SerialSimulation.build(SerialConfig.model_validate(cfg))


def _vectors(sim: SerialSimulation, false_per_frame: float = 0.0, seed: int = 0) -> pd.DataFrame:
    peaks = ideal_peaks(
        sim, min_counts=20, position_sigma_px=0.25, false_per_frame=false_per_frame, seed=seed
    )
    return peak_vectors(peaks, sim.detector, shots=sim.shots)


@pytest.fixture(scope="module")
def lysozyme() -> SerialSimulation:
    """1000 stills at 200 kV of the tetragonal lysozyme-like crystal, ~290 peaks each."""
    return _simulate("builtin:lysozyme-like", 2.5, seed=5)


@pytest.fixture(scope="module")
def monoclinic() -> SerialSimulation:
    """1000 stills of the P 1 21/c 1 small-molecule crystal to 0.8 A, ~11 peaks each."""
    return _simulate("builtin:monoclinic-organic", 0.8, seed=6, distance_mm=700.0)


@pytest.fixture(scope="module")
def monoclinic_vectors(monoclinic: SerialSimulation) -> pd.DataFrame:
    return _vectors(monoclinic)


@pytest.fixture(scope="module")
def monoclinic_search(monoclinic_vectors: pd.DataFrame) -> tuple[CellSearch, float]:
    t0 = time.perf_counter()
    result = find_cell(monoclinic_vectors)
    return result, time.perf_counter() - t0


def _reduced(parameters: tuple[float, ...]) -> gemmi.UnitCell:
    gv = gemmi.GruberVector(gemmi.UnitCell(*parameters), "P")
    gv.niggli_reduce()
    return gv.get_cell()


def _check(result: CellSearch, truth: tuple[float, ...], bravais: str) -> str:
    """Assert the first-ranked lattice and the reduced cell; return a report line."""
    cell = np.array(result.best.cell.parameters)
    want = np.array(truth)
    length_err = np.abs(cell[:3] - want[:3]) / want[:3]
    angle_err = np.abs(cell[3:] - want[3:])
    red, red_truth = result.reduced, _reduced(truth)
    red_err = np.abs(np.array(red.parameters[:3]) - np.array(red_truth.parameters[:3]))
    red_rel = red_err / np.array(red_truth.parameters[:3])
    volume_err = abs(red.volume - red_truth.volume) / red_truth.volume
    report = (
        f"first {result.best.bravais} (want {bravais}), cell {np.round(cell, 3)}, "
        f"length errors {np.round(100 * length_err, 3)} %, angle errors "
        f"{np.round(angle_err, 2)} deg, reduced {np.round(red.parameters, 3)} vs "
        f"{np.round(red_truth.parameters, 3)}, volume error {100 * volume_err:.3f} %\n"
        + result.summary()
    )
    assert result.best.bravais == bravais, report
    assert length_err.max() < 0.01 and angle_err.max() < 0.5, report
    assert red_rel.max() < 0.01 and volume_err < 0.01, report
    return report


@pytest.mark.slow
def test_lysozyme_cell_found_without_prior(lysozyme: SerialSimulation) -> None:
    """tP ranked first and the cell within 1 % from 1000 electron stills (issue 5)."""
    vectors = _vectors(lysozyme)
    t0 = time.perf_counter()
    result = find_cell(vectors)
    elapsed = time.perf_counter() - t0
    report = _check(result, LYSOZYME, "tP")
    assert result.n_frames_used == 1000
    assert elapsed < 60, f"{elapsed:.1f} s\n{report}"
    assert result.best.deviation_deg < 1.0, report
    print(f"lysozyme: {elapsed:.1f} s\n{report}")


def test_monoclinic_cell_found_without_prior(monoclinic_search: tuple[CellSearch, float]) -> None:
    """mP ranked first and the cell within 1 % from 1000 sparse small-molecule stills."""
    result, elapsed = monoclinic_search
    report = _check(result, MONOCLINIC, "mP")
    assert elapsed < 30, f"{elapsed:.1f} s\n{report}"
    # the orthorhombic C cell of similar metric is listed but not accepted
    assert all(not c.accepted for c in result.candidates if c.bravais in ("oC", "mC")), report
    print(f"monoclinic: {elapsed:.1f} s\n{report}")


def test_summary_and_table(monoclinic_search: tuple[CellSearch, float]) -> None:
    result, _ = monoclinic_search
    table = result.table()
    assert list(table.columns[:3]) == ["rank", "bravais", "a"]
    assert table["rank"].tolist() == list(range(1, len(result.candidates) + 1))
    assert table.iloc[0]["bravais"] == "mP" and bool(table.iloc[0]["accepted"])
    assert table["score"].max() == pytest.approx(1.0)
    assert {"deviation_deg", "M20", "indexed", "rms", "misfit", "zones"} <= set(table.columns)
    assert 0 < table["zones"].max() <= 1
    assert "aP" in set(table["bravais"])  # every cell is also triclinic
    text = result.summary()
    assert "reduced cell (mP)" in text and "1000 patterns" in text
    assert len(result.lines) >= 8 and np.all(np.diff(result.lines) > 0)
    assert result.shortest_line == pytest.approx(1 / 13.84 / np.sin(np.radians(104.5)), rel=0.01)


def test_false_peaks_monoclinic(monoclinic: SerialSimulation) -> None:
    """About 10 % false peaks (1.2 per pattern of ~11) do not change the answer."""
    vectors = _vectors(monoclinic, false_per_frame=1.2, seed=3)
    false = (vectors["crystal"] < 0).mean()
    assert 0.07 < false < 0.13
    result = find_cell(vectors)
    _check(result, MONOCLINIC, "mP")


@pytest.mark.slow
def test_false_peaks_lysozyme(lysozyme: SerialSimulation) -> None:
    """About 10 % false peaks (29 per pattern of ~290) do not change the answer."""
    vectors = _vectors(lysozyme, false_per_frame=29.0, seed=4)
    assert 0.07 < (vectors["crystal"] < 0).mean() < 0.13
    _check(find_cell(vectors), LYSOZYME, "tP")


@pytest.mark.slow
def test_hexagonal_protein() -> None:
    """P 63 (58.3, 71.6 A): hP ranked first, ahead of its orthohexagonal oC description."""
    result = find_cell(_vectors(_simulate("builtin:p63-protein", 2.5, seed=262)))
    _check(result, (58.3, 58.3, 71.6, 90.0, 90.0, 120.0), "hP")


def test_bad_rows_are_ignored(monoclinic_vectors: pd.DataFrame) -> None:
    """Non-finite q rows are dropped, patterns with too few peaks are skipped; 600
    patterns are enough."""
    vectors = monoclinic_vectors[monoclinic_vectors["frame"] < 600]
    used = int((vectors.groupby("frame").size() >= 3).sum())
    junk = pd.DataFrame({"frame": [10_000, 10_000, 10_001], "qx": [np.nan, 0.1, np.inf],
                         "qy": [0.0, 0.2, 0.0], "qz": [0.0, 0.0, 0.0]})  # fmt: skip
    result = find_cell(pd.concat([vectors, junk], ignore_index=True))
    assert result.n_frames_used == used  # the junk frames have < 3 finite peaks
    _check(result, MONOCLINIC, "mP")


def test_split_peaks_and_crowded_frames(monoclinic_vectors: pd.DataFrame) -> None:
    """Every peak reported twice 0.2 px apart, and 5 frames of 3000 random peaks each
    (ice, hot pixels): the duplicates are not lattice vectors, the crowded frames are
    cut to ``max_peaks``; the cell is still found, quickly."""
    rng = np.random.default_rng(7)
    twins = monoclinic_vectors.copy()
    twins[["qx", "qy"]] += rng.normal(0, 4e-4, (len(twins), 2))
    crowded = pd.DataFrame(
        {"frame": np.repeat(np.arange(5000, 5005), 3000), "qx": rng.uniform(-1, 1, 15000),
         "qy": rng.uniform(-1, 1, 15000), "qz": 0.0, "intensity": rng.exponential(50, 15000)}
    )  # fmt: skip
    table = pd.concat([monoclinic_vectors, twins, crowded], ignore_index=True)
    t0 = time.perf_counter()
    result = find_cell(table, max_peaks=500)
    elapsed = time.perf_counter() - t0
    report = _check(result, MONOCLINIC, "mP")
    assert result.n_frames_used == 1005 and elapsed < 30, f"{elapsed:.1f} s\n{report}"


def test_too_few_frames_is_a_data_error(monoclinic_vectors: pd.DataFrame) -> None:
    vectors = monoclinic_vectors
    few = vectors[vectors["frame"] < 10]
    with pytest.raises(DataError, match="at least 20") as info:
        find_cell(few)
    assert info.value.field == "frame"
    # enough frames but hardly any structure: 40 patterns are too few to assemble a cell
    with pytest.raises(DataError) as info:
        find_cell(vectors[vectors["frame"] < 40])
    assert info.value.field in ("frame", "qx")


def test_too_few_peaks_is_a_data_error() -> None:
    rng = np.random.default_rng(0)
    two = pd.DataFrame(
        {"frame": np.repeat(np.arange(100), 2), "qx": rng.normal(size=200),
         "qy": rng.normal(size=200), "qz": 0.0}
    )  # fmt: skip
    with pytest.raises(DataError, match="peaks") as info:
        find_cell(two)
    assert info.value.field == "frame"
    noise = pd.DataFrame(
        {"frame": np.repeat(np.arange(200), 12), "qx": rng.uniform(-1, 1, 2400),
         "qy": rng.uniform(-1, 1, 2400), "qz": 0.0}
    )  # fmt: skip
    with pytest.raises(DataError):
        find_cell(noise)


def test_input_checks() -> None:
    with pytest.raises(DataError) as info:
        find_cell(pd.DataFrame({"frame": [0], "qx": [0.0], "qy": [0.0]}))
    assert info.value.field == "qz"
    table = pd.DataFrame({"frame": [0], "qx": [0.0], "qy": [0.0], "qz": [0.0]})
    with pytest.raises(ConfigError) as cinfo:
        find_cell(table, max_cell_a=-5)
    assert cinfo.value.field == "max_cell_a"
    with pytest.raises(ConfigError):
        find_cell(table, min_frames=0)
    with pytest.raises(ConfigError) as cinfo:
        find_cell(table, max_peaks=1.5)  # type: ignore[arg-type]
    assert cinfo.value.field == "max_peaks"
    with pytest.raises(DataError):
        find_cell(table.iloc[:0])


# --------------------------------------------------------------------------- parts


_BRAVAIS_CASES = {
    "aP": (7, 8, 9, 80, 85, 95, "P 1"),
    "mP": (*MONOCLINIC, "P 1 21/c 1"),
    "mC": (12, 8, 10, 90, 110, 90, "C 1 2/m 1"),
    "oP": (5, 7, 9, 90, 90, 90, "P 2 2 2"),
    "oC": (5, 9, 7, 90, 90, 90, "C 2 2 2"),
    "oI": (5, 7, 9, 90, 90, 90, "I 2 2 2"),
    "oF": (5, 7, 9, 90, 90, 90, "F 2 2 2"),
    "tP": (*LYSOZYME, "P 43 21 2"),
    "tI": (6, 6, 15, 90, 90, 90, "I 4"),
    "hP": (58.3, 58.3, 71.6, 90, 90, 120, "P 63"),
    "hR": (10, 10, 40, 90, 90, 120, "R 3:H"),
    "cP": (5, 5, 5, 90, 90, 90, "P 2 3"),
    "cI": (5, 5, 5, 90, 90, 90, "I 2 3"),
    "cF": (5, 5, 5, 90, 90, 90, "F 2 3"),
}


@pytest.mark.parametrize("bravais", list(_BRAVAIS_CASES))
def test_bravais_lattice_of_a_noisy_reduced_cell(bravais: str) -> None:
    """Le Page analysis of the primitive reduced cell of each of the 14 lattices, with
    0.1 % / 0.1 deg noise: the expected lattice is the most symmetric match within 1 deg
    and its conventional cell is the original one."""
    *params, hm = _BRAVAIS_CASES[bravais]
    sg = gemmi.SpaceGroup(hm)
    centring = "R" if sg.centring_type() == "R" else sg.centring_type()
    gv = gemmi.GruberVector(gemmi.UnitCell(*params), centring)
    gv.niggli_reduce()
    rng = np.random.default_rng(len(bravais) + ord(bravais[0]) + ord(bravais[1]))
    p = np.array(gv.get_cell().parameters)
    p[:3] *= 1 + rng.normal(0, 1e-3, 3)
    p[3:] += rng.normal(0, 0.1, 3)
    matches = bravais_matches(metric_of_cell(gemmi.UnitCell(*p)), max_deviation_deg=3.0)
    within = [m for m in matches if m.deviation_deg <= 1.0]
    best = max(within, key=lambda m: (BRAVAIS[m.bravais][2], -m.deviation_deg))
    assert best.bravais == bravais, [(m.bravais, round(m.deviation_deg, 2)) for m in matches]
    conventional = cell_of_metric(best.metric)
    assert conventional is not None
    assert conventional.volume == pytest.approx(gemmi.UnitCell(*params).volume, rel=0.01)
    assert sorted(conventional.parameters[:3]) == pytest.approx(sorted(params[:3]), rel=0.01)
    # gemmi's lattice symmetry agrees on the size of the holohedry
    ops = gemmi.find_lattice_symmetry(gemmi.UnitCell(*p), "P", 1.0)
    assert 2 * len(ops.sym_ops) == BRAVAIS[bravais][2]  # rotations; the holohedry adds -1


def test_distinct_vectors_merge_repeats() -> None:
    """A square 2-D lattice pattern: repeats of each lattice vector merge into one."""
    a = 0.02
    grid = np.array([(i * a, j * a, 0.0) for i in range(-5, 6) for j in range(-5, 6)])
    rng = np.random.default_rng(1)
    q = grid + rng.normal(0, 1e-4, grid.shape)
    q = q[np.argsort(q[:, 0])]
    start, stop = np.array([0]), np.array([len(q)])
    hi = 1.5 * a
    offset = np.concatenate([[0], np.cumsum(pair_counts(q, start, stop, hi))])
    vec, count, _ = distinct_vectors(q, start, stop, hi, 0.3 * a, offset)
    used = count > 0
    lengths = np.sort(np.linalg.norm(vec[used], axis=1))
    assert lengths == pytest.approx([a, a, a * np.sqrt(2), a * np.sqrt(2)], rel=0.02)
    assert sorted(count[used]) == [100, 100, 110, 110]  # 10 x 10 diagonals, 11 x 10 edges


def test_folded_mean_removes_the_folding_bias() -> None:
    rng = np.random.default_rng(2)
    for mu in (0.0, 0.5, 3.0):
        y = np.abs(rng.normal(mu, 1.0, 20_000))
        assert folded_mean(y) == pytest.approx(mu, abs=0.08)
    assert np.mean(np.abs(rng.normal(0, 1, 20_000))) > 0.75  # what plain averaging gives


def test_metric_refinement_and_de_wolff() -> None:
    """Exact lengths of a triclinic lattice: refinement from a 1 % distorted start
    recovers it, and de Wolff's M20 is large for the true cell, small for a wrong one."""
    truth = gemmi.UnitCell(7.0, 8.0, 9.0, 80.0, 85.0, 95.0)
    gstar = np.linalg.inv(metric_of_cell(truth))
    _, lengths = lattice_vectors(gstar, 0.45)
    start = np.linalg.inv(metric_of_cell(gemmi.UnitCell(7.05, 7.95, 9.06, 80.4, 84.7, 95.3)))
    sigma = 2e-4
    fitted, used, rms, kappa = fit_metric(
        start, TRICLINIC_BASIS, lengths, sigma, ((0.3, 2.0), (0.45, 1.0))
    )
    cell = cell_of_metric(np.linalg.inv(fitted))
    assert cell is not None and used == len(lengths)
    assert cell.parameters == pytest.approx(truth.parameters, rel=1e-4)
    # soft assignment averages lines closer than ~sigma: a small residual remains
    assert rms < 0.25 * sigma and abs(kappa) < 1e-5
    m20, n = de_wolff(gstar, lengths[:20])
    wrong = np.linalg.inv(metric_of_cell(gemmi.UnitCell(7.3, 8.0, 9.0, 80.0, 85.0, 95.0)))
    assert n == 20 and m20 > 1e3 and de_wolff(wrong, lengths[:20])[0] < 20
