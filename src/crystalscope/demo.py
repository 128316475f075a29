"""The built-in end-to-end job run by ``make demo`` / ``crystalscope demo``.

A SerialED data set is simulated on built-in data and taken through the whole chain:

1. simulation: 200 kV electrons, the 1556 x 516 hybrid-pixel detector preset (LAMBDA
   750K layout with module gaps) at an effective camera length of 1100 mm; protein-sized
   crystals (``builtin:lysozyme-like``: tetragonal lysozyme cell, P 43 21 2, Wilson
   statistics) of 100 nm thickness in random orientations, structure factors to 2 A with
   electron form factors; kinematic still patterns on the exact Ewald sphere with
   partiality, zero-order beam, inelastic background, Poisson noise, per-frame centre
   jitter, dead pixels and a dose-fractionated movie of 3 frames per crystal with
   radiation damage (``sim/``);
2. pre-processing with the movies summed per crystal (``preprocessed/``);
3. indexing with the known cell (``indexed/``);
4. integration (``integrated/``);
5. scaling and merging with the xsphere partiality model, statistics, MTZ, SHELX and
   CrystFEL files (``merged/``).

The statistics table and the paths of the merged MTZ and the plots are printed at the
end.  With fewer than :data:`MIN_CRYSTALS_TO_MERGE` indexed crystals merging is skipped
and says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gemmi

from crystalscope.errors import CrystalscopeError
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation, simulate_serial

__all__ = ["DEFAULT_CRYSTALS", "MIN_CRYSTALS_TO_MERGE", "demo_config", "run_demo"]

#: Crystals simulated by default (about two minutes for the whole chain on 2 cores).
DEFAULT_CRYSTALS = 150
#: Fewer indexed crystals than this are not merged.
MIN_CRYSTALS_TO_MERGE = 10


def demo_config(n_crystals: int = DEFAULT_CRYSTALS, seed: int = 2026) -> SerialConfig:
    """The demo's simulation settings."""
    return SerialConfig.model_validate(
        {
            "n_crystals": n_crystals,
            "hit_fraction": 0.8,
            "seed": seed,
            "beam": {"voltage_kv": 200.0},
            "source": {"structure": "builtin:lysozyme-like", "d_min": 2.0},
            "crystal": {"thickness_a": 1000.0, "lateral_size_a": 5000.0},
            "beam_effects": {"centre_jitter_px": 0.5, "dose_e_per_a2": 0.5},
            "detector": {"preset": "lambda-750k", "distance_mm": 1100.0},
            "detector_effects": {"dead_pixel_fraction": 2e-4},
            "dose": {"frames_per_crystal": 3, "b_per_dose": 2.0},
        }
    )


def _preprocess(out: Path, overwrite: bool) -> str:
    from crystalscope.serial.config import PreprocessConfig
    from crystalscope.serial.output import run_preprocess

    cfg = PreprocessConfig.model_validate(
        {
            "input": {"files": [str(out / "sim" / "frames.h5")]},
            "aggregate": {"enabled": True, "by": ["shot"]},
            "compute": {"progress": False},
            "output": {"directory": str(out / "preprocessed"), "overwrite": overwrite},
        }
    )
    result, _ = run_preprocess(cfg)
    return result.summary()


def _index(out: Path, cell: gemmi.UnitCell, overwrite: bool) -> tuple[str, int]:
    from crystalscope.serial.index_config import IndexConfig
    from crystalscope.serial.index_output import run_index

    cfg = IndexConfig.model_validate(
        {
            "input": str(out / "preprocessed" / "preprocessed.h5"),
            "cell": {"parameters": list(cell.parameters), "space_group": "P 43 21 2"},
            "compute": {"progress": False},
            "output": {"directory": str(out / "indexed"), "overwrite": overwrite},
        }
    )
    result, _ = run_index(cfg)
    return result.summary(), len(result.crystals)


def _integrate(out: Path, overwrite: bool) -> str:
    from crystalscope.serial.integrate_config import IntegrateConfig
    from crystalscope.serial.integrate_output import run_integrate

    cfg = IntegrateConfig.model_validate(
        {
            "indexed": str(out / "indexed"), "compute": {"progress": False},
            "output": {"directory": str(out / "integrated"), "overwrite": overwrite},
        }
    )  # fmt: skip
    result, _ = run_integrate(cfg)
    return result.summary()


def _merge(out: Path, overwrite: bool) -> tuple[str, dict[str, Path]]:
    from crystalscope.merge.config import MergeConfig
    from crystalscope.merge.run import run_merge

    cfg = MergeConfig.model_validate(
        {
            "input": str(out / "integrated" / "observations.h5"),
            "output": {"directory": str(out / "merged"), "overwrite": overwrite},
        }
    )
    run = run_merge(cfg)
    return run.summary(), run.paths


def _say_lines(text: str, say: Callable[[str], None]) -> None:
    for line in text.splitlines():
        say(line)


def run_demo(
    out: str | Path,
    n_crystals: int = DEFAULT_CRYSTALS,
    *,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Run the demo job into ``out``; return the written files by name."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CrystalscopeError("output directory is not empty; use --overwrite", path=out)
    config = demo_config(n_crystals)
    say(
        f"simulating {n_crystals} lysozyme-sized crystals, "
        f"{config.dose.frames_per_crystal} dose fractions each, hit rate {config.hit_fraction:.0%}"
    )
    result = simulate_serial(config, out / "sim", overwrite=overwrite, say=say)
    _say_lines(result.summary(), say)
    files = {"frames": result.dataset, "geometry": result.geometry}
    say("pre-processing (corrections, centre, peaks, ellipticity, background)")
    _say_lines(_preprocess(out, overwrite), say)
    say("indexing with the known cell")
    cell = SerialSimulation.build(config).base.cell
    text, n_indexed = _index(out, cell, overwrite)
    _say_lines(text, say)
    files["indexed"] = out / "indexed" / "crystals.csv"
    say("integrating")
    _say_lines(_integrate(out, overwrite), say)
    files["observations"] = out / "integrated" / "observations.h5"
    if n_indexed < MIN_CRYSTALS_TO_MERGE:
        say(f"{n_indexed} crystals indexed: too few to merge (need {MIN_CRYSTALS_TO_MERGE})")
        return files
    say("scaling and merging (xsphere partiality model)")
    text, paths = _merge(out, overwrite)
    _say_lines(text, say)
    files["merged_mtz"] = paths["merged_mtz"]
    files["statistics_plot"] = paths["statistics_plot"]
    return files
