"""CBXD indexing (seed 000, 5.2.3): chief-ray G estimates, FFT lattice search, UB."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
from cbxdsim import si_streaks

from crystalscope.cbxd.geometry import rotation_matrix
from crystalscope.cbxd.index import (
    CbxdGeometry,
    cell_parameters,
    fft_lattice_candidates,
    index_streaks,
    index_vectors,
    lattice_basis,
    match_cell,
    reduce_basis,
    scattering_vectors,
    ub_from_cell,
)
from crystalscope.config import parse_config
from crystalscope.errors import ConfigError, DataError
from crystalscope.image.streaks import find_streaks
from crystalscope.simulate.cbxd import CbxdSimulation
from crystalscope.simulate.cbxd_config import CbxdConfig

SI = [5.431, 5.431, 5.431, 90.0, 90.0, 90.0]
N_FRAMES, STEP = 45, 2.0


@pytest.fixture(scope="module")
def series() -> tuple[CbxdSimulation, pd.DataFrame, np.ndarray]:
    """A Si rotation series (90 deg in 2-deg stills) and its detected streaks."""
    return si_streaks(N_FRAMES, STEP)


def _orientation_error_deg(ub_true: np.ndarray, ub: np.ndarray) -> float:
    """Rotation angle between ``ub`` and the symmetry-equivalent setting of ``ub_true``."""
    m = np.rint(np.linalg.solve(ub_true, ub))
    assert abs(round(np.linalg.det(m))) == 1
    r = ub @ np.linalg.inv(ub_true @ m)
    u, _, vt = np.linalg.svd(r)
    rot = u @ vt
    return float(np.degrees(np.arccos(np.clip((np.trace(rot) - 1) / 2, -1, 1))))


def test_index_recovers_the_simulated_ub(series: Any) -> None:
    sim, streaks, omega = series
    assert len(streaks) > 60
    res = index_streaks(streaks, omega, CbxdGeometry.from_simulation(sim), known_cell=SI)
    assert res.fraction_indexed > 0.9
    np.testing.assert_allclose(res.cell[:3], 5.431, rtol=0.02)
    np.testing.assert_allclose(res.cell[3:], 90.0, atol=1.0)
    assert _orientation_error_deg(sim.ub, res.ub) < 1.0
    assert {"h", "k", "l", "indexed", "gx"} <= set(res.streaks.columns)
    # indices agree with the truth up to the cubic setting found
    m = np.rint(np.linalg.solve(sim.ub, res.ub))
    hkl = res.streaks.loc[res.streaks.indexed, ["h", "k", "l"]].to_numpy()
    g = np.stack([np.asarray(res.streaks.loc[res.streaks.indexed, c]) for c in ("gx", "gy", "gz")])
    truth = np.linalg.solve(sim.ub, g).T
    assert np.mean(np.all(np.rint(truth) == hkl @ m.T, axis=1)) > 0.9


def test_index_without_cell_finds_the_primitive_fcc_cell(series: Any) -> None:
    sim, streaks, omega = series
    res = index_streaks(streaks, omega, CbxdGeometry.from_simulation(sim))
    a_p = 5.431 / np.sqrt(2)
    np.testing.assert_allclose(res.cell[:3], a_p, rtol=0.02)
    assert all(min(abs(x - t) for t in (60, 90, 120)) < 1.5 for x in res.cell[3:])
    volume = 1 / abs(np.linalg.det(res.ub))
    assert volume == pytest.approx(5.431**3 / 4, rel=0.03)


def test_scattering_vectors_follow_bragg_law(series: Any) -> None:
    sim, streaks, omega = series
    g = scattering_vectors(streaks, omega, CbxdGeometry.from_simulation(sim))
    # every estimate lies near a reciprocal lattice point of the true UB (within the pupil's
    # angular half-width / lambda = 0.028 1/A)
    frac = np.linalg.solve(sim.ub, g.T).T
    err = np.linalg.norm((frac - np.rint(frac)) @ sim.ub.T, axis=1)
    assert np.median(err) < 0.02 and np.max(err) < 0.05


def test_fft_and_basis_on_an_exact_lattice() -> None:
    u = rotation_matrix((1, 2, 3), 0.7)
    ub = ub_from_cell([7.0, 9.0, 11.0, 80.0, 95.0, 100.0], u)
    hkl = np.array([h for h in np.ndindex(9, 9, 9)]) - 4
    g = (ub @ hkl.T).T
    g = g[(np.linalg.norm(g, axis=1) < 0.6) & np.any(hkl != 0, axis=1)]
    cands = fft_lattice_candidates(g, 0.01)
    coarse = fft_lattice_candidates(g, 0.001, max_edge=96)  # dq coarsened to fit 96^3
    assert np.linalg.norm(coarse[0]) == pytest.approx(np.linalg.norm(cands[0]), rel=0.05)
    basis = reduce_basis(lattice_basis(cands, g))
    assert abs(np.linalg.det(basis)) == pytest.approx(1 / abs(np.linalg.det(ub)), rel=0.03)
    _, ok = index_vectors(np.linalg.inv(basis).T, g)
    assert ok.mean() > 0.95
    # the known cell recovers the setting, a scrambled basis is reduced back
    fixed = match_cell(np.linalg.inv(basis).T, [7.0, 9.0, 11.0, 80.0, 95.0, 100.0])
    np.testing.assert_allclose(cell_parameters(fixed), [7, 9, 11, 80, 95, 100], rtol=0.03,
                               atol=1.5)  # fmt: skip
    a = np.linalg.inv(ub).T
    scrambled = a @ np.array([[1, 1, 0], [0, 1, 1], [0, 0, 1]])
    np.testing.assert_allclose(cell_parameters(np.linalg.inv(reduce_basis(scrambled)).T)[:3],
                               [7, 9, 11], rtol=1e-9)  # fmt: skip


def test_cell_round_trip_and_errors() -> None:
    cell = [5.0, 6.0, 7.0, 85.0, 92.0, 101.0]
    np.testing.assert_allclose(cell_parameters(ub_from_cell(cell)), cell)
    with pytest.raises(ConfigError, match="impossible cell"):
        ub_from_cell([5, 5, 5, 10, 10, 170])
    geom = CbxdGeometry(0.7, 40.0, 1.0, 0.3, 127.5, 127.5,
                        CbxdSimulation.build(CbxdConfig()).pupil)  # fmt: skip
    with pytest.raises(DataError, match="at least 6"):
        index_streaks(pd.DataFrame({"frame": [0], "fs": [1.0], "ss": [2.0]}), [0.0], geom)
    with pytest.raises(DataError) as err:
        scattering_vectors(pd.DataFrame({"frame": [0], "fs": [1.0]}), [0.0], geom)
    assert err.value.field == "ss"
    with pytest.raises(DataError, match="have angles"):
        scattering_vectors(pd.DataFrame({"frame": [3], "fs": [1.0], "ss": [1.0]}), [0.0], geom)


def test_index_with_an_off_axis_lens() -> None:
    """Off-axis pupil: the chief ray is the pupil centre and the rotation centre sits on
    it (``sample.centre_on_beam``)."""
    n, step = 45, 2.0
    cfg = parse_config({
        "lens": {"kind": "off_axis", "na_x": 0.01, "na_y": 0.01, "inner_na_x": 0.005,
                 "inner_na_y": 0.005, "photons_per_frame": 1e9},
        "sample": {"orientation_deg": (10.0, 20.0, 5.0), "d_min": 0.9},
        "detector": {"shape": (256, 256), "pixel_mm": 0.3, "distance_mm": 40.0,
                     "hot_fraction": 0.0, "dead_fraction": 0.0},
        "scan": {"n_frames": n, "step_deg": step, "substeps": 1}, "seed": 3,
    }, CbxdConfig)  # fmt: skip
    sim = CbxdSimulation.build(cfg)
    geom = CbxdGeometry.from_simulation(sim)
    assert geom.pupil_angles(geom.chief_k_in())[0] == pytest.approx(sim.pupil.centre[0])
    tables = [find_streaks(sim.frame(j)[0] - 0.5, 5.0, min_pixels=3).assign(frame=j)
              for j in range(n)]  # fmt: skip
    omega = np.array([sim.omega_deg(j) + step / 2 for j in range(n)])
    res = index_streaks(pd.concat(tables, ignore_index=True), omega, geom, known_cell=SI)
    assert res.fraction_indexed > 0.9
    np.testing.assert_allclose(res.cell[:3], 5.431, rtol=0.02)
    assert _orientation_error_deg(sim.ub, res.ub) < 1.0
