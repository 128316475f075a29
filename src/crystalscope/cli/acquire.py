"""``crystalscope acquire ...``: data collection on a microscope or the simulated one.

``crystalscope acquire cred --simulate --out DIR`` runs a continuous-rotation experiment
(:func:`crystalscope.acquire.cred.collect_cred`) on the simulated JEOL-like TEM and
Timepix camera, on a virtual clock (the experiment's minutes take seconds), and writes
it into ``DIR/experiment_<n>`` (:func:`crystalscope.acquire.cred_output.write_cred`).
Without ``--simulate`` the microscope configuration must name a real driver
(``kind: python.module:ClassName``) and the experiment runs in real time.  Settings come
from ``--settings cred.yaml`` (:class:`~crystalscope.acquire.cred.CredSettings`) with
the options below on top.  A fault during collection (camera timeout, stopped stage)
writes every frame recorded and exits with status 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["app"]

app = typer.Typer(help="Data collection on a microscope (or the simulated one).",
                  no_args_is_help=True)  # fmt: skip


def _settings(path: Path | None, overrides: dict[str, Any]) -> Any:
    from crystalscope.acquire.cred import CredSettings
    from crystalscope.config import load_yaml_mapping, parse_config

    data = load_yaml_mapping(path) if path is not None else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    return parse_config(data, CredSettings, source=path)


@app.command("cred")
def cred(
    out: Annotated[Path, typer.Option("--out", "-o", help="Base directory of experiments.")],
    simulate: Annotated[bool, typer.Option(help="Use the simulated microscope.")] = False,
    microscope: Annotated[
        str, typer.Option(help="Microscope YAML or builtin:NAME.")
    ] = "builtin:sim-jeol-2100",
    camera: Annotated[
        str | None, typer.Option(help="Camera YAML (default: the microscope's).")
    ] = None,
    sample: Annotated[Path | None, typer.Option(help="Specimen YAML for --simulate.")] = None,
    settings: Annotated[Path | None, typer.Option(help="Experiment settings YAML.")] = None,
    rotation_range: Annotated[float | None, typer.Option(help="Degrees (signed).")] = None,
    start_angle: Annotated[float | None, typer.Option(help="Start alpha, degrees.")] = None,
    speed: Annotated[float | None, typer.Option(help="Rotation speed, deg/s.")] = None,
    exposure: Annotated[float | None, typer.Option(help="Exposure per frame, s.")] = None,
    defocus_every: Annotated[
        int | None, typer.Option(help="Defocused image every n slots.")
    ] = None,
    tracking: Annotated[str | None, typer.Option(help="beam_shift, stage or off.")] = None,
    formats: Annotated[str, typer.Option(help="Hand-off formats.")] = "smv,mrc,nxmx",
    d_min: Annotated[float | None, typer.Option(help="Resolution limit for DIALS, A.")] = None,
) -> None:
    """Collect a cRED data set with crystal tracking and write it with its hand-off files."""
    from crystalscope.acquire.clock import RealClock, VirtualClock
    from crystalscope.acquire.config import load_microscope, load_microscope_config
    from crystalscope.acquire.cred import collect_cred
    from crystalscope.acquire.cred_output import write_cred
    from crystalscope.errors import ConfigError
    from crystalscope.rotation.dials_script import DialsOptions

    console = Console(highlight=False, soft_wrap=True)
    config = load_microscope_config(microscope)
    if simulate and config.kind != "simulated":
        raise ConfigError("--simulate needs a simulated microscope (kind: simulated)",
                          path=microscope, field="kind")  # fmt: skip
    if not simulate and config.kind == "simulated":
        raise ConfigError("this is the simulated microscope: add --simulate",
                          path=microscope, field="kind")  # fmt: skip
    overrides = {"rotation_range_deg": rotation_range, "start_alpha_deg": start_angle,
                 "rotation_speed_deg_per_s": speed, "exposure_s": exposure,
                 "defocus_every": defocus_every, "tracking": tracking}  # fmt: skip
    chosen = _settings(settings, overrides)
    clock = VirtualClock() if simulate else RealClock()
    scope, cam = load_microscope(config, camera=camera, sample=sample, clock=clock)
    record = collect_cred(scope, cam, chosen, say=console.print)
    written = write_cred(
        record, out, call_log=getattr(scope, "call_log", None),
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        dials=DialsOptions(d_min=d_min), say=console.print,
    )  # fmt: skip
    console.print(written.summary())
    if record.status != "complete":
        raise typer.Exit(1)
