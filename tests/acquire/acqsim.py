"""Helpers of the acquisition tests: build a simulated microscope with chosen crystals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from crystalscope.acquire.config import (
    MicroscopeConfig,
    load_camera_config,
    load_microscope_config,
)
from crystalscope.acquire.sim_camera import SimulatedCamera
from crystalscope.acquire.sim_microscope import SimulatedMicroscope
from crystalscope.acquire.sim_sample import CrystalSpec, SampleConfig
from crystalscope.model.orientation import random_rotation

#: A fixed orientation used where tests compare with independent predictions.
U_TEST = tuple(float(v) for v in random_rotation(7).ravel())

Build = Callable[..., tuple[SimulatedMicroscope, SimulatedCamera]]


def sample_config(*crystals: dict[str, Any], **changes: Any) -> SampleConfig:
    """A sample with the given crystals (CrystalSpec fields) and no random ones."""
    data: dict[str, Any] = {
        "source": {"structure": "builtin:monoclinic-organic", "d_min": 0.8},
        "crystals": [CrystalSpec(**c) for c in crystals],
    }
    data.update(changes)
    return SampleConfig(**data)


def microscope_config(sample: SampleConfig, **simulation: Any) -> MicroscopeConfig:
    """The built-in JEOL-like configuration with another sample and simulation values."""
    base = load_microscope_config("builtin:sim-jeol-2100")
    sim = base.simulation.model_copy(update={"sample": sample, **simulation})
    return base.model_copy(update={"simulation": sim})


def make_scope(
    *crystals: dict[str, Any],
    camera_changes: dict[str, Any] | None = None,
    camera_sim: dict[str, Any] | None = None,
    **simulation: Any,
) -> tuple[SimulatedMicroscope, SimulatedCamera]:
    """Built-in JEOL-like microscope and Timepix camera with the given crystals."""
    mic = SimulatedMicroscope(microscope_config(sample_config(*crystals), **simulation))
    cam_cfg = load_camera_config("builtin:timepix-quad")
    if camera_sim:
        sim = cam_cfg.simulation.model_copy(update=camera_sim)
        cam_cfg = cam_cfg.model_copy(update={"simulation": sim})
    if camera_changes:
        cam_cfg = cam_cfg.model_validate({**cam_cfg.model_dump(), **camera_changes})
    return mic, SimulatedCamera(mic, cam_cfg)


def centroid(weights: np.ndarray) -> tuple[float, float]:
    """Weighted centroid ``(fs, ss)`` of a non-negative image."""
    w = np.clip(weights, 0.0, None)
    ii, jj = np.indices(w.shape)
    total = float(w.sum())
    return float((w * jj).sum() / total), float((w * ii).sum() / total)
