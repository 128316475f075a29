"""Protocol conformance, enums, positions, errors and the call log."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crystalscope.acquire import load_microscope
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
from crystalscope.acquire.sim_camera import SimulatedCamera
from crystalscope.acquire.sim_microscope import SimulatedMicroscope
from crystalscope.errors import CrystalscopeError


def test_simulated_instruments_implement_the_protocols() -> None:
    mic, cam = load_microscope("builtin:sim-jeol-2100")
    assert isinstance(mic, SimulatedMicroscope) and isinstance(mic, Microscope)
    assert isinstance(cam, SimulatedCamera) and isinstance(cam, Camera)
    assert not isinstance(cam, Microscope)
    assert not isinstance(mic, Camera)


def test_an_incomplete_driver_is_not_a_microscope() -> None:
    class Partial:
        name = "partial"

        def get_stage_position(self) -> StagePosition:
            return StagePosition()

    assert not isinstance(Partial(), Microscope)


def test_function_mode_parsing() -> None:
    assert FunctionMode.parse("DIFF") is FunctionMode.DIFF
    assert FunctionMode.parse(FunctionMode.MAG1) is FunctionMode.MAG1
    assert FunctionMode("lowmag") is FunctionMode.LOWMAG
    with pytest.raises(HardwareError, match="unknown function mode") as err:
        FunctionMode.parse("samag")
    assert err.value.field == "mode"


def test_errors_are_crystalscope_errors() -> None:
    for cls in (StageError, CameraTimeout):
        assert issubclass(cls, HardwareError)
        assert issubclass(cls, CrystalscopeError)
    assert "field 'alpha_deg'" in str(StageError("stopped", field="alpha_deg"))


def test_stage_position_as_dict() -> None:
    pos = StagePosition(1.0, 2.0, 3.0, 4.0, 5.0)
    assert pos.as_dict() == {
        "x_um": 1.0,
        "y_um": 2.0,
        "z_um": 3.0,
        "alpha_deg": 4.0,
        "beta_deg": 5.0,
    }


def test_call_log_lines_and_json(tmp_path: Path) -> None:
    log = CallLog()
    log.append(CallRecord(0.0, 0.035, "tem", "set_diffraction_focus", {"value": 23000}))
    log.append(CallRecord(0.035, 0.07, "tem", "get_function_mode", {}, FunctionMode.DIFF))
    log.append(
        CallRecord(0.07, 0.6, "cam", "get_image", {"exposure_s": 0.5}, np.zeros((4, 4), np.uint16))
    )
    log.append(
        CallRecord(
            0.6, 0.7, "tem", "start_rotation", {"target_alpha_deg": 99.0}, None, "target outside"
        )
    )
    lines = log.lines()
    assert "tem.set_diffraction_focus(value=23000) -> None" in lines[0]
    assert lines[1].endswith("-> diff")
    assert "array(4, 4)" in lines[2]
    assert "ERROR target outside" in lines[3]
    assert [r.call for r in log.calls("get_image")] == ["get_image"]
    out = tmp_path / "calls.jsonl"
    log.write(out)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[2]["result"] == {"array_shape": [4, 4], "dtype": "uint16"}
    assert rows[3]["error"] == "target outside"
    with pytest.raises(CrystalscopeError, match="exists"):
        log.write(out)
