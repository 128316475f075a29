"""``crystalscope simulate serial|rotation``: simulated data with known truth.

Every parameter of :mod:`crystalscope.simulate.config` can be set three ways, later
ones winning: a YAML file (``--config``), ``--set section.key=value`` (repeatable; the
value is read as YAML, e.g. ``--set beam_effects.zero_order=false``), and the shortcut
options below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from crystalscope.config import StrictModel, merge_settings, parse_config
from crystalscope.errors import ConfigError

__all__ = ["app", "merge_settings"]

app = typer.Typer(help="Simulate diffraction data with known truth.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML file with simulation settings.")
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override one setting: section.key=value (repeatable)."),
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Output directory.")]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed (deterministic output).")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace earlier outputs.")]
KvOpt = Annotated[float | None, typer.Option(help="Electron voltage, kV.")]
KevOpt = Annotated[float | None, typer.Option(help="X-ray photon energy, keV.")]
StructureOpt = Annotated[
    str | None, typer.Option(help="Structure file or builtin:NAME (e.g. builtin:corundum).")
]
MtzOpt = Annotated[Path | None, typer.Option(help="Measured intensities (MTZ) instead.")]
DminOpt = Annotated[float | None, typer.Option(help="Resolution limit, A.")]


M = TypeVar("M", bound=StrictModel)


def _validated(data: dict[str, Any], model: type[M], source: Path | None) -> M:
    return parse_config(data, model, source=source or "command line")


def _set_beam(data: dict[str, Any], voltage_kv: float | None, energy_kev: float | None) -> None:
    if voltage_kv is not None and energy_kev is not None:
        raise ConfigError("give --voltage-kv or --energy-kev, not both", field="beam")
    if voltage_kv is not None:
        data["beam"] = {"voltage_kv": voltage_kv}
    elif energy_kev is not None:
        data["beam"] = {"energy_kev": energy_kev}


@app.command("serial")
def serial(
    out: OutOpt = Path("simulated-serial"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    n_crystals: Annotated[int | None, typer.Option(help="Number of crystals.")] = None,
    frames_per_crystal: Annotated[int | None, typer.Option(help="Dose fractions.")] = None,
    hit_fraction: Annotated[float | None, typer.Option(help="Fraction of hits.")] = None,
    voltage_kv: KvOpt = None,
    energy_kev: KevOpt = None,
    structure: StructureOpt = None,
    mtz: MtzOpt = None,
    d_min: DminOpt = None,
    detector: Annotated[str | None, typer.Option(help="lambda-750k, timepix-quad, single.")] = None,
    geometry: Annotated[Path | None, typer.Option(help="CrystFEL .geom instead.")] = None,
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Simulate a serial (stills) data set: frames.h5, truth.h5, detector.geom."""
    from crystalscope.parallel import byte_progress
    from crystalscope.simulate.config import SerialConfig
    from crystalscope.simulate.serial import simulate_serial

    shortcuts = {
        "n_crystals": n_crystals,
        "dose.frames_per_crystal": frames_per_crystal,
        "hit_fraction": hit_fraction,
        "source.structure": structure,
        "source.mtz": str(mtz) if mtz else None,
        "source.d_min": d_min,
        "detector.preset": detector,
        "detector.geometry": str(geometry) if geometry else None,
        "seed": seed,
    }
    data = merge_settings(config, set_, shortcuts)
    if mtz is not None:
        data.setdefault("source", {})["structure"] = None
    _set_beam(data, voltage_kv, energy_kev)
    cfg = _validated(data, SerialConfig, config)
    console = Console()
    with byte_progress("simulating frames") as progress:
        result = simulate_serial(
            cfg, out, overwrite=overwrite, progress=progress, say=lambda m: console.print(f"- {m}")
        )
    console.print(result.summary())


@app.command("rotation")
def rotation(
    out: OutOpt = Path("simulated-rotation"),
    config: ConfigOpt = None,
    set_: SetOpt = None,
    n_frames: Annotated[int | None, typer.Option(help="Number of frames.")] = None,
    oscillation_deg: Annotated[float | None, typer.Option(help="Rotation per frame.")] = None,
    voltage_kv: KvOpt = None,
    energy_kev: KevOpt = None,
    structure: StructureOpt = None,
    mtz: MtzOpt = None,
    d_min: DminOpt = None,
    seed: SeedOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Simulate a continuous-rotation series: frame files, metadata log, dataset, truth."""
    from crystalscope.simulate.config import RotationConfig
    from crystalscope.simulate.rotation_output import simulate_rotation

    shortcuts = {
        "n_frames": n_frames,
        "oscillation_deg": oscillation_deg,
        "source.structure": structure,
        "source.mtz": str(mtz) if mtz else None,
        "source.d_min": d_min,
        "seed": seed,
    }
    data = merge_settings(config, set_, shortcuts)
    if mtz is not None:
        data.setdefault("source", {})["structure"] = None
    _set_beam(data, voltage_kv, energy_kev)
    cfg = _validated(data, RotationConfig, config)
    result = simulate_rotation(cfg, out, overwrite=overwrite)
    Console().print(result.summary())
