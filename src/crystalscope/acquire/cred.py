"""Continuous-rotation electron diffraction (cRED) data collection (seed 001, section 5).

:func:`collect_cred` runs one experiment on any
:class:`~crystalscope.acquire.interfaces.Microscope` and
:class:`~crystalscope.acquire.interfaces.Camera` (the simulated ones or a real driver):

1. diffraction mode, the camera length, the beam blanked, the goniometer to the start
   angle; the beam is *relaxed* by toggling the diffraction focus between focused and
   defocused ``relax_cycles`` times (lens hysteresis would otherwise move the primary
   beam after the first defocus cycle, section 5.2);
2. the rotation is started towards ``start + rotation_range``; once the goniometer is
   seen moving, ``start_delay_s`` (0.2 s) later the beam is unblanked and frames are
   taken back to back, each ``exposure_s`` plus the camera's readout and overhead;
3. every ``defocus_every``-th slot the diffraction focus is moved by ``defocus_offset``,
   a short image (``defocus_exposure_s``) is taken and the focus restored; the slot then
   waits until it has lasted as long as an average diffraction frame, so that every gap
   in the data is a whole number of oscillations (section 5.2).  With ``tracking`` the
   defocused image is measured (:mod:`~crystalscope.acquire.tracking`) and the beam
   shift (or the stage) moved to keep the crystal in the selected area;
4. at the end angle (or on a fault: a camera timeout, a stopped stage, Ctrl-C) the beam
   is blanked, the rotation stopped and everything recorded so far returned.

Angles come from two goniometer reads, before the first and after the last frame, and
the clock times of every frame: with the measured speed ``w`` the frame started at
``t_i`` begins at ``alpha_0 + w (t_i - t_0)``, and the oscillation per slot is ``w P``
(``P``: the mean slot period).  Every call to the instruments, every frame's times and
every event are recorded in :class:`CredRecord`; :mod:`~crystalscope.acquire.cred_output`
writes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field

from crystalscope.acquire.interfaces import (
    Camera,
    FunctionMode,
    HardwareError,
    Microscope,
    StageError,
)
from crystalscope.acquire.tracking import CrystalPosition, Tracker, TrackingStep, locate_crystal
from crystalscope.config import StrictModel

__all__ = ["CredRecord", "CredSettings", "SlotRecord", "collect_cred"]


class CredSettings(StrictModel):
    """Parameters of a cRED experiment (``crystalscope acquire cred``)."""

    exposure_s: float = Field(0.5, gt=0, description="exposure of a diffraction frame")
    rotation_range_deg: float = Field(
        60.0, description="signed range to rotate from the start angle"
    )
    start_alpha_deg: float | None = Field(None, description="None: start where the stage is")
    rotation_speed_deg_per_s: float = Field(0.9, gt=0)
    camera_length_mm: float | None = Field(None, gt=0, description="None: keep the current")
    defocus_every: int = Field(10, ge=0, description="every n-th slot a defocused image; 0: none")
    defocus_offset: int = Field(1500, description="diffraction-focus change for those images")
    defocus_exposure_s: float = Field(0.01, gt=0)
    defocus_settle_s: float = Field(
        0.15, ge=0, description="wait after defocusing before the image (lens settling)"
    )
    centre_first: bool = Field(
        True, description="centre the crystal in the selected area before the rotation"
    )
    relax_beam: bool = True
    relax_cycles: int = Field(3, ge=0)
    unblank_beam: bool = True
    start_delay_s: float = Field(0.2, ge=0, description="after the stage is seen moving")
    tracking: Literal["off", "beam_shift", "stage"] = "beam_shift"
    tracking_max_step_nm: float = Field(2000.0, gt=0)
    selected_area_radius_um: float = Field(
        0.75, gt=0, description="effective radius of the selected area in the specimen"
    )
    rotation_axis_deg: float = Field(
        0.0, description="axis on the detector, from +fs towards +ss (calibration)"
    )
    stretch_percent: float = Field(
        0.0, description="elliptical distortion of the patterns, ratio - 1 in % (calibration)"
    )
    stretch_azimuth_deg: float = Field(0.0, description="angle of the distortion's long axis")
    max_slots: int = Field(5000, ge=1, description="safety limit on frames")


@dataclass(frozen=True)
class SlotRecord:
    """One frame slot: ``kind`` is "diffraction", "defocused" or "lost"; clock times, s."""

    slot: int
    kind: str
    t_start: float
    t_end: float


@dataclass
class CredRecord:
    """Everything an experiment recorded (input of :func:`~.cred_output.write_cred`).

    Frames are stored by 1-based slot number; defocused slots hold their image in
    ``defocused`` and nothing in ``frames``.
    """

    settings: CredSettings
    microscope: str
    camera: str
    wavelength_a: float
    camera_length_mm: float
    pixel_size_mm: float
    frame_shape: tuple[int, int]
    frames: dict[int, np.ndarray] = field(default_factory=dict)
    defocused: dict[int, np.ndarray] = field(default_factory=dict)
    slots: list[SlotRecord] = field(default_factory=list)
    events: list[tuple[float, str]] = field(default_factory=list)
    tracking: list[TrackingStep] = field(default_factory=list)
    alpha_start_deg: float = math.nan
    alpha_end_deg: float = math.nan
    t_alpha_start: float = math.nan
    t_alpha_end: float = math.nan
    status: str = "running"

    @property
    def n_slots(self) -> int:
        """Number of frame slots recorded."""
        return len(self.slots)

    @property
    def speed_deg_per_s(self) -> float:
        """Rotation speed measured from the two goniometer reads."""
        dt = self.t_alpha_end - self.t_alpha_start
        return (self.alpha_end_deg - self.alpha_start_deg) / dt if dt > 0 else math.nan

    @property
    def slot_period_s(self) -> float:
        """Mean slot period (first slot's start to last slot's end over slots), s."""
        if not self.slots:
            return math.nan
        return (self.slots[-1].t_end - self.slots[0].t_start) / len(self.slots)

    @property
    def oscillation_deg(self) -> float:
        """Rotation per slot, degrees (signed)."""
        return self.speed_deg_per_s * self.slot_period_s

    def slot_start_deg(self, slot: int) -> float:
        """Goniometer angle at the start of ``slot`` (1-based), degrees."""
        t = self.slots[slot - 1].t_start
        return self.alpha_start_deg + self.speed_deg_per_s * (t - self.t_alpha_start)

    @property
    def excluded_slots(self) -> tuple[int, ...]:
        """Slots without a diffraction frame (defocused images, lost frames)."""
        return tuple(s.slot for s in self.slots if s.kind != "diffraction")

    def event(self, time_s: float, text: str) -> None:
        """Record an event line at ``time_s``."""
        self.events.append((float(time_s), text))


class _Run:
    """One experiment in progress (the steps of :func:`collect_cred`)."""

    def __init__(
        self, scope: Microscope, camera: Camera, settings: CredSettings,
        say: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.scope, self.camera, self.s, self.say = scope, camera, settings, say
        self.clock = scope.clock
        self.focused = 0
        self.alpha0 = math.nan  # where the rotation started
        self.confirmed = 0  # slots recorded when the goniometer was last seen turning
        self.period = settings.exposure_s + camera.readout_s + camera.overhead_s
        self.durations: list[float] = []
        self.tracker = Tracker(lead_s=0.5 * settings.defocus_every * self.period,
                               max_step_nm=settings.tracking_max_step_nm)  # fmt: skip
        self.record = CredRecord(
            settings, scope.name, camera.name, scope.wavelength_a, math.nan,
            camera.pixel_size_mm * camera.binning, camera.dimensions,
        )  # fmt: skip

    def log(self, text: str) -> None:
        self.record.event(self.clock.now(), text)
        self.say(text)

    def prepare(self) -> None:
        s, scope = self.s, self.scope
        scope.set_function_mode(FunctionMode.DIFF)
        if s.camera_length_mm is not None:
            scope.set_camera_length_mm(s.camera_length_mm)
        self.record.camera_length_mm = scope.get_camera_length_mm()
        if s.unblank_beam:  # the beam is ours to switch: off until the rotation runs
            scope.blank_beam()
        scope.set_rotation_speed(s.rotation_speed_deg_per_s)
        if s.start_alpha_deg is not None:
            self.log(f"moving the goniometer to {s.start_alpha_deg:.2f} deg")
            scope.set_stage_position(alpha_deg=s.start_alpha_deg, wait=True)
        self.focused = scope.get_diffraction_focus()
        if s.relax_beam and s.defocus_every:
            for _ in range(s.relax_cycles):  # lens hysteresis: toggle to a neutral state
                scope.set_diffraction_focus(self.focused + s.defocus_offset)
                self.clock.sleep(0.1)
                scope.set_diffraction_focus(self.focused)
                self.clock.sleep(0.1)
            self.log(f"beam relaxed ({s.relax_cycles} defocus cycles)")
        if s.centre_first:
            self.centre()

    def defocused_image(self) -> np.ndarray:
        """Defocus, wait for the lens, take the short image, focus again."""
        s, scope = self.s, self.scope
        scope.set_diffraction_focus(self.focused + s.defocus_offset)
        self.clock.sleep(s.defocus_settle_s)
        image = self.camera.get_image(s.defocus_exposure_s)
        scope.set_diffraction_focus(self.focused)
        return image

    def centre(self, iterations: int = 2) -> None:
        """Bring the crystal to the middle of the selected area (beam shift or stage)."""
        if self.s.unblank_beam:
            self.scope.unblank_beam()
        moves = Tracker(lead_s=0.0, max_step_nm=1e9, predict=False)
        for _ in range(iterations):
            position = locate_crystal(
                self.defocused_image(), 1000.0 * self.s.selected_area_radius_um
            )
            if not position.ok:
                self.log(f"crystal not centred: {position.reason}")
                break
            self.move(
                moves, 0, self.clock.now(), self.scope.get_stage_position().alpha_deg, position
            )
        if self.s.unblank_beam:
            self.scope.blank_beam()
        if moves.steps and moves.steps[-1].position.ok:
            d = moves.steps[-1].position.offset_nm
            self.log(f"crystal centred (last offset {d[0]:.0f}, {d[1]:.0f} nm)")

    def start(self) -> None:
        s, scope = self.s, self.scope
        alpha0 = self.alpha0 = scope.get_stage_position().alpha_deg
        scope.start_rotation(alpha0 + s.rotation_range_deg)
        deadline = self.clock.now() + 10.0
        while abs(scope.get_stage_position().alpha_deg - alpha0) < 1e-6:
            if self.clock.now() > deadline:
                raise StageError("the goniometer did not start rotating", field="alpha")
            self.clock.sleep(0.005)
        self.clock.sleep(s.start_delay_s)
        if s.unblank_beam:
            scope.unblank_beam()
        pos = scope.get_stage_position()
        self.record.alpha_start_deg, self.record.t_alpha_start = pos.alpha_deg, self.clock.now()
        self.log(f"rotation started at {pos.alpha_deg:.3f} deg, {s.rotation_speed_deg_per_s} deg/s")

    def n_slots(self) -> int:
        """Slots that fit into the rest of the range at the nominal speed and period."""
        s = self.s
        left = abs(self.alpha0 + s.rotation_range_deg - self.record.alpha_start_deg)
        n = int(left / (s.rotation_speed_deg_per_s * self.period))
        return max(0, min(n, s.max_slots))

    def alpha_at(self, t: float) -> float:
        """Goniometer angle at clock time ``t`` from the nominal speed, degrees."""
        sign = math.copysign(1.0, self.s.rotation_range_deg)
        rec = self.record
        return rec.alpha_start_deg + sign * self.s.rotation_speed_deg_per_s * (
            t - rec.t_alpha_start
        )

    def diffraction_slot(self, slot: int) -> None:
        t0 = self.clock.now()
        frame = self.camera.get_image(self.s.exposure_s)
        t1 = self.clock.now()
        self.record.frames[slot] = frame
        self.record.slots.append(SlotRecord(slot, "diffraction", t0, t1))
        self.durations.append(t1 - t0)

    def defocus_slot(self, slot: int) -> None:
        s = self.s
        t0 = self.clock.now()
        period = float(np.mean(self.durations)) if self.durations else self.period
        self.check_stage()
        image = self.defocused_image()
        t_image = self.clock.now()
        self.record.defocused[slot] = image
        if s.tracking != "off":
            position = locate_crystal(image, 1000.0 * s.selected_area_radius_um)
            self.move(self.tracker, slot, t_image, self.alpha_at(t_image), position)
            if not position.ok:
                self.log(
                    f"slot {slot}: crystal not found in the defocused image ({position.reason})"
                )
        wait = t0 + period - self.clock.now()
        if wait > 0:
            self.clock.sleep(wait)
        else:
            self.log(
                f"slot {slot}: the defocus cycle took {period - wait:.3f} s, longer than a frame"
            )
        self.record.slots.append(SlotRecord(slot, "defocused", t0, self.clock.now()))

    def move(
        self, tracker: Tracker, slot: int, t: float, alpha: float, position: CrystalPosition
    ) -> None:
        """Apply the tracker's correction with the beam shift or the stage."""
        scope = self.scope
        if self.s.tracking != "stage":
            before = scope.get_beam_shift_nm()
            after = tracker.correction(slot, t, alpha, position, before)
            if after != before:
                scope.set_beam_shift_nm(*after)
            return
        # stage: bring the crystal's specimen point to the optical axis
        stage = scope.get_stage_position()
        tilt = math.cos(math.radians(alpha))  # stage y appears foreshortened in lab y
        before = (1000.0 * stage.x_um, 1000.0 * stage.y_um * tilt)
        after = tracker.correction(slot, t, alpha, position, before)
        if after != before:
            scope.set_stage_position(x_um=after[0] / 1000.0, y_um=after[1] / (1000.0 * tilt),
                                     wait=False)  # fmt: skip

    def acquire(self) -> None:
        n = self.n_slots()
        self.log(f"collecting {n} slots of {self.period:.3f} s")
        for slot in range(1, n + 1):
            if self.s.defocus_every and slot % self.s.defocus_every == 0:
                self.defocus_slot(slot)
            else:
                self.diffraction_slot(slot)

    def check_stage(self) -> None:
        """Raise StageError when the goniometer stopped short of the end (the check runs
        in the spare time of defocus slots); the slots since the last check that found
        it turning are dropped, as their angles are unknown."""
        rec = self.record
        try:
            moving = self.scope.is_stage_moving()
        except StageError:
            moving = False
        if not moving:
            keep = self.confirmed
            dropped = rec.n_slots - keep
            rec.slots = rec.slots[:keep]
            rec.frames = {k: v for k, v in rec.frames.items() if k <= keep}
            rec.defocused = {k: v for k, v in rec.defocused.items() if k <= keep}
            raise StageError(
                f"the goniometer stopped before the end angle; {dropped} slots after the "
                "last check dropped", field="alpha",
            )  # fmt: skip
        self.confirmed = rec.n_slots

    def finish(self) -> None:
        """Read the end angle (while still turning: the speed is measured), then blank
        the beam and stop the goniometer."""
        scope, rec = self.scope, self.record
        try:
            rec.alpha_end_deg = scope.get_stage_position().alpha_deg
            rec.t_alpha_end = self.clock.now()
        except HardwareError as exc:  # extrapolate from the nominal speed
            self.log(f"end angle not read ({exc.message}); taken from the nominal speed")
            if rec.slots:
                rec.t_alpha_end = rec.slots[-1].t_end
                rec.alpha_end_deg = self.alpha_at(rec.t_alpha_end)
        actions = (
            (scope.blank_beam, scope.stop_rotation)
            if self.s.unblank_beam
            else (scope.stop_rotation,)
        )
        for action in actions:
            try:
                action()
            except HardwareError as exc:
                self.log(f"while finishing: {exc.message}")
        rec.tracking = list(self.tracker.steps)
        self.log(f"rotation stopped at {rec.alpha_end_deg:.3f} deg after {rec.n_slots} slots")


def collect_cred(
    microscope: Microscope,
    camera: Camera,
    settings: CredSettings | None = None,
    *,
    say: Callable[[str], None] = lambda text: None,
) -> CredRecord:
    """Collect one cRED data set (module docstring) and return what was recorded.

    A :class:`~crystalscope.acquire.interfaces.HardwareError` (camera timeout, stage
    stopped), while preparing or collecting, or ``KeyboardInterrupt`` ends the
    collection: the beam is blanked, the rotation stopped, and the record holds every
    frame taken so far with ``status`` saying what happened.
    """
    run = _Run(microscope, camera, settings or CredSettings(), say)
    try:
        run.prepare()
        run.start()
        run.acquire()
        run.record.status = "complete"
    except HardwareError as exc:
        what = {"CameraTimeout": "camera timeout", "StageError": "stage fault"}
        kind = what.get(type(exc).__name__, "hardware error")
        run.record.status = f"aborted: {kind}: {exc.message}"
        run.log(f"aborted after {run.record.n_slots} slots, {kind}: {exc.message}")
    except KeyboardInterrupt:
        run.record.status = "aborted: interrupted"
        run.log(f"interrupted after {run.record.n_slots} slots")
    finally:
        run.finish()
    return run.record
