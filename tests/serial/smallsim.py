"""Small simulated SerialED data sets for the pipeline tests of this folder."""

from __future__ import annotations

from pathlib import Path

from crystalscope.demo import demo_config
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation

#: Crystals per simulated file (three files per data set).
CRYSTALS_PER_FILE = 14


def small_config(seed: int, n_crystals: int = CRYSTALS_PER_FILE) -> SerialConfig:
    """The demo's physics (200 kV, lysozyme-like crystals, LAMBDA detector, noise, centre
    jitter, dead pixels), one frame per crystal, every frame a hit."""
    data = demo_config(n_crystals, seed=seed).model_dump(mode="json")
    data["dose"]["frames_per_crystal"] = 1
    data["hit_fraction"] = 1.0
    return SerialConfig.model_validate(data)


def run_yaml(files: list[Path] | list[str], out: Path, **extra: object) -> dict[str, object]:
    """A ``serial run`` configuration for the small data sets (known cell)."""
    cell = SerialSimulation.build(small_config(1)).base.cell
    cfg: dict[str, object] = {
        "input": {
            "files": [str(f) for f in files],
            "geometry": str(Path(files[0]).parent / "detector.geom"),
        },
        "beam": {"voltage_kv": 200.0},
        "cell": {"parameters": list(cell.parameters), "space_group": "P 43 21 2"},
        "hits": {"min_peaks": 10},
        "ellipticity": {"min_peaks": 200},
        "compute": {"progress": False},
        "output": {"directory": str(out)},
    }
    cfg.update(extra)
    return cfg
