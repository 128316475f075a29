"""Instrument control: microscope and camera interfaces, configuration, and a simulator.

Experiments use the :class:`~crystalscope.acquire.interfaces.Microscope` and
:class:`~crystalscope.acquire.interfaces.Camera` protocols only, so they run unchanged
on the simulated instrument (:class:`~crystalscope.acquire.sim_microscope.SimulatedMicroscope`,
:class:`~crystalscope.acquire.sim_camera.SimulatedCamera`, on a
:class:`~crystalscope.acquire.clock.VirtualClock`) and on real drivers named in the
YAML configuration.  See docs/acquire.md.

Example
-------
>>> from crystalscope.acquire import load_microscope
>>> microscope, camera = load_microscope("builtin:sim-jeol-2100")  # doctest: +SKIP
>>> frame = camera.get_image(0.5)  # doctest: +SKIP
"""

from crystalscope.acquire.clock import Clock, RealClock, VirtualClock
from crystalscope.acquire.config import (
    CameraConfig,
    MicroscopeConfig,
    load_camera_config,
    load_microscope,
    load_microscope_config,
    load_sample_config,
    write_config,
)
from crystalscope.acquire.interfaces import (
    CallLog,
    CallRecord,
    Camera,
    CameraTimeout,
    FunctionMode,
    HardwareError,
    Microscope,
    StageError,
    StagePosition,
)
from crystalscope.acquire.sim_sample import CrystalSpec, Sample, SampleConfig

__all__ = [
    "CallLog",
    "CallRecord",
    "Camera",
    "CameraConfig",
    "CameraTimeout",
    "Clock",
    "CrystalSpec",
    "FunctionMode",
    "HardwareError",
    "Microscope",
    "MicroscopeConfig",
    "RealClock",
    "Sample",
    "SampleConfig",
    "StageError",
    "StagePosition",
    "VirtualClock",
    "load_camera_config",
    "load_microscope",
    "load_microscope_config",
    "load_sample_config",
    "write_config",
]
