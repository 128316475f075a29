"""``crystalscope cell ...``: the unit cell from the peaks of a whole data set.

``crystalscope cell refine INPUT --cell X.cell`` refines a known cell against the
virtual powder pattern and the pair-distance histogram of all peaks (seed 004 Fig. 6);
``crystalscope cell find INPUT`` determines the cell without a prior and ranks the
Bravais lattices.  ``INPUT`` is the ``preprocessed.h5`` of ``crystalscope serial
preprocess`` with the ``detector.geom`` beside it (or ``--geometry``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["app"]

app = typer.Typer(help="Unit cell from the peaks of a data set.", no_args_is_help=True)

InputArg = Annotated[Path, typer.Argument(help="preprocessed.h5 of `serial preprocess`.")]
GeomOpt = Annotated[Path | None, typer.Option(help="CrystFEL .geom (default: beside INPUT).")]
KvOpt = Annotated[float | None, typer.Option(help="Electron voltage, kV (default: geometry).")]
KevOpt = Annotated[float | None, typer.Option(help="X-ray energy, keV (default: geometry).")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Write the cell (.cell).")]
PlotOpt = Annotated[Path | None, typer.Option(help="Write a PNG of the histograms.")]


def _vectors(
    input_: Path, geometry: Path | None, kv: float | None, kev: float | None
) -> pd.DataFrame:
    from crystalscope.config import BeamConfig
    from crystalscope.serial.indexing import hit_vectors, open_indexing_input

    beam = None
    if kv is not None or kev is not None:
        beam = BeamConfig(voltage_kv=kv, energy_kev=kev)
    return hit_vectors(open_indexing_input(input_, geometry=geometry, beam=beam))


@app.command("refine")
def refine(
    input_: InputArg,
    cell: Annotated[Path | None, typer.Option(help="Starting cell, CrystFEL .cell file.")] = None,
    parameters: Annotated[
        str | None, typer.Option(help='Starting cell "a b c alpha beta gamma" (A, deg).')
    ] = None,
    lattice: Annotated[
        str | None, typer.Option(help="Bravais lattice (e.g. tP) or space group.")
    ] = None,
    geometry: GeomOpt = None,
    voltage_kv: KvOpt = None,
    energy_kev: KevOpt = None,
    out: OutOpt = None,
    plot: PlotOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Refine a known cell against the virtual powder pattern and pair distances."""
    from crystalscope.config import parse_config
    from crystalscope.index.cell_refine import refine_cell
    from crystalscope.index.powder import plot_radial_histograms, radial_histograms
    from crystalscope.io.crystfel_cell import write_cell
    from crystalscope.serial.index_config import CellConfig
    from crystalscope.serial.indexing import cell_file, starting_cell

    settings = {"file": cell, "parameters": _parse_parameters(parameters), "lattice": lattice}
    cfg = parse_config(settings, CellConfig, source="command line")
    start, bravais = starting_cell(cfg)
    vectors = _vectors(input_, geometry, voltage_kv, energy_kev)
    hist = radial_histograms(vectors)
    result = refine_cell(hist, start, bravais)
    Console().print(result.summary(), soft_wrap=True, markup=False)
    if out is not None:
        write_cell(cell_file(result.cell, bravais), out, overwrite=overwrite)
        Console().print(f"- cell: {out}")
    if plot is not None:
        span = (0.0, result.range_one_over_d[1])
        plot_radial_histograms(
            hist, cell=result.cell, lattice=bravais, path=plot, range_one_over_d=span
        )
        Console().print(f"- plot: {plot}")


@app.command("find")
def find(
    input_: InputArg,
    max_cell: Annotated[float, typer.Option(help="Longest cell edge considered, A.")] = 250.0,
    geometry: GeomOpt = None,
    voltage_kv: KvOpt = None,
    energy_kev: KevOpt = None,
    out: OutOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out file.")] = False,
) -> None:
    """Find the unit cell without a prior and rank the Bravais lattices."""
    from crystalscope.index.cell_find import find_cell
    from crystalscope.io.crystfel_cell import write_cell
    from crystalscope.serial.indexing import cell_file

    vectors = _vectors(input_, geometry, voltage_kv, energy_kev)
    search = find_cell(vectors, max_cell_a=max_cell)
    Console().print(search.summary(), soft_wrap=True, markup=False)
    if out is not None and search.candidates:
        best = search.candidates[0]
        write_cell(cell_file(best.cell, best.bravais), out, overwrite=overwrite)
        Console().print(f"- cell ({best.bravais}): {out}")


def _parse_parameters(text: str | None) -> tuple[float, float, float, float, float, float] | None:
    from crystalscope.errors import ConfigError

    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise ConfigError(
            f"cell parameters must be numbers, got {text!r}", field="--parameters"
        ) from exc
    if len(values) != 6:
        raise ConfigError(
            f"give six cell parameters (a b c alpha beta gamma), got {len(values)}",
            field="--parameters",
        )
    return (values[0], values[1], values[2], values[3], values[4], values[5])
