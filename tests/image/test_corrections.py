"""Tests of the detector corrections (crystalscope.image.corrections) against simulator truth."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from scipy.special import lambertw

from crystalscope.errors import ConfigError, DataError
from crystalscope.image.corrections import (
    Corrections,
    correct_frame,
    dead_time_correct,
    flat_field_correct,
    interpolate_bad_pixels,
    saturation_mask,
)
from crystalscope.io.pixel_mask import read_pixel_mask, write_pixel_map
from crystalscope.simulate.config import DetectorEffects, SerialConfig
from crystalscope.simulate.render import DetectorState, apply_response
from crystalscope.simulate.serial import SerialSimulation

TAU, T = 1e-7, 0.01  # dead time and exposure (s): T / tau = 1e5 counts
N_MAX = T / TAU  # true counts at the maximum of the paralyzable response
M_MAX = N_MAX / math.e  # maximum observable counts
EFFECTS = {
    "dead_pixel_fraction": 1e-3,
    "hot_pixel_fraction": 1e-4,
    "flat_field_rms": 0.05,
    "dead_time_s": TAU,
    "exposure_s": T,
    "saturation_adu": 1e5,
}


def _n80() -> float:
    """True counts (rising branch) at which the measured counts are 0.8 m_max."""
    return float(-lambertw(-0.8 * M_MAX / N_MAX).real * N_MAX)


@pytest.fixture(scope="module")
def quiet() -> SerialSimulation:
    """LAMBDA 750K, every detector effect but Poisson noise."""
    cfg = SerialConfig(n_crystals=2, seed=1, detector_effects={**EFFECTS, "noise": False})
    return SerialSimulation.build(cfg)


@pytest.fixture(scope="module")
def noisy() -> SerialSimulation:
    cfg = SerialConfig(n_crystals=2, seed=3, detector_effects=EFFECTS)
    return SerialSimulation.build(cfg)


def _corrections(sim: SerialSimulation, **kw: object) -> Corrections:
    det = sim.config.detector_effects
    args: dict[str, object] = {
        "bad": sim.state.dead | sim.state.hot,
        "valid": ~sim.detector.bad_pixel_mask(),
        "flat": sim.state.flat,
        "gain_adu_per_count": det.gain_adu_per_count,
        "dead_time_s": det.dead_time_s,
        "exposure_s": det.exposure_s,
        "saturation_adu": det.saturation_adu,
    }
    args.update(kw)
    return Corrections(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- dead time


def test_dead_time_round_trip_dense_grid() -> None:
    n = np.linspace(0.0, _n80(), 200_001)
    m = n * np.exp(-n / N_MAX)
    back64, beyond = dead_time_correct(m, TAU, T, dtype=np.float64)
    assert not beyond.any()
    rel = np.abs(back64[1:] / n[1:] - 1)
    assert rel.max() < 1e-11, f"float64 round trip: max relative error {rel.max():.2e}"
    back32, _ = dead_time_correct(m, TAU, T)
    rel32 = np.abs(back32[1:] / n[1:] - 1)
    assert back32.dtype == np.float32 and rel32.max() < 2e-7, f"float32: {rel32.max():.2e}"
    # against scipy's Lambert W, on the whole principal branch
    y = np.linspace(1e-12, 0.999999 / math.e, 100_001)
    ref = -lambertw(-y).real * N_MAX
    got, _ = dead_time_correct(y * N_MAX, TAU, T, dtype=np.float64)
    err = np.abs(got / ref - 1)
    assert err.max() < 1e-9, f"vs scipy.special.lambertw: max relative error {err.max():.2e}"


@settings(max_examples=300, deadline=None, database=None)
@given(
    frac=st.floats(0.0, 0.999),
    tau=st.floats(1e-9, 1e-5),
    exposure=st.floats(1e-4, 10.0),
)
def test_dead_time_round_trip_property(frac: float, tau: float, exposure: float) -> None:
    n = frac * exposure / tau
    m = n * math.exp(-n * tau / exposure)
    back, beyond = dead_time_correct(np.array([m]), tau, exposure, dtype=np.float64)
    assert not beyond[0]
    # conditioning near the maximum: dn/n = dm/m / (1 - n tau / T)
    assert back[0] == pytest.approx(n, rel=1e-12 / (1.0 - frac) + 1e-13, abs=1e-300)


def test_dead_time_maximum_and_special_values() -> None:
    counts = np.array([M_MAX, 1.2 * M_MAX, 0.99999 * M_MAX, 0.0, -5.0, np.nan, 3.0])
    n, beyond = dead_time_correct(counts, TAU, T, dtype=np.float64)
    assert beyond.tolist() == [True, True, False, False, False, False, False]
    assert n[0] == n[1] == pytest.approx(N_MAX)
    assert 0.99 * N_MAX < n[2] < N_MAX
    assert n[3] == 0.0 and n[4] == -5.0 and np.isnan(n[5])
    assert n[6] == pytest.approx(-lambertw(-3.0 / N_MAX).real * N_MAX, rel=1e-14)
    same, none = dead_time_correct(counts[:4], 0.0, T)
    assert np.array_equal(same, counts[:4].astype(np.float32)) and not none.any()


def test_dead_time_on_noise_free_frames(quiet: SerialSimulation) -> None:
    """Corrected counts within 1 % of the truth up to 80 % of the maximum observable rate."""
    corr = _corrections(quiet, interpolate=False)
    worst, n_checked, n_high = 0.0, 0, 0
    for i in range(2):
        raw = quiet.frame(i)
        truth = quiet.frame(i, expected_only=True).astype(np.float64)
        corrected, mask = correct_frame(raw, corr)
        true_counts = truth * quiet.state.flat
        # pixels beyond the maximum of m(n) (true counts > T / tau, next to the direct
        # beam) read like lower rates; no correction can tell them apart
        sel = ~mask & (raw <= 0.8 * M_MAX) & (true_counts <= N_MAX) & (truth > 0)
        rel = np.abs(corrected[sel] / truth[sel] - 1)
        worst = max(worst, float(rel.max()))
        n_checked += int(sel.sum())
        n_high += int((sel & (raw > 0.4 * M_MAX)).sum())
    assert n_high >= 20, f"only {n_high} pixels above 40 % of m_max: the test is too weak"
    assert worst <= 0.01, f"max relative error {worst:.2e} over {n_checked} pixels"
    assert worst < 1e-5, f"max relative error {worst:.2e}: expected float32 rounding only"


def test_dead_time_poisson_means() -> None:
    """Mean corrected counts of Poisson pixels of equal rate are within 1 % of the truth."""
    fractions = np.array([0.001, 0.05, 0.2, 0.5, 1.0])  # of the 80 % point's true counts
    rates = fractions * _n80()
    shape = (len(rates) * 100, 400)
    expected = np.repeat(rates, 100)[:, None] * np.ones(shape)
    state = DetectorState(np.zeros(shape, bool), np.zeros(shape, bool), np.ones(shape, np.float32))
    fx = DetectorEffects(noise=True, dead_time_s=TAU, exposure_s=T)
    raw = apply_response(expected, fx, state, np.random.default_rng(5))
    corrected, mask = correct_frame(raw, Corrections(dead_time_s=TAU, exposure_s=T))
    assert not mask.any()
    means = corrected.reshape(len(rates), -1).astype(np.float64).mean(axis=1)
    rel = means / rates - 1
    uncorrected = raw.reshape(len(rates), -1).mean(axis=1) / rates - 1
    assert np.all(np.abs(rel) < 0.01), f"relative bias per rate {rel} (uncorrected {uncorrected})"
    assert uncorrected[-1] < -0.3  # the correction had something to do


def test_fast_and_exact_paths_agree() -> None:
    """correct_frame's per-pixel kernels equal dead_time_correct on the same counts."""
    gain = 2.5
    counts = np.concatenate([np.geomspace(1e-3, 0.99 * M_MAX, 4000), [0.0, 1.0, 7.0]])
    raw = (np.resize(counts, 64 * 64) * gain).astype(np.float32).reshape(64, 64)
    corr = Corrections(gain_adu_per_count=gain, dead_time_s=TAU, exposure_s=T)
    corrected, mask = correct_frame(raw, corr)
    ref, beyond = dead_time_correct(raw.astype(np.float64) / gain, TAU, T, dtype=np.float64)
    assert not mask.any() and not beyond.any()
    np.testing.assert_allclose(corrected / gain, ref, rtol=3e-7)


# ------------------------------------------------------------------- flat, saturation


def test_flat_field_noise_free_equals_expected(quiet: SerialSimulation) -> None:
    fx = DetectorEffects(noise=False, flat_field_rms=0.05, gain_adu_per_count=3.0)
    truth = quiet.frame(0, expected_only=True)
    raw = apply_response(truth, fx, quiet.state, None)
    corr = _corrections(
        quiet, bad=None, dead_time_s=None, saturation_adu=None, gain_adu_per_count=3.0
    )
    corrected, mask = correct_frame(raw, corr)
    valid = ~quiet.detector.bad_pixel_mask()
    assert np.array_equal(mask, ~valid)
    np.testing.assert_allclose(corrected[valid], 3.0 * truth[valid], rtol=3e-7, atol=1e-30)
    direct = flat_field_correct(raw, quiet.state.flat)
    np.testing.assert_allclose(direct, 3.0 * truth, rtol=3e-7)
    assert np.abs(raw[valid] / (3.0 * truth[valid]) - 1).max() > 0.1  # there was a flat field


def test_flat_field_errors() -> None:
    frame = np.ones((4, 5), np.float32)
    flat = np.ones((4, 5), np.float32)
    for value in (0.0, -1.0, np.nan, np.inf):
        broken = flat.copy()
        broken[2, 3] = value
        with pytest.raises(DataError, match=r"\(fs, ss\) = \(3, 2\)") as err:
            flat_field_correct(frame, broken)
        assert err.value.field == "flat_field"
        with pytest.raises(DataError) as err:
            Corrections(flat=broken)
        assert err.value.field == "corrections.flat_field"
        valid = np.ones((4, 5), bool)
        valid[2, 3] = False  # a gap: its flat value does not matter
        assert flat_field_correct(frame, broken, valid=valid)[2, 3] == 1.0
        Corrections(flat=broken, valid=valid)
        Corrections(flat=broken, bad=~valid)
    with pytest.raises(DataError, match="shape"):
        flat_field_correct(frame, np.ones((5, 4)))


def test_saturation_flagged(quiet: SerialSimulation) -> None:
    level = 2000.0
    fx = DetectorEffects(noise=False, saturation_adu=level)
    raw = apply_response(quiet.frame(0, expected_only=True), fx, quiet.state, None)
    flagged = saturation_mask(raw, level)
    assert np.array_equal(flagged, raw >= level) and flagged.sum() > 10
    corr = _corrections(quiet, bad=None, flat=None, dead_time_s=None, saturation_adu=level)
    _, mask = correct_frame(raw, corr)
    gaps = quiet.detector.bad_pixel_mask()
    assert np.array_equal(mask, flagged | gaps)
    assert not saturation_mask(raw, None).any()
    with pytest.raises(ConfigError) as err:
        saturation_mask(raw, -1.0)
    assert err.value.field == "corrections.saturation_adu"


# ------------------------------------------------------------------------ bad pixels


def test_bad_pixels_interpolated_within_poisson_scatter(noisy: SerialSimulation) -> None:
    """Interpolated dead/hot pixels scatter about the truth as a mean of k Poisson values."""
    corr = _corrections(noisy)
    bad = corr.bad
    assert bad is not None
    z_all = []
    for i in range(2):
        corrected, mask = correct_frame(noisy.frame(i), corr)
        truth = noisy.frame(i, expected_only=True).astype(np.float64)
        assert not mask[bad & corr.valid].any()  # every bad pixel had neighbours
        # smooth background: the truth varies by < 20 % over the 3 x 3 neighbourhood
        hi = ndimage.maximum_filter(truth, 3)
        lo = ndimage.minimum_filter(truth, 3)
        smooth = (lo > 0.05) & (hi < 1.2 * lo) & (truth < 0.4 * M_MAX)
        used = ndimage.convolve((~mask & ~bad).astype(int), np.ones((3, 3), int), mode="constant")
        sel = bad & smooth & (used > 0)
        sigma = np.sqrt(truth[sel] / used[sel])
        z_all.append((corrected[sel] - truth[sel]) / sigma)
    z = np.concatenate(z_all)
    bias, rms = float(z.mean()), float(np.sqrt(np.mean(z**2)))
    assert z.size > 300, f"only {z.size} bad pixels on smooth background"
    assert abs(bias) < 4 / math.sqrt(z.size) + 0.05, f"mean z {bias:.3f} over {z.size} pixels"
    assert 0.8 < rms < 1.2, f"rms z {rms:.3f} over {z.size} pixels (1 = Poisson scatter)"


def test_bad_pixels_flagged_without_interpolation(noisy: SerialSimulation) -> None:
    corr = _corrections(noisy, interpolate=False)
    corrected, mask = correct_frame(noisy.frame(0), corr)
    assert corr.bad is not None and corr.valid is not None
    assert mask[corr.bad].all() and np.all(corrected[corr.bad & corr.valid] == 0.0)
    assert mask[~corr.valid].all()
    hot = noisy.state.hot & corr.valid  # hot pixels on masked chip edges stay flagged
    raw = noisy.frame(0)
    interp, mask2 = correct_frame(raw, _corrections(noisy))
    excess = np.median(raw[hot] - interp[hot])  # hot pixels read 1000 counts too many
    assert not mask2[hot].any() and excess > 900, f"hot pixels left in: {excess}"


def test_interpolation_rules() -> None:
    ss, fs = np.mgrid[0:20, 0:30]
    ramp = (2.0 * fs + 3.0 * ss + 1.0).astype(np.float32)
    bad = np.zeros(ramp.shape, bool)
    bad[5, 5] = True  # isolated: mean of 8 neighbours of a plane is exact
    bad[10:13, 10:13] = True  # a 3 x 3 cluster: the centre uses the 5 x 5 border
    bad[0, 0] = True  # corner: 3 neighbours
    out = interpolate_bad_pixels(ramp, bad)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[5, 5], ramp[5, 5])
    np.testing.assert_allclose(out[11, 11], ramp[11, 11])
    assert out[0, 0] == pytest.approx((2 + 3 + 5 + 3 * 1.0) / 3)
    assert np.array_equal(out[~bad], ramp[~bad])
    # gap pixels are neither used nor filled
    valid = np.ones(ramp.shape, bool)
    valid[:, 6] = False
    spiked = ramp.copy()
    spiked[:, 6] = 1e6
    both = bad.copy()
    both[3, 6] = True
    out = interpolate_bad_pixels(spiked, both, valid=valid)
    assert out[5, 5] < 1000 and out[3, 6] == 1e6
    # neighbours only from the same panel
    panel = (fs >= 6).astype(int)
    out = interpolate_bad_pixels(ramp, bad, panel_id=panel)
    same = [ramp[i, j] for i in (4, 5, 6) for j in (4, 5) if (i, j) != (5, 5)]
    assert out[5, 5] == pytest.approx(np.mean(same))
    # nothing usable within max_radius -> fill
    lonely = np.zeros((9, 9), bool)
    lonely[1:8, 1:8] = True
    out = interpolate_bad_pixels(np.ones((9, 9)), lonely, max_radius=2)
    assert np.isnan(out[4, 4]) and out[1, 1] == 1.0
    with pytest.raises(DataError) as err:
        interpolate_bad_pixels(ramp, bad[:5])
    assert err.value.field == "bad"


# ----------------------------------------------------------------------- bad input


def test_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Corrections(dead_time_s=1e-7)
    assert err.value.field == "corrections.exposure_s"
    with pytest.raises(ConfigError) as err:
        dead_time_correct(np.ones(3), 1e-7, None)
    assert err.value.field == "corrections.exposure_s"
    for kw, field in [
        ({"dead_time_s": -1.0, "exposure_s": 1.0}, "corrections.dead_time_s"),
        ({"dead_time_s": 1e-7, "exposure_s": 0.0}, "corrections.exposure_s"),
        ({"gain_adu_per_count": 0.0}, "corrections.gain_adu_per_count"),
        ({"saturation_adu": float("nan")}, "corrections.saturation_adu"),
        ({"max_radius": 0}, "corrections.max_radius"),
    ]:
        with pytest.raises(ConfigError) as err:
            Corrections(**kw)  # type: ignore[arg-type]
        assert err.value.field == field
    with pytest.raises(DataError) as data_err:
        Corrections(bad=np.zeros((4, 5), bool), flat=np.ones((5, 4)))
    assert data_err.value.field == "corrections.flat"
    with pytest.raises(DataError) as data_err:
        correct_frame(np.zeros((5, 4)), Corrections(bad=np.zeros((4, 5), bool)))
    assert data_err.value.field == "frame"
    # a mask file of the wrong shape names the file and the option
    path = write_pixel_map(tmp_path / "mask.h5", np.zeros((512, 1024), bool))
    with pytest.raises(DataError) as data_err:
        read_pixel_mask(path, shape=(516, 1556), field="corrections.mask_file")
    assert "mask.h5" in str(data_err.value) and data_err.value.field == "corrections.mask_file"


def test_nan_and_zero_frames_do_not_crash(quiet: SerialSimulation) -> None:
    corr = _corrections(quiet)
    gaps = quiet.detector.bad_pixel_mask()
    nan = np.full(gaps.shape, np.nan, np.float32)
    out, mask = correct_frame(nan, corr)
    assert mask.all()
    assert corr.bad is not None
    assert np.isnan(out[~gaps & ~corr.bad]).all()  # bad pixels without neighbours: 0
    zero = np.zeros(gaps.shape, np.float32)
    out, mask = correct_frame(zero, corr)
    assert np.array_equal(mask, gaps) and not out.any()
    partial = quiet.frame(0)
    partial[100:110, 300:320] = np.nan
    out, mask = correct_frame(partial, corr)
    block = np.zeros(gaps.shape, bool)
    block[100:110, 300:320] = True
    assert mask[block & ~corr.bad].all() and np.isfinite(out[~mask]).all()


def test_no_maps_and_integer_frames() -> None:
    raw = np.arange(12, dtype=np.uint16).reshape(3, 4)
    corr = Corrections(gain_adu_per_count=2.0)
    out, mask = correct_frame(raw, corr)
    assert out.dtype == np.float32 and not mask.any()
    np.testing.assert_array_equal(out, raw.astype(np.float32))
    out2, _ = correct_frame(raw[:2], corr)  # another shape with the same map-less object
    assert out2.shape == (2, 4)


def test_frame_status_flags_unusable_frames() -> None:
    """0 usable; 1 non-finite usable pixel; 2 all usable pixels zero; 3 all masked."""
    from crystalscope.image.corrections import frame_status

    mask = np.zeros((8, 9), bool)
    mask[:, 0] = True
    frame = np.ones((8, 9), np.float32)
    assert frame_status(frame, mask) == 0
    frame[3, 0] = np.nan  # masked: does not count
    assert frame_status(frame, mask) == 0
    frame[3, 4] = np.inf
    assert frame_status(frame, mask) == 1
    zeros = np.zeros((8, 9), np.uint16)
    zeros[:, 0] = 7  # only masked pixels are non-zero
    assert frame_status(zeros, mask) == 2
    assert frame_status(frame, np.ones((8, 9), bool)) == 3
    with pytest.raises(DataError, match="mask shape"):
        frame_status(frame, mask[:, :5])
