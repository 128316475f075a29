"""CBXD rotation topographs (seed 000, 3.1, Eq. 7, Methods 5.2.5) on simulated series."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from crystalscope.cbxd.topographs import (
    CbxdGeometry,
    Topograph,
    TopographGrid,
    accumulate_topographs,
    predict_frame,
    projection_on_grid,
    streak_mask,
    topograph_table,
    windowed_background,
    xi_angle,
)
from crystalscope.config import parse_config
from crystalscope.errors import ConfigError, DataError
from crystalscope.simulate.cbxd import CbxdSimulation
from crystalscope.simulate.cbxd_config import CbxdConfig

STEP = 0.05  # deg per frame
N_FRAMES = 52
# Si "F" cuboid, off-axis lens (defaults), a 256^2 detector window 200 mm from focus that
# holds the 220 streak while the deficiency line sweeps the crystal (omega 7.0..9.6 deg).
SERIES: dict[str, Any] = {
    "sample": {"orientation_deg": (10.0, 20.0, 5.0), "voxel_um": 1.0, "d_min": 1.5},
    "detector": {"shape": (256, 256), "pixel_mm": 0.05, "distance_mm": 200.0,
                 "centre_fs": 1220.0, "centre_ss": 1440.0},
    "scan": {"n_frames": N_FRAMES, "step_deg": STEP, "substeps": 2, "start_deg": 7.0},
    "lens": {"photons_per_frame": 1e9},
}  # fmt: skip


@pytest.fixture(scope="module")
def series() -> tuple[CbxdSimulation, np.ndarray, dict[tuple[int, int, int], Topograph]]:
    sim = CbxdSimulation.build(parse_config(SERIES, CbxdConfig))
    frames = np.stack([sim.frame(j)[0] for j in range(N_FRAMES)])
    geom = CbxdGeometry.from_simulation(sim)
    grid = TopographGrid.covering(sim.pupil, 0.05 / 200.0)
    omegas = [sim.omega_deg(j) for j in range(N_FRAMES)]
    tops = accumulate_topographs(geom, frames, omegas, STEP, grid, substeps=2,
                                 bad=sim.dead | sim.hot, min_counts=1e4)  # fmt: skip
    return sim, frames, tops


@pytest.mark.slow
def test_topograph_is_the_projection_along_k_in(series: Any) -> None:
    sim, _, tops = series
    assert (2, 2, 0) in tops
    t = tops[(2, 2, 0)]
    geom = CbxdGeometry.from_simulation(sim)
    ref = projection_on_grid(sim.shape, geom, t.grid, t.omega_mean_deg,
                             centre_mm=sim.rotation_centre_mm)  # fmt: skip
    ok = np.isfinite(t.image)
    assert ok.sum() > 0.8 * ok.size
    r = np.corrcoef(t.image[ok], ref[ok])[0, 1]
    assert r >= 0.9, r
    # the carved F: 2 um of 10 um missing, seen as a darker letter inside the face
    full = ok & (ref > 0.95 * ref.max())
    letter = ok & (ref > 0.6 * ref.max()) & (ref < 0.9 * ref.max())
    assert letter.sum() > 50 and full.sum() > 200
    seen = t.image[letter].mean() / t.image[full].mean()
    true = ref[letter].mean() / ref[full].mean()
    assert abs(seen - true) < 0.05 and seen < 0.9, (seen, true)


@pytest.mark.slow
def test_topograph_scale_is_eq7_with_w(series: Any) -> None:
    """Eq. 7 integrated: sum(I) dphi^2 = (c / d_omega) P L W |F|^2 int P_S dphi^2."""
    sim, _, tops = series
    t = tops[(2, 2, 0)]
    geom = CbxdGeometry.from_simulation(sim)
    ref = projection_on_grid(sim.shape, geom, t.grid, t.omega_mean_deg,
                             centre_mm=sim.rotation_centre_mm)  # fmt: skip
    _, tab = sim.expected_frame(25)
    row = tab.query("h == 2 and k == 2 and l == 0 and component == 0").iloc[0]
    assert t.sampling_factor == pytest.approx(1 / np.cos(t.xi))
    assert t.sampling_factor > 1.3  # xi ~ 51 deg: W matters
    eq7 = (sim.c / np.radians(STEP) * row.polarisation * row.lorentz * t.sampling_factor
           * row.F2 * ref.sum() * 1e4)  # fmt: skip
    assert np.nansum(t.counts) / eq7 == pytest.approx(1.0, abs=0.03)
    table = topograph_table(tops)
    assert {"h", "k", "l", "counts", "omega_deg", "xi_deg", "W"} <= set(table.columns)
    assert (table["W"] >= 1).all()


@pytest.mark.slow
def test_predicted_streaks_hold_the_counts(series: Any) -> None:
    sim, _, _ = series
    geom = CbxdGeometry.from_simulation(sim)
    for j in (10, 26):
        expected, _ = sim.expected_frame(j)
        mask = streak_mask(predict_frame(geom, sim.omega_deg(j), STEP, substeps=2),
                           sim.detector.shape)  # fmt: skip
        assert expected.sum() > 0
        assert expected[mask].sum() / expected.sum() > 0.99
        assert mask.mean() < 0.2


def test_windowed_background_is_the_masked_mean_of_the_nearest_frames() -> None:
    rng = np.random.default_rng(1)
    frames = rng.poisson(3.0, (12, 4, 5)).astype(float)
    masks = rng.random((12, 4, 5)) < 0.3
    masks[:, 0, 0] = True  # never unmasked: NaN
    bad = np.zeros((4, 5), bool)
    bad[3, 4] = True
    out = list(windowed_background(frames, masks, window=5, bad=bad))
    assert len(out) == 12
    for j, bg in enumerate(out):
        lo = min(max(j - 2, 0), 12 - 5)
        sel = slice(lo, lo + 5)
        ok = ~masks[sel] & ~bad
        with np.errstate(invalid="ignore"):
            want = (frames[sel] * ok).sum(0) / ok.sum(0)
        np.testing.assert_allclose(bg, want, equal_nan=True)
        assert np.isnan(bg[0, 0]) and np.isnan(bg[3, 4])
    assert len(list(windowed_background(frames[:3], masks[:3], window=50))) == 3
    with pytest.raises(ConfigError):
        list(windowed_background(frames, masks, window=0))


def test_xi_and_bad_input() -> None:
    xi = xi_angle([[1.0, 0.0, 0.2], [0.0, 2.0, 0.1], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(xi, [0.0, np.pi / 2, np.pi / 4])
    with pytest.raises(ConfigError):
        xi_angle([[1.0, 0.0, 0.0]], axis=(0.0, 0.0, 1.0))
    sim = CbxdSimulation.build(parse_config(SERIES, CbxdConfig))
    geom = CbxdGeometry.from_simulation(sim)
    with pytest.raises(ConfigError, match="step"):
        TopographGrid.covering(sim.pupil, 0.0)
    with pytest.raises(ConfigError, match="substeps"):
        predict_frame(geom, 0.0, substeps=0)
    grid = TopographGrid.covering(sim.pupil, 1e-3)
    with pytest.raises(DataError, match="angles"):
        accumulate_topographs(geom, np.zeros((2, 256, 256)), [0.0], STEP, grid)
