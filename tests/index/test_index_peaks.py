"""Scattering vectors of peaks (index.peaks) and ideal peak lists (simulate.peaks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import ConfigError, DataError
from crystalscope.index.peaks import peak_vectors, split_by_frame
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.peaks import ideal_peaks
from crystalscope.simulate.serial import SerialSimulation


@pytest.fixture(scope="module")
def sim() -> SerialSimulation:
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": 6, "seed": 11, "source": {"d_min": 2.5},
            "beam_effects": {"centre_jitter_px": 3.0},
        }
    )  # fmt: skip
    return SerialSimulation.build(cfg)


def _truth_q(sim: SerialSimulation, table: pd.DataFrame) -> np.ndarray:
    out = np.empty((len(table), 3))
    for i, row in enumerate(table.itertuples()):
        xtals = sim.crystals
        xt = xtals[(xtals["frame"] == row.frame) & (xtals["crystal"] == row.crystal)].iloc[0]
        u = xt[[f"u{i}{j}" for i in range(3) for j in range(3)]].to_numpy(float).reshape(3, 3)
        out[i] = sim.base.with_orientation(u).q_lab([[row.h, row.k, row.l]])[0]
    return out


def test_peak_vectors_recover_the_reciprocal_lattice_points(sim: SerialSimulation) -> None:
    """With each frame's shift applied, peak q lie within the Ewald-plane tolerance of
    their lattice points; without it, the 3-px centre jitter shows."""
    peaks = ideal_peaks(sim, position_sigma_px=0.0, min_counts=50)
    assert len(peaks) > 300 and set(peaks["frame"]) == set(range(6))
    sample = peaks.groupby("frame").head(40)
    good = peak_vectors(sample, sim.detector, shots=sim.shots.assign(frame=sim.shots["frame"]))
    qt = _truth_q(sim, good)
    q = good[["qx", "qy", "qz"]].to_numpy()
    lateral = np.linalg.norm((q - qt)[:, :2], axis=1)
    assert np.median(lateral) < 2e-4
    bad = peak_vectors(sample, sim.detector)
    lateral_bad = np.linalg.norm((bad[["qx", "qy", "qz"]].to_numpy() - qt)[:, :2], axis=1)
    assert np.median(lateral_bad) > 5 * np.median(lateral)


def test_ideal_peaks_noise_and_false_peaks(sim: SerialSimulation) -> None:
    exact = ideal_peaks(sim, [0], position_sigma_px=0.0, seed=1)
    noisy = ideal_peaks(sim, [0], position_sigma_px=0.5, seed=1)
    assert len(exact) == len(noisy)
    d = noisy["fs"].to_numpy() - exact["fs"].to_numpy()
    assert 0.35 < d.std() < 0.65
    with_false = ideal_peaks(sim, [0, 1], false_per_frame=20.0, seed=1)
    n_false = int((with_false["crystal"] < 0).sum())
    assert 15 < n_false < 65
    assert ideal_peaks(sim, [0], min_counts=1e12).empty
    with pytest.raises(ConfigError, match="min_counts"):
        ideal_peaks(sim, [0], min_counts=-1.0)


def test_peak_vectors_errors_and_split(sim: SerialSimulation) -> None:
    peaks = ideal_peaks(sim, [0, 2])
    with pytest.raises(DataError, match="'ss'"):
        peak_vectors(peaks.drop(columns="ss"), sim.detector)
    with pytest.raises(DataError, match="not in the shots table"):
        peak_vectors(peaks, sim.detector, shots=sim.shots.iloc[:1])
    off = pd.DataFrame({"frame": [0], "fs": [-50.0], "ss": [-50.0]})
    assert peak_vectors(off, sim.detector).empty
    v = peak_vectors(peaks, sim.detector, shots=sim.shots)
    frames, q = split_by_frame(v)
    assert list(frames) == [0, 2] and sum(len(x) for x in q) == len(v)
    assert all(x.shape[1] == 3 for x in q)
