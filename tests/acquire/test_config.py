"""Microscope and camera configuration: built-ins, YAML round trip, clear errors, drivers."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from crystalscope.acquire import load_microscope
from crystalscope.acquire.config import (
    BUILTIN_CONFIGS,
    CameraConfig,
    MicroscopeConfig,
    builtin_config_path,
    load_camera_config,
    load_microscope_config,
    load_sample_config,
    write_config,
)
from crystalscope.acquire.interfaces import Camera, Microscope
from crystalscope.acquire.sim_camera import SimulatedCamera
from crystalscope.errors import ConfigError


def test_builtin_configs_load_with_seed_timings() -> None:
    for name in BUILTIN_CONFIGS:
        assert builtin_config_path(name).is_file()
    mic = load_microscope_config("builtin:sim-jeol-2100")
    assert mic.kind == "simulated" and mic.voltage_kv == 200.0
    assert mic.api_latency_s == pytest.approx(0.035)
    assert 0.3 <= mic.optics.lens_settling_s <= 0.4
    assert mic.simulation.sa_aperture_radius_um == 0.75
    cam = load_camera_config("builtin:timepix-quad")
    assert cam.dimensions == (512, 512) and cam.pixel_size_mm == pytest.approx(0.055)
    assert cam.readout_s == pytest.approx(0.008)
    assert 0.003 <= cam.overhead_s <= 0.004
    assert cam.simulation.layout == "timepix-quad"


def test_defaults_match_the_issue() -> None:
    optics = MicroscopeConfig().optics
    assert optics.lens_settling_s == pytest.approx(0.35)
    assert MicroscopeConfig().api_latency_s == pytest.approx(0.035)


def test_yaml_round_trip(tmp_path: Path) -> None:
    mic = load_microscope_config("builtin:sim-jeol-2100")
    cam = load_camera_config("builtin:timepix-quad")
    write_config(mic, tmp_path / "tem.yaml")
    write_config(cam, tmp_path / "cam.yaml")
    assert load_microscope_config(tmp_path / "tem.yaml") == mic
    assert load_camera_config(tmp_path / "cam.yaml") == cam
    with pytest.raises(Exception, match="exists"):
        write_config(cam, tmp_path / "cam.yaml")


def test_camera_path_is_relative_to_the_microscope_file(tmp_path: Path) -> None:
    (tmp_path / "cams").mkdir()
    write_config(CameraConfig(name="mine", dimensions=(64, 64)), tmp_path / "cams" / "c.yaml")
    (tmp_path / "tem.yaml").write_text("name: t\ncamera: cams/c.yaml\n")
    cfg = load_microscope_config(tmp_path / "tem.yaml")
    assert Path(cfg.camera) == (tmp_path / "cams" / "c.yaml").resolve()
    mic, cam = load_microscope(tmp_path / "tem.yaml")
    assert cam.name == "mine" and cam.dimensions == (64, 64)
    assert mic.name == "t"


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("voltge_kv: 200\n", "voltge_kv", "unknown key"),
        ("api_latency_s: -1\n", "api_latency_s", "greater than or equal"),
        ("kind: not a driver\n", "kind", "python.module:ClassName"),
        ("stage:\n  limits:\n    alpha_deg: [80, -80]\n", "stage.limits.alpha_deg", "low <= high"),
        (
            "stage:\n  rotation_speeds_deg_per_s: [1.0, -2.0]\n",
            "stage.rotation_speeds_deg_per_s",
            "> 0",
        ),
        ("optics:\n  diffraction_focus_focused: 70000\n", "optics", "diffraction_focus_range"),
        (
            "calibration:\n  beam_shift_nm_per_unit: [1, 2, 2, 4]\n",
            "calibration.beam_shift_nm_per_unit",
            "invertible",
        ),
        (
            "simulation:\n  sample:\n    crystals:\n      - {shape: ellipse}\n",
            "simulation.sample.crystals.0",
            "minor_um",
        ),
    ],
)
def test_bad_microscope_file_names_file_and_field(
    tmp_path: Path, text: str, field: str, message: str
) -> None:
    path = tmp_path / "tem.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_microscope_config(path)
    assert err.value.path == str(path)
    assert err.value.field == field


def test_bad_camera_file(tmp_path: Path) -> None:
    path = tmp_path / "cam.yaml"
    path.write_text("dimensions: [256, 256]\nsimulation:\n  layout: timepix-quad\n")
    with pytest.raises(ConfigError, match="512 x 512") as err:
        load_camera_config(path)
    assert err.value.path == str(path)
    path.write_text("dimensions: [510, 512]\nbinning: 4\n")
    with pytest.raises(ConfigError, match="divisible"):
        load_camera_config(path)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_microscope_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_camera_config(bad)
    assert err.value.line is not None
    with pytest.raises(ConfigError, match="unknown built-in"):
        load_microscope_config("builtin:nope")
    sample = tmp_path / "sample.yaml"
    sample.write_text("crystals:\n  - {shape: polygon, vertices_um: [[0, 0], [1, 0]]}\n")
    with pytest.raises(ConfigError, match="at least 3") as err:
        load_sample_config(sample)
    assert err.value.path == str(sample)


_DRIVER = '''
import numpy as np
from crystalscope.acquire.sim_microscope import SimulatedMicroscope

class Tem(SimulatedMicroscope):
    """A stand-in for a real driver: built from its configuration only."""

class Cam:
    def __init__(self, config):
        self.config = config
    name = property(lambda self: self.config.name)
    dimensions = property(lambda self: tuple(self.config.dimensions))
    pixel_size_mm = property(lambda self: self.config.pixel_size_mm)
    binning = property(lambda self: 1)
    readout_s = property(lambda self: 0.0)
    overhead_s = property(lambda self: 0.0)
    def get_image(self, exposure_s):
        return np.zeros(self.dimensions, np.uint16)
    def get_movie(self, n_frames, exposure_s):
        return iter([self.get_image(exposure_s)] * n_frames)

class NotACamera:
    def __init__(self, config):
        pass
'''


def test_real_driver_classes_are_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fake_driver_mod.py").write_text(textwrap.dedent(_DRIVER))
    monkeypatch.syspath_prepend(str(tmp_path))
    mic_cfg = MicroscopeConfig(name="real", kind="fake_driver_mod:Tem")
    mic, cam = load_microscope(mic_cfg, camera=CameraConfig(name="c", kind="fake_driver_mod:Cam"))
    assert isinstance(mic, Microscope) and isinstance(cam, Camera)
    assert not isinstance(cam, SimulatedCamera)
    assert cam.get_image(0.1).shape == (512, 512)
    with pytest.raises(ConfigError, match="does not implement the Camera") as err:
        load_microscope(mic_cfg, camera=CameraConfig(kind="fake_driver_mod:NotACamera"))
    assert err.value.field == "camera.kind"
    with pytest.raises(ConfigError, match="has no class"):
        load_microscope(
            MicroscopeConfig(kind="fake_driver_mod:Missing"),
            camera=CameraConfig(kind="fake_driver_mod:Cam"),
        )
    with pytest.raises(ConfigError, match="cannot import"):
        load_microscope(
            MicroscopeConfig(kind="no_such_module_xyz:Tem"),
            camera=CameraConfig(kind="fake_driver_mod:Cam"),
        )
    with pytest.raises(ConfigError, match="simulated camera needs"):
        load_microscope(mic_cfg, camera=CameraConfig())
    with pytest.raises(ConfigError, match="needs a simulated camera"):
        load_microscope(MicroscopeConfig(), camera=CameraConfig(kind="fake_driver_mod:Cam"))
    sys.modules.pop("fake_driver_mod", None)


def test_sample_override(tmp_path: Path) -> None:
    path = tmp_path / "sample.yaml"
    path.write_text(yaml.safe_dump({"crystals": [{"x_um": 5.0, "size_um": 0.8}]}))
    mic, _ = load_microscope("builtin:sim-jeol-2100", sample=path)
    assert len(mic.sample.crystals) == 1  # type: ignore[attr-defined]
    assert mic.sample.crystals[0].centre_um[0] == 5.0  # type: ignore[attr-defined]
