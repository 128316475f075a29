"""``crystalscope demo``: run the built-in job and show what it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from crystalscope.demo import DEFAULT_CRYSTALS

__all__ = ["demo"]


def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("demo-output"),
    crystals: Annotated[int, typer.Option(min=1, help="Number of crystals.")] = DEFAULT_CRYSTALS,
) -> None:
    """Simulate a SerialED data set on built-in data and run the main job on it
    (`crystalscope serial run`): raw frames to merged, validated intensities and an HTML
    report.  Running it again reuses everything already done."""
    from crystalscope.demo import run_demo

    console = Console()
    console.rule("crystalscope demo: simulated SerialED data set, raw frames to MTZ")
    result = run_demo(
        out, crystals, say=lambda m: console.print(m, markup=False, soft_wrap=True, highlight=False)
    )
    console.rule("outputs")
    for name, path in result.paths.items():
        console.print(f"- {name}: {path}", markup=False, soft_wrap=True)
