"""``crystalscope serial ...``: the serial electron diffraction pipeline.

``crystalscope serial preprocess CONFIG.yaml`` runs detector corrections, dose-fraction
aggregation, centre finding, peak finding, the ellipticity fit and background
subtraction (docs/serial-preprocess.md).  Settings come from the YAML file, then
``--set section.key=value`` overrides, then the shortcut options.  ``--watch DIR``
switches to on-line mode: files appearing in ``DIR`` are processed once complete and
their hits appended to a ``.lst``.

``crystalscope serial index [CONFIG.yaml] --input preprocessed.h5 --cell X.cell`` refines
the cell, indexes every hit and writes the per-crystal table, a CrystFEL stream and the
input for ``indexamajig`` (docs/serial-index.md).

``crystalscope serial integrate [CONFIG.yaml] --indexed DIR`` predicts and integrates
every indexed crystal and writes the observations for ``crystalscope merge``
(docs/serial-merge.md).

``crystalscope serial run CONFIG.yaml`` runs all of these and merging, into a numbered
run directory, resumably, with an HTML report (docs/serial-run.md).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from crystalscope.cli.simulate import SetOpt, merge_settings
from crystalscope.config import parse_config

__all__ = ["app"]

SchedulerOpt = Annotated[
    str | None, typer.Option(help="dask.distributed scheduler address (cluster).")
]
WorkersOpt = Annotated[int | None, typer.Option(help="Local worker processes/threads.")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace earlier outputs.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Output directory.")]
ConfigArg = Annotated[Path | None, typer.Argument(help="YAML configuration file.")]
InputsOpt = Annotated[
    list[str] | None, typer.Option("--input", "-i", help="Files, globs or .lst (repeatable).")
]
GeometryOpt = Annotated[Path | None, typer.Option(help="CrystFEL .geom file.")]
WatchOpt = Annotated[
    Path | None, typer.Option(help="On-line mode: follow this directory for new files.")
]
IdleOpt = Annotated[
    float | None, typer.Option(help="On-line mode: stop after this many idle seconds.")
]


def _common(
    out: Path | None, overwrite: bool, scheduler: str | None, workers: int | None
) -> dict[str, object]:
    """``--set`` keys of the options every serial command has."""
    return {
        "output.directory": str(out) if out else None,
        "output.overwrite": True if overwrite else None,
        "compute.address": scheduler,
        "compute.scheduler": "distributed" if scheduler else None,
        "compute.n_workers": workers,
    }


def _run_and_report(
    config: Path | None,
    set_: list[str] | None,
    shortcuts: dict[str, object],
    model: type[Any],
    runner: Callable[..., tuple[Any, dict[str, Path]]],
) -> None:
    """Resolve the configuration, run ``runner`` on a dask client, print its summary and
    the files it wrote."""
    from crystalscope.parallel import open_client

    data = merge_settings(config, set_, shortcuts)
    cfg = parse_config(data, model, source=config or "command line")
    console = Console()
    with open_client(cfg.compute) as client:
        result, paths = runner(cfg, config_path=config, client=client)
    console.print(result.summary(), soft_wrap=True, markup=False)
    for name, path in paths.items():
        console.print(f"- {name}: {path}")


app = typer.Typer(
    help="Serial electron diffraction: pre-processing, indexing and integration.",
    no_args_is_help=True,
)


@app.command("preprocess")
def preprocess(
    config: ConfigArg = None,
    set_: SetOpt = None,
    input_: InputsOpt = None,
    geometry: GeometryOpt = None,
    out: OutOpt = None,
    watch: WatchOpt = None,
    idle_timeout: IdleOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Pre-process raw serial frames: corrections, centre, peaks, ellipticity, background."""
    from crystalscope.parallel import open_client
    from crystalscope.serial.config import PreprocessConfig
    from crystalscope.serial.online import watch as watch_dir
    from crystalscope.serial.output import run_preprocess

    shortcuts = {
        "input.files": list(input_) if input_ else None,
        "input.geometry": str(geometry) if geometry else None,
        "watch.idle_timeout_s": idle_timeout,
        **_common(out, overwrite, scheduler, workers),
    }
    data = merge_settings(config, set_, shortcuts)
    cfg = parse_config(data, PreprocessConfig, source=config or "command line")
    console = Console()
    with open_client(cfg.compute) as client:
        if watch is not None:
            console.print(f"watching {watch} for {cfg.watch.pattern} (Ctrl-C stops)")
            state = watch_dir(
                cfg, watch, config_path=config, client=client,
                report=lambda m: console.print(f"- {m}"),
            )  # fmt: skip
            console.print(f"{len(state.done)} files processed, {len(state.failed)} skipped")
            return
        result, paths = run_preprocess(cfg, config_path=config, client=client)
    console.print(result.summary(), soft_wrap=True, markup=False)
    for name, path in paths.items():
        console.print(f"- {name}: {path}")


@app.command("index")
def index(
    config: ConfigArg = None,
    set_: SetOpt = None,
    input_: Annotated[
        Path | None, typer.Option("--input", "-i", help="preprocessed.h5 of `serial preprocess`.")
    ] = None,
    cell: Annotated[Path | None, typer.Option(help="CrystFEL unit cell file.")] = None,
    space_group: Annotated[
        str | None, typer.Option(help="Space group (absences, indexing ambiguity).")
    ] = None,
    geometry: GeometryOpt = None,
    out: OutOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Index pre-processed serial data: cell refinement, orientations, ambiguity."""
    from crystalscope.serial.index_config import IndexConfig
    from crystalscope.serial.index_output import run_index

    shortcuts = {
        "input": str(input_) if input_ else None,
        "cell.file": str(cell) if cell else None,
        "cell.space_group": space_group,
        "geometry": str(geometry) if geometry else None,
        **_common(out, overwrite, scheduler, workers),
    }
    _run_and_report(config, set_, shortcuts, IndexConfig, run_index)


@app.command("integrate")
def integrate(
    config: ConfigArg = None,
    set_: SetOpt = None,
    input_: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="preprocessed.h5 (default: the file indexed)."),
    ] = None,
    indexed: Annotated[
        Path | None, typer.Option(help="Output directory (or indexed.h5) of `serial index`.")
    ] = None,
    d_min: Annotated[float | None, typer.Option(help="Highest resolution, A.")] = None,
    space_group: Annotated[
        str | None, typer.Option(help="Space group (default: the one indexing used).")
    ] = None,
    out: OutOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Predict and integrate every indexed crystal: observations for `crystalscope merge`."""
    from crystalscope.serial.integrate_config import IntegrateConfig
    from crystalscope.serial.integrate_output import run_integrate

    shortcuts = {
        "input": str(input_) if input_ else None,
        "indexed": str(indexed) if indexed else None,
        "integration.d_min": d_min,
        "space_group": space_group,
        **_common(out, overwrite, scheduler, workers),
    }
    _run_and_report(config, set_, shortcuts, IntegrateConfig, run_integrate)


@app.command("run")
def run(
    config: ConfigArg = None,
    set_: SetOpt = None,
    input_: InputsOpt = None,
    geometry: GeometryOpt = None,
    cell: Annotated[Path | None, typer.Option(help="CrystFEL unit cell file.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Root of the numbered run directories.")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="Recompute every step, replacing the latest run's results.")
    ] = False,
    watch: WatchOpt = None,
    idle_timeout: IdleOpt = None,
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
) -> None:
    """Raw frames to merged data: pre-processing, indexing, integration, merging, report."""
    from crystalscope.parallel import open_client
    from crystalscope.serial.pipeline import load_run_config, run_serial
    from crystalscope.serial.watch_run import watch_serial

    shortcuts = {
        "input.files": list(input_) if input_ else None,
        "input.geometry": str(geometry) if geometry else None,
        "cell.file": str(cell) if cell else None,
        "watch.idle_timeout_s": idle_timeout,
        **_common(out, False, scheduler, workers),
    }
    if workers and not scheduler:
        shortcuts["compute.scheduler"] = "distributed"
    cfg = load_run_config(config, shortcuts, sets=set_)
    console = Console()

    def say(message: str) -> None:
        console.print(message, markup=False, soft_wrap=True, highlight=False)

    with open_client(cfg.compute) as client:
        if watch is not None:
            result = watch_serial(cfg, watch, client=client, force=force, say=say)
        else:
            result = run_serial(cfg, client=client, force=force, say=say)
    say(result.summary())
    for name, path in result.paths.items():
        say(f"- {name}: {path}")
