"""The worked example of docs/cbxd-topographs.md runs as written and checks its claim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cbxd-topographs.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
OUTPUT = re.compile(r"median error of \|F\|\^2: ([0-9.]+) -> ([0-9.]+) \(5 it\.\) -> ([0-9.]+)")


def test_topograph_worked_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = PAGE.read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    assert blocks, "docs/cbxd-topographs.md has no python code block"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for number, code in enumerate(blocks, 1):
        exec(compile(code, f"cbxd-topographs.md block {number}", "exec"), namespace)
    errors = namespace["errors"]
    assert isinstance(errors, list) and errors[-1] <= errors[0] / 2
    # the output printed on the page is what the example gives
    shown = OUTPUT.search(text)
    assert shown is not None
    got = (errors[0], errors[5], errors[-1])
    assert [float(v) for v in shown.groups()] == pytest.approx(got, abs=1.5e-3)
