"""The built-in end-to-end job run by ``make demo`` / ``crystalscope demo``.

A SerialED data set is simulated on built-in data and taken through the main job,
``crystalscope serial run`` (:mod:`crystalscope.serial.pipeline`):

1. simulation (``sim/``): 200 kV electrons, the 1556 x 516 hybrid-pixel detector preset
   (LAMBDA 750K layout with module gaps) at an effective camera length of 1100 mm;
   protein-sized crystals (``builtin:lysozyme-like``: tetragonal lysozyme cell,
   P 43 21 2, Wilson statistics) of 100 nm thickness in random orientations, structure
   factors to 2 A with electron form factors; kinematic still patterns on the exact
   Ewald sphere with partiality, zero-order beam, inelastic background, Poisson noise,
   per-frame centre jitter, dead pixels and a dose-fractionated movie of 3 frames per
   crystal with radiation damage (about 1000 raw frames by default);
2. the configuration of the run, ``serial-run.yaml`` (a starting point for real data);
3. ``crystalscope serial run`` into ``runs/run-NNN/``: pre-processing with the movies
   summed per crystal, indexing with the known cell, integration (and the dose series
   of 1, 2 and 3 fractions), scaling and merging, and the HTML report;
4. the merged intensities compared with the simulation's true ``|F|^2`` (CC to 2.5 A).

Running it again reuses the simulation and every step already done (nothing changed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from crystalscope.errors import CrystalscopeError
from crystalscope.io.mtz import read_mtz
from crystalscope.merge.compare import compare_sets
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation, simulate_serial

__all__ = [
    "DEFAULT_CRYSTALS",
    "D_CHECK",
    "DemoResult",
    "demo_config",
    "run_config",
    "run_demo",
    "truth_cc",
]

#: Crystals simulated by default: with 3 dose fractions and an 80 % hit rate, about
#: 1000 raw frames.
DEFAULT_CRYSTALS = 270
#: Resolution limit of the comparison with the truth, A.
D_CHECK = 2.5


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


def run_config(sim: SerialSimulation) -> dict[str, Any]:
    """The ``serial run`` configuration of the demo (paths relative to its file)."""
    return {
        "input": {"files": ["sim/frames.h5"], "geometry": "sim/detector.geom"},
        "aggregate": {"enabled": True, "by": ["shot"]},
        "cell": {"parameters": list(sim.base.cell.parameters), "space_group": "P 43 21 2"},
        "dose": {"enabled": True, "by": ["shot"], "exposures": [1, 2, 3]},
        "output": {"directory": "runs"},
    }


def truth_cc(merged_mtz: str | Path, sim: SerialSimulation, d_min: float = D_CHECK) -> float:
    """CC of merged intensities with the simulation's true ``|F|^2`` for ``d >= d_min``
    (reflections paired by symmetry, as ``compare_hkl``)."""
    merged = read_mtz(merged_mtz).table
    truth = sim.sf.table
    asu, _ = sim.base.to_asu(truth[["h", "k", "l"]].to_numpy())
    unique = pd.DataFrame(asu, columns=["h", "k", "l"])
    unique["I"] = truth["F2"].to_numpy()
    unique = unique.drop_duplicates(["h", "k", "l"])
    unique["sigma"] = 1.0
    table = compare_sets(
        unique, merged, sim.base.cell, sim.base.space_group, d_min=d_min, scale=False
    )
    return float(table.loc["overall", "cc"])


def _simulate(out: Path, config: SerialConfig, say: Callable[[str], None]) -> None:
    """Simulate into ``out/sim`` unless the same simulation is already there."""
    sim_dir = out / "sim"
    stamp = sim_dir / "demo-config.json"
    wanted = config.model_dump_json()
    if stamp.is_file() and stamp.read_text(encoding="utf-8") == wanted:
        say(f"reusing the simulated data in {sim_dir}")
        return
    result = simulate_serial(config, sim_dir, overwrite=True, say=say)
    for line in result.summary().splitlines():
        say(line)
    stamp.write_text(wanted, encoding="utf-8")


@dataclass
class DemoResult:
    """The demo's files by name and the CC of its merged data with the truth."""

    paths: dict[str, Path]
    truth_cc: float | None


def run_demo(
    out: str | Path,
    n_crystals: int = DEFAULT_CRYSTALS,
    *,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo job into ``out`` (module doc)."""
    from crystalscope.serial.pipeline import load_run_config, run_serial

    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise CrystalscopeError("is not a directory", path=out)
    config = demo_config(n_crystals)
    say(
        f"simulating {n_crystals} lysozyme-sized crystals, "
        f"{config.dose.frames_per_crystal} dose fractions each, hit rate {config.hit_fraction:.0%}"
    )
    _simulate(out, config, say)
    sim = SerialSimulation.build(config)
    cfg_path = out / "serial-run.yaml"
    cfg_path.write_text(yaml.safe_dump(run_config(sim), sort_keys=False), encoding="utf-8")
    say(f"crystalscope serial run {cfg_path}")
    run = run_serial(load_run_config(cfg_path), say=say)
    say(run.summary())
    cc = None
    if "merged_mtz" in run.paths:
        cc = truth_cc(run.paths["merged_mtz"], sim)
        say(f"CC of the merged intensities with the simulation's truth (d >= {D_CHECK} A): "
            f"{cc:.4f}")  # fmt: skip
    return DemoResult({"config": cfg_path, **run.paths}, cc)
