"""The worked example of docs/cbxd.md runs as written and checks what it claims."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cbxd.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_cbxd_worked_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    assert blocks, "docs/cbxd.md has no python code block"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for number, code in enumerate(blocks, 1):
        exec(compile(code, f"cbxd.md block {number}", "exec"), namespace)
    assert abs(float(namespace["row"].counts / namespace["eq5"]) - 1) < 0.01  # type: ignore[attr-defined]
