"""``crystalscope demo``: run the built-in job and show what it wrote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["demo"]


def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("demo-output"),
    crystals: Annotated[int, typer.Option(min=1, help="Number of crystals.")] = 12,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier demo outputs.")] = True,
) -> None:
    """Run the built-in end-to-end job on built-in data and summarise its outputs."""
    from crystalscope.cli.info import print_summary, summarize
    from crystalscope.demo import run_demo

    console = Console()
    console.rule("crystalscope demo: simulated SerialED data set")
    files = run_demo(out, crystals, overwrite=overwrite, say=lambda m: console.print(f"- {m}"))
    console.rule("outputs, read back")
    for name, path in files.items():
        kind, summary = summarize(path)
        print_summary(console, f"[bold]{name}[/]: {path} [dim]({kind})[/]", summary)
