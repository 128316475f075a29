"""CBXD refinement (seed 000, 5.2.4): Eq. 12 over lattice, orientation and geometry."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cbxdsim import si_streaks

from crystalscope.cbxd.geometry import rotation_matrix
from crystalscope.cbxd.index import CbxdGeometry, cell_parameters, index_streaks, ub_from_cell
from crystalscope.cbxd.refine import (
    PARAMETERS,
    eq12_target,
    predict_streaks,
    refine_streaks,
)
from crystalscope.errors import ConfigError, DataError
from crystalscope.simulate.cbxd import CbxdSimulation

N_FRAMES, STEP = 40, 1.0


@pytest.fixture(scope="module")
def indexed() -> tuple[CbxdSimulation, np.ndarray, pd.DataFrame, np.ndarray, CbxdGeometry]:
    """Si stills (on-axis NA 0.02), streaks indexed with the known cell; the true UB in
    the setting of the indexing."""
    sim, streaks, omega = si_streaks(N_FRAMES, STEP)
    geom = CbxdGeometry.from_simulation(sim)
    res = index_streaks(streaks, omega, geom,
                        known_cell=[5.431] * 3 + [90.0] * 3)  # fmt: skip
    ub_true = sim.ub @ np.rint(np.linalg.solve(sim.ub, res.ub))
    return sim, ub_true, res.streaks[res.streaks["indexed"]], omega, geom


def _predict(ub: np.ndarray, geom: CbxdGeometry, obs: pd.DataFrame, omega: np.ndarray) -> Any:
    return predict_streaks(ub, geom, obs[["h", "k", "l"]].to_numpy(), obs["frame"].to_numpy(),
                           omega, obs["fs"], obs["ss"])  # fmt: skip


def test_true_model_predicts_the_streaks(indexed: Any) -> None:
    _, ub, obs, omega, geom = indexed
    assert len(obs) > 40
    pred = _predict(ub, geom, obs, omega)
    rms = np.sqrt(np.mean((pred.fs - obs["fs"]) ** 2 + (pred.ss - obs["ss"]) ** 2))
    assert rms < 0.3 and pred.in_pupil.all()
    # k_out,calc lies on the Kossel circle: |k_calc - G| = |k_calc| = 1/lambda
    np.testing.assert_allclose(np.linalg.norm(pred.k_calc, axis=1), 1 / geom.wavelength)
    worse = _predict(rotation_matrix((0, 0, 1), np.radians(0.5)) @ ub, geom, obs, omega)
    assert eq12_target(worse) > 5 * eq12_target(pred)


def test_pupil_restricts_the_calculated_point(indexed: Any) -> None:
    _, ub, obs, omega, geom = indexed
    narrow = dataclasses.replace(geom, pupil=type(geom.pupil).on_axis(0.002, 0.002))
    pred = _predict(ub, narrow, obs, omega)
    assert 0 < pred.in_pupil.sum() < len(obs)
    k_in = pred.k_calc - pred.g
    np.testing.assert_allclose(np.linalg.norm(k_in, axis=1), 1 / geom.wavelength)
    margin = narrow.pupil.margin(*narrow.pupil_angles(k_in))
    assert np.all(margin[pred.in_pupil] > -1e-7)
    moved = np.hypot(pred.fs - obs["fs"], pred.ss - obs["ss"])
    wide = _predict(ub, geom, obs, omega)
    assert np.mean(moved) > np.mean(np.hypot(wide.fs - obs["fs"], wide.ss - obs["ss"]))


@pytest.mark.slow
def test_refinement_from_a_perturbed_start_reaches_one_pixel(indexed: Any) -> None:
    _, ub, obs, omega, geom = indexed
    cell = cell_parameters(ub)
    u = ub @ np.linalg.inv(ub_from_cell(cell))
    start_ub = (
        rotation_matrix((1, 1, 0), np.radians(1.0))
        @ u
        @ ub_from_cell(cell * [1.01, 0.99, 1.01, 1, 1, 1])
    )
    start = dataclasses.replace(geom, distance_mm=geom.distance_mm * 1.02,
                                defocus_mm=geom.defocus_mm * 0.98)  # fmt: skip
    res = refine_streaks(start_ub, start, obs, omega)
    assert res.rms_px_start > 2.0
    assert res.rms_px < 1.0
    assert res.target_final < res.target_start / 10
    assert res.geom.distance_mm == pytest.approx(geom.distance_mm, rel=0.005)
    np.testing.assert_allclose(cell_parameters(res.ub)[:3], 5.431, rtol=0.02)
    assert set(res.values) == set(PARAMETERS)


def test_refine_rejects_bad_input(indexed: Any) -> None:
    _, ub, obs, omega, geom = indexed
    with pytest.raises(ConfigError, match="unknown parameters"):
        refine_streaks(ub, geom, obs, omega, refine=("a", "spin"))
    with pytest.raises(DataError) as err:
        refine_streaks(ub, geom, obs.drop(columns="h"), omega)
    assert err.value.field == "h"
    with pytest.raises(DataError, match="streaks for"):
        refine_streaks(ub, geom, obs.iloc[:2], omega)
