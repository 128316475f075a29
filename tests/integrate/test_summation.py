"""Summation integration: exact values on constructed frames, flags, noise statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import erf

from crystalscope.errors import ConfigError, DataError
from crystalscope.integrate.observations import (
    FLAG_EDGE,
    FLAG_FEW_BACKGROUND,
    FLAG_MASKED,
    FLAG_OVERLAP,
    FLAG_SATURATED,
)
from crystalscope.integrate.summation import SPOT_COLUMNS, IntegrationParams, integrate_spots

SPOT = {(0, 0): 100.0, (0, 1): 50.0, (0, -1): 50.0, (1, 0): 50.0, (-1, 0): 50.0}  # sum 300


def disk_offsets(r_lo: float, r_hi: float, fs: float = 0.0, ss: float = 0.0) -> np.ndarray:
    """Integer (di, dj) offsets of pixels with r_lo <= rho <= r_hi from (fs, ss) (brute force)."""
    g = np.arange(-12, 13)
    di, dj = np.meshgrid(g, g, indexing="ij")
    rho2 = (dj + round(fs) - fs) ** 2 + (di + round(ss) - ss) ** 2
    sel = (rho2 >= r_lo**2) & (rho2 <= r_hi**2)
    return np.column_stack([di[sel], dj[sel]])


def frame_with_spot(bg: np.ndarray, ss: int, fs: int) -> np.ndarray:
    out = bg.copy()
    for (di, dj), v in SPOT.items():
        out[ss + di, fs + dj] += v
    return out


def test_pixel_counts_of_the_default_disk_and_annulus() -> None:
    assert len(disk_offsets(0, 3)) == 29
    assert len(disk_offsets(4, 6)) == 68
    res = integrate_spots(np.full((40, 40), 3.0), [20.0], [20.0], IntegrationParams())
    assert int(res["n_peak"][0]) == 29 and int(res["n_bg"][0]) == 68


@pytest.mark.parametrize("background", ["plane", "mean"])
def test_constant_background_gives_exact_sum_and_poisson_sigma(background: str) -> None:
    frame = frame_with_spot(np.full((100, 120), 10.0), 50, 40)
    params = IntegrationParams(background=background, gain_adu_per_count=2.0)  # type: ignore[arg-type]
    res = integrate_spots(frame, [40.0], [50.0], params)
    row = res.iloc[0]
    assert row["I"] == pytest.approx(300.0, abs=1e-9)
    assert row["sigma"] == pytest.approx(math.sqrt(2.0 * 300.0), rel=1e-12)  # var_bg = 0
    assert row["background"] == pytest.approx(10.0)
    assert row["bg_sigma"] == pytest.approx(0.0, abs=1e-9)
    assert row["peak"] == 110.0
    assert int(row["flags"]) == 0
    assert list(res.columns) == list(SPOT_COLUMNS)
    assert {c: str(t) for c, t in res.dtypes.items()} == SPOT_COLUMNS


def test_plane_removes_a_gradient_exactly_even_with_a_partial_annulus() -> None:
    i, j = np.mgrid[0:100, 0:120].astype(float)
    bg = 5.0 + 0.7 * j - 0.3 * i
    frame = frame_with_spot(bg, 50, 40)
    # a second predicted spot 5 px to the right removes part of the first one's annulus
    fs, ss = [40.0, 45.0], [50.0, 50.0]
    plane = integrate_spots(frame, fs, ss, IntegrationParams(background="plane"))
    assert plane["I"][0] == pytest.approx(300.0, abs=1e-8)
    assert plane["background"][0] == pytest.approx(5.0 + 0.7 * 40 - 0.3 * 50, abs=1e-10)
    assert plane["bg_sigma"][0] == pytest.approx(0.0, abs=1e-6)
    # the remaining annulus: expected pixels and the bias of a plain mean (computed here)
    ann = disk_offsets(4, 6)
    other = {tuple(o) for o in disk_offsets(0, 3) + np.array([0, 5])}
    kept = np.array([o for o in ann if tuple(o) not in other])
    assert int(plane["n_bg"][0]) == len(kept) == 68 - 13
    mean = integrate_spots(frame, fs, ss, IntegrationParams(background="mean"))
    bias_per_px = np.mean(0.7 * kept[:, 1] - 0.3 * kept[:, 0])
    assert abs(bias_per_px) > 0.1
    assert mean["I"][0] == pytest.approx(300.0 - 29 * bias_per_px, abs=1e-9)


def test_sigma_follows_the_documented_formula() -> None:
    i, j = np.mgrid[0:60, 0:60]
    bg = 10.0 + 2.0 * np.where((i + j) % 2 == 0, 1.0, -1.0)  # checkerboard 8 / 12
    frame = frame_with_spot(bg, 30, 30)
    gain = 2.5
    res = integrate_spots(
        frame, [30.0], [30.0], IntegrationParams(background="mean", gain_adu_per_count=gain)
    )
    peak_px = disk_offsets(0, 3) + 30
    ann_px = disk_offsets(4, 6) + 30
    vb = bg[ann_px[:, 0], ann_px[:, 1]]
    n_p, n_b = len(peak_px), len(vb)
    intensity = frame[peak_px[:, 0], peak_px[:, 1]].sum() - n_p * vb.mean()
    var_bg = vb.var(ddof=1)
    sigma = math.sqrt(gain * intensity + n_p * var_bg * (1 + n_p / n_b))
    row = res.iloc[0]
    assert row["I"] == pytest.approx(intensity, rel=1e-12)
    assert row["sigma"] == pytest.approx(sigma, rel=1e-12)
    assert row["bg_sigma"] == pytest.approx(math.sqrt(var_bg), rel=1e-12)
    # a negative intensity contributes no Poisson term
    dip = bg.copy()
    dip[30, 30] -= 40.0
    neg = integrate_spots(dip, [30.0], [30.0], IntegrationParams(background="mean"))
    i_neg = dip[peak_px[:, 0], peak_px[:, 1]].sum() - n_p * vb.mean()
    assert i_neg < 0
    assert neg["I"][0] == pytest.approx(i_neg, rel=1e-12)
    assert neg["sigma"][0] == pytest.approx(math.sqrt(n_p * var_bg * (1 + n_p / n_b)), rel=1e-12)


def test_plane_sigma_uses_residual_variance_about_the_plane() -> None:
    rng = np.random.default_rng(5)
    j = np.mgrid[0:60, 0:60][1].astype(float)
    noise = rng.normal(0, 1.5, (60, 60))
    frame = 20.0 + 0.5 * j + noise
    res = integrate_spots(frame, [30.0], [30.0], IntegrationParams(background="plane"))
    ann = disk_offsets(4, 6) + 30
    x = np.column_stack([np.ones(len(ann)), ann[:, 1] - 30.0, ann[:, 0] - 30.0])
    v = frame[ann[:, 0], ann[:, 1]]
    beta, *_ = np.linalg.lstsq(x, v, rcond=None)
    var = np.sum((v - x @ beta) ** 2) / (len(v) - 3)
    peak = disk_offsets(0, 3) + 30
    xp = np.column_stack([np.ones(len(peak)), peak[:, 1] - 30.0, peak[:, 0] - 30.0])
    intensity = frame[peak[:, 0], peak[:, 1]].sum() - (xp @ beta).sum()
    assert res["bg_sigma"][0] == pytest.approx(math.sqrt(var), rel=1e-9)
    assert res["I"][0] == pytest.approx(intensity, rel=1e-9, abs=1e-9)


def test_masked_and_nonfinite_peak_pixels_are_left_out_and_flagged() -> None:
    frame = frame_with_spot(np.full((60, 60), 10.0), 30, 30)
    mask = np.zeros(frame.shape, bool)
    mask[30, 31] = True  # a peak pixel (+50 above background)
    res = integrate_spots(frame, [30.0], [30.0], IntegrationParams(), mask=mask)
    assert int(res["flags"][0]) == FLAG_MASKED
    assert int(res["n_peak"][0]) == 28
    assert res["I"][0] == pytest.approx(250.0)
    nan_frame = frame.copy()
    nan_frame[30, 31] = np.nan
    res_nan = integrate_spots(nan_frame, [30.0], [30.0], IntegrationParams())
    assert int(res_nan["flags"][0]) == FLAG_MASKED and res_nan["I"][0] == pytest.approx(250.0)
    # a masked background pixel is only left out
    mask_bg = np.zeros(frame.shape, bool)
    mask_bg[30, 35] = True
    res_bg = integrate_spots(frame, [30.0], [30.0], IntegrationParams(), mask=mask_bg)
    assert int(res_bg["flags"][0]) == 0 and int(res_bg["n_bg"][0]) == 67


def test_saturated_peak_pixels_are_flagged() -> None:
    frame = frame_with_spot(np.full((60, 60), 10.0), 30, 30)
    flagged = integrate_spots(frame, [30.0], [30.0], IntegrationParams(saturation_adu=110.0))
    assert int(flagged["flags"][0]) == FLAG_SATURATED
    below = integrate_spots(frame, [30.0], [30.0], IntegrationParams(saturation_adu=110.5))
    assert int(below["flags"][0]) == 0
    never = integrate_spots(frame, [30.0], [30.0], IntegrationParams())
    assert int(never["flags"][0]) == 0


def test_edge_of_array_and_of_panel() -> None:
    frame = np.full((60, 100), 10.0)
    res = integrate_spots(frame, [1.0, 30.0], [30.0, 58.6], IntegrationParams())
    assert res["flags"].tolist() == [FLAG_EDGE, FLAG_EDGE]
    on_left = int(np.sum(disk_offsets(0, 3)[:, 1] + 1 >= 0))  # columns >= 0
    on_bottom = int(np.sum(disk_offsets(0, 3, 30.0, 58.6)[:, 0] + 59 <= 59))  # rows <= 59
    assert (on_left, on_bottom) == (23, 18)
    assert res["n_peak"].tolist() == [on_left, on_bottom]
    assert res["I"].abs().max() < 1e-9
    # two panels side by side: columns < 50 and >= 50
    pmap = np.where(np.arange(100)[None, :] < 50, 0, 1).repeat(60, axis=0)
    res_p = integrate_spots(frame, [48.0, 30.0], [30.0, 30.0], IntegrationParams(), panel_map=pmap)
    assert res_p["flags"].tolist() == [FLAG_EDGE, 0]
    assert int(res_p["n_peak"][0]) == int(np.sum(disk_offsets(0, 3)[:, 1] + 48 < 50)) == 23
    # a spot whose centre pixel is in a gap (panel -1) has no usable pixel
    pmap_gap = pmap.copy()
    pmap_gap[:, 50] = -1
    gap = integrate_spots(frame, [50.2], [30.0], IntegrationParams(), panel_map=pmap_gap)
    assert int(gap["flags"][0]) == FLAG_EDGE | FLAG_FEW_BACKGROUND
    assert int(gap["n_peak"][0]) == 0 and math.isnan(gap["I"][0])


def test_overlapping_peak_disks_and_annulus_exclusion() -> None:
    frame = np.full((60, 80), 10.0)
    near = integrate_spots(frame, [20.0, 24.0], [30.0, 30.0], IntegrationParams())
    assert near["flags"].tolist() == [FLAG_OVERLAP, FLAG_OVERLAP]
    apart = integrate_spots(frame, [20.0, 27.0], [30.0, 30.0], IntegrationParams())
    assert apart["flags"].tolist() == [0, 0]
    # the second spot's peak disk is removed from the first spot's annulus
    ann = {tuple(o) for o in disk_offsets(4, 6)}
    other = {tuple(o) for o in disk_offsets(0, 3) + np.array([0, 7])}
    assert int(apart["n_bg"][0]) == len(ann - other) < 68


def test_few_background_pixels() -> None:
    frame = np.full((60, 60), 10.0)
    few = integrate_spots(frame, [30.0], [30.0], IntegrationParams(min_background_px=69))
    assert int(few["flags"][0]) == FLAG_FEW_BACKGROUND and few["I"][0] == pytest.approx(0.0)
    mask = np.ones(frame.shape, bool)
    peak = disk_offsets(0, 3) + 30
    mask[peak[:, 0], peak[:, 1]] = False  # only the peak survives
    none = integrate_spots(frame, [30.0], [30.0], IntegrationParams(), mask=mask)
    assert int(none["n_bg"][0]) == 0
    assert int(none["flags"][0]) == FLAG_FEW_BACKGROUND
    assert math.isnan(none["I"][0]) and math.isnan(none["sigma"][0])


def _spot_weights(f0: float, s0: float, sigma: float, half: int = 5) -> tuple[np.ndarray, ...]:
    """Pixel-integrated Gaussian weights around (f0, s0): rows, cols, weights (sum ~ 1)."""
    cj, ci = round(f0), round(s0)
    j = np.arange(cj - half, cj + half + 1)
    i = np.arange(ci - half, ci + half + 1)
    c = sigma * math.sqrt(2.0)
    wj = 0.5 * (erf((j + 0.5 - f0) / c) - erf((j - 0.5 - f0) / c))
    wi = 0.5 * (erf((i + 0.5 - s0) / c) - erf((i - 0.5 - s0) / c))
    return i, j, np.outer(wi, wj)


def _synthetic(rng: np.random.Generator, counts: float, bg: float, gain: float) -> tuple:
    """A frame of Poisson spots on a flat background; truth counts inside the peak disk."""
    n_ss, n_fs, step = 150, 600, 15
    ss, fs = np.meshgrid(np.arange(10, n_ss - 10, step), np.arange(10, n_fs - 10, step))
    fs = fs.ravel() + rng.uniform(-0.5, 0.5, fs.size)
    ss = ss.ravel() + rng.uniform(-0.5, 0.5, ss.size)
    expected = np.full((n_ss, n_fs), bg)
    inside = np.empty(fs.size)
    for k, (f0, s0) in enumerate(zip(fs, ss, strict=True)):
        i, j, w = _spot_weights(f0, s0, 0.7)
        expected[np.ix_(i, j)] += counts * w
        disk = (j[None, :] - f0) ** 2 + (i[:, None] - s0) ** 2 <= 9.0
        inside[k] = counts * w[disk].sum()
    frame = gain * rng.poisson(expected).astype(float)
    return frame, fs, ss, gain * inside


@pytest.mark.parametrize(
    ("background", "subtract", "gain"),
    [("plane", False, 1.0), ("mean", False, 2.5), ("mean", True, 1.0), ("plane", True, 2.5)],
)
def test_z_scores_of_poisson_spots_are_standard(
    background: str, subtract: bool, gain: float
) -> None:
    """Over 800 spots of 60 counts on 15 counts/px: <z> ~ 0, std(z) ~ 1."""
    rng = np.random.default_rng(11)
    z_all = []
    for _ in range(2):
        frame, fs, ss, truth = _synthetic(rng, 60.0, 15.0, gain)
        if subtract:  # a background-subtracted pattern: the level is gone, its noise is not
            frame -= gain * 15.0
        params = IntegrationParams(background=background, gain_adu_per_count=gain)  # type: ignore[arg-type]
        res = integrate_spots(frame, fs, ss, params)
        assert (res["flags"] == 0).all()
        z_all.append((res["I"].to_numpy() - truth) / res["sigma"].to_numpy())
    z = np.concatenate(z_all)
    msg = (
        f"{background}, subtracted={subtract}, gain={gain}: <z> = {z.mean():.3f}, std {z.std():.3f}"
    )
    assert abs(z.mean()) < 0.12, msg
    assert 0.9 < z.std() < 1.1, msg


def test_frame_dtypes_give_identical_results() -> None:
    rng = np.random.default_rng(2)
    frame, fs, ss, _ = _synthetic(rng, 80.0, 5.0, 1.0)
    ref = integrate_spots(frame, fs, ss, IntegrationParams())
    for dtype in (np.float32, np.uint16, np.int32):
        other = integrate_spots(frame.astype(dtype), fs, ss, IntegrationParams())
        np.testing.assert_allclose(other["I"], ref["I"], rtol=1e-6, atol=1e-6)
    mask_bool = np.zeros(frame.shape, bool)
    mask_bool[::7, ::5] = True
    mask_int = np.where(mask_bool, 256, 0)  # any non-zero value is a bad pixel
    a = integrate_spots(frame, fs, ss, IntegrationParams(), mask=mask_bool)
    b = integrate_spots(frame, fs, ss, IntegrationParams(), mask=mask_int)
    assert (a["flags"] & FLAG_MASKED).sum() > 10
    np.testing.assert_array_equal(a["I"], b["I"])
    np.testing.assert_array_equal(a["flags"], b["flags"])


def test_no_spots_gives_an_empty_typed_table() -> None:
    res = integrate_spots(np.zeros((10, 10)), [], [], IntegrationParams())
    assert len(res) == 0
    assert {c: str(t) for c, t in res.dtypes.items()} == SPOT_COLUMNS


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"r_peak_px": 0.0}, "r_peak_px"),
        ({"r_peak_px": 5.0}, "r_bg_inner_px"),
        ({"r_bg_outer_px": 4.0}, "r_bg_inner_px"),
        ({"background": "poly"}, "background"),
        ({"gain_adu_per_count": -1.0}, "gain_adu_per_count"),
        ({"saturation_adu": 0.0}, "saturation_adu"),
        ({"min_background_px": -1}, "min_background_px"),
        ({"min_background_px": 2.5}, "min_background_px"),
        ({"partiality": "lorentzian"}, "partiality"),
        ({"prediction_factor": float("nan")}, "prediction_factor"),
    ],
)
def test_invalid_parameters_raise_config_errors(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        IntegrationParams(**kwargs)
    assert info.value.field == field


def test_invalid_inputs_raise_data_errors() -> None:
    frame = np.zeros((20, 20))
    p = IntegrationParams()
    cases = [
        (lambda: integrate_spots(np.zeros((2, 20, 20)), [1.0], [1.0], p), "frame"),
        (lambda: integrate_spots(frame, [np.nan], [1.0], p), "fs"),
        (lambda: integrate_spots(frame, [1.0], [1e300], p), "fs"),
        (lambda: integrate_spots(frame, [1.0, 2.0], [1.0], p), "ss"),
        (lambda: integrate_spots(frame, [1.0], [1.0], p, mask=np.zeros((5, 5), bool)), "mask"),
        (lambda: integrate_spots(frame, [1.0], [1.0], p, panel_map=np.zeros(3, int)), "panel_map"),
        (lambda: integrate_spots(np.array([["a"]]), [1.0], [1.0], p), "frame"),
    ]
    for call, field in cases:
        with pytest.raises(DataError) as info:
            call()
        assert info.value.field == field


def test_summation_kernel_on_a_full_frame() -> None:
    """~550 spots on a 516 x 1556 frame, repeated calls give the same result (speed:
    benchmarks)."""
    rng = np.random.default_rng(0)
    frame = rng.poisson(5.0, (516, 1556)).astype(np.float32)
    fs = rng.uniform(5, 1550, 550)
    ss = rng.uniform(5, 510, 550)
    mask = np.zeros(frame.shape, bool)
    pmap = np.zeros(frame.shape, np.int64)
    first = integrate_spots(frame, fs, ss, IntegrationParams(), mask=mask, panel_map=pmap)
    again = integrate_spots(frame, fs, ss, IntegrationParams(), mask=mask, panel_map=pmap)
    assert len(first) == 550
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
