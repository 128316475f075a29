"""Cell refinement against the powder and pair-distance histograms (index.cell_refine).

Accuracy is measured against simulator truth: 1000 simulated 200 kV electron stills of
the lysozyme-like crystal (tP, a = 79.1, c = 37.9 A) must give a and c within 0.2 %
from a start cell 1.5-2 % off (issue 5), the monoclinic small-molecule cell within
0.5 %.  The refinement machinery for every Bravais lattice is checked on synthetic
histograms drawn from known lines.
"""

from __future__ import annotations

import time

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import ConfigError, DataError
from crystalscope.index._refine_lattice import BRAVAIS_SYMBOLS, lattice_model
from crystalscope.index.cell_refine import CellRefinement, predicted_lines, refine_cell
from crystalscope.index.peaks import peak_vectors
from crystalscope.index.powder import RadialHistograms, radial_histograms
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.peaks import ideal_peaks
from crystalscope.simulate.serial import SerialSimulation

LYSOZYME = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)
MONOCLINIC = (7.92, 10.61, 13.84, 90.0, 104.5, 90.0)


def _simulated_vectors(n: int, seed: int, source: dict[str, object]) -> pd.DataFrame:
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": n, "seed": seed, "source": source,
            "beam_effects": {"centre_jitter_px": 0.5},
            "crystal": {"thickness_a": 1000, "mosaicity_deg": 0.1},
        }
    )  # fmt: skip
    sim = SerialSimulation.build(cfg)
    peaks = ideal_peaks(sim, min_counts=20, position_sigma_px=0.25, seed=seed)
    return peak_vectors(peaks, sim.detector, shots=sim.shots)


@pytest.fixture(scope="module")
def lysozyme() -> RadialHistograms:
    """1000 electron stills, ideal peak finder (0.25 px centroid error), 0.5 px jitter."""
    vectors = _simulated_vectors(1000, 1, {"structure": "builtin:lysozyme-like", "d_min": 2.5})
    return radial_histograms(vectors)


def _errors_percent(result: CellRefinement, truth: tuple[float, ...]) -> np.ndarray:
    return 100.0 * (np.array(result.cell.parameters) / np.array(truth) - 1.0)


@pytest.mark.parametrize("start", [(80.5, 80.5, 37.3, 90, 90, 90), (77.6, 77.6, 38.6, 90, 90, 90)])
def test_lysozyme_cell_from_1000_electron_stills(
    lysozyme: RadialHistograms, start: tuple[float, ...]
) -> None:
    t0 = time.perf_counter()
    result = refine_cell(lysozyme, start, "tP")
    elapsed = time.perf_counter() - t0
    err = _errors_percent(result, LYSOZYME)
    diff = np.array(result.cell.parameters) - LYSOZYME
    z = diff[[0, 2]] / np.array(result.sigmas)[[0, 2]]
    message = (
        f"a {err[0]:+.4f} %, c {err[2]:+.4f} % (sigma {result.sigmas[0]:.4f}, "
        f"{result.sigmas[2]:.4f} A, z {z[0]:+.1f}, {z[1]:+.1f}) in {elapsed:.1f} s\n"
        + result.summary()
    )
    assert abs(err[0]) < 0.2 and abs(err[2]) < 0.2, message
    assert abs(err[0]) < 0.05 and abs(err[2]) < 0.05, message  # what we actually achieve
    assert result.cell.b == result.cell.a and result.cell.gamma == 90.0
    assert 0 < result.sigmas[0] < 0.05 and 0 < result.sigmas[2] < 0.05, message
    assert np.all(np.abs(z) < 6), message
    assert result.converged and result.lattice == "tP" and result.parameters == ("a", "c")
    assert result.sigmas[3:] == (0.0, 0.0, 0.0)
    # 0.25 px centroid error: 5e-4 1/A per peak, sqrt(2) of it per pair
    assert result.peak_sigma[0] == pytest.approx(5.0e-4, rel=0.15), message
    assert result.peak_sigma[1] == pytest.approx(7.1e-4, rel=0.15), message
    assert result.n_lines > 100 and result.rms_one_over_d < 1e-4, message


def test_space_group_absences_and_summary(lysozyme: RadialHistograms) -> None:
    """With the space group (powder lines of h00 h odd, 00l l != 4n absent) the result
    agrees with the Bravais-lattice fit; the summary table is printable."""
    result = refine_cell(lysozyme, (80.5, 80.5, 37.3, 90, 90, 90), "P 43 21 2")
    err = _errors_percent(result, LYSOZYME)
    assert abs(err[0]) < 0.05 and abs(err[2]) < 0.05, result.summary()
    assert result.space_group == "P 43 21 2" and result.lattice == "tP"
    text = result.summary()
    assert "80.5000" in text and "fixed" in text and "tP" in text
    table = result.table()
    assert list(table["parameter"]) == ["a", "b", "c", "alpha", "beta", "gamma"]
    assert list(table["free"]) == [True, True, True, False, False, False]
    assert table["change_percent"].iloc[0] == pytest.approx(100 * (result.cell.a / 80.5 - 1))


def test_pairs_alone_and_powder_alone(lysozyme: RadialHistograms) -> None:
    pairs = refine_cell(lysozyme, (80.5, 80.5, 37.3, 90, 90, 90), "tP", use=["pairs"])
    powder = refine_cell(lysozyme, (80.5, 80.5, 37.3, 90, 90, 90), "tP", use=["powder"])
    for result in (pairs, powder):
        err = _errors_percent(result, LYSOZYME)
        assert abs(err[0]) < 0.2 and abs(err[2]) < 0.2, result.summary()
    assert np.isnan(pairs.peak_sigma[0]) and np.isnan(powder.peak_sigma[1])
    assert powder.sigmas[0] > pairs.sigmas[0]  # the pairs carry most of the information


def test_monoclinic_small_molecule_cell() -> None:
    vectors = _simulated_vectors(500, 3, {"structure": "builtin:monoclinic-organic", "d_min": 0.9})
    hist = radial_histograms(vectors)
    result = refine_cell(hist, (7.8, 10.8, 13.6, 90.0, 103.0, 90.0), "mP")
    err = _errors_percent(result, MONOCLINIC)
    message = f"errors {np.round(err, 4)} %\n" + result.summary()
    assert np.all(np.abs(err) < 0.5), message
    assert np.all(np.abs(err) < 0.05), message
    assert result.parameters == ("a", "b", "c", "beta")
    assert result.cell.alpha == 90.0 and result.cell.gamma == 90.0


# ----------------------------------------------------------------- synthetic histograms


def _synthetic(
    cell: tuple[float, ...], lattice: str, top: float, sigma: float = 8e-4, seed: int = 0
) -> RadialHistograms:
    """Histograms drawn from the predicted lines: random intensities, Gaussian noise."""
    rng = np.random.default_rng(seed)
    edges = np.arange(0.0, top + 1e-9, 4e-4)
    out = {}
    for kind in ("powder", "pairs"):
        lines = predicted_lines(cell, lattice, max_one_over_d=top, kind=kind)
        n = rng.poisson(rng.exponential(300.0, len(lines)) * lines["multiplicity"])
        s = np.repeat(lines["one_over_d"].to_numpy(), n) + rng.normal(0, sigma, n.sum())
        s = np.concatenate([s, rng.uniform(0, top, n.sum() // 20)])  # some background
        out[kind] = np.histogram(s, edges)[0]
    n_peaks = int(out["powder"].sum())
    return RadialHistograms(
        edges, out["powder"], out["pairs"], 100, n_peaks, int(out["pairs"].sum())
    )


CASES = [
    ("aP", (6.1, 7.3, 8.2, 78.0, 84.0, 95.0), 0.45),
    ("mC", (12.1, 7.4, 9.8, 90.0, 110.0, 90.0), 0.4),
    ("oF", (11.3, 13.1, 15.2, 90.0, 90.0, 90.0), 0.4),
    ("hP", (12.3, 12.3, 7.9, 90.0, 90.0, 120.0), 0.4),
    ("hR", (6.2, 6.2, 6.2, 75.0, 75.0, 75.0), 0.7),
    ("F d -3 m", (5.431, 5.431, 5.431, 90.0, 90.0, 90.0), 1.2),
]


@pytest.mark.parametrize(("lattice", "cell", "top"), CASES)
def test_every_lattice_on_synthetic_histograms(
    lattice: str, cell: tuple[float, ...], top: float
) -> None:
    hist = _synthetic(cell, lattice, top)
    model = lattice_model(lattice, cell)
    start = np.array(model.params(cell))
    for j, name in enumerate(model.names):
        start[j] += 1.0 if name in ("alpha", "beta", "gamma") else 0.02 * start[j] * (-1) ** j
    t0 = time.perf_counter()
    result = refine_cell(hist, model.expand(start), lattice, n_lines=60)
    elapsed = time.perf_counter() - t0
    err = np.array(result.cell.parameters) - np.array(cell)
    rel = np.abs(err[:3]) / np.array(cell[:3])
    message = (
        f"{lattice}: length errors {rel * 100} %, angle errors {err[3:]} deg, {elapsed:.1f} s\n"
        + result.summary()
    )
    assert np.all(rel < 5e-4) and np.all(np.abs(err[3:]) < 0.05), message
    free = np.array(result.sigmas) > 0
    assert np.all(np.abs(err[free]) < 6 * np.array(result.sigmas)[free] + 1e-6), message


# ------------------------------------------------------------------------ lines and errors


def test_predicted_lines_agree_with_gemmi() -> None:
    cell = gemmi.UnitCell(7.92, 10.61, 13.84, 90, 104.5, 90)
    lines = predicted_lines(cell, "P 1 21/c 1", max_one_over_d=0.5, kind="powder")
    hkl = lines[["h", "k", "l"]].to_numpy()
    d = np.array([cell.calculate_d(list(map(int, h))) for h in hkl])
    np.testing.assert_allclose(lines["d"], d, rtol=1e-10)
    assert np.all(np.diff(lines["one_over_d"]) >= 0)
    sg = gemmi.SpaceGroup("P 1 21/c 1")
    assert not any(sg.operations().is_systematically_absent(list(map(int, h))) for h in hkl)
    # pairs: every lattice vector, screw-axis and glide absences included
    pairs = predicted_lines(cell, "P 1 21/c 1", max_one_over_d=0.5, kind="pairs")
    assert pairs["multiplicity"].sum() > lines["multiplicity"].sum()
    assert np.any(np.isclose(pairs["one_over_d"], 1.0 / 10.61))  # (0 1 0): 0k0 k odd
    assert not np.any(np.isclose(lines["one_over_d"], 1.0 / 10.61))


def test_centring_absences() -> None:
    silicon = predicted_lines((5.431,) * 3 + (90.0,) * 3, "cF", max_one_over_d=0.8)
    ratios = (silicon["one_over_d"] * 5.431) ** 2  # h^2 + k^2 + l^2
    np.testing.assert_allclose(ratios[:5], [3, 4, 8, 11, 12], atol=1e-9)
    diamond = predicted_lines((5.431,) * 3 + (90.0,) * 3, "F d -3 m", max_one_over_d=0.8)
    # 200 is a space-group absence (h00: h = 4n); 222 is not (absent for Si only by its site)
    np.testing.assert_allclose((diamond["one_over_d"] * 5.431) ** 2, [3, 8, 11, 12, 16], atol=1e-9)
    assert silicon["multiplicity"].iloc[0] == 8  # {111}
    hexagonal_r = predicted_lines((4.76, 4.76, 12.99, 90, 90, 120), "hR", max_one_over_d=0.5)
    h, k, l = (hexagonal_r[c].to_numpy() for c in "hkl")  # noqa: E741
    assert np.all((-h + k + l) % 3 == 0)
    body = predicted_lines((7.7,) * 3 + (90.0,) * 3, "cI", max_one_over_d=0.5, kind="pairs")
    assert np.all((body["h"] + body["k"] + body["l"]) % 2 == 0)


def test_errors(lysozyme: RadialHistograms) -> None:
    start = (80.5, 80.5, 37.3, 90, 90, 90)
    with pytest.raises(ConfigError, match="unknown lattice") as info:
        refine_cell(lysozyme, start, "tQ")
    assert info.value.field == "lattice"
    with pytest.raises(ConfigError, match="not a tP cell") as info:
        refine_cell(lysozyme, (80.5, 70.0, 37.3, 90, 90, 90), "tP")
    assert info.value.field == "start"
    with pytest.raises(ConfigError, match="not a hP cell"):
        refine_cell(lysozyme, start, "hP")
    with pytest.raises(ConfigError, match="more than one angle"):
        refine_cell(lysozyme, (7.9, 10.6, 13.8, 95, 104.5, 90), "mP")
    with pytest.raises(ConfigError, match="6 parameters"):
        refine_cell(lysozyme, (80.5, 37.3), "tP")
    with pytest.raises(ConfigError, match="positive"):
        refine_cell(lysozyme, (-80.5, -80.5, 37.3, 90, 90, 90), "tP")
    with pytest.raises(ConfigError, match="max_one_over_d"):
        refine_cell(lysozyme, start, "tP", max_one_over_d=5.0)
    with pytest.raises(ConfigError, match="'powder' and/or 'pairs'"):
        refine_cell(lysozyme, start, "tP", use=["rings"])
    with pytest.raises(ConfigError, match="n_lines"):
        refine_cell(lysozyme, start, "tP", n_lines=3)
    with pytest.raises(ConfigError, match="kind"):
        predicted_lines(start, "tP", max_one_over_d=0.1, kind="rings")
    empty = RadialHistograms(lysozyme.edges, lysozyme.powder * 0, lysozyme.pairs * 0, 0, 0, 0)
    with pytest.raises(DataError, match="too few peaks"):
        refine_cell(empty, start, "tP")
    with pytest.raises(DataError, match="too few to refine"):
        refine_cell(lysozyme, start, "tP", max_one_over_d=0.012)


def test_bravais_symbols_cover_all_lattices() -> None:
    assert len(BRAVAIS_SYMBOLS) == 14
    for symbol, cell in [
        ("aP", (5, 6, 7, 80, 85, 95)), ("mP", (5, 6, 7, 90, 100, 90)),
        ("mC", (5, 6, 7, 90, 100, 90)), ("oP", (5, 6, 7, 90, 90, 90)),
        ("oC", (5, 6, 7, 90, 90, 90)), ("oI", (5, 6, 7, 90, 90, 90)),
        ("oF", (5, 6, 7, 90, 90, 90)), ("tP", (5, 5, 7, 90, 90, 90)),
        ("tI", (5, 5, 7, 90, 90, 90)), ("hP", (5, 5, 7, 90, 90, 120)),
        ("hR", (5, 5, 7, 90, 90, 120)), ("cP", (5, 5, 5, 90, 90, 90)),
        ("cI", (5, 5, 5, 90, 90, 90)), ("cF", (5, 5, 5, 90, 90, 90)),
    ]:  # fmt: skip
        model = lattice_model(symbol, cell)
        assert model.bravais == symbol
        assert model.expand(model.params(cell)) == pytest.approx(cell)


@pytest.mark.slow
def test_end_to_end_rendered_frames_and_peakfinder8() -> None:
    """100 rendered lysozyme stills, peakfinder8 at the true pattern centres."""
    from crystalscope.image.geometry import plane_coordinates, radius_map
    from crystalscope.image.peakfinder8 import PeakFinder8Params, peakfinder8

    cfg = SerialConfig.model_validate(
        {
            "n_crystals": 100, "seed": 5,
            "source": {"structure": "builtin:lysozyme-like", "d_min": 2.5},
            "beam_effects": {"centre_jitter_px": 0.5},
            "crystal": {"thickness_a": 1000, "mosaicity_deg": 0.1},
        }
    )  # fmt: skip
    sim = SerialSimulation.build(cfg)
    x, y = plane_coordinates(sim.detector)
    mask = sim.detector.bad_pixel_mask()
    params = PeakFinder8Params(min_snr=5.0, threshold_adu=5.0, min_res_px=15.0)
    tables = []
    for i, centre in enumerate(sim.truth_centres()):
        found = peakfinder8(sim.frame(i), radius_map(x, y, tuple(centre)), mask, params)
        tables.append(found.to_frame().assign(frame=i))
    peaks = pd.concat(tables, ignore_index=True)
    hist = radial_histograms(peak_vectors(peaks, sim.detector, shots=sim.shots))
    result = refine_cell(hist, (80.5, 80.5, 37.3, 90, 90, 90), "tP")
    err = _errors_percent(result, LYSOZYME)
    message = f"{len(peaks)} peaks; a {err[0]:+.4f} %, c {err[2]:+.4f} %\n" + result.summary()
    assert len(peaks) > 10_000, message
    assert abs(err[0]) < 0.2 and abs(err[2]) < 0.2, message
