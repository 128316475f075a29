"""The worked example of docs/acquire.md runs as written and tracks the crystal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "acquire.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_worked_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    exec(compile(blocks[0], "docs/acquire.md", "exec"), namespace)
    assert len(namespace["frames"]) == 30  # type: ignore[arg-type]
    assert min(namespace["fractions"]) > 0.9  # type: ignore[call-overload]
    assert namespace["alpha"] > -20.0  # type: ignore[operator]
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert {c["call"] for c in calls} >= {"start_rotation", "get_image", "set_beam_shift_nm"}
