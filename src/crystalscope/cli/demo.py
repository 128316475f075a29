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
    overwrite: Annotated[bool, typer.Option(help="Replace earlier demo outputs.")] = True,
) -> None:
    """Simulate a SerialED data set on built-in data and take it from raw frames to
    merged, validated intensities (pre-processing, indexing, integration, merging)."""
    from crystalscope.demo import run_demo

    console = Console()
    console.rule("crystalscope demo: simulated SerialED data set, raw frames to MTZ")
    files = run_demo(
        out, crystals, overwrite=overwrite,
        say=lambda m: console.print(m, markup=False, soft_wrap=True, highlight=False),
    )  # fmt: skip
    console.rule("outputs")
    for name, path in files.items():
        console.print(f"- {name}: {path}", markup=False, soft_wrap=True)
