"""Simulated lysozyme stills from real intensities, through every step to merged data.

Frames are simulated at 200 kV from the measured HEWL intensities of
``../shared/data/reciprocalspaceship/HEWL_SSAD_24IDC.mtz`` (random orientations, 0.5 px
centre jitter, 1.5 % ellipticity, noise, PSF, inelastic background), then pre-processed,
indexed (``serial index``), integrated (``serial integrate``) and merged
(``crystalscope merge``) through the command line, with the xsphere partiality model and
with plain averaging.  The merged intensities are compared with the simulation's truth.

300 frames keep the test to about two minutes; the same chain on 2000 frames is
``benchmarks/bench_serial_chain.py`` (docs/benchmarks.md), and merging 2000 stills'
observations against the truth is in ``tests/merge/test_merging.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from crystalscope.cli.main import main
from crystalscope.io.crystfel_cell import UnitCellFile, write_cell
from crystalscope.io.crystfel_hkl import read_hkl, read_hkl_halves
from crystalscope.io.mtz import read_mtz
from crystalscope.io.observations import read_observations
from crystalscope.merge.compare import compare_sets
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.output import run_preprocess
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import simulate_serial

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
HEWL = SHARED_DATA / "reciprocalspaceship" / "HEWL_SSAD_24IDC.mtz"
N_FRAMES = 300
D_CHECK = 2.5  # A, the resolution for the CC against truth
MODELS = ("xsphere", "unity")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HEWL.is_file(), reason="../shared/data (real HEWL intensities) absent"),
]


def _sim_config() -> SerialConfig:
    return SerialConfig.model_validate(
        {
            "n_crystals": N_FRAMES, "seed": 11,
            "source": {"structure": None, "mtz": str(HEWL), "d_min": 2.2},
            "crystal": {"thickness_a": 1000, "profile": "gaussian"},
            "beam_effects": {
                "centre_jitter_px": 0.5, "ellipticity": 0.015, "ellipticity_angle_deg": 20.0,
            },
        }
    )  # fmt: skip


def _cli(*args: str) -> None:
    assert main([*args, "--set", "compute.progress=false"]) == 0, args


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("merge")
    simulate_serial(_sim_config(), root / "sim")
    pre = PreprocessConfig.model_validate(
        {
            "input": {"files": [str(root / "sim" / "frames.h5")]},
            "compute": {"progress": False}, "output": {"directory": str(root / "pre")},
        }
    )  # fmt: skip
    run_preprocess(pre)
    cell = UnitCellFile("tetragonal", "P", "c", (79.34, 79.34, 37.81, 90.0, 90.0, 90.0))
    write_cell(cell, root / "hewl.cell")
    _cli(
        "serial", "index", "-i", str(root / "pre" / "preprocessed.h5"), "--cell",
        str(root / "hewl.cell"), "--space-group", "P 43 21 2", "-o", str(root / "idx"),
    )  # fmt: skip
    _cli("serial", "integrate", "--indexed", str(root / "idx"), "-o", str(root / "int"))
    for model in MODELS:
        code = main(
            ["merge", "-i", str(root / "int" / "observations.h5"), "--model", model,
             "-o", str(root / model)]
        )  # fmt: skip
        assert code == 0, model
    return {"root": root, "int": root / "int", "xsphere": root / "xsphere", "unity": root / "unity"}


def _cc_to_truth(path: Path) -> float:
    """CC of a merged .hkl with the true intensities (the MTZ the simulation used) to
    2.5 A, reflections paired by symmetry."""
    truth = read_mtz(HEWL, intensity=("IMEAN", "SIGIMEAN"))
    table = compare_sets(
        read_hkl(path), truth.table, truth.cell, truth.space_group, d_min=D_CHECK, scale=False
    )
    return float(table.loc["overall", "cc"])


def test_merged_intensities_match_the_truth(run: dict[str, Path]) -> None:
    cc = {m: _cc_to_truth(run[m] / "merged.hkl") for m in MODELS}
    assert cc["xsphere"] >= 0.98, cc
    assert cc["xsphere"] > cc["unity"], cc


def test_outputs_are_complete_and_readable(run: dict[str, Path]) -> None:
    obs = read_observations(run["int"] / "observations.h5")
    assert obs.space_group.hm == "P 43 21 2" and len(obs.table) > 100 * N_FRAMES
    out = run["xsphere"]
    mtz = read_mtz(out / "merged.mtz")
    assert len(mtz.table) > 0
    half1, half2 = read_hkl_halves(out / "merged.hkl")
    assert min(len(half1), len(half2)) > 0.8 * len(read_hkl(out / "merged.hkl"))
    stats = pd.read_csv(out / "statistics.csv")
    overall = stats.iloc[-1]
    assert overall["cc_half"] > 0.9, overall.to_dict()
    for name in ("statistics.png", "scales.png", "crystals.csv", "config.resolved.yaml"):
        assert (out / name).stat().st_size > 0, name
