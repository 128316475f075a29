"""``crystalscope merge`` and ``crystalscope stats``: merged, validated intensities.

``crystalscope merge [CONFIG.yaml] -i observations.h5`` (or a CrystFEL ``.stream`` with
``--space-group``) scales and merges the observations, prints the figures of merit per
resolution shell and writes MTZ, SHELX and CrystFEL files (docs/serial-merge.md).

``crystalscope stats merged.hkl --cell X.cell`` prints the figures of merit of merged
data on disk: a CrystFEL ``.hkl`` with its ``.hkl1``/``.hkl2`` half-sets (ours or
``partialator``'s), or one of our merged MTZ files; ``--compare other.hkl`` compares two
merged sets, as ``compare_hkl`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from crystalscope.cli.serial import OutOpt, OverwriteOpt
from crystalscope.cli.simulate import SetOpt, merge_settings
from crystalscope.config import parse_config

__all__ = ["merge", "stats"]


def merge(
    config: Annotated[Path | None, typer.Argument(help="YAML configuration file.")] = None,
    set_: SetOpt = None,
    input_: Annotated[
        Path | None,
        typer.Option("--input", "-i", help="observations.h5 or a CrystFEL .stream."),
    ] = None,
    space_group: Annotated[
        str | None, typer.Option(help="Space group (default: the observations file's).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Partiality model: unity, xsphere or gaussian.")
    ] = None,
    d_min: Annotated[float | None, typer.Option(help="Highest resolution merged, A.")] = None,
    shells: Annotated[int | None, typer.Option(help="Resolution shells.")] = None,
    series: Annotated[
        Path | None,
        typer.Option(help="Dose series: the dose/ folder of `serial integrate` (series.csv)."),
    ] = None,
    out: OutOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Scale, merge and validate integrated observations; write MTZ, SHELX and .hkl files.

    With --series, merge every exposure of a dose series and recommend the best one.
    """
    from crystalscope.merge.config import MergeConfig
    from crystalscope.merge.run import run_merge

    shortcuts = {
        "input": str(input_) if input_ else None,
        "space_group": space_group,
        "merging.partiality": model,
        "merging.d_min": d_min,
        "statistics.n_shells": shells,
        "output.directory": str(out) if out else None,
        "output.overwrite": True if overwrite else None,
    }
    data = merge_settings(config, set_, shortcuts)
    cfg = parse_config(data, MergeConfig, source=config or "command line")
    console = Console()
    if series is not None:
        from crystalscope.merge.series import merge_series

        result = merge_series(
            series, cfg, progress=lambda line: console.print(line, markup=False, soft_wrap=True)
        )
        console.print(result.summary(), soft_wrap=True, markup=False)
        for name in ("dose_series", "dose_series_plot"):
            console.print(f"- {name}: {result.paths[name]}")
        return
    run = run_merge(
        cfg,
        config_path=config,
        progress=lambda line: console.print(line, markup=False, soft_wrap=True),
    )
    console.print(run.summary(), soft_wrap=True, markup=False)
    for name, path in run.paths.items():
        console.print(f"- {name}: {path}")


def stats(
    path: Annotated[Path, typer.Argument(help="Merged data: CrystFEL .hkl or merged .mtz.")],
    cell: Annotated[
        Path | None, typer.Option(help="CrystFEL .cell (cell and centring of .hkl files).")
    ] = None,
    symmetry: Annotated[
        str | None, typer.Option("--symmetry", "-y", help="CrystFEL point group, e.g. 4/mmm.")
    ] = None,
    space_group: Annotated[str | None, typer.Option(help="Space group instead of -y.")] = None,
    shells: Annotated[int, typer.Option(help="Resolution shells (equal volume).")] = 10,
    d_min: Annotated[float | None, typer.Option(help="Highest resolution, A.")] = None,
    d_max: Annotated[float | None, typer.Option(help="Lowest resolution, A.")] = None,
    compare: Annotated[
        Path | None, typer.Option(help="A second merged set to compare (as compare_hkl).")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Write the statistics as CSV.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the statistics as PNG.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing CSV/PNG files.")] = False,
) -> None:
    """Figures of merit per resolution shell of merged data (check_hkl, compare_hkl)."""
    from crystalscope.io.atomic import check_writable
    from crystalscope.merge.plots import plot_statistics
    from crystalscope.merge.stats import write_statistics_csv
    from crystalscope.merge.stats_run import load_merged, run_stats

    for target in (csv, plot):
        if target is not None:
            check_writable(target, overwrite=overwrite)
    data = load_merged(path, cell=cell, symmetry=symmetry, space_group=space_group)
    other = None
    if compare is not None:
        other = load_merged(compare, cell=cell, symmetry=symmetry, space_group=space_group)
    result, table = run_stats(data, n_shells=shells, d_min=d_min, d_max=d_max, compare=other)
    console = Console()
    console.print(f"{path}: {data.space_group.xhm()}, cell {data.cell.parameters}", markup=False)
    console.print(result.table(), soft_wrap=True, markup=False)
    if table is not None:
        console.print(f"\ncompared with {compare}:", markup=False)
        console.print(table.to_string(float_format="{:.4f}".format), markup=False, soft_wrap=True)
    if csv is not None:
        write_statistics_csv(result, csv, overwrite=overwrite)
        console.print(f"- statistics: {csv}")
    if plot is not None:
        plot_statistics(result, plot)
        console.print(f"- plot: {plot}")
