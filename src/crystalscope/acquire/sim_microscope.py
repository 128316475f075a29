"""A simulated TEM implementing :class:`~crystalscope.acquire.interfaces.Microscope`.

The microscope runs on a :class:`~crystalscope.acquire.clock.Clock` (by default a
:class:`~crystalscope.acquire.clock.VirtualClock`), so experiments with realistic
timings run at once:

* every API call costs ``api_latency_s`` (35 ms on a JEOL, seed 001 section 5.2); a
  query returns the state at the end of that latency, a command takes effect then;
* the goniometer moves at constant speed (:mod:`~crystalscope.acquire.sim_timeline`):
  after ``start_rotation`` the angle is ``alpha(t) = alpha_0 + speed (t - t_start)``
  until the target, ``stop_rotation`` freezes it;
* after a diffraction-focus change the lens settles for ``lens_settling_s`` (longer for
  large steps); until then the pattern is blurred (:mod:`~crystalscope.acquire.sim_render`);
* beam shift and tilt are stored as integer deflector units through the calibration
  matrices, so the values read back are quantised as on a real instrument;
* an injected stage fault (``fail_stage_at_deg``) stops the goniometer at that angle
  and every later stage call raises :class:`~crystalscope.acquire.interfaces.StageError`.

What the camera records comes from :meth:`SimulatedMicroscope.exposure_state` and
:func:`~crystalscope.acquire.sim_render.render_exposure`.  The ``true_*`` methods give
the simulation's truth (crystal positions, the fraction of a crystal inside the
selected area) without costing clock time, for tests and for plotting against what an
experiment measured.  Every API call is appended to :attr:`SimulatedMicroscope.call_log`.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import threading
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from crystalscope.acquire.clock import Clock, VirtualClock
from crystalscope.acquire.config import MicroscopeConfig
from crystalscope.acquire.interfaces import (
    CallLog,
    CallRecord,
    FunctionMode,
    HardwareError,
    StagePosition,
)
from crystalscope.acquire.sim_render import ExposureState, SimScene, StageSegment
from crystalscope.acquire.sim_sample import Sample, SampleConfig, polygon_area, polygon_disc_area
from crystalscope.acquire.sim_timeline import LensModel, StageModel
from crystalscope.errors import CrystalscopeError
from crystalscope.model.beam import Beam

__all__ = ["SimulatedMicroscope", "api_call"]

P = ParamSpec("P")
R = TypeVar("R")


def api_call(method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """Decorate an instrument method: latency on the clock, lock, and a call-log record.

    The instance provides ``clock``, ``name``, ``call_log``, ``_lock`` and
    ``_latency_s``.
    """
    signature = inspect.signature(method)

    @functools.wraps(method)
    def wrapper(self: Any, *args: P.args, **kwargs: P.kwargs) -> R:
        bound = signature.bind(self, *args, **kwargs)
        call_args = {k: v for k, v in bound.arguments.items() if k != "self"}
        with self._lock:
            start = self.clock.now()
            self.clock.sleep(self._latency_s)
            try:
                result = method(self, *args, **kwargs)
            except CrystalscopeError as exc:
                self.call_log.append(
                    CallRecord(
                        start,
                        self.clock.now(),
                        self.name,
                        method.__name__,
                        call_args,
                        None,
                        str(exc),
                    )
                )
                raise
            self.call_log.append(
                CallRecord(start, self.clock.now(), self.name, method.__name__, call_args, result)
            )
            return result

    return wrapper


def _matrix(values: tuple[float, float, float, float]) -> np.ndarray:
    return np.array(values, dtype=float).reshape(2, 2)


def _pick(value: float, available: list[float], what: str, field: str) -> float:
    for v in available:
        if abs(float(value) - v) <= 1e-6 * max(abs(v), 1.0):
            return float(v)
    raise HardwareError(f"{what} {value} is not available; choose one of {available}", field=field)


def _nearest(value: float, available: list[float]) -> float:
    return float(min(available, key=lambda v: abs(v - value)))


class SimulatedMicroscope:
    """Simulated TEM (see the module docstring).

    Parameters
    ----------
    config : MicroscopeConfig, optional
        Instrument and simulation parameters (default: all defaults).
    clock : Clock, optional
        Time base (default: a new VirtualClock at 0 s).
    sample : Sample or SampleConfig, optional
        The specimen (default: ``config.simulation.sample``).
    call_log : CallLog, optional
        Where API calls are recorded (default: a new log, shared with the camera).
    """

    def __init__(
        self,
        config: MicroscopeConfig | None = None,
        *,
        clock: Clock | None = None,
        sample: Sample | SampleConfig | None = None,
        call_log: CallLog | None = None,
    ) -> None:
        self.config = config if config is not None else MicroscopeConfig()
        self._clock: Clock = clock if clock is not None else VirtualClock()
        self.call_log = call_log if call_log is not None else CallLog()
        self._lock = threading.RLock()
        self._latency_s = self.config.api_latency_s
        cfg, sim = self.config, self.config.simulation
        if not isinstance(sample, Sample):
            sample = Sample.from_config(sample if sample is not None else sim.sample)
        self.sample = sample
        self._beam = Beam.from_voltage_kv(cfg.voltage_kv)
        self.scene = SimScene(sample, sim, cfg.calibration, self._beam, cfg.stage.limits.alpha_deg)
        now = self._clock.now()
        self._stage = StageModel(
            cfg.stage.limits,
            cfg.stage.translation_speed_um_per_s,
            StagePosition(),
            now,
            sim.fail_stage_at_deg,
        )
        self._lens = LensModel(
            cfg.optics.diffraction_focus_focused,
            cfg.optics.lens_settling_s,
            cfg.calibration.defocus_offset,
            now,
        )
        speeds = cfg.stage.rotation_speeds_deg_per_s
        self._speed = cfg.stage.initial_rotation_speed_deg_per_s or max(speeds)
        self._mode = FunctionMode.DIFF
        self._mag = {
            FunctionMode.LOWMAG: _nearest(2500.0, cfg.optics.magnifications_lowmag),
            FunctionMode.MAG1: min(cfg.optics.magnifications_mag1),
        }
        self._camera_length = _nearest(250.0, cfg.optics.camera_lengths_mm)
        self._shift_raw = np.zeros(2, dtype=np.int64)
        self._tilt_raw = np.zeros(2, dtype=np.int64)
        self._blanked = False
        self._screen_up = True
        self._spot = min(cfg.optics.spot_sizes)

    # ------------------------------------------------------------------ constants

    @property
    def name(self) -> str:
        """Instrument name."""
        return self.config.name

    @property
    def clock(self) -> Clock:
        """The microscope's clock."""
        return self._clock

    @property
    def voltage_kv(self) -> float:
        """Accelerating voltage, kV."""
        return float(self.config.voltage_kv)

    @property
    def wavelength_a(self) -> float:
        """Relativistic electron wavelength, A."""
        return float(self._beam.wavelength)

    @property
    def beam(self) -> Beam:
        """The electron beam (wavelength, radiation)."""
        return self._beam

    @property
    def fail_stage_at_deg(self) -> float | None:
        """Angle at which an injected stage fault stops the goniometer (None: off)."""
        return self._stage.fail_at_deg

    @fail_stage_at_deg.setter
    def fail_stage_at_deg(self, value: float | None) -> None:
        self._stage.fail_at_deg = None if value is None else float(value)

    def clear_stage_fault(self) -> None:
        """Recover from an injected stage fault (no latency, not logged)."""
        with self._lock:
            self._stage.clear_fault(self._clock.now())

    # ------------------------------------------------------------------ stage

    @api_call
    def get_stage_position(self) -> StagePosition:
        """Current stage position."""
        now = self._clock.now()
        self._stage.check(now)
        return self._stage.position(now)

    @api_call
    def set_stage_position(
        self,
        x_um: float | None = None,
        y_um: float | None = None,
        z_um: float | None = None,
        alpha_deg: float | None = None,
        beta_deg: float | None = None,
        *,
        wait: bool = True,
    ) -> None:
        """Move the given axes; alpha and beta at the rotation speed; ``wait`` blocks."""
        given = {
            "x_um": x_um,
            "y_um": y_um,
            "z_um": z_um,
            "alpha_deg": alpha_deg,
            "beta_deg": beta_deg,
        }
        targets = {k: float(v) for k, v in given.items() if v is not None}
        end = self._stage.move(self._clock.now(), targets, self._speed)
        if wait:
            self._clock.sleep(max(end - self._clock.now(), 0.0))
            self._stage.check(self._clock.now())

    @api_call
    def is_stage_moving(self) -> bool:
        """Whether an axis is moving."""
        now = self._clock.now()
        self._stage.check(now)
        return self._stage.is_moving(now)

    @api_call
    def set_rotation_speed(self, deg_per_s: float) -> None:
        """Speed of later alpha moves (one of ``stage.rotation_speeds_deg_per_s``)."""
        speeds = self.config.stage.rotation_speeds_deg_per_s
        self._speed = _pick(deg_per_s, speeds, "rotation speed", "deg_per_s")

    @api_call
    def get_rotation_speed(self) -> float:
        """Speed of alpha moves, deg/s."""
        return self._speed

    @api_call
    def start_rotation(self, target_alpha_deg: float) -> None:
        """Start turning alpha to the target at the rotation speed; returns at once."""
        self._stage.move(self._clock.now(), {"alpha_deg": float(target_alpha_deg)}, self._speed)

    @api_call
    def stop_rotation(self) -> None:
        """Freeze alpha where it is."""
        self._stage.stop(self._clock.now())

    # ------------------------------------------------------------------ optics

    @api_call
    def get_function_mode(self) -> FunctionMode:
        """Current optical mode."""
        return self._mode

    @api_call
    def set_function_mode(self, mode: FunctionMode | str) -> None:
        """Switch mode (``lowmag``, ``mag1``, ``diff``)."""
        self._mode = FunctionMode.parse(mode)

    def _imaging_mode(self) -> FunctionMode:
        if self._mode is FunctionMode.DIFF:
            raise HardwareError(
                "no magnification in diffraction mode; use the camera length", field="mode"
            )
        return self._mode

    @api_call
    def get_magnification(self) -> float:
        """Magnification of the current imaging mode."""
        return self._mag[self._imaging_mode()]

    @api_call
    def set_magnification(self, value: float) -> None:
        """Set the magnification of the current imaging mode (an available value)."""
        mode = self._imaging_mode()
        optics = self.config.optics
        available = (
            optics.magnifications_lowmag
            if mode is FunctionMode.LOWMAG
            else (optics.magnifications_mag1)
        )
        self._mag[mode] = _pick(value, available, f"{mode.value} magnification", "value")

    @api_call
    def get_camera_length_mm(self) -> float:
        """Camera length, mm."""
        return self._camera_length

    @api_call
    def set_camera_length_mm(self, value: float) -> None:
        """Set the camera length (an available value), mm."""
        self._camera_length = _pick(
            value, self.config.optics.camera_lengths_mm, "camera length", "value"
        )

    @api_call
    def get_diffraction_focus(self) -> int:
        """Diffraction-focus value last set."""
        return self._lens.value

    @api_call
    def set_diffraction_focus(self, value: int) -> None:
        """Set the diffraction focus; the pattern refocuses over the settling time."""
        lo, hi = self.config.optics.diffraction_focus_range
        if int(value) != value or not lo <= value <= hi:
            raise HardwareError(
                f"diffraction focus must be an integer in {lo}..{hi}, got {value}", field="value"
            )
        self._lens.set(self._clock.now(), int(value))

    def _deflector(
        self, x: float, y: float, matrix: tuple[float, ...], limit: float, what: str
    ) -> np.ndarray:
        vec = np.array([x, y], dtype=float)
        if not (np.all(np.isfinite(vec)) and np.all(np.abs(vec) <= limit)):
            raise HardwareError(f"{what} ({x}, {y}) beyond the limit of +-{limit}", field=what)
        m = _matrix(matrix)  # type: ignore[arg-type]
        return np.rint(np.linalg.solve(m, vec)).astype(np.int64)

    @api_call
    def get_beam_shift_nm(self) -> tuple[float, float]:
        """Beam shift (x, y) in nm, quantised to deflector units."""
        x, y = _matrix(self.config.calibration.beam_shift_nm_per_unit) @ self._shift_raw
        return float(x), float(y)

    @api_call
    def set_beam_shift_nm(self, x_nm: float, y_nm: float) -> None:
        """Shift the illuminated and selected area by (x, y) nm in the specimen plane."""
        self._shift_raw = self._deflector(
            x_nm,
            y_nm,
            self.config.calibration.beam_shift_nm_per_unit,
            self.config.optics.beam_shift_limit_nm,
            "beam_shift_nm",
        )

    @api_call
    def get_beam_tilt_mrad(self) -> tuple[float, float]:
        """Beam tilt (x, y) in mrad, quantised to deflector units."""
        x, y = _matrix(self.config.calibration.beam_tilt_mrad_per_unit) @ self._tilt_raw
        return float(x), float(y)

    @api_call
    def set_beam_tilt_mrad(self, x_mrad: float, y_mrad: float) -> None:
        """Tilt the incident beam by (x, y) mrad."""
        self._tilt_raw = self._deflector(
            x_mrad,
            y_mrad,
            self.config.calibration.beam_tilt_mrad_per_unit,
            self.config.optics.beam_tilt_limit_mrad,
            "beam_tilt_mrad",
        )

    @api_call
    def blank_beam(self) -> None:
        """Blank the beam."""
        self._blanked = True

    @api_call
    def unblank_beam(self) -> None:
        """Unblank the beam."""
        self._blanked = False

    @api_call
    def is_beam_blanked(self) -> bool:
        """Whether the beam is blanked."""
        return self._blanked

    @api_call
    def get_spot_size(self) -> int:
        """Spot size."""
        return self._spot

    @api_call
    def set_spot_size(self, value: int) -> None:
        """Set the spot size (one of ``optics.spot_sizes``)."""
        if value not in self.config.optics.spot_sizes:
            raise HardwareError(
                f"spot size {value} is not available; choose one of "
                f"{self.config.optics.spot_sizes}",
                field="value",
            )
        self._spot = int(value)

    @api_call
    def screen_up(self) -> None:
        """Lift the screen."""
        self._screen_up = True

    @api_call
    def screen_down(self) -> None:
        """Lower the screen."""
        self._screen_up = False

    @api_call
    def is_screen_up(self) -> bool:
        """Whether the screen is up."""
        return self._screen_up

    # ------------------------------------------------------------------ simulation

    def dose_rate_e_per_a2_s(self) -> float:
        """Electrons per A^2 per second on the specimen now (0 when blanked/screen down)."""
        if self._blanked or not self._screen_up:
            return 0.0
        sim = self.config.simulation
        base = (
            sim.dose_rate_e_per_a2_s
            if self._mode is FunctionMode.DIFF
            else (sim.image_dose_rate_e_per_a2_s)
        )
        steps = self._spot - min(self.config.optics.spot_sizes)
        return base * sim.spot_size_factor**steps

    def exposure_state(self, t0_s: float, t1_s: float) -> ExposureState:
        """The microscope's state during an exposure (no latency, not logged)."""
        with self._lock:
            times = [t0_s, *self._stage.breakpoints(t0_s, t1_s), t1_s]
            segments = tuple(
                StageSegment(a, b, self._stage.position(a), self._stage.position(b))
                for a, b in itertools.pairwise(times)
            )
            mid = 0.5 * (t0_s + t1_s)
            focused = self.config.optics.diffraction_focus_focused
            cal = self.config.calibration
            shift = _matrix(cal.beam_shift_nm_per_unit) @ self._shift_raw
            tilt = _matrix(cal.beam_tilt_mrad_per_unit) @ self._tilt_raw
            mag = self._mag.get(self._mode, 1.0)
            return ExposureState(
                t0_s,
                t1_s,
                self._mode,
                segments,
                (float(shift[0]), float(shift[1])),
                (float(tilt[0]), float(tilt[1])),
                self._camera_length,
                mag,
                self._lens.effective(mid) - focused,
                self.dose_rate_e_per_a2_s(),
            )

    def true_stage_position(self, t_s: float | None = None) -> StagePosition:
        """Stage position at ``t_s`` (default: now), ignoring faults' errors."""
        return self._stage.position(self._clock.now() if t_s is None else t_s)

    def true_effective_focus(self, t_s: float | None = None) -> float:
        """Effective (settling) diffraction-focus value at ``t_s`` (default: now)."""
        return self._lens.effective(self._clock.now() if t_s is None else t_s)

    def true_crystal_position_um(self, index: int, t_s: float | None = None) -> np.ndarray:
        """Lab position (x, y, z) in um of crystal ``index``'s centre at ``t_s``."""
        return self.sample.crystals[index].lab_centre_um(self.true_stage_position(t_s))

    def true_selected_centre_um(self) -> np.ndarray:
        """Centre (x, y) of the selected area (the beam shift) in um."""
        cal = self.config.calibration
        return np.asarray(_matrix(cal.beam_shift_nm_per_unit) @ self._shift_raw / 1000.0)

    def true_aperture_fraction(self, index: int, t_s: float | None = None) -> float:
        """Fraction of crystal ``index``'s projected area inside the selected area."""
        crystal = self.sample.crystals[index]
        poly = crystal.projection_um(self.true_stage_position(t_s))
        inside = polygon_disc_area(
            poly, self.true_selected_centre_um(), self.scene.selected_radius_um
        )
        return inside / max(polygon_area(poly), 1e-300)
