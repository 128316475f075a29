"""Benchmark: SerialED from simulated raw frames to merged intensities, against the truth.

Usage::

    python benchmarks/bench_serial_chain.py [--frames 2000] [--workdir DIR]

Simulates ``--frames`` 200 kV stills of lysozyme from the real measured intensities
(``../shared/data/reciprocalspaceship/HEWL_SSAD_24IDC.mtz``, to 2.2 A; 1000 A thick
crystals with a Gaussian rel-point profile, random orientations, 0.5 px centre jitter,
1.5 % ellipticity, Poisson noise, PSF, zero-order beam and inelastic background), then
runs the command-line chain: ``serial preprocess``, ``serial index`` (cell given),
``serial integrate``, and ``merge`` with the xsphere partiality model and with plain
averaging (``--model unity``).  Prints the time of every step, the indexing rate and the
correlation of the merged intensities with the true ones to 2.5 A (the issue's figure:
CC >= 0.98, xsphere above unity).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from crystalscope.cli.main import main as cli
from crystalscope.io.crystfel_cell import UnitCellFile, write_cell
from crystalscope.io.crystfel_hkl import read_hkl
from crystalscope.io.mtz import read_mtz
from crystalscope.merge.compare import compare_sets
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.output import run_preprocess
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import simulate_serial

HEWL = Path(__file__).resolve().parents[1].parent / "shared/data/reciprocalspaceship"
D_CHECK = 2.5


def sim_config(n: int) -> SerialConfig:
    return SerialConfig.model_validate(
        {
            "n_crystals": n, "seed": 11,
            "source": {"structure": None, "mtz": str(HEWL / "HEWL_SSAD_24IDC.mtz"), "d_min": 2.2},
            "crystal": {"thickness_a": 1000, "profile": "gaussian"},
            "beam_effects": {
                "centre_jitter_px": 0.5, "ellipticity": 0.015, "ellipticity_angle_deg": 20.0,
            },
        }
    )  # fmt: skip


def cc_with_truth(path: Path) -> tuple[float, int]:
    """CC of a merged CrystFEL .hkl with the true intensities (the MTZ the simulation
    used) over d >= D_CHECK, reflections paired by symmetry (compare_hkl's way)."""
    truth = read_mtz(HEWL / "HEWL_SSAD_24IDC.mtz", intensity=("IMEAN", "SIGIMEAN"))
    assert truth.cell is not None and truth.space_group is not None
    table = compare_sets(
        read_hkl(path), truth.table, truth.cell, truth.space_group, d_min=D_CHECK, scale=False
    )
    return float(table.loc["overall", "cc"]), int(table.loc["overall", "n_common"])


def _step(name: str, times: dict[str, float], args: list[str]) -> None:
    t0 = time.perf_counter()
    code = cli(args)
    times[name] = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"{name} failed with status {code}")


def run(n: int, root: Path) -> None:
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    simulate_serial(sim_config(n), root / "sim")
    times["simulate"] = time.perf_counter() - t0
    pre = PreprocessConfig.model_validate(
        {
            "input": {"files": [str(root / "sim" / "frames.h5")]},
            "compute": {"progress": False}, "output": {"directory": str(root / "pre")},
        }
    )  # fmt: skip
    t0 = time.perf_counter()
    run_preprocess(pre)
    times["preprocess"] = time.perf_counter() - t0
    write_cell(UnitCellFile("tetragonal", "P", "c", (79.34, 79.34, 37.81, 90, 90, 90)),
               root / "hewl.cell")  # fmt: skip
    quiet = ["--set", "compute.progress=false"]
    _step("index", times, ["serial", "index", "-i", str(root / "pre" / "preprocessed.h5"),
                           "--cell", str(root / "hewl.cell"), "--space-group", "P 43 21 2",
                           "-o", str(root / "idx"), *quiet])  # fmt: skip
    _step("integrate", times, ["serial", "integrate", "--indexed", str(root / "idx"),
                               "-o", str(root / "int"), *quiet])  # fmt: skip
    for model in ("xsphere", "unity"):
        _step(f"merge ({model})", times, ["merge", "-i", str(root / "int" / "observations.h5"),
                                          "--model", model, "-o", str(root / model)])  # fmt: skip
    report(n, root, times)


def report(n: int, root: Path, times: dict[str, float]) -> None:
    crystals = pd.read_csv(root / "idx" / "crystals.csv")
    print(f"\n{n} frames, {crystals['frame'].nunique()} indexed ({len(crystals)} crystals)")
    for name, seconds in times.items():
        print(f"  {name:<18} {seconds:8.1f} s")
    for model in ("xsphere", "unity"):
        cc, used = cc_with_truth(root / model / "merged.hkl")
        kept = pd.read_csv(root / model / "crystals.csv")["rejected"].eq(False).sum()
        print(f"  {model:<8} CC with the truth (d >= {D_CHECK} A, {used} reflections) = {cc:.4f}"
              f"; {kept} crystals merged")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    if not (HEWL / "HEWL_SSAD_24IDC.mtz").is_file():
        raise SystemExit(f"needs {HEWL / 'HEWL_SSAD_24IDC.mtz'} (../shared/data)")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        run(args.frames, args.workdir)
        return
    with tempfile.TemporaryDirectory() as tmp:
        run(args.frames, Path(tmp))


if __name__ == "__main__":
    main()
