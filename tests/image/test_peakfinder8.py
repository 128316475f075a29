"""peakfinder8: semantics on small synthetic frames, compiled vs reference, simulator truth."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from crystalscope.errors import ConfigError, DataError
from crystalscope.image import _pf8_kernels as _k
from crystalscope.image import peakfinder8 as pf8_module
from crystalscope.image.peakfinder8 import (
    PeakFinder8Params,
    PeakList,
    peakfinder8,
    radial_statistics,
)
from crystalscope.image.peakfinder8_reference import (
    peakfinder8_reference,
    radial_statistics_reference,
)
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation

# ------------------------------------------------------------------ synthetic frames

SHAPE = (160, 160)
CENTRE = (80.0, 80.0)


def _radius(shape: tuple[int, int] = SHAPE, centre: tuple[float, float] = CENTRE) -> np.ndarray:
    ss, fs = np.indices(shape)
    return np.hypot(fs - centre[0], ss - centre[1]).astype(np.float32)


def _background(seed: int = 0, level: float = 20.0) -> np.ndarray:
    return np.random.default_rng(seed).poisson(level, SHAPE).astype(np.float32)


def _gaussian(fs: float, ss: float, counts: float, sigma: float = 1.0) -> np.ndarray:
    yy, xx = np.indices(SHAPE)
    g = np.exp(-((xx - fs) ** 2 + (yy - ss) ** 2) / (2 * sigma**2))
    return (counts * g / g.sum()).astype(np.float32)


def _block(frame: np.ndarray, fs: int, ss: int, size: tuple[int, int], value: float) -> None:
    frame[ss : ss + size[0], fs : fs + size[1]] += value


def test_single_gaussian_spot_centroid() -> None:
    truth = (101.3, 57.6)
    frame = _background(1) + np.random.default_rng(2).poisson(_gaussian(*truth, 3000.0))
    peaks = peakfinder8(frame, _radius())
    assert len(peaks) == 1, peaks.to_frame()
    err = np.hypot(peaks.fs[0] - truth[0], peaks.ss[0] - truth[1])
    assert err < 0.1, f"centroid error {err:.3f} px"
    assert 2700 < peaks.intensity[0] < 3100  # background-subtracted sum of the region
    assert abs(peaks.background[0] - 20.0) < 2.0
    assert peaks.snr[0] > 50


def test_pixel_centre_convention() -> None:
    frame = _background(3)
    _block(frame, 40, 30, (2, 2), 400.0)  # pixels fs 40-41, ss 30-31
    peaks = peakfinder8(frame, _radius())
    assert len(peaks) == 1
    assert abs(peaks.fs[0] - 40.5) < 0.05 and abs(peaks.ss[0] - 30.5) < 0.05


def _three_blocks() -> np.ndarray:
    frame = _background(4)
    _block(frame, 30, 120, (1, 1), 500.0)  # 1 pixel
    _block(frame, 120, 120, (2, 2), 500.0)  # 4 pixels
    _block(frame, 120, 30, (3, 3), 500.0)  # 9 pixels
    return frame


@pytest.mark.parametrize(
    ("min_pix", "max_pix", "sizes"),
    [(1, 200, [1, 4, 9]), (2, 200, [4, 9]), (5, 200, [9]), (2, 8, [4]), (10, 200, [])],
)
def test_min_max_pixels(min_pix: int, max_pix: int, sizes: list[int]) -> None:
    params = PeakFinder8Params(min_pix=min_pix, max_pix=max_pix)
    peaks = peakfinder8(_three_blocks(), _radius(), params=params)
    assert sorted(peaks.n_pixels.tolist()) == sizes


def test_resolution_limits() -> None:
    frame = _background(5)
    for r in (20, 40, 60):  # 2x2 blocks centred at these radii along +fs
        _block(frame, int(CENTRE[0]) + r, int(CENTRE[1]), (2, 2), 400.0)
    found = {
        (lo, hi): np.floor(peakfinder8(frame, _radius(), params=PeakFinder8Params(
            min_res_px=lo, max_res_px=hi)).fs - CENTRE[0]).tolist()
        for lo, hi in [(0.0, 1e9), (30.0, 1e9), (0.0, 50.0), (30.0, 50.0)]
    }  # fmt: skip
    assert found == {
        (0.0, 1e9): [20.0, 40.0, 60.0], (30.0, 1e9): [40.0, 60.0],
        (0.0, 50.0): [20.0, 40.0], (30.0, 50.0): [40.0],
    }  # fmt: skip


def test_threshold_adu() -> None:
    frame = _background(6)
    _block(frame, 50, 100, (2, 2), 60.0)  # about 13 sigma above the background of 20
    assert len(peakfinder8(frame, _radius(), params=PeakFinder8Params(threshold_adu=50))) == 1
    assert len(peakfinder8(frame, _radius(), params=PeakFinder8Params(threshold_adu=90))) == 0


def test_masked_pixels_are_ignored() -> None:
    frame = _three_blocks()
    mask = np.zeros(SHAPE, bool)
    mask[30:33, 120:123] = True  # the whole 9-pixel block
    mask[120, 120] = True  # one pixel of the 4-pixel block
    peaks = peakfinder8(frame, _radius(), mask)
    assert peaks.n_pixels.tolist() == [3]
    # a mask of integers (non-zero = bad) is the same
    same = peakfinder8(frame, _radius(), mask.astype(np.int16) * 7)
    np.testing.assert_array_equal(same.fs, peaks.fs)


def test_bad_frames_give_empty_lists() -> None:
    r = _radius()
    for frame in (np.full(SHAPE, np.nan, np.float32), np.zeros(SHAPE, np.float32)):
        peaks = peakfinder8(frame, r)
        assert isinstance(peaks, PeakList) and len(peaks) == 0
        assert list(peaks.to_frame().columns) == [
            "fs", "ss", "intensity", "n_pixels", "snr", "max_adu", "background"
        ]  # fmt: skip
    assert len(peakfinder8(_three_blocks(), r, np.ones(SHAPE, bool))) == 0
    assert len(peakfinder8(_three_blocks(), np.full(SHAPE, np.nan, np.float32))) == 0
    # NaN pixels and a NaN radius (gaps) are simply unusable
    frame = _three_blocks()
    frame[:, :10] = np.nan
    r[:10, :] = np.nan
    assert sorted(peakfinder8(frame, r).n_pixels.tolist()) == [4, 9]
    o, s = radial_statistics(np.zeros(SHAPE), r)
    assert np.all(o[np.isfinite(o)] == 0) and np.all(s[np.isfinite(s)] == 0)


@pytest.mark.parametrize(
    ("frame", "radius", "mask", "field"),
    [
        (np.zeros((10, 12)), np.zeros((10, 11)), None, "radius"),
        (np.zeros((10, 12)), np.zeros((10, 12)), np.zeros((12, 10), bool), "mask"),
        (np.zeros(12), np.zeros(12), None, "frame"),
        (np.zeros((10, 12), complex), np.zeros((10, 12)), None, "frame"),
        (np.zeros((10, 12)), np.full((10, 12), 3e6), None, "radius"),
    ],
)
def test_wrong_inputs_raise_data_error(
    frame: np.ndarray, radius: np.ndarray, mask: np.ndarray | None, field: str
) -> None:
    with pytest.raises(DataError) as err:
        peakfinder8(frame, radius, mask)
    assert err.value.field == field


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("min_snr", 0.0), ("min_snr", float("nan")), ("threshold_adu", float("inf")),
        ("min_pix", 0), ("max_pix", 1.5), ("local_bg_radius", 0), ("iterations", 0),
        ("max_peaks", 0), ("min_res_px", -1.0), ("max_res_px", 0.0), ("crystfel_snr", "yes"),
        ("min_pix", True),
    ],
)  # fmt: skip
def test_params_are_validated(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        PeakFinder8Params(**{name: value})  # type: ignore[arg-type]
    assert err.value.field == f"peaks.{name}"
    with pytest.raises(ConfigError, match="below min_pix"):
        PeakFinder8Params(min_pix=10, max_pix=5)


def test_crystfel_snr_differs_by_sqrt_npix() -> None:
    frame = _three_blocks()
    ours = peakfinder8(frame, _radius())
    theirs = peakfinder8(frame, _radius(), params=PeakFinder8Params(crystfel_snr=True))
    np.testing.assert_allclose(theirs.snr, ours.snr * np.sqrt(ours.n_pixels), rtol=1e-12)


def test_max_peaks_keeps_the_first() -> None:
    frame = _background(7)
    for k in range(6):
        _block(frame, 20 + 20 * k, 40, (2, 2), 400.0)
    every = peakfinder8(frame, _radius())
    first = peakfinder8(frame, _radius(), params=PeakFinder8Params(max_peaks=4))
    assert len(every) == 6 and len(first) == 4
    np.testing.assert_array_equal(first.fs, every.fs[:4])


# ------------------------------------------------------------------ simulated frames


@dataclass
class Sim:
    sim: SerialSimulation
    mask: np.ndarray
    frames: list[np.ndarray]
    radii: list[np.ndarray]


@pytest.fixture(scope="module")
def lambda_sim() -> Sim:
    """LAMBDA 750K frames at a low dose (spot SNRs spread around 5), realistic effects."""
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": 6,
            "seed": 11,
            "beam_effects": {
                "centre_jitter_px": 0.5, "ellipticity": 0.02, "ellipticity_angle_deg": 30,
                "dose_e_per_a2": 0.1,
            },
            "detector_effects": {
                "dead_pixel_fraction": 1e-3, "hot_pixel_fraction": 1e-4,
                "flat_field_rms": 0.05, "dead_time_s": 1e-7, "saturation_adu": 1e5,
            },
        }
    )  # fmt: skip
    sim = SerialSimulation.build(cfg)
    mask = sim.state.dead | sim.detector.bad_pixel_mask()
    ss, fs = np.indices(mask.shape)
    frames, radii = [], []
    for i in range(len(sim.shots)):
        cx, cy = sim.truth_centres()[i]
        frames.append(sim.frame(i))
        radii.append(np.hypot(fs - cx, ss - cy).astype(np.float32))
    return Sim(sim, mask, frames, radii)


FIND = PeakFinder8Params(threshold_adu=4.5, min_snr=3.5, min_res_px=20.0)


def _same_peaks(a: PeakList, b: PeakList) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.n_pixels, b.n_pixels)
    for name in ("fs", "ss", "intensity", "max_adu", "background"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(a.snr, b.snr, rtol=1e-7)


@pytest.mark.parametrize(
    "params",
    [FIND, PeakFinder8Params(), PeakFinder8Params(
        min_snr=4.0, crystfel_snr=True, local_bg_radius=2, max_res_px=600.0, min_pix=1)],
    ids=["realistic", "defaults", "crystfel-snr"],
)  # fmt: skip
def test_compiled_equals_reference(lambda_sim: Sim, params: PeakFinder8Params) -> None:
    for i in (0, 3):
        frame, r = lambda_sim.frames[i], lambda_sim.radii[i]
        ours = peakfinder8(frame, r, lambda_sim.mask, params)
        assert len(ours) > 100
        _same_peaks(ours, peakfinder8_reference(frame, r, lambda_sim.mask, params))
        o, s = radial_statistics(
            frame, r, lambda_sim.mask, min_snr=params.min_snr,
            threshold_adu=params.threshold_adu, min_res_px=params.min_res_px,
            max_res_px=params.max_res_px,
        )  # fmt: skip
        o_ref, s_ref, _ = radial_statistics_reference(frame, r, lambda_sim.mask, params)
        np.testing.assert_allclose(o, o_ref, rtol=1e-6, equal_nan=True)
        np.testing.assert_allclose(s, s_ref, rtol=1e-5, atol=1e-7, equal_nan=True)


def test_core_and_repair_paths_are_exact(lambda_sim: Sim) -> None:
    """The sampled core intervals are only a speed-up: without them (every pixel listed)
    the peaks are the same, and misleading ones are caught and redone."""
    frame, r = lambda_sim.frames[1], lambda_sim.radii[1]
    data, rad, mask8 = pf8_module._prepare(frame, r, lambda_sim.mask)
    fast = pf8_module._find(data, rad, mask8, FIND)
    _same_peaks(fast, pf8_module._find(data, rad, mask8, FIND, sample_stride=0))


def test_misleading_sample_is_repaired() -> None:
    # constant background 100, but the sampled runs alternate 0 / 200: the sample's
    # core interval (about 100 +- 175) is wider than the exact clipping intervals
    frame = np.full((300, 400), 100.0, np.float32)
    flat = frame.ravel()
    step = pf8_module.SAMPLE_STRIDE * 16
    for start in range(0, flat.size, step):
        flat[start : start + 16 : 2] = 0.0
        flat[start + 1 : start + 16 : 2] = 200.0
    for k in range(5):
        _block(frame, 60 + 60 * k, 100 + 20 * k, (2, 3), 1000.0)
    data, rad, mask8 = pf8_module._prepare(frame, _radius(frame.shape, (200.0, 150.0)), None)
    # the check catches it ...
    t = pf8_module._tables(
        data, rad, mask8, min_res_px=0.0, max_res_px=1e9, min_snr=3.5, threshold_adu=0.0,
        iterations=5, sample_stride=0,
    )  # fmt: skip
    nb = t.offset.size
    bins = t.bins.copy()
    s_lo, s_hi = np.empty(nb), np.empty(nb)
    half = pf8_module.CORE_FRACTION * 3.5
    _k.sample_bounds(t.data, bins, nb, pf8_module.SAMPLE_STRIDE, half, s_lo, s_hi)
    n = data.size
    lst, lb, lv, core = (
        np.empty(n, np.int32),
        np.empty(n, np.uint32),
        np.empty(n, np.float32),
        np.empty(4 * nb),
    )
    m = _k.core_pass(t.data, bins, s_lo, s_hi, core, lst, lb, lv)
    off, sig, thr = np.empty(nb), np.empty(nb), np.empty(nb)
    fail = _k.iterate_bins(lb[:m], lv[:m], core, s_lo, s_hi, 3.5, 0.0, 5, off, sig, thr)
    assert fail.sum() > 50
    # ... and the repaired result is the exact one
    params = PeakFinder8Params(min_snr=3.5)
    fixed = pf8_module._find(data, rad, mask8, params)
    _same_peaks(fixed, pf8_module._find(data, rad, mask8, params, sample_stride=0))
    assert len(fixed) == 5


def test_threads_share_nothing(lambda_sim: Sim) -> None:
    jobs = [(lambda_sim.frames[i], lambda_sim.radii[i]) for i in range(4)] * 2
    alone = [peakfinder8(f, r, lambda_sim.mask, FIND) for f, r in jobs]
    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(lambda job: peakfinder8(*job, lambda_sim.mask, FIND), jobs))
    for a, b in zip(alone, together, strict=True):
        _same_peaks(a, b)


def _truth_table(s: Sim, i: int) -> pd.DataFrame:
    """Truth spots with their expected SNR and whether they count for recall.

    ``SNR = N / sqrt(N + A b)``: ``N`` the expected counts of the spot, ``b`` the median
    of the expected (noise-free, spots included) frame over usable pixels 4 to 8 px from
    the spot (spot-free there), ``A = 4 pi sigma_psf^2`` the noise-equivalent area of
    the Gaussian spot profile.  Recall counts spots with SNR > 5 that are at least 3 px
    from any masked pixel, at least 2 px inside the frame, more than 4 px from every
    other truth spot and beyond ``min_res_px + 3`` from the centre.
    """
    spots = s.sim.reflections(i)
    expected = s.sim.frame(i, expected_only=True)
    h, w = s.mask.shape
    x, y, n = spots.fs.to_numpy(), spots.ss.to_numpy(), spots.counts.to_numpy()
    b = np.empty(len(spots))
    for j, (xj, yj) in enumerate(zip(x, y, strict=True)):
        x0, y0 = round(xj), round(yj)
        sl = (slice(max(y0 - 8, 0), y0 + 9), slice(max(x0 - 8, 0), x0 + 9))
        yy, xx = np.mgrid[sl]
        d = np.hypot(xx - xj, yy - yj)
        sel = (d >= 4) & (d <= 8) & ~s.mask[sl]
        b[j] = np.median(expected[sl][sel]) if sel.any() else np.nan
    area = 4 * np.pi * max(s.sim.config.detector_effects.psf_sigma_px, 0.3) ** 2
    snr = n / np.sqrt(n + area * b)
    free = ndimage.distance_transform_edt(~s.mask)
    xi, yi = np.clip(np.rint(x).astype(int), 0, w - 1), np.clip(np.rint(y).astype(int), 0, h - 1)
    tree = cKDTree(np.c_[x, y])
    crowded = np.array([len(tree.query_ball_point(p, 4.0)) > 1 for p in np.c_[x, y]])
    cx, cy = s.sim.truth_centres()[i]
    eligible = (
        (snr > 5) & (free[yi, xi] >= 3) & (x >= 2) & (x <= w - 3) & (y >= 2) & (y <= h - 3)
        & ~crowded & (np.hypot(x - cx, y - cy) > FIND.min_res_px + 3)
    )  # fmt: skip
    return pd.DataFrame({"fs": x, "ss": y, "snr": snr, "eligible": eligible})


def test_accuracy_against_simulator_truth(lambda_sim: Sim) -> None:
    found = eligible = matched = detected = 0
    errors: list[np.ndarray] = []
    for i in range(len(lambda_sim.frames)):
        truth = _truth_table(lambda_sim, i)
        peaks = peakfinder8(lambda_sim.frames[i], lambda_sim.radii[i], lambda_sim.mask, FIND)
        det = np.c_[peaks.fs, peaks.ss]
        dist, _ = cKDTree(truth[["fs", "ss"]].to_numpy()).query(det)
        matched += int((dist <= 2).sum())
        detected += len(det)
        good = truth[truth.eligible][["fs", "ss"]].to_numpy()
        dist, _ = cKDTree(det).query(good)
        found += int((dist <= 2).sum())
        eligible += len(good)
        errors.append(dist[dist <= 2])
    recall, precision = found / eligible, matched / detected
    rms = float(np.sqrt(np.mean(np.concatenate(errors) ** 2)))
    msg = (
        f"recall {recall:.3f} ({found}/{eligible} spots with SNR > 5), precision "
        f"{precision:.3f} ({matched}/{detected}), centroid error {rms:.3f} px RMS"
    )
    print(msg)
    assert eligible > 800, msg
    assert recall >= 0.95 and precision >= 0.95 and rms <= 0.3, msg
