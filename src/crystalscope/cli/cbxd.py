"""``crystalscope cbxd``: convergent-beam X-ray crystallography (seed 000).

``cbxd simulate`` writes a rotation series of CBXD frames with its truth (see
:mod:`crystalscope.simulate.cbxd`).  Settings come from a YAML file (``--config``), then
``--set section.key=value`` overrides (read as YAML), then the shortcut options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from crystalscope.config import merge_settings, parse_config

__all__ = ["app"]

app = typer.Typer(help="Convergent-beam X-ray crystallography (CBXD).", no_args_is_help=True)


@app.callback()
def cbxd() -> None:
    """Convergent-beam X-ray crystallography (CBXD): simulate and process."""


@app.command("simulate")
def simulate(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory.")] = Path(
        "simulated-cbxd"
    ),
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file with settings.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="Override one setting: section.key=value."),
    ] = None,
    shape: Annotated[str | None, typer.Option(help="si-f-cuboid, si-lamella or b12-prism.")] = None,
    n_frames: Annotated[int | None, typer.Option(help="Number of frames.")] = None,
    step_deg: Annotated[float | None, typer.Option(help="Rotation per frame, deg.")] = None,
    energy_kev: Annotated[float | None, typer.Option(help="Photon energy, keV.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace earlier outputs.")] = False,
) -> None:
    """Simulate a CBXD rotation series: cbxd.h5 (frames), truth.h5, resolved config."""
    from crystalscope.simulate.cbxd import simulate_cbxd
    from crystalscope.simulate.cbxd_config import CbxdConfig

    shortcuts = {
        "sample.shape": shape,
        "scan.n_frames": n_frames,
        "scan.step_deg": step_deg,
        "energy_kev": energy_kev,
        "seed": seed,
        "overwrite": True if overwrite else None,
    }
    data = merge_settings(config, set_, shortcuts)
    cfg = parse_config(data, CbxdConfig, source=config or "command line")
    console = Console()
    result = simulate_cbxd(cfg, out, progress=True, say=lambda m: console.print(f"- {m}"))
    console.print(
        f"{result.n_frames} frames, {result.n_streaks} streaks: {result.dataset}, {result.truth}"
    )
