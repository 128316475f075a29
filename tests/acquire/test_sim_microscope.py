"""Simulated microscope: API latency, stage motion on the virtual clock, faults, lenses."""

from __future__ import annotations

import math

import numpy as np
import pytest
from acqsim import Build

from crystalscope.acquire.interfaces import FunctionMode, HardwareError, StageError
from crystalscope.acquire.sim_microscope import SimulatedMicroscope

LATENCY = 0.035


@pytest.fixture
def mic(build: Build) -> SimulatedMicroscope:
    return build({"z_um": 1.5})[0]


def test_every_call_costs_the_latency_and_is_logged(mic: SimulatedMicroscope) -> None:
    t0 = mic.clock.now()
    mic.get_stage_position()
    mic.set_spot_size(3)
    assert mic.get_spot_size() == 3
    assert mic.clock.now() - t0 == pytest.approx(3 * LATENCY)
    calls = [r.call for r in mic.call_log]
    assert calls == ["get_stage_position", "set_spot_size", "get_spot_size"]
    rec = mic.call_log.records[1]
    assert rec.args == {"value": 3} and rec.end_s - rec.start_s == pytest.approx(LATENCY)
    assert mic.call_log.records[2].result == 3


def test_rotation_angle_is_start_plus_speed_times_time(mic: SimulatedMicroscope) -> None:
    mic.set_stage_position(alpha_deg=-30.0)
    mic.set_rotation_speed(0.9)
    assert mic.get_rotation_speed() == 0.9
    mic.start_rotation(30.0)
    t_start = mic.clock.now()  # the move starts when the call returns
    assert mic.is_stage_moving()
    for wait in (1.0, 10.0, 25.0):
        mic.clock.sleep(wait)
        t = mic.clock.now() + LATENCY  # the query reads the state after its latency
        alpha = mic.get_stage_position().alpha_deg
        assert alpha == pytest.approx(-30.0 + 0.9 * (t - t_start), abs=1e-9)
    mic.clock.sleep(100.0)
    assert mic.get_stage_position().alpha_deg == pytest.approx(30.0)
    assert not mic.is_stage_moving()


def test_stop_rotation_freezes_the_angle(mic: SimulatedMicroscope) -> None:
    mic.set_rotation_speed(2.0)
    mic.start_rotation(60.0)
    t_start = mic.clock.now()
    mic.clock.sleep(5.0)
    mic.stop_rotation()
    stopped = 2.0 * (mic.clock.now() - t_start)
    mic.clock.sleep(5.0)
    assert mic.get_stage_position().alpha_deg == pytest.approx(stopped)
    assert not mic.is_stage_moving()


def test_set_stage_position_waits_for_the_slowest_axis(mic: SimulatedMicroscope) -> None:
    speed = mic.config.stage.translation_speed_um_per_s
    mic.set_rotation_speed(10.0)
    t0 = mic.clock.now()
    mic.set_stage_position(x_um=100.0, y_um=-20.0, alpha_deg=20.0)
    assert mic.clock.now() - t0 == pytest.approx(LATENCY + max(100.0 / speed, 20.0 / 10.0))
    pos = mic.get_stage_position()
    assert (pos.x_um, pos.y_um, pos.alpha_deg) == pytest.approx((100.0, -20.0, 20.0))
    t0 = mic.clock.now()
    mic.set_stage_position(x_um=0.0, wait=False)
    assert mic.clock.now() - t0 == pytest.approx(LATENCY)
    assert mic.is_stage_moving()


def test_targets_outside_the_limits_raise_stage_error(mic: SimulatedMicroscope) -> None:
    with pytest.raises(StageError, match="outside the stage range") as err:
        mic.start_rotation(85.0)
    assert err.value.field == "alpha_deg"
    with pytest.raises(StageError):
        mic.set_stage_position(x_um=5000.0)
    assert mic.get_stage_position().x_um == 0.0  # nothing moved
    assert mic.call_log.records[-2].error is not None


def test_injected_stage_fault_at_the_right_moment(build: Build) -> None:
    mic = build({"z_um": 1.5}, fail_stage_at_deg=10.0)[0]
    mic.set_rotation_speed(1.2)
    mic.start_rotation(60.0)
    t_start = mic.clock.now()
    t_fault = t_start + 10.0 / 1.2
    mic.clock.advance_to(t_fault - 0.1)  # type: ignore[attr-defined]
    assert mic.is_stage_moving()  # ends at t_fault - 0.1 + latency: still before the fault
    mic.clock.advance_to(t_fault)  # type: ignore[attr-defined]
    with pytest.raises(StageError, match=r"stopped at alpha = 10\.000") as err:
        mic.is_stage_moving()
    assert err.value.field == "alpha_deg"
    with pytest.raises(StageError):
        mic.get_stage_position()
    with pytest.raises(StageError):
        mic.start_rotation(-10.0)
    assert mic.true_stage_position().alpha_deg == pytest.approx(10.0)
    mic.clock.sleep(10.0)
    assert mic.true_stage_position().alpha_deg == pytest.approx(10.0)  # it stays stopped
    mic.clear_stage_fault()
    assert mic.get_stage_position().alpha_deg == pytest.approx(10.0)
    mic.start_rotation(20.0)  # the fault is used up
    mic.clock.sleep(30.0)
    assert mic.get_stage_position().alpha_deg == pytest.approx(20.0)


def test_fault_during_a_waiting_move_and_a_cancelled_fault(build: Build) -> None:
    mic = build({"z_um": 1.5}, fail_stage_at_deg=-5.0)[0]
    mic.set_rotation_speed(5.0)
    t0 = mic.clock.now()
    with pytest.raises(StageError):
        mic.set_stage_position(alpha_deg=-40.0)  # blocks until the fault
    assert mic.clock.now() - t0 == pytest.approx(LATENCY + 5.0 / 5.0)
    mic.clear_stage_fault()
    mic.fail_stage_at_deg = 0.0
    mic.start_rotation(40.0)
    mic.clock.sleep(0.5)
    mic.stop_rotation()  # stopped before reaching 0 deg: no fault
    assert mic.get_stage_position().alpha_deg < 0.0
    assert mic.fail_stage_at_deg == 0.0


def test_lens_settling(mic: SimulatedMicroscope) -> None:
    focused = mic.config.optics.diffraction_focus_focused
    settle = mic.config.optics.lens_settling_s
    assert mic.get_diffraction_focus() == focused
    mic.set_diffraction_focus(focused + 1500)
    t_set = mic.clock.now()
    assert mic.get_diffraction_focus() == focused + 1500  # the value set, at once
    assert abs(mic.true_effective_focus(t_set + settle) - (focused + 1500)) <= 1.0
    assert abs(mic.true_effective_focus(t_set + 0.5 * settle) - (focused + 1500)) > 5.0
    mic.clock.sleep(1.0)
    mic.set_diffraction_focus(focused)
    t_back = mic.clock.now()
    eff = [mic.true_effective_focus(t_back + f * settle) - focused for f in (0.0, 0.3, 0.6, 1.0)]
    assert eff[0] == pytest.approx(1500.0, abs=1.0)
    assert eff[0] > eff[1] > eff[2] > eff[3] >= 0.0 and eff[3] <= 1.0
    # a larger step takes longer to settle
    mic.set_diffraction_focus(focused + 6000)
    t_big = mic.clock.now()
    assert abs(mic.true_effective_focus(t_big + settle) - focused - 6000) > 1.0
    assert abs(mic.true_effective_focus(t_big + 4 * settle) - focused - 6000) <= 1.0
    with pytest.raises(HardwareError, match="integer in"):
        mic.set_diffraction_focus(70000)


def test_deflectors_are_quantised_through_the_calibration(mic: SimulatedMicroscope) -> None:
    mic.set_beam_shift_nm(101.0, -49.0)
    assert mic.get_beam_shift_nm() == pytest.approx((100.0, -50.0))  # 2.5 nm per unit
    assert np.allclose(mic.true_selected_centre_um(), [0.1, -0.05])
    mic.set_beam_tilt_mrad(1.234, 0.0)
    assert mic.get_beam_tilt_mrad() == pytest.approx((1.23, 0.0))
    with pytest.raises(HardwareError, match="beyond the limit"):
        mic.set_beam_shift_nm(2e4, 0.0)
    with pytest.raises(HardwareError):
        mic.set_beam_tilt_mrad(math.nan, 0.0)


def test_modes_magnification_camera_length_and_switches(mic: SimulatedMicroscope) -> None:
    assert mic.get_function_mode() is FunctionMode.DIFF
    with pytest.raises(HardwareError, match="no magnification in diffraction"):
        mic.get_magnification()
    mic.set_camera_length_mm(300)
    assert mic.get_camera_length_mm() == 300.0
    with pytest.raises(HardwareError, match="not available"):
        mic.set_camera_length_mm(333)
    mic.set_function_mode("lowmag")
    mic.set_magnification(100)
    mic.set_function_mode(FunctionMode.MAG1)
    mic.set_magnification(25000)
    assert mic.get_magnification() == 25000.0
    mic.set_function_mode("lowmag")
    assert mic.get_magnification() == 100.0
    with pytest.raises(HardwareError, match="not available"):
        mic.set_magnification(25000)
    with pytest.raises(HardwareError, match="not available"):
        mic.set_rotation_speed(0.77)
    with pytest.raises(HardwareError):
        mic.set_spot_size(9)
    dose = mic.dose_rate_e_per_a2_s()
    mic.blank_beam()
    assert mic.is_beam_blanked() and mic.dose_rate_e_per_a2_s() == 0.0
    mic.unblank_beam()
    mic.screen_down()
    assert not mic.is_screen_up() and mic.dose_rate_e_per_a2_s() == 0.0
    mic.screen_up()
    mic.set_spot_size(3)
    assert mic.dose_rate_e_per_a2_s() == pytest.approx(dose * 0.6**2)
    assert mic.wavelength_a == pytest.approx(0.02508, abs=1e-5)
    assert mic.voltage_kv == 200.0


def test_exposure_state_splits_at_stage_breakpoints(mic: SimulatedMicroscope) -> None:
    mic.set_rotation_speed(1.2)
    mic.start_rotation(1.0)
    t0 = mic.clock.now()
    state = mic.exposure_state(t0, t0 + 2.0)  # the rotation ends after 1/1.2 s
    assert len(state.segments) == 2
    first, second = state.segments
    assert first.t1_s == pytest.approx(t0 + 1.0 / 1.2)
    assert first.end.alpha_deg == pytest.approx(1.0)
    assert (second.start.alpha_deg, second.end.alpha_deg) == pytest.approx((1.0, 1.0))
