"""The built-in end-to-end job run by ``make demo`` / ``crystalscope demo``.

Until the serial pipeline lands, the demo simulates a small SerialED data set on
built-in data and shows what it wrote:

1. 200 kV electrons, the 1556 x 516 hybrid-pixel detector preset (LAMBDA 750K layout
   with module gaps) at an effective camera length of 1100 mm;
2. protein-sized crystals (``builtin:lysozyme-like``: tetragonal lysozyme cell, Wilson
   statistics) of 100 nm thickness in random orientations, structure factors to 2 A
   with electron form factors;
3. kinematic still patterns on the exact Ewald sphere with partiality, zero-order beam,
   inelastic background, Poisson noise, per-frame centre jitter, dead pixels and a
   dose-fractionated movie of 3 frames per crystal with radiation damage;
4. outputs: ``frames.h5`` (a crystalscope Dataset: frames, per-frame table with the true
   centres, per-crystal table with the true UB), ``truth.h5`` (every excited
   reflection: ideal |F|^2, partiality, expected counts, position), ``detector.geom``
   and ``config.resolved.yaml``; each is read back and summarised.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from crystalscope.errors import CrystalscopeError
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import simulate_serial

__all__ = ["demo_config", "run_demo"]


def demo_config(n_crystals: int = 12, seed: int = 2026) -> SerialConfig:
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


def run_demo(
    out: str | Path,
    n_crystals: int = 12,
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
    result = simulate_serial(config, out, overwrite=overwrite, say=say)
    for line in result.summary().splitlines():
        say(line)
    return {
        "frames": result.dataset,
        "geometry": result.geometry,
        "configuration": result.config,
    }
