"""Miller indices of peaks from crystal orientations (index.assign)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import DataError
from crystalscope.index.assign import STAR_COLUMNS, assign_peaks, ub_matrices
from crystalscope.index.peaks import peak_vectors
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.peaks import ideal_peaks
from crystalscope.simulate.serial import SerialSimulation


def _truth_crystals(sim: SerialSimulation) -> pd.DataFrame:
    rows = []
    for _, xt in sim.crystals.iterrows():
        u = xt[[f"u{a}{b}" for a in range(3) for b in range(3)]].to_numpy(float)
        ub = sim.base.with_orientation(u.reshape(3, 3)).UB
        row = {"frame": int(xt["frame"]), "crystal": int(xt["crystal"])}
        row.update(dict(zip(STAR_COLUMNS, ub.T.ravel(), strict=True)))
        rows.append(row)
    return pd.DataFrame(rows)


def test_assigned_indices_are_the_true_ones() -> None:
    """Two-lattice frames included: every true peak gets its own crystal and hkl."""
    cfg = SerialConfig.model_validate(
        {"n_crystals": 8, "seed": 2, "two_lattice_fraction": 0.5, "source": {"d_min": 3.0}}
    )
    sim = SerialSimulation.build(cfg)
    peaks = ideal_peaks(sim, position_sigma_px=0.1, false_per_frame=5.0, seed=3)
    truth_names = {"crystal": "true_crystal", "h": "h_true", "k": "k_true", "l": "l_true"}
    vectors = peak_vectors(peaks.rename(columns=truth_names), sim.detector, shots=sim.shots)
    crystals = _truth_crystals(sim)
    assert (crystals.groupby("frame").size() > 1).any()
    np.testing.assert_allclose(
        ub_matrices(crystals)[0].T.ravel(), crystals.iloc[0][list(STAR_COLUMNS)]
    )
    got = assign_peaks(vectors, crystals, max_distance=0.002)
    true = got[got["true_crystal"] >= 0]
    assert len(true) >= 0.97 * (vectors["true_crystal"] >= 0).sum()
    same_hkl = true[["h", "k", "l"]].to_numpy() == true[["h_true", "k_true", "l_true"]].to_numpy()
    right = (true["crystal"] == true["true_crystal"]) & same_hkl.all(axis=1)
    assert right.mean() > 0.97, right.mean()
    assert not got.duplicated(["frame", "fs", "ss"]).any()  # one crystal per peak
    assert (got["distance"] <= 0.002).all()
    assert len(got[got["true_crystal"] < 0]) < 0.2 * (vectors["true_crystal"] < 0).sum()


def test_assign_errors_and_empty() -> None:
    vectors = pd.DataFrame({"frame": [0], "qx": [0.1], "qy": [0.0], "qz": [0.0]})
    with pytest.raises(DataError, match="astar_x"):
        assign_peaks(vectors, pd.DataFrame({"frame": [0], "crystal": [0]}))
    crystals = pd.DataFrame({"frame": [5], "crystal": [0], **{c: [0.0] for c in STAR_COLUMNS}})
    crystals[["astar_x", "bstar_y", "cstar_z"]] = 0.05
    out = assign_peaks(vectors, crystals)
    assert out.empty and {"crystal", "h", "k", "l", "distance"} <= set(out.columns)
    with pytest.raises(DataError, match="max_distance"):
        assign_peaks(vectors, crystals, max_distance=0.0)
