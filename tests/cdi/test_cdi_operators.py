"""Operators, algebra and backend of crystalscope.cdi on small arrays."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.cdi import operators as ops
from crystalscope.cdi.algebra import Chain, parse_algorithm
from crystalscope.cdi.backend import get_backend
from crystalscope.cdi.simulate import porous_particle, resolution_target, simulate_pattern
from crystalscope.cdi.state import CDIState, friedel_mate
from crystalscope.errors import ConfigError, DataError


def _state(shape=(64, 64), beamstop=2.0, seed=1) -> CDIState:
    obj = resolution_target(shape, shape[0] / 3.2)
    sim = simulate_pattern(obj, 1e7, beamstop_radius_px=beamstop, seed=seed)
    st = CDIState.from_pattern(sim.intensity, sim.mask, backend="numpy", seed=seed)
    return ops.InitObj * ops.AutoSupport * st


def test_fourier_projection_is_idempotent_and_leaves_unknown_pixels_free() -> None:
    st = _state()
    before = np.fft.fftn(st.obj, norm="ortho")
    once = ops.fourier_projection(st, st.obj)
    twice = ops.fourier_projection(st, once)
    np.testing.assert_allclose(twice, once, atol=1e-3 * np.abs(once).max())
    f = np.fft.fftn(once, norm="ortho")
    free = st.mask | st.free
    assert free[st.mask].all() and st.mask.any() and st.free.any()
    np.testing.assert_allclose(f[free], before[free], atol=1e-3 * np.abs(before).max())
    np.testing.assert_allclose(np.abs(f[st.known]), st.amp[st.known], rtol=1e-3, atol=1e-2)


def test_support_and_positivity_projections_are_idempotent() -> None:
    st = _state()
    st = ops.Pos * st
    once = st.obj.copy()
    st = ops.SupProj * ops.Pos * st
    np.testing.assert_array_equal(st.obj, once)
    assert np.all(st.obj.real >= 0) and np.all(st.obj.imag == 0)
    assert np.all(st.obj[~st.support] == 0)


def test_free_set_pairs_friedel_mates_and_avoids_the_mask() -> None:
    st = _state()
    assert np.array_equal(st.free, friedel_mate(st.free))
    assert not np.any(st.free & st.mask)
    assert 0.02 < st.free.sum() / (~st.mask).sum() < 0.08


def test_algebra_composes_in_matrix_order_and_string_parses_to_same_sequence() -> None:
    text = "ER**50,(Sup*ER**5*HIO**50)**10"
    algebra = (ops.Sup * ops.ER**5 * ops.HIO**50) ** 10 * ops.ER**50
    parsed = parse_algorithm(text)
    assert parsed == algebra
    assert parsed.steps() == algebra.steps()
    steps = parsed.steps()
    assert len(steps) == 50 + 10 * 56
    assert steps[:50] == [ops.ER] * 50 and steps[50:100] == [ops.HIO] * 50
    assert steps[100:105] == [ops.ER] * 5 and steps[105] == ops.Sup
    assert parse_algorithm(repr(parsed)) == parsed
    assert isinstance(ops.ER * ops.HIO, Chain)


def test_parameters_in_strings_and_calls() -> None:
    op = parse_algorithm("HIO(beta=0.7)**3*Sup(threshold=0.1,sigma=3)")
    assert op == ops.HIO(beta=0.7) ** 3 * ops.Sup(threshold=0.1, sigma=3.0)
    assert repr(ops.HIO(beta=0.7)) == "HIO(beta=0.7)"
    assert ops.HIO(beta=0.9) == ops.HIO


def test_composed_operator_equals_explicit_sequence() -> None:
    a, b = _state(seed=3), _state(seed=3)
    a = (ops.ER**2 * ops.Sup * ops.HIO**3) * a
    for op in (ops.HIO, ops.HIO, ops.HIO, ops.Sup, ops.ER, ops.ER):
        b = op.apply(b)
    np.testing.assert_array_equal(a.obj, b.obj)
    assert a.iteration == b.iteration == 5


@pytest.mark.parametrize(
    "text", ["ER**", "Foo**3", "ER**-1", "HIO(gamma=1)", "(ER*HIO", "ER**2.5", ""]
)
def test_bad_algorithm_strings_raise_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_algorithm(text)


def test_shrink_wrap_respects_fraction_bounds_and_decays_sigma() -> None:
    st = _state()
    st = ops.Sup(threshold=0.0, max_fraction=0.05) * st
    assert st.support_fraction() <= 0.051
    assert st.sup_sigma == pytest.approx(2.0 * 0.95)
    st = ops.Sup(threshold=0.999, min_fraction=0.02) * st
    assert st.support_fraction() >= 0.019


def test_autocorrelation_support_contains_the_object() -> None:
    obj = resolution_target((128, 128), 40)
    sim = simulate_pattern(obj, 1e8, beamstop_radius_px=2.5)
    st = ops.AutoSupport * CDIState.from_pattern(sim.intensity, sim.mask, backend="numpy")
    true = np.fft.ifftshift(obj > 0.05)
    # the object fits in the support at some translation: the overlap of the support's
    # autocorrelation peak covers the object's area
    overlap = np.fft.ifftn(np.fft.fftn(st.support) * np.conj(np.fft.fftn(true))).real
    assert overlap.max() > 0.98 * true.sum()
    assert st.support.sum() < 4 * true.sum()


def test_llk_is_at_most_one_for_the_truth_and_large_for_a_random_object() -> None:
    obj = resolution_target((64, 64), 20)
    sim = simulate_pattern(obj, 1e7)
    st = CDIState.from_pattern(sim.intensity, sim.mask, backend="numpy", seed=0)
    st.obj = np.fft.ifftshift(np.sqrt(1e7 / (obj**2).sum()) * obj).astype(np.complex64)
    llk, free = ops.poisson_llk(st)
    assert 0.2 < llk < 1.2 and 0.2 < free < 1.2
    st = ops.InitObj * st
    assert ops.poisson_llk(st)[1] > 10 * free


def test_three_d_reconstruction_of_a_small_volume() -> None:
    from crystalscope.cdi.runs import normalized_rms_error, run_once

    obj = porous_particle((32, 32, 32), 10, pore_px=2)
    sim = simulate_pattern(obj, 1e9, beamstop_radius_px=1.5)
    res = run_once(sim.intensity, sim.mask, seed=0, positivity=True, backend="numpy")
    assert res.obj.shape == (32, 32, 32)
    assert normalized_rms_error(res.obj, obj) < 0.15


def test_backend_selection() -> None:
    be = get_backend("numpy", workers=2)
    assert be.name == "numpy" and be.workers == 2
    with pytest.raises(ConfigError):
        get_backend("tpu")
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError):
            get_backend("cupy")
        assert get_backend("auto").name == "numpy"


def test_bad_patterns_raise_data_error() -> None:
    with pytest.raises(DataError):
        CDIState.from_pattern(np.ones(10))
    with pytest.raises(DataError):
        CDIState.from_pattern(np.ones((8, 8)), np.zeros((4, 4), bool))
