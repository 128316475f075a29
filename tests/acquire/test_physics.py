"""Physics of the simulated microscope: aperture drift, defocused images, diffraction spots.

Expectations come from independent calculations: the crystal's drift from the stage
geometry by hand (``y = -dz sin(alpha)``), spot positions and counts from the project's
rotation simulator (:class:`~crystalscope.simulate.rotation_sim.RotationSimulation`) for
the same orientation and angles.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from acqsim import U_TEST, Build, centroid
from scipy.ndimage import gaussian_filter, maximum_filter

from crystalscope.config import BeamConfig
from crystalscope.model.orientation import rotation_matrix
from crystalscope.simulate.config import (
    BeamEffects,
    CrystalConfig,
    RotationConfig,
    SimDetectorConfig,
    SourceConfig,
)
from crystalscope.simulate.rotation_sim import RotationSimulation, disc_overlap_area
from crystalscope.simulate.rotation_window import locate_spots

CRYSTAL = {"z_um": 1.5, "size_um": 0.5, "thickness_um": 0.1, "orientation_u": U_TEST}


def test_crystal_leaves_the_aperture_before_40_deg_and_beam_shift_restores_it(
    build: Build,
) -> None:
    mic, cam = build(CRYSTAL)
    assert mic.scene.selected_radius_um == 0.75
    mic.set_rotation_speed(0.9)
    mic.start_rotation(60.0)
    fractions, angles = [], []
    while mic.clock.now() < 60.0:
        t0 = mic.clock.now()
        state = mic.exposure_state(t0, t0 + 0.5)  # what a 0.5 s frame integrates
        exposures = mic.scene.exposures(state)
        fractions.append(exposures[0].mean_fraction if exposures else 0.0)
        angles.append(state.middle.alpha_deg)
        mic.clock.sleep(0.512)
    fractions_arr, angles_arr = np.array(fractions), np.array(angles)
    assert fractions_arr[0] == pytest.approx(1.0)
    lost = angles_arr[np.argmax(fractions_arr < 0.5)]
    assert np.any(fractions_arr < 0.5) and lost < 40.0
    # by hand: the centre is at y = -1.5 sin(alpha); half the crystal is out at 0.75 um
    assert lost == pytest.approx(math.degrees(math.asin(0.75 / 1.5)), abs=2.0)
    mic.stop_rotation()
    alpha = mic.get_stage_position().alpha_deg
    assert mic.true_aperture_fraction(0) < 0.5
    shift_um = np.array([0.0, -1.5 * math.sin(math.radians(alpha))])
    assert np.allclose(mic.true_crystal_position_um(0)[:2], shift_um, atol=1e-9)
    mic.set_beam_shift_nm(*(shift_um * 1000.0))
    assert mic.true_aperture_fraction(0) > 0.99
    frame = cam.get_image(0.5)
    assert cam.last_exposure is not None
    assert mic.scene.exposures(cam.last_exposure)[0].mean_fraction > 0.99
    assert frame.sum() > 0


def test_electrons_on_the_crystal_follow_the_aperture_fraction(build: Build) -> None:
    mic, _ = build(CRYSTAL)
    full = mic.scene.exposures(mic.exposure_state(0.0, 0.5))[0].electrons
    area = math.pi * 0.25**2 * 1e8  # A^2
    assert full == pytest.approx(mic.dose_rate_e_per_a2_s() * 0.5 * area, rel=1e-3)
    mic.set_beam_shift_nm(0.0, 750.0)  # the aperture edge through the crystal centre
    t = mic.clock.now()
    half = mic.scene.exposures(mic.exposure_state(t, t + 0.5))[0]
    exact = float(disc_overlap_area(0.75, 0.25, 0.75)) / (math.pi * 0.25**2)  # two discs
    assert half.mean_fraction == pytest.approx(exact, rel=2e-3)
    assert half.electrons == pytest.approx(exact * full, rel=2e-3)


@pytest.mark.parametrize(
    ("alpha", "offset_um"),
    [(0.0, (0.2, -0.1)), (20.0, (-0.25, 0.0)), (45.0, (0.0, 0.3)), (-50.0, (0.1, 0.1))],
)
def test_defocused_blob_sits_at_the_projected_position(
    build: Build, alpha: float, offset_um: tuple[float, float]
) -> None:
    mic, cam = build(CRYSTAL)
    focused = mic.config.optics.diffraction_focus_focused
    cal = mic.config.calibration
    mic.set_rotation_speed(10.0)
    mic.set_stage_position(alpha_deg=alpha)
    here = mic.true_crystal_position_um(0)[:2]
    mic.set_beam_shift_nm(*((here - np.array(offset_um)) * 1000.0))
    mic.set_diffraction_focus(focused + cal.defocus_offset)
    mic.clock.sleep(1.0)  # let the lens settle
    image = cam.get_image(0.2).astype(float)
    # prediction by hand: (x, -1.5 sin a) relative to the beam shift, 10 nm per pixel
    y = -1.5 * math.sin(math.radians(alpha))
    rel = np.array([0.0, y]) - mic.true_selected_centre_um()
    beam_centre = np.array(cam.beam_centre_px)
    expected = beam_centre + rel * 1000.0 / cal.defocus_nm_per_px
    smooth = gaussian_filter(image, 2.0)
    ii, jj = np.indices(image.shape)
    inside = np.hypot(jj - beam_centre[0], ii - beam_centre[1]) < 0.9 * 75.0
    level = np.median(smooth[inside])
    deficit = np.where(inside & (smooth < 0.6 * level), level - smooth, 0.0)
    assert np.hypot(*(np.array(centroid(deficit)) - expected)) < 1.0
    # the bright disc is the selected area: 0.75 um at 10 nm per pixel
    lit = (smooth > 0.5 * level) | (deficit > 0)
    assert np.sum(lit) == pytest.approx(math.pi * 75.0**2, rel=0.03)


def test_defocus_scale_follows_the_offset(build: Build) -> None:
    mic, cam = build(CRYSTAL)
    focused = mic.config.optics.diffraction_focus_focused
    areas = []
    for offset in (1500, 3000):
        mic.set_diffraction_focus(focused + offset)
        mic.clock.sleep(2.0)
        t = mic.clock.now()
        expected = cam.expected_frame(t, t + 0.1)
        ii, jj = np.indices(expected.shape)
        r = np.hypot(jj - cam.beam_centre_px[0], ii - cam.beam_centre_px[1])
        level = np.median(expected[(r > 60) & (r < 70)])  # inside the disc, off the crystal
        areas.append(np.sum((expected > 0.5 * level) | (r < 55)))
    assert areas[1] / areas[0] == pytest.approx(4.0, rel=0.05)  # radius doubles


def test_pattern_is_blurred_until_the_lens_settles(build: Build) -> None:
    mic, cam = build(CRYSTAL)
    focused = mic.config.optics.diffraction_focus_focused
    t = mic.clock.now()
    sharp = cam.expected_frame(t, t + 0.05)
    mic.set_diffraction_focus(focused + 1500)
    mic.clock.sleep(1.0)
    mic.set_diffraction_focus(focused)
    t_back = mic.clock.now()
    peaks = []
    for delay in (0.05, 0.1, 0.15, mic.config.optics.lens_settling_s):
        frame = cam.expected_frame(t_back + delay, t_back + delay + 0.05)
        peaks.append(frame.max())
    assert peaks[0] < peaks[1] < peaks[2] < peaks[3]
    assert peaks[0] < 0.02 * sharp.max()
    assert peaks[3] == pytest.approx(sharp.max(), rel=1e-3)


def _rotation_simulation(
    crystal: CrystalConfig, u: np.ndarray, a0: float, a1: float, length: float, divergence: float
) -> RotationSimulation:
    config = RotationConfig(
        n_frames=1,
        start_deg=a0,
        oscillation_deg=a1 - a0,
        axis=(1.0, 0.0, 0.0),
        orientation_u=tuple(float(v) for v in u.ravel()),
        beam=BeamConfig(voltage_kv=200.0),
        source=SourceConfig(structure="builtin:monoclinic-organic", d_min=0.8),
        crystal=crystal,
        beam_effects=BeamEffects(divergence_mrad=divergence),
        detector=SimDetectorConfig(preset="timepix-quad", distance_mm=length),
    )
    return RotationSimulation.build(config)


@pytest.mark.parametrize("beta", [0.0, 15.0])
def test_diffraction_spots_agree_with_the_rotation_simulator(build: Build, beta: float) -> None:
    mic, cam = build({**CRYSTAL, "z_um": 0.0})
    mic.set_rotation_speed(10.0)
    mic.set_stage_position(alpha_deg=12.0, beta_deg=beta)
    mic.set_rotation_speed(0.45)
    mic.start_rotation(40.0)
    frame = cam.get_image(0.5).astype(float)
    state = cam.last_exposure
    assert state is not None
    a0, a1 = state.segments[0].start.alpha_deg, state.segments[-1].end.alpha_deg
    assert a1 - a0 == pytest.approx(0.45 * 0.5)
    length = mic.get_camera_length_mm()
    ours = mic.scene.exposures(state)[0]
    located = locate_spots(ours.spots, cam.detector(length), mic.wavelength_a)
    located = located[located["panel"] >= 0]
    # the holder's beta tilt turns the crystal about y before alpha turns it about x
    u0 = rotation_matrix((0.0, 1.0, 0.0), beta) @ np.reshape(U_TEST, (3, 3))
    sim = _rotation_simulation(
        mic.sample.crystal_config(0), u0, a0, a1, length, mic.config.simulation.divergence_mrad
    )
    theirs = sim.spots(0)
    theirs = theirs[theirs["panel"] >= 0]
    key = ["h", "k", "l"]
    merged = pd.merge(located, theirs, on=key, suffixes=("", "_sim"))
    assert len(merged) == len(located) == len(theirs) > 10
    assert np.allclose(merged["phi0_deg"], merged["phi0_deg_sim"], atol=1e-9)
    assert np.allclose(merged["fs"], merged["fs_sim"], atol=1e-6)
    assert np.allclose(merged["ss"], merged["ss_sim"], atol=1e-6)
    ratio = merged["counts"] / merged["counts_sim"]
    assert np.allclose(ratio, ratio.iloc[0], rtol=1e-6)  # same physics, other dose
    n_sim = sim.frames["n_on_crystal"].iat[0]
    assert ratio.iloc[0] == pytest.approx(ours.electrons / n_sim, rel=1e-6)
    # the strongest spots away from the direct beam are local maxima of the frame
    centre = np.array(cam.beam_centre_px)
    far = located[np.hypot(located["fs"] - centre[0], located["ss"] - centre[1]) > 15]
    strong = far.nlargest(5, "counts")
    peaks = maximum_filter(frame, size=5) == frame
    for fs, ss in zip(strong["fs"], strong["ss"], strict=True):
        i, j = round(float(ss)), round(float(fs))
        window = peaks[i - 1 : i + 2, j - 1 : j + 2] & (frame[i - 1 : i + 2, j - 1 : j + 2] > 20)
        assert window.any(), (fs, ss)


def test_beam_tilt_moves_the_pattern(build: Build) -> None:
    mic, cam = build({**CRYSTAL, "z_um": 0.0})
    length = mic.get_camera_length_mm()
    t = mic.clock.now()
    straight = cam.expected_frame(t, t + 0.1)
    mic.set_beam_tilt_mrad(0.5, -0.3)
    tilt = np.array(mic.get_beam_tilt_mrad()) * 1e-3
    t = mic.clock.now()
    tilted = cam.expected_frame(t, t + 0.1)
    peak = np.array(np.unravel_index(np.argmax(straight), straight.shape))[::-1]
    moved = np.array(np.unravel_index(np.argmax(tilted), tilted.shape))[::-1]
    expected = length * np.tan(tilt) / cam.pixel_size_mm  # (fs, ss) pixels
    assert np.allclose(moved - peak, np.round(expected), atol=1)
