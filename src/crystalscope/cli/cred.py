"""``crystalscope cred ...``: hand-off of continuous-rotation data to XDS, DIALS and REDp.

``crystalscope cred import DIR`` reads an Instamatic-style experiment directory
(``cRED_log.txt`` with TIFF, MRC or SMV frames; :mod:`crystalscope.rotation.cred_import`)
and writes SMV frames, an NXmx file and the XDS, DIALS and REDp inputs with the
experiment's geometry.  ``crystalscope cred process DIR`` runs the DIALS chain (and XDS
when ``xds_par`` or ``xds`` is on the PATH) on such hand-off files and prints cell, space
group and merging statistics (:mod:`crystalscope.rotation.process`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["app"]

app = typer.Typer(help="cRED hand-off: import experiments, run DIALS/XDS.",
                  no_args_is_help=True)  # fmt: skip

DirArg = Annotated[Path, typer.Argument(help="Experiment directory.")]


@app.command("import")
def import_(
    directory: DirArg,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output (default: DIR).")] = None,
    formats: Annotated[str, typer.Option(help="Hand-off formats.")] = "smv,mrc,nxmx",
    d_min: Annotated[float | None, typer.Option(help="Resolution limit, A.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace existing hand-off files.")] = False,
) -> None:
    """Write SMV, NXmx and the XDS/DIALS/REDp inputs of an Instamatic-style directory."""
    from crystalscope.rotation.cred_import import cred_import
    from crystalscope.rotation.dials_script import DialsOptions

    console = Console(highlight=False, soft_wrap=True)
    result = cred_import(
        directory, out if out is not None else directory,
        formats=tuple(f.strip() for f in formats.split(",") if f.strip()),
        dials=DialsOptions(d_min=d_min), d_min=d_min, overwrite=overwrite, say=console.print,
    )  # fmt: skip
    console.print(result.summary())


@app.command("process")
def process(
    directory: DirArg,
    xds: Annotated[
        bool | None, typer.Option(help="Run XDS (default: when xds_par or xds is on PATH).")
    ] = None,
    dials: Annotated[bool, typer.Option(help="Run the DIALS chain.")] = True,
) -> None:
    """Run DIALS (and XDS) on the hand-off files and print the results."""
    import shutil

    from crystalscope.rotation.process import run_dials, run_xds

    console = Console(highlight=False, soft_wrap=True)
    if xds is None:
        xds = any(shutil.which(name) for name in ("xds_par", "xds"))
    if dials:
        console.print(run_dials(directory, say=console.print).summary())
    if xds:
        console.print(run_xds(directory, say=console.print).summary())
