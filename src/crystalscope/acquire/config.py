"""Configuration of microscopes and cameras (YAML, validated), and the driver factory.

One YAML file describes one microscope (:class:`MicroscopeConfig`) and one describes
one camera (:class:`CameraConfig`); the microscope file names its camera (``camera:``, a
path relative to the microscope file or ``builtin:NAME``).  ``kind`` is ``simulated``
(the simulator of :mod:`crystalscope.acquire.sim_microscope`) or
``"python.module:ClassName"``, a driver class for a real instrument, constructed as
``ClassName(config)`` and checked against the :class:`~.interfaces.Microscope` or
:class:`~.interfaces.Camera` protocol.

Built-in files (``builtin:NAME``, in ``crystalscope/data/acquire``):

* ``sim-jeol-2100``: a JEOL-2100-like 200 kV TEM (LaB6, high-tilt holder), simulated,
  with the timings of seed 001: 35 ms per API call, 350 ms lens settling;
* ``timepix-quad``: an ASI Timepix quad, 512 x 512 raw pixels of 55 um, 8 ms readout,
  3.5 ms overhead, 11810 counts per pixel at most.

Units are in the names (docs/conventions.md): um, mm, nm, deg, mrad, s, kV.

Example::

    name: my-tem
    kind: simulated
    voltage_kv: 200
    camera: builtin:timepix-quad
    optics:
      camera_lengths_mm: [150, 200, 250, 300]
      diffraction_focus_focused: 21500
    calibration:
      defocus_offset: 1500
      defocus_nm_per_px: 10.0
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, Field, field_validator, model_validator

from crystalscope.acquire.clock import Clock
from crystalscope.acquire.interfaces import Camera, Microscope
from crystalscope.acquire.sim_sample import SampleConfig
from crystalscope.config import StrictModel, load_yaml_mapping, parse_config, relative_to_config
from crystalscope.errors import ConfigError
from crystalscope.io.atomic import atomic_write

__all__ = [
    "BUILTIN_CONFIGS",
    "CalibrationConfig",
    "CameraConfig",
    "MicroscopeConfig",
    "OpticsConfig",
    "SimulatedCameraConfig",
    "SimulatedMicroscopeConfig",
    "StageConfig",
    "StageLimits",
    "builtin_config_path",
    "load_camera_config",
    "load_microscope",
    "load_microscope_config",
    "load_sample_config",
    "write_config",
]

#: Built-in configuration files: name -> what it is.
BUILTIN_CONFIGS: dict[str, str] = {
    "sim-jeol-2100": "simulated JEOL-2100-like 200 kV TEM with a high-tilt holder",
    "timepix-quad": "ASI Timepix quad camera, 512 x 512 raw pixels of 55 um",
}

_KIND = re.compile(r"^(simulated|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")


def _check_kind(value: str) -> str:
    if not _KIND.match(value):
        raise ValueError("kind must be 'simulated' or 'python.module:ClassName'")
    return value


def _check_range(value: tuple[float, float]) -> tuple[float, float]:
    if not value[0] <= value[1]:
        raise ValueError(f"range must be (low, high) with low <= high, got {value}")
    return value


Pair = Annotated[tuple[float, float], AfterValidator(_check_range)]
Kind = Annotated[str, AfterValidator(_check_kind)]


class StageLimits(StrictModel):
    """Travel of each stage axis, (low, high)."""

    x_um: Pair = (-1000.0, 1000.0)
    y_um: Pair = (-1000.0, 1000.0)
    z_um: Pair = (-200.0, 200.0)
    alpha_deg: Pair = (-80.0, 80.0)
    beta_deg: Pair = (-30.0, 30.0)


class StageConfig(StrictModel):
    """Goniometer: limits and speeds."""

    limits: StageLimits = Field(default_factory=StageLimits)
    translation_speed_um_per_s: float = Field(50.0, gt=0)
    rotation_speeds_deg_per_s: list[float] = Field(
        default_factory=lambda: [0.15, 0.3, 0.45, 0.6, 0.9, 1.2, 2.0, 5.0, 10.0],
        min_length=1,
        description="speeds the goniometer offers for alpha",
    )
    initial_rotation_speed_deg_per_s: float | None = Field(
        None, gt=0, description="default: the fastest available"
    )

    @field_validator("rotation_speeds_deg_per_s")
    @classmethod
    def _positive(cls, value: list[float]) -> list[float]:
        if any(not v > 0 for v in value):
            raise ValueError("rotation speeds must be > 0")
        return sorted(value)

    @model_validator(mode="after")
    def _initial_available(self) -> StageConfig:
        v = self.initial_rotation_speed_deg_per_s
        if v is not None and not any(
            abs(v - s) <= 1e-9 * s for s in self.rotation_speeds_deg_per_s
        ):
            raise ValueError("initial_rotation_speed_deg_per_s must be one of the speeds")
        return self


class OpticsConfig(StrictModel):
    """Lenses and deflectors: available settings, settling and ranges."""

    camera_lengths_mm: list[float] = Field(
        default_factory=lambda: [80.0, 100.0, 150.0, 200.0, 250.0, 300.0, 400.0, 500.0, 800.0],
        min_length=1,
    )
    magnifications_lowmag: list[float] = Field(
        default_factory=lambda: [50.0, 100.0, 200.0, 500.0, 1000.0, 2500.0, 5000.0], min_length=1
    )
    magnifications_mag1: list[float] = Field(
        default_factory=lambda: [8000.0, 15000.0, 25000.0, 50000.0, 100000.0], min_length=1
    )
    spot_sizes: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    diffraction_focus_focused: int = Field(21500, description="IL1 value of a sharp pattern")
    diffraction_focus_range: tuple[int, int] = (0, 65535)
    lens_settling_s: float = Field(
        0.35, ge=0, description="time for the pattern to refocus after a focus change"
    )
    beam_shift_limit_nm: float = Field(10000.0, gt=0)
    beam_tilt_limit_mrad: float = Field(50.0, gt=0)

    @model_validator(mode="after")
    def _focus_in_range(self) -> OpticsConfig:
        lo, hi = self.diffraction_focus_range
        if not lo <= self.diffraction_focus_focused <= hi:
            raise ValueError("diffraction_focus_focused must lie in diffraction_focus_range")
        return self


class CalibrationConfig(StrictModel):
    """Calibrations that turn raw lens and deflector values into physical units."""

    defocus_offset: int = Field(
        1500, description="diffraction-focus offset at which defocus_nm_per_px was measured"
    )
    defocus_nm_per_px: float = Field(
        10.0, gt=0, description="specimen nm per camera pixel in the defocused image"
    )
    beam_shift_nm_per_unit: tuple[float, float, float, float] = Field(
        (2.5, 0.0, 0.0, 2.5), description="2x2 matrix row by row: raw deflector units -> nm"
    )
    beam_tilt_mrad_per_unit: tuple[float, float, float, float] = Field(
        (0.01, 0.0, 0.0, 0.01), description="2x2 matrix row by row: raw units -> mrad"
    )

    @field_validator("defocus_offset")
    @classmethod
    def _nonzero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("defocus_offset must not be 0")
        return value

    @field_validator("beam_shift_nm_per_unit", "beam_tilt_mrad_per_unit")
    @classmethod
    def _invertible(
        cls, value: tuple[float, float, float, float]
    ) -> tuple[float, float, float, float]:
        if abs(value[0] * value[3] - value[1] * value[2]) < 1e-12:
            raise ValueError("the calibration matrix must be invertible")
        return value


class SimulatedMicroscopeConfig(StrictModel):
    """Physics of the simulated microscope (used when ``kind`` is ``simulated``)."""

    seed: int = 0
    sa_aperture_radius_um: float = Field(0.75, gt=0, description="effective radius")
    beam_radius_um: float = Field(1.5, gt=0, description="illuminated radius in diff mode")
    dose_rate_e_per_a2_s: float = Field(0.02, gt=0, description="diff mode at spot size 1")
    image_dose_rate_e_per_a2_s: float = Field(0.005, gt=0, description="image modes, spot 1")
    spot_size_factor: float = Field(0.6, gt=0, le=1, description="current ratio per spot step")
    divergence_mrad: float = Field(0.2, ge=0, description="full angle (FWHM)")
    zero_order_width_px: float = Field(1.0, gt=0, description="Lorentzian half width")
    inelastic: bool = True
    inelastic_mfp_a: float = Field(1500.0, gt=0)
    inelastic_width_px: float = Field(40.0, gt=0)
    ellipticity: float = Field(0.0, ge=0, lt=0.5, description="axis ratio - 1 of the lenses")
    ellipticity_angle_deg: float = 0.0
    image_contrast_mfp_um: float = Field(
        0.25, gt=0, description="crystal transmission exp(-t / mfp) in images"
    )
    fail_stage_at_deg: float | None = Field(None, description="inject a stage stop at alpha")
    sample: SampleConfig = Field(default_factory=SampleConfig)


class MicroscopeConfig(StrictModel):
    """One microscope."""

    name: str = "microscope"
    kind: Kind = "simulated"
    voltage_kv: float = Field(200.0, gt=0)
    api_latency_s: float = Field(0.035, ge=0, description="time every API call takes")
    camera: str = "builtin:timepix-quad"
    stage: StageConfig = Field(default_factory=StageConfig)
    optics: OpticsConfig = Field(default_factory=OpticsConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    simulation: SimulatedMicroscopeConfig = Field(default_factory=SimulatedMicroscopeConfig)


class SimulatedCameraConfig(StrictModel):
    """Detector physics of the simulated camera."""

    layout: Literal["single", "timepix-quad"] = Field(
        "single", description="timepix-quad: 2x2 chips with 3x-wide cross pixels (512 x 512)"
    )
    beam_centre_px: tuple[float, float] | None = Field(
        None, description="(fs, ss) of the direct beam; default: near the middle"
    )
    seed: int = 0
    noise: bool = True
    psf_sigma_px: float = Field(0.7, ge=0)
    flat_field_rms: float = Field(0.0, ge=0)
    dead_pixel_fraction: float = Field(0.0, ge=0, le=1)
    hot_pixel_fraction: float = Field(0.0, ge=0, le=1)
    hot_pixel_counts: float = Field(1000.0, ge=0)
    dead_time_s: float = Field(0.0, ge=0, description="paralyzable dead time per pixel")
    saturation_counts: float | None = Field(None, gt=0, description="counter depth")
    dark_counts_per_px_s: float = Field(0.0, ge=0)
    timeout_at_frame: int | None = Field(None, ge=0, description="inject a timeout (0-based)")


class CameraConfig(StrictModel):
    """One camera."""

    name: str = "camera"
    kind: Kind = "simulated"
    dimensions: tuple[int, int] = Field((512, 512), description="(ny, nx) unbinned")
    pixel_size_mm: float = Field(0.055, gt=0)
    binning: Literal[1, 2, 4] = 1
    readout_s: float = Field(0.008, ge=0)
    overhead_s: float = Field(0.0035, ge=0)
    timeout_s: float = Field(1.0, gt=0, description="wait before a timeout is reported")
    dtype: Literal["uint16", "int32"] = "uint16"
    simulation: SimulatedCameraConfig = Field(default_factory=SimulatedCameraConfig)

    @model_validator(mode="after")
    def _shape(self) -> CameraConfig:
        ny, nx = self.dimensions
        if ny < 8 or nx < 8:
            raise ValueError("dimensions must be at least 8 x 8")
        if ny % self.binning or nx % self.binning:
            raise ValueError("dimensions must be divisible by the binning")
        if self.simulation.layout == "timepix-quad" and (
            (ny, nx) != (512, 512) or abs(self.pixel_size_mm - 0.055) > 1e-9
        ):
            raise ValueError("the timepix-quad layout needs 512 x 512 pixels of 0.055 mm")
        return self


# ---------------------------------------------------------------------- loading


def builtin_config_path(name: str) -> Path:
    """Path of built-in configuration ``name`` (with or without ``builtin:``).

    Raises
    ------
    ConfigError
        For an unknown name.
    """
    key = name.split(":", 1)[1] if name.startswith("builtin:") else name
    if key not in BUILTIN_CONFIGS:
        raise ConfigError(
            f"unknown built-in configuration {name!r}; choose one of "
            + ", ".join(f"builtin:{k}" for k in BUILTIN_CONFIGS),
            field="builtin",
        )
    return Path(str(importlib.resources.files("crystalscope") / "data" / "acquire" / f"{key}.yaml"))


def _resolve(source: str | os.PathLike[str]) -> Path:
    text = os.fspath(source)
    return builtin_config_path(text) if text.startswith("builtin:") else Path(text)


def load_microscope_config(source: str | os.PathLike[str]) -> MicroscopeConfig:
    """Read a microscope YAML file (or ``builtin:NAME``).

    A relative ``camera`` path is made absolute against the file's folder.

    Raises
    ------
    ConfigError
        Unreadable YAML, unknown keys or invalid values, naming the file and key.
    """
    path = _resolve(source)
    config = parse_config(load_yaml_mapping(path), MicroscopeConfig, source=path)
    if not config.camera.startswith("builtin:"):
        config.camera = str(relative_to_config(config.camera, path.parent).resolve())
    return config


def load_camera_config(source: str | os.PathLike[str]) -> CameraConfig:
    """Read a camera YAML file (or ``builtin:NAME``); errors as :func:`load_microscope_config`."""
    path = _resolve(source)
    return parse_config(load_yaml_mapping(path), CameraConfig, source=path)


def load_sample_config(source: str | os.PathLike[str]) -> SampleConfig:
    """Read a sample (specimen) YAML file; errors as :func:`load_microscope_config`."""
    path = Path(source)
    return parse_config(load_yaml_mapping(path), SampleConfig, source=path)


def write_config(
    config: StrictModel, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write a configuration (every value, defaults filled in) as YAML, atomically."""
    target = Path(path)
    with atomic_write(target, overwrite=overwrite) as fh:
        yaml.safe_dump(config.model_dump(mode="json"), fh, sort_keys=False)
    return target


def _driver_class(kind: str, field: str, source: str | None) -> Any:
    module_name, _, class_name = kind.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import driver module {module_name!r}: {exc}", path=source, field=field
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(
            f"module {module_name!r} has no class {class_name!r}", path=source, field=field
        )
    return cls


def load_microscope(
    config: MicroscopeConfig | str | os.PathLike[str],
    *,
    camera: CameraConfig | str | os.PathLike[str] | None = None,
    sample: SampleConfig | str | os.PathLike[str] | None = None,
    clock: Clock | None = None,
) -> tuple[Microscope, Camera]:
    """Build the microscope and its camera from their configurations.

    Parameters
    ----------
    config : MicroscopeConfig, path or ``builtin:NAME``
        The microscope.
    camera : CameraConfig, path or ``builtin:NAME``, optional
        The camera; default: the one the microscope configuration names.
    sample : SampleConfig or path, optional
        Specimen for a simulated microscope (default: ``simulation.sample``).
    clock : Clock, optional
        Time base of a simulated microscope (default: a new
        :class:`~crystalscope.acquire.clock.VirtualClock`).

    Returns
    -------
    (Microscope, Camera)
        A simulated microscope gets a :class:`~.sim_camera.SimulatedCamera` bound to it;
        real drivers are built as ``ClassName(config)``.

    Raises
    ------
    ConfigError
        Bad files, an unknown driver, a driver that does not implement the protocol,
        or a simulated camera on a real microscope.
    """
    mic_cfg = config if isinstance(config, MicroscopeConfig) else load_microscope_config(config)
    source = None if isinstance(config, MicroscopeConfig) else os.fspath(config)
    cam_src = mic_cfg.camera if camera is None else camera
    cam_cfg = cam_src if isinstance(cam_src, CameraConfig) else load_camera_config(cam_src)
    if sample is not None:
        smp = sample if isinstance(sample, SampleConfig) else load_sample_config(sample)
        sim = mic_cfg.simulation.model_copy(update={"sample": smp})
        mic_cfg = mic_cfg.model_copy(update={"simulation": sim})
    if mic_cfg.kind == "simulated":
        from crystalscope.acquire.sim_camera import SimulatedCamera
        from crystalscope.acquire.sim_microscope import SimulatedMicroscope

        if cam_cfg.kind != "simulated":
            raise ConfigError(
                "a simulated microscope needs a simulated camera", path=source, field="camera.kind"
            )
        mic = SimulatedMicroscope(mic_cfg, clock=clock)
        return mic, SimulatedCamera(mic, cam_cfg)
    if cam_cfg.kind == "simulated":
        raise ConfigError(
            "a simulated camera needs the simulated microscope", path=source, field="camera.kind"
        )
    microscope = _driver_class(mic_cfg.kind, "kind", source)(mic_cfg)
    cam = _driver_class(cam_cfg.kind, "camera.kind", source)(cam_cfg)
    if not isinstance(microscope, Microscope):
        raise ConfigError(
            f"{mic_cfg.kind} does not implement the Microscope interface", path=source, field="kind"
        )
    if not isinstance(cam, Camera):
        raise ConfigError(
            f"{cam_cfg.kind} does not implement the Camera interface",
            path=source,
            field="camera.kind",
        )
    return microscope, cam
