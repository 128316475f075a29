"""cRED collection on the simulated microscope: timing, defocus gaps, tracking, faults."""

from __future__ import annotations

import math

import numpy as np
import pytest
from acqsim import make_scope

from crystalscope.acquire.cred import CredRecord, CredSettings, collect_cred
from crystalscope.acquire.sim_camera import SimulatedCamera
from crystalscope.acquire.sim_microscope import SimulatedMicroscope
from crystalscope.acquire.sim_sample import polygon_area, polygon_disc_area
from crystalscope.acquire.tracking import Tracker, locate_crystal
from crystalscope.errors import DataError

#: The issue's crystal: 0.5 um across, 1.5 um above the rotation axis.
OFF_AXIS = {"x_um": 0.0, "y_um": 0.0, "z_um": 1.5, "shape": "disc", "size_um": 0.5,
            "thickness_um": 0.2}  # fmt: skip


def _centred_scope(alpha_deg: float) -> tuple[SimulatedMicroscope, SimulatedCamera]:
    """The microscope at ``alpha_deg`` with the operator's beam shift on the crystal."""
    mic, cam = make_scope(OFF_AXIS)
    mic.set_stage_position(alpha_deg=alpha_deg)
    x, y = mic.true_crystal_position_um(0, mic.clock.now())[:2]
    mic.set_beam_shift_nm(1000.0 * x, 1000.0 * y)
    return mic, cam


def _fraction_inside(mic: SimulatedMicroscope, record: CredRecord) -> np.ndarray:
    """(angle, fraction of the crystal in the selected area) at the middle of each slot,
    with the selected area where the beam shift had put it at that time."""
    sets = [(r.end_s, np.array([r.args["x_nm"], r.args["y_nm"]]) / 1000.0)
            for r in mic.call_log.calls("set_beam_shift_nm")]  # fmt: skip
    out = []
    for slot in record.slots:
        t = 0.5 * (slot.t_start + slot.t_end)
        centre = [v for te, v in sets if te <= t][-1]
        poly = mic.sample.crystals[0].projection_um(mic.true_stage_position(t))
        inside = polygon_disc_area(poly, centre, mic.scene.selected_radius_um)
        out.append((mic.true_stage_position(t).alpha_deg, inside / polygon_area(poly)))
    return np.array(out)


def _settings(**changes: object) -> CredSettings:
    base = {"exposure_s": 0.5, "rotation_range_deg": 120.0, "rotation_speed_deg_per_s": 2.0,
            "defocus_every": 10}  # fmt: skip
    return CredSettings.model_validate({**base, **changes})


@pytest.mark.slow
def test_tracking_keeps_the_crystal_in_the_selected_area() -> None:
    """Issue 8: >= 90 % inside over 120 deg with tracking; without it the crystal leaves
    (less than half inside) before 40 deg."""
    mic, cam = _centred_scope(-60.0)
    record = collect_cred(mic, cam, _settings(tracking="beam_shift"))
    assert record.status == "complete"
    inside = _fraction_inside(mic, record)
    assert inside[-1, 0] - inside[0, 0] > 115.0
    assert inside[:, 1].min() >= 0.9, inside[:, 1].min()
    found = [t.position.ok for t in record.tracking]
    assert len(found) >= 10 and all(found)

    mic, cam = _centred_scope(-60.0)
    record = collect_cred(mic, cam, _settings(tracking="off"))
    inside = _fraction_inside(mic, record)
    leaves = inside[inside[:, 1] < 0.5, 0][0] - inside[0, 0]
    assert leaves < 40.0, leaves
    assert inside[:5, 1].min() > 0.99  # it was centred at the start


def test_defocus_gaps_last_a_whole_frame() -> None:
    mic, cam = _centred_scope(0.0)
    record = collect_cred(mic, cam, _settings(rotation_range_deg=20.0, defocus_every=4))
    kinds = [s.kind for s in record.slots]
    assert kinds[3] == kinds[7] == "defocused" and kinds.count("diffraction") == len(kinds) - len(
        record.defocused
    )
    durations = np.array([s.t_end - s.t_start for s in record.slots])
    period = 0.5 + cam.readout_s + cam.overhead_s
    np.testing.assert_allclose(durations, period, atol=1e-9)
    starts = np.array([s.t_start for s in record.slots])
    np.testing.assert_allclose(np.diff(starts), period, atol=1e-9)  # back to back
    # angles: the measured speed and period give the true start angle of every slot
    for slot in (1, 4, len(record.slots)):
        true = mic.true_stage_position(record.slots[slot - 1].t_start).alpha_deg
        assert record.slot_start_deg(slot) == pytest.approx(true, abs=1e-6)
    assert record.oscillation_deg == pytest.approx(2.0 * period, rel=1e-9)
    assert set(record.excluded_slots) == set(record.defocused)
    # the beam was blanked before and after, unblanked 0.2 s after the stage moved
    unblank = mic.call_log.calls("unblank_beam")[-1]
    moving = next(r for r in mic.call_log.calls("get_stage_position")
                  if r.result.alpha_deg != 0.0)  # fmt: skip
    assert unblank.start_s - moving.end_s == pytest.approx(0.2, abs=1e-9)
    assert mic.is_beam_blanked() and not mic.is_stage_moving()


def test_the_crystal_is_centred_before_the_rotation() -> None:
    mic, cam = _centred_scope(0.0)
    x, y = mic.get_beam_shift_nm()
    mic.set_beam_shift_nm(x + 300.0, y - 250.0)  # the operator left it off centre
    collect_cred(mic, cam, _settings(rotation_range_deg=4.0, tracking="off"))
    first = mic.call_log.calls("get_image")[0].end_s
    sets = [r for r in mic.call_log.calls("set_beam_shift_nm") if r.end_s > first]
    assert sets, "no centring move"
    centre = np.array([sets[-1].args["x_nm"], sets[-1].args["y_nm"]])
    truth = 1000.0 * np.asarray(mic.true_crystal_position_um(0, first)[:2])
    assert np.hypot(*(centre - truth)) < 100.0


def test_locate_crystal_in_defocused_images() -> None:
    mic, cam = make_scope(OFF_AXIS)
    mic.set_function_mode("diff")
    focused = mic.get_diffraction_focus()
    mic.unblank_beam()
    for alpha, offset in [(0.0, (0.0, 0.0)), (0.0, (300.0, 0.0)), (20.0, (0.0, -400.0)),
                          (30.0, (200.0, 200.0)), (0.0, (1100.0, 0.0))]:  # fmt: skip
        mic.set_stage_position(alpha_deg=alpha)
        x, y = mic.true_crystal_position_um(0, mic.clock.now())[:2]
        mic.set_beam_shift_nm(1000.0 * x - offset[0], 1000.0 * y - offset[1])
        mic.set_diffraction_focus(focused + 1500)
        mic.clock.sleep(0.15)
        image = cam.get_image(0.01)
        mic.set_diffraction_focus(focused)
        found = locate_crystal(image, 750.0)
        if np.hypot(*offset) > 750.0 + 250.0:  # wholly outside the selected area
            assert not found.ok and found.reason
            continue
        assert found.ok, found.reason
        assert found.disc_radius_px == pytest.approx(75.0, rel=0.05)  # 750 nm / 10 nm/px
        assert np.hypot(*np.subtract(found.offset_nm, offset)) < 100.0, (offset, found)


def test_locate_crystal_rejects_bad_images() -> None:
    with pytest.raises(DataError, match="2-D"):
        locate_crystal(np.zeros(5), 750.0)
    with pytest.raises(DataError, match="non-finite"):
        locate_crystal(np.full((8, 8), np.nan), 750.0)
    assert not locate_crystal(np.zeros((64, 64)), 750.0).ok
    rng = np.random.default_rng(0)
    yy, xx = np.indices((128, 128))
    disc = ((xx - 64) ** 2 + (yy - 64) ** 2 < 40**2).astype(float)
    empty = rng.poisson(20.0 * disc).astype(float)  # an illuminated disc, no crystal
    assert not locate_crystal(empty, 750.0).ok


def test_tracker_extrapolates_and_limits_steps() -> None:
    from crystalscope.acquire.tracking import CrystalPosition

    def seen(x_nm: float, shift: float) -> CrystalPosition:
        return CrystalPosition(True, offset_nm=(x_nm - shift, 0.0))

    tracker = Tracker(lead_s=1.0, max_step_nm=500.0)
    first = tracker.correction(1, 0.0, 0.0, seen(100.0, 0.0), (0.0, 0.0))
    assert first == (100.0, 0.0)  # no velocity yet: onto the crystal
    second = tracker.correction(2, 1.0, 0.0, seen(300.0, 100.0), first)
    assert second == (500.0, 0.0)  # at 200 nm/s, aimed 1 s ahead
    third = tracker.correction(3, 2.0, 0.0, seen(5000.0, 500.0), second)
    assert math.hypot(third[0] - second[0], third[1]) == pytest.approx(500.0)
    lost = tracker.correction(4, 3.0, 0.0, CrystalPosition(False, reason="x"), third)
    assert lost == third and len(tracker.steps) == 4


def test_faults_end_the_collection_cleanly() -> None:
    mic, cam = _centred_scope(0.0)
    cam.timeout_at_frame = 12
    record = collect_cred(mic, cam, _settings(rotation_range_deg=30.0, tracking="off"))
    assert record.status.startswith("aborted") and "timeout" in record.status.lower()
    assert 0 < len(record.frames) < 12 and mic.is_beam_blanked() and not mic.is_stage_moving()
    assert any("aborted" in text for _, text in record.events)

    mic, cam = _centred_scope(0.0)
    mic.fail_stage_at_deg = 15.0
    settings = _settings(rotation_range_deg=30.0, tracking="off", defocus_every=5)
    record = collect_cred(mic, cam, settings)
    assert record.status.startswith("aborted: stage fault"), record.status
    # the check in the defocus slot after the stop drops the slots it cannot vouch for
    assert record.n_slots == 9 and max(record.frames) == 9
    assert mic.true_stage_position(record.slots[-1].t_end).alpha_deg < 15.0


def test_without_automatic_unblanking_the_beam_is_left_alone() -> None:
    mic, cam = _centred_scope(0.0)
    mic.unblank_beam()  # the operator runs the beam by hand
    record = collect_cred(mic, cam, _settings(rotation_range_deg=6.0, unblank_beam=False))
    assert record.status == "complete" and record.frames
    assert not mic.call_log.calls("blank_beam") and not mic.is_beam_blanked()
    assert all(f.sum() > 0 for f in record.frames.values())
