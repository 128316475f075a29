"""The worked example of docs/cbxd-processing.md runs as written and checks its claims."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "cbxd-processing.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


@pytest.mark.slow
def test_cbxd_processing_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = PAGE.read_text(encoding="utf-8")
    blocks = BLOCK.findall(text)
    assert len(blocks) == 1, "docs/cbxd-processing.md should hold one python block"
    monkeypatch.chdir(tmp_path)
    ns: dict[str, object] = {"__name__": "__docs__"}
    exec(compile(blocks[0], "cbxd-processing.md", "exec"), ns)
    fit, res = ns["fit"], ns["res"]
    assert fit.rms_px < 1.0 < fit.rms_px_start  # type: ignore[attr-defined]
    assert np.allclose(res.cell[:3], 5.431, rtol=0.02)  # type: ignore[attr-defined]
    # the numbers quoted on the page are the ones the example prints
    assert f"RMS {fit.rms_px_start:.2f} -> {fit.rms_px:.2f} px" in text  # type: ignore[attr-defined]
    assert f"{res.fraction_indexed:.0%} indexed" in text  # type: ignore[attr-defined]
    c = float(np.max(np.abs(fit.values["c"] / 5.431 - 1)))  # type: ignore[attr-defined]
    assert c < 0.02
