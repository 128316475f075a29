"""Self-consistent snapshot analysis of one CBXD still (seed 000, section 2.3, Fig. 3)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from crystalscope.cbxd.snapshot import collect_streaks, snapshot_analysis
from crystalscope.cbxd.topographs import CbxdGeometry, TopographGrid, projection_on_grid
from crystalscope.config import parse_config
from crystalscope.errors import ConfigError, DataError
from crystalscope.simulate.cbxd import CbxdSimulation
from crystalscope.simulate.cbxd_config import CbxdConfig

# B12-like prism 3.5 mm downstream of focus (seed Fig. 3), one short still exposure.
STILL: dict[str, Any] = {
    "sample": {"shape": "b12-prism", "structure": "b12-like", "voxel_um": 2.0,
               "orientation_deg": (10.0, 20.0, 5.0), "d_min": 1.6, "defocus_mm": 3.5},
    "detector": {"shape": (1024, 1024), "pixel_mm": 0.1, "distance_mm": 100.0},
    "scan": {"n_frames": 1, "step_deg": 0.001, "substeps": 1},
    "lens": {"photons_per_frame": 1e11},
}  # fmt: skip


@pytest.fixture(scope="module")
def still() -> tuple[CbxdSimulation, np.ndarray]:
    sim = CbxdSimulation.build(parse_config(STILL, CbxdConfig))
    return sim, sim.frame(0)[0]


def _median_error(est: np.ndarray, truth: np.ndarray) -> float:
    ratio = est / truth
    return float(np.median(np.abs(ratio / np.median(ratio) - 1)))


def test_iterations_cut_the_error_of_reflection_estimates(still: Any) -> None:
    sim, image = still
    geom = CbxdGeometry.from_simulation(sim)
    streaks = collect_streaks(geom, image, sim.omega_deg(0) + 0.0005,
                              background=sim.config.detector.background,
                              bad=sim.dead | sim.hot)  # fmt: skip
    grid = TopographGrid.covering(sim.pupil, 0.1 / 100.0)
    res = snapshot_analysis(streaks, grid, n_iter=10)
    table = res.table
    assert len(table) >= 30
    assert {"h", "k", "l", "intensity", "rel_error", "rel_error_mean"} <= set(table.columns)
    truth = sim.c * sim.f2[table["refl"].to_numpy()]
    first, last = _median_error(res.history[0], truth), _median_error(res.history[-1], truth)
    assert last <= first / 2, (first, last)
    assert last < 0.05
    assert res.history.shape == (11, len(table)) == res.errors.shape
    finite = np.isfinite(table["rel_error"])
    assert finite.mean() > 0.9 and (table["rel_error"][finite] > 0).all(), table[~finite]
    # the map is the crystal's projection along k_in (the prism, seen 3.5 mm from focus)
    ref = projection_on_grid(sim.shape, geom, grid, 0.0, centre_mm=sim.rotation_centre_mm)
    ok = np.isfinite(res.projection)
    assert np.corrcoef(res.projection[ok], ref[ok])[0, 1] > 0.9


def test_bad_input(still: Any) -> None:
    sim, image = still
    geom = CbxdGeometry.from_simulation(sim)
    with pytest.raises(DataError, match="detector"):
        collect_streaks(geom, image[:10])
    with pytest.raises(DataError, match="no streak"):
        collect_streaks(geom, np.zeros_like(image))
    streaks = collect_streaks(geom, image, background=0.5)
    with pytest.raises(ConfigError, match="n_iter"):
        snapshot_analysis(streaks, TopographGrid.covering(sim.pupil, 1e-3), n_iter=-1)
