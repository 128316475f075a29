"""The worked example of docs/cred.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cred.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def test_worked_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(PAGE.read_text(encoding="utf-8"))
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    exec(compile(blocks[0], "docs/cred.md", "exec"), namespace)
    record = namespace["record"]
    assert record.status == "complete" and record.n_slots >= 18  # type: ignore[attr-defined]
    assert (tmp_path / "cred-data" / "experiment_1" / "SMV" / "XDS.INP").is_file()
    assert all(step.position.ok for step in record.tracking)  # type: ignore[attr-defined]
