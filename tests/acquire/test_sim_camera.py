"""Simulated camera: timing on the virtual clock, movies, faults, detector, image modes."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from acqsim import U_TEST, Build
from scipy.ndimage import gaussian_filter

from crystalscope.acquire.interfaces import CameraTimeout
from crystalscope.errors import DataError

CRYSTAL = {"z_um": 1.5, "size_um": 0.5, "thickness_um": 0.1, "orientation_u": U_TEST}


def test_get_image_advances_the_clock_by_exposure_readout_and_overhead(build: Build) -> None:
    mic, cam = build(CRYSTAL)
    assert cam.dimensions == (512, 512) and cam.pixel_size_mm == pytest.approx(0.055)
    t0 = mic.clock.now()
    frame = cam.get_image(0.5)
    assert mic.clock.now() - t0 == pytest.approx(0.5 + 0.008 + 0.0035)
    assert frame.shape == (512, 512) and frame.dtype == np.uint16
    assert cam.last_exposure is not None
    assert (cam.last_exposure.t0_s, cam.last_exposure.t1_s) == pytest.approx((t0, t0 + 0.5))
    rec = cam.call_log.records[-1]
    assert (rec.device, rec.call, rec.args) == ("timepix-quad", "get_image", {"exposure_s": 0.5})
    with pytest.raises(DataError, match="exposure"):
        cam.get_image(0.0)


def test_frames_integrate_the_rotation_window(build: Build) -> None:
    mic, cam = build(CRYSTAL)
    mic.set_rotation_speed(0.45)
    mic.start_rotation(30.0)
    t_start = mic.clock.now()
    starts = []
    for frame in cam.get_movie(4, 0.5):
        assert frame.shape == cam.dimensions
        state = cam.last_exposure
        assert state is not None
        starts.append(state.t0_s)
        a0, a1 = state.segments[0].start.alpha_deg, state.segments[-1].end.alpha_deg
        assert a0 == pytest.approx(0.45 * (state.t0_s - t_start))
        assert a1 - a0 == pytest.approx(0.45 * 0.5)
    assert np.allclose(np.diff(starts), 0.5 + 0.008 + 0.0035)


def test_movie_is_lazy_and_validated(build: Build) -> None:
    mic, cam = build(CRYSTAL)
    t0 = mic.clock.now()
    movie = cam.get_movie(3, 0.1)
    assert mic.clock.now() == t0  # nothing acquired yet
    next(movie)
    mic.blank_beam()  # the experiment acts between frames
    blanked = next(movie)
    assert blanked.sum() == 0
    assert len(list(movie)) == 1
    with pytest.raises(DataError, match="n_frames"):
        cam.get_movie(0, 0.1)
    with pytest.raises(DataError, match="exposure"):
        cam.get_movie(2, -1.0)
    assert [r.args["frame"] for r in cam.call_log.calls("get_movie")] == [0, 1, 2]


def test_injected_timeout(build: Build) -> None:
    mic, cam = build(CRYSTAL, camera_sim={"timeout_at_frame": 2})
    cam.get_image(0.5)
    cam.get_image(0.5)
    t0 = mic.clock.now()
    with pytest.raises(CameraTimeout, match="frame 2") as err:
        cam.get_image(0.5)
    assert mic.clock.now() - t0 == pytest.approx(0.5 + 0.008 + cam.config.timeout_s)
    assert err.value.field == "get_image"
    assert cam.call_log.records[-1].error is not None
    assert cam.get_image(0.5).shape == (512, 512)  # the camera recovers
    cam.timeout_at_frame = 5
    frames = cam.get_movie(3, 0.1)
    next(frames)
    with pytest.raises(CameraTimeout):
        next(frames)


def test_blanked_beam_and_lowered_screen_give_dark_frames(build: Build) -> None:
    mic, cam = build(CRYSTAL, camera_sim={"dark_counts_per_px_s": 2.0, "hot_pixel_fraction": 1e-3})
    lit = cam.get_image(0.5)
    mic.blank_beam()
    dark = cam.get_image(0.5).astype(float)
    hot = cam._state.hot  # the hot pixels the camera drew
    assert dark[~hot].mean() == pytest.approx(1.0, rel=0.05)  # 2 counts/s for 0.5 s
    assert np.all(dark[hot] >= 1000)
    assert lit.astype(float).sum() - dark.sum() > 5e5  # electrons through the aperture
    mic.unblank_beam()
    mic.screen_down()
    assert cam.get_image(0.5).astype(float)[~hot].mean() == pytest.approx(1.0, rel=0.05)


def test_saturation_dtype_and_binning(build: Build) -> None:
    _, cam = build(CRYSTAL)
    frame = cam.get_image(1.0)
    assert frame.max() == 11810  # the direct beam saturates the Timepix counter
    mic2, cam2 = build(
        CRYSTAL, camera_changes={"binning": 2, "dtype": "int32"}, camera_sim={"noise": False}
    )
    assert cam2.dimensions == (256, 256) and cam2.pixel_size_mm == pytest.approx(0.11)
    t = mic2.clock.now()
    expected = cam2.expected_frame(t, t + 0.2)
    binned = cam2.get_image(0.2)
    assert binned.dtype == np.int32 and binned.shape == (256, 256)
    full = np.minimum(np.rint(expected), 11810)
    assert np.allclose(binned, full.reshape(256, 2, 256, 2).sum(axis=(1, 3)))


def test_noise_is_poisson_and_reproducible(build: Build) -> None:
    _, cam = build(CRYSTAL, camera_sim={"saturation_counts": None})
    _, cam_b = build(CRYSTAL, camera_sim={"saturation_counts": None})
    a, b = cam.get_image(0.5), cam_b.get_image(0.5)
    assert np.array_equal(a, b)  # same seed, same frame index
    expected = cam.expected_frame(0.0, 0.5)
    ring = (expected > 5) & (expected < 50)
    resid = (a[ring] - expected[ring]) / np.sqrt(expected[ring])
    assert resid.mean() == pytest.approx(0.0, abs=0.05)
    assert resid.std() == pytest.approx(1.0, abs=0.05)


def test_diffraction_frame_renders_fast(build: Build) -> None:
    mic, cam = build(CRYSTAL)
    mic.set_rotation_speed(0.45)
    mic.start_rotation(30.0)
    cam.get_image(0.5)  # builds the crystal's crossing table
    start = time.perf_counter()
    for _ in range(5):
        cam.get_image(0.5)
    assert (time.perf_counter() - start) / 5 < 0.5


def test_lowmag_image_shows_the_crystal_where_the_stage_puts_it(build: Build) -> None:
    mic, cam = build({**CRYSTAL, "x_um": 3.0, "y_um": -2.0, "size_um": 1.0})
    mic.set_function_mode("lowmag")
    mic.set_magnification(2500)
    um_per_px = 0.055e3 / 2500
    mic.set_stage_position(x_um=3.0, y_um=-2.0)
    image = gaussian_filter(cam.get_image(0.5).astype(float), 2.0)
    film = np.median(image)
    contrast = 1.0 - math.exp(-0.1 / mic.config.simulation.image_contrast_mfp_um)
    dark = (image < (1.0 - 0.5 * contrast) * film).astype(float)
    ii, jj = np.indices(image.shape)
    fs, ss = (dark * jj).sum() / dark.sum(), (dark * ii).sum() / dark.sum()
    assert (fs, ss) == pytest.approx((255.5, 255.5), abs=0.5)
    assert np.sum(dark > 0) == pytest.approx(math.pi * (0.5 / um_per_px) ** 2, rel=0.1)
    mic.set_stage_position(x_um=4.0, y_um=-2.5)  # the specimen point moves to the axis
    image = gaussian_filter(cam.get_image(0.5).astype(float), 2.0)
    dark = (image < (1.0 - 0.5 * contrast) * film).astype(float)
    fs, ss = (dark * jj).sum() / dark.sum(), (dark * ii).sum() / dark.sum()
    assert (fs, ss) == pytest.approx((255.5 - 1.0 / um_per_px, 255.5 + 0.5 / um_per_px), abs=0.5)
    dose = mic.dose_rate_e_per_a2_s() * 0.5 * (um_per_px * 1e4) ** 2
    assert film == pytest.approx(dose * mic.sample.grid.film_transmission, rel=0.05)


def test_low_magnification_shows_the_grid(build: Build) -> None:
    mic, cam = build(CRYSTAL)
    mic.set_function_mode("lowmag")
    mic.set_magnification(100)
    image = cam.get_image(0.01).astype(float)  # short: no saturation
    um_per_px = 0.055e3 / 100
    pitch, bar = mic.sample.grid.mesh_pitch_um, mic.sample.grid.bar_width_um
    pitch_px = pitch / um_per_px
    # holes are centred on the stage position; a pixel column is open where its centre
    # lies within (pitch - bar) / 2 of a multiple of the pitch
    x = (np.arange(512) - 255.5) * um_per_px
    open_1d = np.mean(np.abs(x - pitch * np.round(x / pitch)) < 0.5 * (pitch - bar))
    assert np.mean(image > 0.5 * image.max()) == pytest.approx(open_1d**2, abs=0.01)
    row = image[255] > 0.5 * image.max()
    edges = np.flatnonzero(np.diff(row.astype(int)) == 1)
    assert np.allclose(np.diff(edges), pitch_px, atol=1.5)
