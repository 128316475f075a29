"""Typed interfaces of a transmission electron microscope and its camera.

Experiments (continuous-rotation ED, serial ED, screening) talk to the instrument only
through the two :class:`typing.Protocol` classes below, so the same experiment code runs
on the simulated microscope (:mod:`crystalscope.acquire.sim_microscope`) and on any
real microscope whose driver implements the methods.  Both protocols are
``runtime_checkable``: ``isinstance(obj, Microscope)`` checks that every member exists.

Units and frames (docs/conventions.md)
--------------------------------------
* Stage translations ``x_um, y_um, z_um`` in micrometres, tilts ``alpha_deg``,
  ``beta_deg`` in degrees.  The stage coordinates of a point on the specimen are the
  stage position that brings that point to the eucentric point (where the optical axis
  meets the alpha rotation axis).  The alpha axis is the lab ``x`` axis, right-handed
  (NeXus); the beam runs along lab ``+z``.
* Beam shift in nanometres in the specimen plane (lab ``x, y``), beam tilt in mrad:
  calibrated values, not raw deflector units (the driver converts with its
  calibration).
* Camera length in mm, rotation speed in degrees per second, times in seconds.
* Camera frames are numpy arrays of shape ``dimensions = (ny, nx)`` (rows = slow scan).

Errors
------
Instrument faults are :class:`HardwareError` subclasses of
:class:`~crystalscope.errors.CrystalscopeError`: :class:`StageError` (stage stopped,
target out of range) and :class:`CameraTimeout` (no frame arrived).  An experiment
catches them, writes what it has and exits cleanly.

Call log
--------
:class:`CallLog` holds :class:`CallRecord` entries (clock time, device, call, arguments,
result); the simulated instruments append one per API call and an experiment can dump
them next to its data.  Real drivers are encouraged to do the same.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from crystalscope.acquire.clock import Clock
from crystalscope.errors import CrystalscopeError
from crystalscope.io.atomic import atomic_write

__all__ = [
    "CallLog",
    "CallRecord",
    "Camera",
    "CameraTimeout",
    "FunctionMode",
    "HardwareError",
    "Microscope",
    "StageError",
    "StagePosition",
]


class HardwareError(CrystalscopeError):
    """The instrument refused a request or failed while carrying it out."""


class StageError(HardwareError):
    """A stage fault: the goniometer stopped, or a target is outside its range."""


class CameraTimeout(HardwareError):
    """The camera did not deliver a frame in time."""


class FunctionMode(enum.StrEnum):
    """Optical mode of the microscope."""

    LOWMAG = "lowmag"
    MAG1 = "mag1"
    DIFF = "diff"

    @classmethod
    def parse(cls, value: FunctionMode | str) -> FunctionMode:
        """The mode named by ``value`` (case-insensitive).

        Raises
        ------
        HardwareError
            For an unknown mode name.
        """
        if isinstance(value, FunctionMode):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise HardwareError(
                f"unknown function mode {value!r}; choose one of {names}", field="mode"
            ) from None


@dataclass(frozen=True)
class StagePosition:
    """Goniometer position.

    Attributes
    ----------
    x_um, y_um, z_um : float
        Translations in micrometres (stage coordinates of the specimen point at the
        eucentric point).
    alpha_deg : float
        Tilt about the lab ``x`` axis (right-handed), degrees.
    beta_deg : float
        Second tilt (double-tilt holders) about the holder's ``y`` axis, degrees.
    """

    x_um: float = 0.0
    y_um: float = 0.0
    z_um: float = 0.0
    alpha_deg: float = 0.0
    beta_deg: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The five values as a plain dict."""
        return {k: float(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class CallRecord:
    """One API call: when, on what, with which arguments, and what came back.

    Attributes
    ----------
    start_s, end_s : float
        Clock time at the call and at its return, seconds.
    device : str
        Name of the microscope or camera.
    call : str
        Method name.
    args : dict
        Arguments (keyword form).
    result : Any
        Returned value (arrays are summarised as their shape).
    error : str or None
        The error message when the call raised.
    """

    start_s: float
    end_s: float
    device: str
    call: str
    args: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None

    def line(self) -> str:
        """One human-readable log line."""
        args = ", ".join(f"{k}={_short(v)}" for k, v in self.args.items())
        tail = f"ERROR {self.error}" if self.error else _short(self.result)
        return (
            f"{self.start_s:12.6f} {self.end_s:12.6f} {self.device}.{self.call}({args}) -> {tail}"
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the record."""
        return {
            "start_s": self.start_s,
            "end_s": self.end_s,
            "device": self.device,
            "call": self.call,
            "args": {k: _jsonable(v) for k, v in self.args.items()},
            "result": _jsonable(self.result),
            "error": self.error,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return {"array_shape": list(value.shape), "dtype": str(value.dtype)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, StagePosition):
        return value.as_dict()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array{tuple(value.shape)}"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ")"
    return repr(value) if isinstance(value, str) else str(value)


class CallLog:
    """An append-only list of :class:`CallRecord` shared by a microscope and its camera."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def append(self, record: CallRecord) -> None:
        """Add one record."""
        self.records.append(record)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[CallRecord]:
        return iter(list(self.records))

    def calls(self, name: str) -> list[CallRecord]:
        """The records of method ``name``, in order."""
        return [r for r in self.records if r.call == name]

    def lines(self) -> list[str]:
        """One text line per record (:meth:`CallRecord.line`)."""
        return [r.line() for r in self.records]

    def write(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> None:
        """Write the log atomically as JSON lines (one record per line).

        Raises
        ------
        CrystalscopeError
            If ``path`` exists and ``overwrite`` is false, or its folder is missing.
        """
        with atomic_write(path, overwrite=overwrite) as fh:
            for record in self.records:
                fh.write(json.dumps(record.as_dict()) + "\n")


@runtime_checkable
class Microscope(Protocol):
    """A transmission electron microscope (see the module docstring for units).

    A driver for a real microscope implements every member; calls block for the
    duration of the hardware call unless stated otherwise.
    """

    @property
    def name(self) -> str:
        """Instrument name (from its configuration)."""
        ...

    @property
    def clock(self) -> Clock:
        """The clock every timing of this instrument refers to."""
        ...

    @property
    def voltage_kv(self) -> float:
        """Accelerating voltage, kV."""
        ...

    @property
    def wavelength_a(self) -> float:
        """Relativistic electron wavelength, Angstrom."""
        ...

    # stage ------------------------------------------------------------------------
    def get_stage_position(self) -> StagePosition:
        """Current goniometer position."""
        ...

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
        """Move the given axes (None: leave as is); ``wait`` blocks until they stop.

        Alpha turns at the current rotation speed.  Raises :class:`StageError`.
        """
        ...

    def is_stage_moving(self) -> bool:
        """Whether any stage axis is moving."""
        ...

    def set_rotation_speed(self, deg_per_s: float) -> None:
        """Speed of alpha moves (one of the instrument's available speeds), deg/s."""
        ...

    def get_rotation_speed(self) -> float:
        """Speed of alpha moves, deg/s."""
        ...

    def start_rotation(self, target_alpha_deg: float) -> None:
        """Start turning alpha towards ``target_alpha_deg``; returns at once."""
        ...

    def stop_rotation(self) -> None:
        """Stop the alpha rotation where it is."""
        ...

    # optics -----------------------------------------------------------------------
    def get_function_mode(self) -> FunctionMode:
        """Current optical mode."""
        ...

    def set_function_mode(self, mode: FunctionMode | str) -> None:
        """Switch to ``lowmag``, ``mag1`` or ``diff``."""
        ...

    def get_magnification(self) -> float:
        """Magnification of the current imaging mode (``lowmag`` or ``mag1``)."""
        ...

    def set_magnification(self, value: float) -> None:
        """Set the magnification of the current imaging mode (an available value)."""
        ...

    def get_camera_length_mm(self) -> float:
        """Camera length of diffraction mode, mm."""
        ...

    def set_camera_length_mm(self, value: float) -> None:
        """Set the camera length (an available value), mm."""
        ...

    def get_diffraction_focus(self) -> int:
        """Diffraction-focus lens value (intermediate lens, raw units)."""
        ...

    def set_diffraction_focus(self, value: int) -> None:
        """Set the diffraction-focus lens value; the lens then settles for a while."""
        ...

    def get_beam_shift_nm(self) -> tuple[float, float]:
        """Beam shift ``(x, y)`` in nm in the specimen plane."""
        ...

    def set_beam_shift_nm(self, x_nm: float, y_nm: float) -> None:
        """Shift the illuminated (and selected) area by ``(x, y)`` nm."""
        ...

    def get_beam_tilt_mrad(self) -> tuple[float, float]:
        """Beam tilt ``(x, y)`` in mrad."""
        ...

    def set_beam_tilt_mrad(self, x_mrad: float, y_mrad: float) -> None:
        """Tilt the incident beam by ``(x, y)`` mrad."""
        ...

    def blank_beam(self) -> None:
        """Blank the beam (no electrons reach the specimen)."""
        ...

    def unblank_beam(self) -> None:
        """Unblank the beam."""
        ...

    def is_beam_blanked(self) -> bool:
        """Whether the beam is blanked."""
        ...

    def get_spot_size(self) -> int:
        """Spot size (condenser setting; larger means less current)."""
        ...

    def set_spot_size(self, value: int) -> None:
        """Set the spot size (an available value)."""
        ...

    def screen_up(self) -> None:
        """Lift the fluorescent screen (the camera below it receives the beam)."""
        ...

    def screen_down(self) -> None:
        """Lower the fluorescent screen (the camera gets no electrons)."""
        ...

    def is_screen_up(self) -> bool:
        """Whether the screen is up."""
        ...


@runtime_checkable
class Camera(Protocol):
    """A camera: single frames and movies (continuous acquisition)."""

    @property
    def name(self) -> str:
        """Camera name (from its configuration)."""
        ...

    @property
    def dimensions(self) -> tuple[int, int]:
        """Frame shape ``(ny, nx)`` at the current binning."""
        ...

    @property
    def pixel_size_mm(self) -> float:
        """Pixel pitch at the current binning, mm."""
        ...

    @property
    def binning(self) -> int:
        """Binning factor (1: full resolution)."""
        ...

    @property
    def readout_s(self) -> float:
        """Dead time between two frames for readout, seconds."""
        ...

    @property
    def overhead_s(self) -> float:
        """Software overhead per frame (allocation, arranging data), seconds."""
        ...

    def get_image(self, exposure_s: float) -> np.ndarray:
        """Expose for ``exposure_s`` seconds and return the frame (counts).

        Raises :class:`CameraTimeout` when no frame arrives.
        """
        ...

    def get_movie(self, n_frames: int, exposure_s: float) -> Iterator[np.ndarray]:
        """Yield ``n_frames`` consecutive frames of ``exposure_s`` seconds each."""
        ...
