"""Image formation and detector effects: every effect is there, is right, and switches off.

Expectations are computed independently in the tests: the Cauchy profile's exact pixel
integral from the solid angle of a rectangle, Gaussian pixel masses from scipy, the
dead-time formula, image moments of iso-contours, scipy's Poisson distribution.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crystalscope.errors import DataError
from crystalscope.model.beam import Beam
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.panel import Panel
from crystalscope.simulate._render_kernels import poisson_array
from crystalscope.simulate._render_layout import layout
from crystalscope.simulate.config import BeamEffects, DetectorEffects
from crystalscope.simulate.presets import detector_preset
from crystalscope.simulate.render import (
    DetectorState,
    make_detector_state,
    render_expected,
    render_frame,
)

BEAM = Beam.from_voltage_kv(200.0)
NO_SPOTS = pd.DataFrame({"panel": [], "fs": [], "ss": [], "counts": []})
QUIET = {"noise": False, "psf_sigma_px": 0.7}
DARK = BeamEffects(zero_order=False, inelastic=False)
FLAT_G = 1.0e6  # inelastic width making the illumination flat to < 1e-6 on small detectors


def _camera(n: int = 64, centre: tuple[float, float] | None = None) -> Detector:
    c = (n / 2 - 0.5, n / 2 - 0.5) if centre is None else centre
    return Detector.single_panel(n, n, 0.055, 1000.0, c, wavelength=BEAM.wavelength)


def _state(det: Detector, fx: DetectorEffects, seed: int = 0) -> DetectorState:
    return make_detector_state(det, fx, np.random.default_rng(seed))


def _render(det: Detector, fx: DetectorEffects, beam_fx: BeamEffects = DARK, spots=NO_SPOTS,
            seed: int = 1, state: DetectorState | None = None, **kw) -> np.ndarray:  # fmt: skip
    st = _state(det, fx) if state is None else state
    return render_frame(spots, det, beam_fx, fx, st, rng=np.random.default_rng(seed), **kw)


def _spots(*rows: tuple[int, float, float, float]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["panel", "fs", "ss", "counts"])


def _cauchy_rect(x0, x1, y0, y1, g):  # type: ignore[no-untyped-def]
    """Exact mass of p(r) = g / (2 pi (r^2 + g^2)^1.5) over [x0, x1] x [y0, y1].

    The profile is the solid angle density seen from height g, and the solid angle of a
    rectangle [0, a] x [0, b] seen from above its corner is atan(ab / (g sqrt(a^2+b^2+g^2))).
    """

    def corner(a, b):  # type: ignore[no-untyped-def]
        return np.arctan(a * b / (g * np.sqrt(a * a + b * b + g * g))) / (2 * np.pi)

    return corner(x1, y1) - corner(x0, y1) - corner(x1, y0) + corner(x0, y0)


def _exact_profile(n: int, centre: tuple[float, float], g: float) -> np.ndarray:
    j = np.arange(n, dtype=float)
    x0 = (j - 0.5 - centre[0])[None, :]
    y0 = (j - 0.5 - centre[1])[:, None]
    return _cauchy_rect(x0, x0 + 1, y0, y0 + 1, g)


def _flat_light(n_per_px: float) -> tuple[BeamEffects, float]:
    """Inelastic 'background' so wide that it lights a small detector uniformly."""
    return (
        BeamEffects(zero_order=False, inelastic=True, inelastic_width_px=FLAT_G),
        n_per_px * 2 * math.pi * FLAT_G**2,
    )


# ---------------------------------------------------------------------------- spots


@pytest.mark.parametrize("sigma", [0.0, 0.5, 1.3, 3.0])
def test_spot_is_a_pixel_integrated_gaussian_with_its_counts(sigma: float) -> None:
    det = _camera(40)
    fx = DetectorEffects(noise=False, psf_sigma_px=sigma)
    x, y, n = 17.3, 21.8, 1234.5
    img = render_expected(_spots((0, x, y, n)), det, DARK, fx).astype(float)
    s = max(sigma, 0.3)
    edges = np.arange(41) - 0.5
    wx = np.diff(stats.norm.cdf(edges, x, s))
    wy = np.diff(stats.norm.cdf(edges, y, s))
    # +-5 sigma truncation: at most 5.7e-7 of the counts per axis move
    np.testing.assert_allclose(img, n * np.outer(wy, wx), rtol=2e-6, atol=1.2e-6 * n)
    assert img.sum() == pytest.approx(n, rel=1e-12)


def test_spot_width_column_adds_in_quadrature() -> None:
    det = _camera(40)
    fx = DetectorEffects(noise=False, psf_sigma_px=0.6)
    spots = _spots((0, 20.0, 20.0, 100.0)).assign(sigma_px=[0.8])
    img = render_expected(spots, det, DARK, fx)
    edges = np.arange(41) - 0.5
    w = np.diff(stats.norm.cdf(edges, 20.0, 1.0))
    np.testing.assert_allclose(img, 100 * np.outer(w, w), rtol=2e-6, atol=1.2e-4)


def test_spot_at_a_panel_edge_loses_the_part_off_the_panel() -> None:
    det = _camera(20)
    fx = DetectorEffects(noise=False, psf_sigma_px=1.0)
    img = render_expected(_spots((0, -0.5, 10.0, 500.0), (0, 10.0, 25.0, 7.0)), det, DARK, fx)
    assert img.sum() == pytest.approx(250.0, rel=1e-12)  # half of the first, none of the second


def test_isolated_spot_sums_to_its_counts_within_poisson_error() -> None:
    det = _camera(24)
    fx = DetectorEffects(noise=True, psf_sigma_px=1.0)
    state = _state(det, fx)
    spots = _spots((0, 11.7, 12.2, 300.0))
    rng = np.random.default_rng(5)
    sums = np.array([
        render_frame(spots, det, DARK, fx, state, rng=rng).sum() for _ in range(400)
    ])  # fmt: skip
    assert np.all(sums == np.round(sums))  # integer counts
    assert abs(sums.mean() - 300.0) < 4 * math.sqrt(300.0 / 400)
    assert sums.var(ddof=1) == pytest.approx(300.0, rel=0.25)


# ---------------------------------------------------------------------------- radial profiles


@pytest.mark.parametrize("g", [0.5, 1.0, 1.5, 40.0])
@pytest.mark.parametrize("centre", [(60.0, 60.0), (60.5, 60.5), (60.3, 59.8)])
def test_radial_profiles_are_pixel_integrated_exactly(
    g: float, centre: tuple[float, float]
) -> None:
    det = _camera(121, centre)
    fx = DetectorEffects(**QUIET)
    bfx = BeamEffects(zero_order=True, zero_order_width_px=g, inelastic=False)
    img = render_expected(NO_SPOTS, det, bfx, fx, zero_order_counts=1.0e6)
    exact = 1.0e6 * _exact_profile(121, centre, g)
    assert np.max(np.abs(img / exact - 1)) < 3e-4
    assert img.sum() / exact.sum() - 1 == pytest.approx(0.0, abs=1e-4)


def test_zero_order_beam_is_there_has_lorentzian_tails_and_switches_off() -> None:
    det = _camera(1024)
    fx = DetectorEffects(**QUIET)
    on = BeamEffects(zero_order=True, zero_order_width_px=1.5, inelastic=False)
    img = render_expected(NO_SPOTS, det, on, fx, zero_order_counts=1.0e7)
    c = 511  # the centre is at (511.5, 511.5): the four central pixels share the peak
    assert img[c, c] == pytest.approx(img.max(), rel=1e-9)
    assert img[c - 2 : c + 4, c - 2 : c + 4].sum() > 0.5e7
    # tail: d log I / d log r -> -3 along a row
    r = np.arange(30, 250) + 0.5
    values = img[c, c + 1 + np.arange(30, 250)]
    slope = np.polyfit(np.log(r), np.log(values), 1)[0]
    assert slope == pytest.approx(-3.0, abs=0.01)
    # nearly all counts on a large detector (the tail beyond the edges: exactly computed)
    inside = _cauchy_rect(-512.0, 512.0, -512.0, 512.0, 1.5)
    assert img.sum() == pytest.approx(1.0e7 * inside, rel=1e-4)
    assert img.sum() == pytest.approx(1.0e7, rel=5e-3)
    off = BeamEffects(zero_order=False, zero_order_width_px=1.5, inelastic=False)
    assert not render_expected(NO_SPOTS, det, off, fx, zero_order_counts=1.0e7).any()


def test_inelastic_background_is_radially_symmetric_and_switches_off() -> None:
    det = _camera(256, (127.0, 127.0))
    fx = DetectorEffects(**QUIET)
    on = BeamEffects(zero_order=False, inelastic=True, inelastic_width_px=40.0)
    img = render_expected(NO_SPOTS, det, on, fx, inelastic_counts=5.0e6)
    np.testing.assert_allclose(img, img.T, rtol=1e-12)
    np.testing.assert_allclose(img[:, :255], img[:, 254::-1], rtol=1e-12)  # mirror about fs=127
    inside = _cauchy_rect(-127.5, 128.5, -127.5, 128.5, 40.0)
    assert img.sum() == pytest.approx(5.0e6 * inside, rel=1e-4)
    off = BeamEffects(zero_order=False, inelastic=False, inelastic_width_px=40.0)
    assert not render_expected(NO_SPOTS, det, off, fx, inelastic_counts=5.0e6).any()


@pytest.mark.parametrize("g_inel", [2.0, 40.0])
def test_zero_order_and_inelastic_together_integrate_to_their_counts(g_inel: float) -> None:
    det = detector_preset("single", 1000.0, BEAM)
    fx = DetectorEffects(**QUIET)
    bfx = BeamEffects(zero_order_width_px=1.5, inelastic_width_px=g_inel)
    img = render_expected(NO_SPOTS, det, bfx, fx, zero_order_counts=3e7, inelastic_counts=1e7)
    edge = (-512.0, 512.0, -512.0, 512.0)  # centre (511.5, 511.5) of a 1024 x 1024 panel
    expected = 3e7 * _cauchy_rect(*edge, 1.5) + 1e7 * _cauchy_rect(*edge, g_inel)
    assert img.sum() == pytest.approx(expected, rel=1e-4)
    if g_inel < 3:  # the r^-3 tails put a fraction ~ g / 512 beyond the edges
        assert img.sum() == pytest.approx(4e7, rel=5e-3)


def test_the_direct_beam_follows_the_detector_shift() -> None:
    det = _camera(64, (30.0, 30.0))
    fx = DetectorEffects(**QUIET)
    bfx = BeamEffects(zero_order=True, zero_order_width_px=1.0, inelastic=False)
    img = render_expected(NO_SPOTS, det, bfx, fx, zero_order_counts=1e6,
                          shift_mm=(3 * 0.055, -2 * 0.055))  # fmt: skip
    # moving the detector by +3 px in x puts the beam 3 px lower in fs
    assert np.unravel_index(np.argmax(img), img.shape) == (32, 27)


def test_distorted_background_has_elliptical_iso_contours() -> None:
    ratio, angle = 1.3, 25.0
    det = _camera(241, (120.0, 120.0))
    fx = DetectorEffects(**QUIET)
    bfx = BeamEffects(zero_order=False, inelastic=True, inelastic_width_px=15.0)
    dist = EllipticalDistortion(ratio, angle)
    img = render_expected(NO_SPOTS, det, bfx, fx, inelastic_counts=1e8, distortion=dist)
    plain = render_expected(NO_SPOTS, det, bfx, fx, inelastic_counts=1e8)
    level = plain[120, 120 + 40]  # iso-level of the undistorted profile at r = 40 px
    ss, fs = np.nonzero(img > level)
    assert fs.size == pytest.approx(math.pi * 40**2, rel=0.01)  # area is kept
    cov = np.cov(np.vstack([fs - 120.0, ss - 120.0]))
    evals, evecs = np.linalg.eigh(cov)
    assert math.sqrt(evals[1] / evals[0]) == pytest.approx(ratio, rel=0.01)
    long_axis = evecs[:, 1] * np.sign(evecs[0, 1])
    a = math.radians(angle)
    assert abs(long_axis @ np.array([math.cos(a), -math.sin(a)])) == pytest.approx(1.0, abs=2e-4)
    # counts are kept (a narrow profile, so that little falls off the detector)
    narrow = BeamEffects(zero_order=True, zero_order_width_px=1.0, inelastic=False)
    kept = render_expected(NO_SPOTS, det, narrow, fx, zero_order_counts=1e8, distortion=dist)
    assert kept.sum() == pytest.approx(1e8 * _cauchy_rect(-120.5, 120.5, -120.5, 120.5, 1.0),
                                       rel=5e-4)  # fmt: skip


def test_distortion_moves_background_like_spot_positions() -> None:
    det = _camera(201, (100.0, 100.0))
    fx = DetectorEffects(**QUIET)
    g, n = 10.0, 1e8
    bfx = BeamEffects(zero_order=False, inelastic=True, inelastic_width_px=g)
    dist = EllipticalDistortion(1.2, -40.0)
    img = render_expected(NO_SPOTS, det, bfx, fx, inelastic_counts=n, distortion=dist)
    # the observed pixel (fs, ss) shows the profile at the true position that the model's
    # correction maps it to (the convention of spot positions: observed = apply(true))
    ss, fs = np.mgrid[0:201, 0:201]
    fs_t, ss_t = dist.correct(fs, ss, (100.0, 100.0))
    r2 = (fs_t - 100.0) ** 2 + (ss_t - 100.0) ** 2
    midpoint = n * g / (2 * np.pi * (r2 + g * g) ** 1.5)  # midpoint rule, error < 0.375/r^2
    far = r2 > 30**2
    np.testing.assert_allclose(img[far], midpoint[far], rtol=1e-3)


# ---------------------------------------------------------------------------- noise


def test_poisson_noise_variance_equals_mean_and_switches_off() -> None:
    det = _camera(48)
    bfx = BeamEffects(zero_order=True, zero_order_width_px=2.0, inelastic=True,
                      inelastic_width_px=12.0)  # fmt: skip
    counts = {"zero_order_counts": 2e4, "inelastic_counts": 2e3}
    noisy = DetectorEffects(noise=True)
    expected = render_expected(NO_SPOTS, det, bfx, noisy, **counts)
    assert expected.min() < 0.3 and expected.max() > 150  # walk, tables and PTRS in use
    state = _state(det, noisy)
    rng = np.random.default_rng(11)
    frames = np.array([
        render_frame(NO_SPOTS, det, bfx, noisy, state, rng=rng, **counts) for _ in range(300)
    ], dtype=float)  # fmt: skip
    mean, var = frames.mean(axis=0), frames.var(axis=0, ddof=1)
    z = (mean - expected) / np.sqrt(expected / 300)
    assert abs(z.mean()) < 0.1 and z.std() == pytest.approx(1.0, abs=0.05)
    assert np.mean(var / expected) == pytest.approx(1.0, abs=0.01)
    quiet = DetectorEffects(noise=False)
    exact = render_frame(NO_SPOTS, det, bfx, quiet, state, rng=rng, **counts)
    np.testing.assert_array_equal(exact, expected.astype(np.float32))


@pytest.mark.parametrize(
    "lam", [0.004, 0.05, 0.3, 2.5, 9.99, 10.0, 37.3, 99.95, 100.0, 480.0, 5000.0]
)
def test_poisson_sampler_matches_the_poisson_distribution(lam: float) -> None:
    n = 100_000
    x = poisson_array(np.full(n, lam), np.random.default_rng(int(lam * 1000)))
    assert np.all(x == np.round(x)) and x.min() >= 0
    dist = stats.poisson(lam)
    lo, hi = int(dist.ppf(1e-4)), int(dist.ppf(1 - 1e-4))
    edges = np.arange(lo, hi + 2) - 0.5
    observed = np.histogram(np.clip(x, lo, hi), bins=edges)[0]
    expected = n * np.diff(dist.cdf(edges))
    expected[0] += n * dist.cdf(lo - 1)
    expected[-1] += n * dist.sf(hi)
    keep = expected > 5
    chi2 = np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep])
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-4


def test_frames_are_deterministic_given_the_generator() -> None:
    det = _camera(32)
    fx = DetectorEffects(noise=True)
    bfx, n = _flat_light(3.0)
    a = _render(det, fx, bfx, seed=7, inelastic_counts=n)
    b = _render(det, fx, bfx, seed=7, inelastic_counts=n)
    c = _render(det, fx, bfx, seed=8, inelastic_counts=n)
    np.testing.assert_array_equal(a, b)
    assert np.any(a != c)


# ---------------------------------------------------------------------------- detector effects


def test_gain_scales_adu() -> None:
    det = _camera(32)
    bfx, n = _flat_light(20.0)
    one = _render(det, DetectorEffects(noise=True, gain_adu_per_count=1.0), bfx, inelastic_counts=n)
    three = _render(det, DetectorEffects(noise=True, gain_adu_per_count=3.5), bfx,
                    inelastic_counts=n)  # fmt: skip
    np.testing.assert_allclose(three, 3.5 * one, rtol=1e-6)
    assert one.mean() == pytest.approx(20.0, rel=0.02)


def test_dead_pixels_read_zero_at_the_drawn_fraction_and_switch_off() -> None:
    det = _camera(100)
    fx = DetectorEffects(noise=False, dead_pixel_fraction=0.013)
    state = _state(det, fx)
    assert state.dead.sum() == 130 and not np.any(state.dead & state.hot)
    bfx, n = _flat_light(5.0)
    img = _render(det, fx, bfx, state=state, inelastic_counts=n)
    assert np.all(img[state.dead] == 0) and np.all(img[~state.dead] > 4.9)
    off = fx.model_copy(update={"dead_pixel_fraction": 0.0})
    assert np.all(_render(det, off, bfx, state=state, inelastic_counts=n) > 4.9)


def test_hot_pixels_add_their_counts_and_switch_off() -> None:
    det = _camera(100)
    fx = DetectorEffects(noise=False, hot_pixel_fraction=0.002, hot_pixel_counts=700.0,
                         gain_adu_per_count=2.0)  # fmt: skip
    state = _state(det, fx)
    assert state.hot.sum() == 20
    bfx, n = _flat_light(5.0)
    img = _render(det, fx, bfx, state=state, inelastic_counts=n)
    np.testing.assert_allclose(img[state.hot], 2.0 * (5.0 + 700.0), rtol=1e-5)
    np.testing.assert_allclose(img[~state.hot], 10.0, rtol=1e-5)
    off = fx.model_copy(update={"hot_pixel_fraction": 0.0})
    np.testing.assert_allclose(_render(det, off, bfx, state=state, inelastic_counts=n), 10.0,
                               rtol=1e-5)  # fmt: skip


def test_flat_field_ratio_has_the_requested_rms_and_switches_off() -> None:
    det = _camera(200)
    fx = DetectorEffects(noise=False, flat_field_rms=0.07)
    state = _state(det, fx)
    bfx, n = _flat_light(10.0)
    img = _render(det, fx, bfx, state=state, inelastic_counts=n)
    plain = _render(det, fx.model_copy(update={"flat_field_rms": 0.0}), bfx, state=state,
                    inelastic_counts=n)  # fmt: skip
    ratio = img / plain
    assert ratio.mean() == pytest.approx(1.0, abs=0.002)
    assert ratio.std() == pytest.approx(0.07, rel=0.03)
    assert ratio.min() > 0
    np.testing.assert_allclose(plain, 10.0, rtol=1e-5)


def test_paralyzable_dead_time_follows_its_formula_and_switches_off() -> None:
    det = _camera(40)
    tau, t_exp = 2e-7, 1e-3
    fx = DetectorEffects(noise=False, dead_time_s=tau, exposure_s=t_exp)
    bfx = BeamEffects(zero_order=False, inelastic=True, inelastic_width_px=10.0)
    counts = {"inelastic_counts": 3e6}  # up to ~5000 counts per pixel: n tau / T ~ 1
    n = render_expected(NO_SPOTS, det, bfx, fx, **counts).astype(float)
    m = _render(det, fx, bfx, **counts)
    np.testing.assert_allclose(m, n * np.exp(-n * tau / t_exp), rtol=1e-6)
    assert (n * tau / t_exp).max() > 0.9  # strongly non-linear near the centre
    linear = _render(det, fx.model_copy(update={"dead_time_s": 0.0}), bfx, **counts)
    np.testing.assert_allclose(linear, n, rtol=1e-6)
    # with noise the same formula applies to the Poisson counts (same random stream)
    noisy = fx.model_copy(update={"noise": True})
    n_noisy = _render(det, noisy.model_copy(update={"dead_time_s": 0.0}), bfx, seed=4, **counts)
    m_noisy = _render(det, noisy, bfx, seed=4, **counts)
    assert np.any(n_noisy != np.round(n, 0))
    np.testing.assert_allclose(m_noisy, n_noisy * np.exp(-n_noisy * tau / t_exp), rtol=1e-6)


def test_saturation_clips_values_above_it() -> None:
    det = _camera(40)
    bfx = BeamEffects(zero_order=True, zero_order_width_px=2.0, inelastic=False)
    fx = DetectorEffects(noise=False, saturation_adu=500.0, gain_adu_per_count=2.0)
    img = _render(det, fx, bfx, zero_order_counts=1e5)
    free = _render(det, fx.model_copy(update={"saturation_adu": None}), bfx,
                   zero_order_counts=1e5)  # fmt: skip
    assert free.max() > 2000 and img.max() == 500.0
    np.testing.assert_array_equal(img, np.minimum(free, 500.0))


def test_expected_only_is_the_noise_free_truth() -> None:
    det = _camera(40)
    fx = DetectorEffects(noise=True, gain_adu_per_count=4.0, flat_field_rms=0.1,
                         dead_pixel_fraction=0.1)  # fmt: skip
    spots = _spots((0, 20.0, 20.0, 1000.0))
    truth = _render(det, fx, DARK, spots, expected_only=True)
    assert truth.sum() == pytest.approx(1000.0, rel=1e-6)
    assert truth.dtype == np.float32


# ---------------------------------------------------------------------------- layouts


def test_lambda_gaps_are_zero_and_gapless_when_switched_off() -> None:
    det = detector_preset("lambda-750k", 1000.0, BEAM)
    bfx, n = _flat_light(2.0)
    fx = DetectorEffects(noise=False, gaps=True)
    img = _render(det, fx, bfx, inelastic_counts=n)
    pmap = det.panel_map()
    assert np.all(img[pmap < 0] == 0)
    # chip-edge pixels next to a gap are 165 um wide: 3x (9x at a gap crossing)
    np.testing.assert_allclose(img[10, [255, 260, 515, 520]], 6.0, rtol=1e-5)
    np.testing.assert_allclose(img[[255, 260], 10], 6.0, rtol=1e-5)
    np.testing.assert_allclose(img[255, 255], 18.0, rtol=1e-5)
    np.testing.assert_allclose(img[10, 10], 2.0, rtol=1e-5)
    assert img.sum(dtype=float) == pytest.approx(2.0 * 1556 * 516, rel=1e-5)  # nothing lost
    gapless = _render(det, fx.model_copy(update={"gaps": False}), bfx, inelastic_counts=n)
    np.testing.assert_allclose(gapless, 2.0, rtol=1e-5)
    state = _state(det, DetectorEffects(dead_pixel_fraction=0.01, hot_pixel_fraction=0.01))
    assert not np.any((state.dead | state.hot)[pmap < 0])


def test_timepix_quad_wide_cross_pixels_collect_their_whole_area() -> None:
    det = detector_preset("timepix-quad", 700.0, BEAM)
    bfx, n = _flat_light(1.0)
    img = _render(det, DetectorEffects(noise=False), bfx, inelastic_counts=n)
    expected = np.ones((512, 512))
    expected[[255, 256], :] *= 3
    expected[:, [255, 256]] *= 3
    np.testing.assert_allclose(img, expected, rtol=1e-5)
    assert img.sum(dtype=float) == pytest.approx(516**2, rel=1e-5)


def test_spot_on_the_quad_cross_spills_into_the_wide_pixel() -> None:
    det = detector_preset("timepix-quad", 700.0, BEAM)
    fx = DetectorEffects(noise=False, psf_sigma_px=1.0)
    # a spot on the last normal pixel of chip 0: its right tail falls on the wide pixel
    img = render_expected(_spots((0, 254.0, 100.0, 1000.0)), det, DARK, fx)
    assert img.sum() == pytest.approx(1000.0, rel=1e-9)
    right = 1000 * (stats.norm.cdf(3.5, 0, 1.0) - stats.norm.cdf(0.5, 0, 1.0))
    assert img[:, 255].sum() == pytest.approx(right, rel=1e-5)
    # a spot on chip 1 (raw column 300) lands 4 physical pixels further right than raw
    img1 = render_expected(_spots((1, 300.0, 100.0, 1000.0)), det, DARK, fx)
    assert img1[100, 300] == img1.max()


def _tilted_pair() -> Detector:
    """Two panels in one raw array, the second rotated by 90 degrees: not a grid."""
    common = {"pixel_size_mm": 0.1, "min_ss": 0, "max_ss": 49}
    p0 = Panel(name="a", min_fs=0, max_fs=49, corner_x=-55.0, corner_y=-25.0,
               fs=(1.0, 0.0, 0.0), ss=(0.0, 1.0, 0.0), **common)  # fmt: skip
    p1 = Panel(name="b", min_fs=50, max_fs=99, corner_x=10.0, corner_y=-25.0,
               fs=(0.0, 1.0, 0.0), ss=(-1.0, 0.0, 0.0), **common)  # fmt: skip
    return Detector((p0, p1), clen=500.0, wavelength_source=None)


def test_general_detectors_render_panel_by_panel_in_lab_coordinates() -> None:
    det = _tilted_pair()
    assert layout(det).fold is None and len(layout(det).blocks) == 2
    fx = DetectorEffects(noise=False, psf_sigma_px=0.8)
    g, n_inel = 6.0, 1e7
    bfx = BeamEffects(zero_order=False, inelastic=True, inelastic_width_px=g)
    spots = _spots((1, 80.0, 20.0, 400.0))
    img = render_expected(spots, det, bfx, fx, inelastic_counts=n_inel, shift_mm=(0.3, -0.2))
    # background: the profile at each pixel's lab distance from the beam axis (in units
    # of panel 0's pixel size), times the pixel area; the spot adds 400 counts to panel b
    ss, fs = np.mgrid[0:50, 0:50]
    for k, sl in enumerate([np.s_[:, :50], np.s_[:, 50:]]):
        r = det.pixel_to_lab(k, fs, ss, shift_mm=(0.3, -0.2))
        rho = np.hypot(r[..., 0], r[..., 1]) / 0.1
        model = n_inel * g / (2 * np.pi * (rho**2 + g**2) ** 1.5)
        part = img[sl] - render_expected(spots, det, DARK, fx)[sl]
        far = rho > 3 * g  # midpoint rule good to 0.375 / rho^2 there
        np.testing.assert_allclose(part[far], model[far], rtol=2e-3, atol=1e-9 * n_inel)
    spot_only = render_expected(spots, det, DARK, fx)
    assert spot_only[:, 50:].sum() == pytest.approx(400.0, rel=1e-12)
    assert spot_only[20, 80] == spot_only.max()


# ---------------------------------------------------------------------------- states and inputs


def test_detector_state_draws() -> None:
    det = _camera(100)
    fx = DetectorEffects(dead_pixel_fraction=0.05, hot_pixel_fraction=0.02, flat_field_rms=0.2)
    a = _state(det, fx, seed=3)
    b = _state(det, fx, seed=3)
    np.testing.assert_array_equal(a.flat, b.flat)
    np.testing.assert_array_equal(a.dead, b.dead)
    assert a.dead.sum() == 500 and a.hot.sum() == 200 and not np.any(a.dead & a.hot)
    assert a.flat.dtype == np.float32 and a.flat.min() > 0
    assert a.flat.mean() == pytest.approx(1.0, abs=0.01)
    assert a.flat.std() == pytest.approx(0.2, rel=0.05)
    plain = _state(det, DetectorEffects())
    assert not plain.dead.any() and not plain.hot.any() and np.all(plain.flat == 1)


def test_bad_inputs_raise_data_errors() -> None:
    det = _camera(16)
    fx = DetectorEffects(noise=False)
    state = _state(det, fx)
    rng = np.random.default_rng(0)
    cases = [
        (pd.DataFrame({"panel": [0], "fs": [1.0], "ss": [1.0]}), {}, "counts"),
        (_spots((3, 1.0, 1.0, 1.0)), {}, "panel"),
        (_spots((0, np.nan, 1.0, 1.0)), {}, "fs"),
        (_spots((0, 1.0, 1.0, -1.0)), {}, "counts"),
        (NO_SPOTS, {"zero_order_counts": -5.0}, "zero_order_counts"),
        (NO_SPOTS, {"shift_mm": (0.0, np.inf)}, "shift_mm"),
    ]
    for spots, kw, field in cases:
        with pytest.raises(DataError) as info:
            render_frame(spots, det, DARK, fx, state, rng=rng, **kw)
        assert info.value.field == field
    with pytest.raises(DataError) as info:
        render_frame(NO_SPOTS, det, DARK, fx, _state(_camera(8), fx), rng=rng)
    assert info.value.field == "state"
    with pytest.raises(DataError) as info:
        render_frame(NO_SPOTS, det, DARK, DetectorEffects(noise=True), state)
    assert info.value.field == "rng"


def test_full_frame_is_fast() -> None:
    det = detector_preset("single", 1100.0, BEAM)
    fx = DetectorEffects(dead_pixel_fraction=0.001, hot_pixel_fraction=0.001,
                         flat_field_rms=0.05, dead_time_s=1e-8, saturation_adu=1e6)  # fmt: skip
    state = _state(det, fx)
    rng = np.random.default_rng(0)
    spots = _spots(*[(0, x, y, c) for x, y, c in zip(
        rng.uniform(0, 1023, 200), rng.uniform(0, 1023, 200), rng.exponential(500, 200),
        strict=True)])  # fmt: skip
    bfx = BeamEffects()
    kw = {"zero_order_counts": 2e6, "inelastic_counts": 5e5, "shift_mm": (0.01, 0.02),
          "distortion": EllipticalDistortion(1.02, 30.0), "rng": rng}  # fmt: skip
    render_frame(spots, det, bfx, fx, state, **kw)  # compile
    times = []
    for _ in range(5):
        t0 = time.thread_time()
        render_frame(spots, det, bfx, fx, state, **kw)
        times.append(time.thread_time() - t0)
    assert min(times) < 0.15  # ~20-40 ms on the 2-core development machine
