"""The tutorials in docs/tutorials/ run as written: every ```python block of a page is
executed in order, in one namespace, in a temporary working directory."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tutorials"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def code_blocks(page: Path) -> list[str]:
    """The Python code blocks of a Markdown page, in order."""
    return BLOCK.findall(page.read_text(encoding="utf-8"))


def test_the_block_parser_finds_blocks() -> None:
    text = "x\n```python\na = 1\n```\n```sh\nls\n```\n```python\nb = a + 1\n```\n"
    assert BLOCK.findall(text) == ["a = 1\n", "b = a + 1\n"]


@pytest.mark.slow
@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_tutorial_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = code_blocks(page)
    assert blocks, f"{page.name} has no python code blocks"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    for number, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"{page.name} block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{page.name}, code block {number} failed: {exc!r}") from exc
