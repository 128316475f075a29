"""The worked example of docs/rotation.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "rotation.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_worked_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    exec(compile(blocks[0], "docs/rotation.md", "exec"), namespace)
    keys = namespace["keys"]
    assert keys["EXCLUDE_DATA_RANGE="] == ["10 10"]  # type: ignore[index]
    assert keys["UNTRUSTED_RECTANGLE="] == ["255 262 0 517", "0 517 255 262"]  # type: ignore[index]
    assert keys["ORGX="] == ["241.000"]  # type: ignore[index]
    assert (tmp_path / "data" / "experiment_1" / "cRED_log.txt").is_file()
    assert (tmp_path / "handoff" / "NXmx" / "cred.nxs").is_file()
    assert (tmp_path / "handoff" / "RED" / "1.ed3d").is_file()
