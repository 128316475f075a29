"""Virtual powder pattern and pair-distance histogram (index.powder)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from crystalscope.errors import ConfigError, DataError
from crystalscope.index.cell_refine import predicted_lines, refine_cell
from crystalscope.index.peaks import peak_vectors
from crystalscope.index.powder import RadialHistograms, plot_radial_histograms, radial_histograms
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.peaks import ideal_peaks
from crystalscope.simulate.serial import SerialSimulation


def _random_vectors(
    n_frames: int, n_peaks: int, seed: int = 0, radius: float = 0.4
) -> pd.DataFrame:
    """Peaks uniformly on a disc of ``radius`` (1/A) on a flat Ewald sphere."""
    rng = np.random.default_rng(seed)
    n = n_frames * n_peaks
    r = radius * np.sqrt(rng.uniform(size=n))
    phi = rng.uniform(0, 2 * np.pi, n)
    return pd.DataFrame(
        {
            "frame": np.repeat(np.arange(n_frames), n_peaks),
            "qx": r * np.cos(phi), "qy": r * np.sin(phi), "qz": -0.0125 * r * r,
        }
    )  # fmt: skip


def _brute_force(vectors: pd.DataFrame, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    q_all = vectors[["qx", "qy", "qz"]].to_numpy()
    ok = np.all(np.isfinite(q_all), axis=1)
    powder = np.histogram(np.linalg.norm(q_all[ok], axis=1), edges)[0]
    pairs = np.zeros(len(edges) - 1, dtype=np.int64)
    for _, table in vectors[ok].groupby("frame"):
        q = table[["qx", "qy", "qz"]].to_numpy()
        for start in range(0, len(q), 500):  # chunks keep the memory small
            block = q[start : start + 500]
            d = np.linalg.norm(block[:, None, :] - q[None, :, :], axis=2)
            i, j = np.nonzero(np.arange(start, start + len(block))[:, None] < np.arange(len(q)))
            pairs += np.histogram(d[i, j], edges)[0]
    return powder, pairs


def test_counts_equal_brute_force() -> None:
    """Unsorted frames, NaN rows and a user range: exactly numpy's histograms."""
    vectors = _random_vectors(7, 60, seed=1).sample(frac=1.0, random_state=3)
    vectors.iloc[::17, 1] = np.nan
    hist = radial_histograms(vectors, max_one_over_d=0.3, bin_width=1e-3)
    powder, pairs = _brute_force(vectors, hist.edges)
    np.testing.assert_array_equal(hist.powder, powder)
    np.testing.assert_array_equal(hist.pairs, pairs)
    assert hist.n_pairs == pairs.sum() and hist.n_frames == 7
    assert hist.n_peaks == int(np.isfinite(vectors["qx"]).sum())
    assert hist.edges[0] == 0.0 and hist.bin_width == pytest.approx(1e-3)
    assert hist.max_one_over_d == pytest.approx(0.3)
    np.testing.assert_allclose(hist.centres, np.arange(300) * 1e-3 + 5e-4)
    default = radial_histograms(vectors, bin_width=1e-3)
    assert default.powder.sum() == default.n_peaks  # the default range holds every peak


def test_thousands_of_peaks_per_frame() -> None:
    """One frame of 4000 peaks: the range limits the pairs visited, counts stay exact."""
    vectors = _random_vectors(1, 4000, seed=2)
    hist = radial_histograms(vectors, max_one_over_d=0.05)
    _, pairs = _brute_force(vectors, hist.edges)
    np.testing.assert_array_equal(hist.pairs, pairs)


def test_a_million_peaks() -> None:
    """1000 frames of 1000 peaks over the full range (2.9e8 pairs) in one call (its speed
    is in the benchmarks); the pair counts add up over the frames."""
    vectors = _random_vectors(1000, 1000, seed=3)
    hist = radial_histograms(vectors)
    assert hist.n_peaks == 1_000_000 and hist.n_pairs > 2.9e8
    assert hist.powder.sum() == hist.n_peaks
    part = radial_histograms(vectors[vectors["frame"] < 10], max_one_over_d=hist.max_one_over_d)
    assert part.n_pairs < hist.n_pairs / 50


def test_dask_client_gives_the_same_histograms() -> None:
    distributed = pytest.importorskip("distributed")
    vectors = _random_vectors(50, 200, seed=4)
    local = radial_histograms(vectors, max_one_over_d=0.2)
    with (
        distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False) as cluster,
        distributed.Client(cluster) as client,
    ):
        remote = radial_histograms(vectors, max_one_over_d=0.2, client=client)
    np.testing.assert_array_equal(local.pairs, remote.pairs)
    assert local.n_pairs == remote.n_pairs


@pytest.fixture(scope="module")
def lysozyme() -> RadialHistograms:
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": 150, "seed": 7,
            "source": {"structure": "builtin:lysozyme-like", "d_min": 2.5},
            "beam_effects": {"centre_jitter_px": 0.5}, "crystal": {"thickness_a": 1000},
        }
    )  # fmt: skip
    sim = SerialSimulation.build(cfg)
    peaks = ideal_peaks(sim, min_counts=20, position_sigma_px=0.25)
    return radial_histograms(peak_vectors(peaks, sim.detector, shots=sim.shots))


def _contrast(hist: RadialHistograms, counts: np.ndarray, lines: np.ndarray) -> float:
    """Mean counts at resolved predicted lines over the mean counts half-way between them."""
    gaps = np.diff(lines)
    resolved = np.flatnonzero(gaps > 2.5e-3)  # lines i and i + 1 resolved (sigma < 7e-4)
    x = hist.centres
    on = np.interp(lines[np.unique(np.concatenate([resolved, resolved + 1]))], x, counts)
    between = np.interp(0.5 * (lines[resolved] + lines[resolved + 1]), x, counts)
    assert len(resolved) >= 2
    return float(on.mean() / max(between.mean(), 1.0))


def test_simulated_stills_peak_at_lattice_lengths(lysozyme: RadialHistograms) -> None:
    """Powder maxima at the allowed reflections, pair maxima at lattice-vector lengths,
    including the (1 0 0) and (0 0 1) vectors that P 43 21 2 extinguishes."""
    cell = (79.1, 79.1, 37.9, 90, 90, 90)
    powder = predicted_lines(cell, "P 43 21 2", max_one_over_d=0.04)["one_over_d"].to_numpy()
    pairs = predicted_lines(cell, "tP", max_one_over_d=0.04, kind="pairs")["one_over_d"].to_numpy()
    assert _contrast(lysozyme, lysozyme.powder, powder) > 3.0
    assert _contrast(lysozyme, lysozyme.pairs, pairs) > 3.0
    low = (lysozyme.centres > 0.008) & (lysozyme.centres < 0.016)
    peak = lysozyme.centres[low][np.argmax(lysozyme.pairs[low])]
    assert peak == pytest.approx(1 / 79.1, abs=4e-4)  # a*, absent from the powder pattern
    assert lysozyme.powder[lysozyme.centres < 0.016].sum() < 5


def test_xray_stills_curved_ewald_sphere() -> None:
    """12 keV X-ray stills: the pair differences are lattice vectors on the curved
    sphere too; the refined cell is within 0.2 % of the truth."""
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": 250, "seed": 2, "beam": {"energy_kev": 12.0},
            "detector": {"distance_mm": 100.0},
            "source": {"structure": "builtin:lysozyme-like", "d_min": 2.5},
            "beam_effects": {"centre_jitter_px": 0.5, "dose_e_per_a2": 1e6},
            "crystal": {"thickness_a": 5000, "lateral_size_a": 50000, "mosaicity_deg": 0.05},
        }
    )  # fmt: skip
    sim = SerialSimulation.build(cfg)
    assert sim.beam.wavelength > 1.0
    peaks = ideal_peaks(sim, min_counts=20, position_sigma_px=0.25)
    hist = radial_histograms(peak_vectors(peaks, sim.detector, shots=sim.shots))
    result = refine_cell(hist, (80.5, 80.5, 37.3, 90, 90, 90), "tP")
    err = 100 * (np.array(result.cell.parameters)[[0, 2]] / [79.1, 37.9] - 1)
    assert np.all(np.abs(err) < 0.2), f"a {err[0]:+.4f} %, c {err[1]:+.4f} %\n" + result.summary()


def test_plot(lysozyme: RadialHistograms, tmp_path) -> None:
    fig = plot_radial_histograms(lysozyme)
    assert isinstance(fig, Figure) and len(fig.axes[0].lines) == 2
    path = tmp_path / "fig6.png"
    fig = plot_radial_histograms(
        lysozyme, cell=(79.1, 79.1, 37.9, 90, 90, 90), lattice="P 43 21 2", path=path,
        range_one_over_d=(0.0, 0.1),
    )  # fmt: skip
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    collections = fig.axes[0].collections
    assert len(collections) == 2  # allowed lines, and lattice vectors absent from the powder
    assert fig.axes[0].get_xlim() == (0.0, 0.1)
    with pytest.raises(Exception, match="exists"):
        plot_radial_histograms(lysozyme, path=path, overwrite=False)


def test_errors() -> None:
    vectors = _random_vectors(2, 10)
    with pytest.raises(DataError, match="'qz'") as info:
        radial_histograms(vectors.drop(columns="qz"))
    assert info.value.field == "qz"
    with pytest.raises(DataError, match="no peaks"):
        radial_histograms(vectors.iloc[:0])
    with pytest.raises(DataError, match="no peaks"):
        radial_histograms(vectors.assign(qx=np.nan))
    with pytest.raises(ConfigError, match="bin width"):
        radial_histograms(vectors, bin_width=0.0)
    with pytest.raises(ConfigError, match="largest 1/d"):
        radial_histograms(vectors, max_one_over_d=1e-5)
    with pytest.raises(ConfigError, match="too many"):
        radial_histograms(vectors, max_one_over_d=10.0, bin_width=1e-7)
