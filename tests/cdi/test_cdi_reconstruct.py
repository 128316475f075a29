"""End-to-end phase retrieval on simulated data: accuracy, selection, resolution."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.cdi.runs import (
    RunResult,
    align,
    average,
    fourier_shell_correlation,
    modes,
    normalized_rms_error,
    prtf,
    resolution_at,
    run_many,
    run_once,
    select_best,
    twin,
)
from crystalscope.cdi.simulate import (
    SimulatedPattern,
    oversampling_ratio,
    porous_particle,
    resolution_target,
    simulate_pattern,
)

Q_CUT = 0.4  # spectral cut-off of resolution_target, cycles per pixel


def _pattern(n: int) -> SimulatedPattern:
    obj = resolution_target((n, n), n / 3.4, q_cut=Q_CUT)
    assert oversampling_ratio(obj) >= 3.0
    return simulate_pattern(obj, 1e8, beamstop_radius_px=2.5, seed=n)


def _check_2d(n: int, n_runs: int, keep: int) -> None:
    sim = _pattern(n)
    results = run_many(sim.intensity, sim.mask, n_runs=n_runs, n_workers=2, positivity=True)
    best = [r.obj for r in select_best(results, keep)]
    ref = best[0]
    aligned = [align(ref, b)[0] for b in best]
    error = normalized_rms_error(np.mean(aligned, axis=0), sim.truth)
    assert error < 0.05, error
    q, curve = prtf(aligned, sim.intensity, sim.mask)
    res = resolution_at(q, curve, q_min=2.0 / n)
    assert abs(res - Q_CUT) < 0.1 * Q_CUT, res


@pytest.fixture(scope="module")
def runs_128() -> tuple[SimulatedPattern, list[RunResult]]:
    sim = _pattern(128)
    return sim, run_many(sim.intensity, sim.mask, n_runs=4, n_workers=2, positivity=True)


def test_2d_128_average_matches_truth_and_prtf_finds_the_cutoff(
    runs_128: tuple[SimulatedPattern, list[RunResult]],
) -> None:
    sim, results = runs_128
    assert [r.llk_free for r in results] == sorted(r.llk_free for r in results)
    best = [r.obj for r in results[:3]]
    error = normalized_rms_error(average(best), sim.truth)
    assert error < 0.05, error
    aligned = [align(best[0], b)[0] for b in best]
    q, curve = prtf(aligned, sim.intensity, sim.mask)
    assert abs(resolution_at(q, curve, q_min=2.0 / 128) - Q_CUT) < 0.1 * Q_CUT


def test_stagnated_run_is_ranked_out(runs_128: tuple[SimulatedPattern, list[RunResult]]) -> None:
    sim, good = runs_128
    stuck = run_once(sim.intensity, sim.mask, "AutoSupport,InitObj,ER**20", seed=99)
    kept = select_best([*good[:2], stuck, *good[2:]], len(good))
    assert stuck not in kept
    assert normalized_rms_error(stuck.obj, sim.truth) > 0.2  # it really is stagnated


def test_half_set_frc_and_modes(runs_128: tuple[SimulatedPattern, list[RunResult]]) -> None:
    _sim, results = runs_128
    objs = [r.obj for r in results[:4]]
    half_a, half_b = average(objs[0::2]), average(objs[1::2])
    half_b = align(half_a, half_b)[0]
    q, frc = fourier_shell_correlation(half_a.real, half_b.real)
    assert np.all(frc[(q > 0.02) & (q < 0.3)] > 0.8)
    _, weights = modes(objs[:3])
    assert weights[0] > 0.95


def test_alignment_recovers_shift_phase_and_twin() -> None:
    obj = resolution_target((64, 64), 20).astype(complex) * np.exp(0.3j)
    from crystalscope.cdi.runs import fourier_shift

    moved = twin(fourier_shift(obj, np.array([3.4, -2.2]))) * np.exp(1.1j)
    _aligned, score = align(obj, moved)
    assert score > 0.999
    assert normalized_rms_error(moved, obj) < 1e-3


@pytest.mark.slow
def test_2d_256_average_and_prtf() -> None:
    _check_2d(256, 6, 3)


@pytest.mark.slow
def test_3d_64_porous_particle() -> None:
    obj = porous_particle((64, 64, 64), 20, pore_px=3)
    sim = simulate_pattern(obj, 1e10, beamstop_radius_px=1.5)
    results = run_many(sim.intensity, sim.mask, n_runs=2, n_workers=2, positivity=True)
    assert normalized_rms_error(results[0].obj, obj) < 0.10
