"""Dose fractionation: indexing solutions broadcast to exposures of several lengths.

Simulated movies of 4 fractions per crystal with radiation damage (B grows with the
accumulated dose), aggregated for pre-processing and indexing, then integrated on sums
of 1, 2 and 4 fractions (``serial integrate`` with ``dose.enabled``) and merged as a
series (``crystalscope merge --series``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crystalscope.cli.main import main
from crystalscope.io.crystfel_cell import UnitCellFile, write_cell
from crystalscope.io.observations import read_observations
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.dose_series import carry_crystals
from crystalscope.serial.output import run_preprocess
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import simulate_serial

pytestmark = pytest.mark.slow

EXPOSURES = (1, 2, 4)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dose")
    sim = SerialConfig.model_validate(
        {
            "n_crystals": 60, "seed": 21, "source": {"d_min": 2.5},
            "dose": {"frames_per_crystal": 4, "b_per_dose": 6.0},
            "beam_effects": {"centre_jitter_px": 0.5, "dose_e_per_a2": 0.5},
        }
    )  # fmt: skip
    simulate_serial(sim, root / "sim")
    pre = PreprocessConfig.model_validate(
        {
            "input": {"files": [str(root / "sim" / "frames.h5")]},
            "aggregate": {"enabled": True, "by": ["shot"]},
            "compute": {"progress": False}, "output": {"directory": str(root / "pre")},
        }
    )  # fmt: skip
    run_preprocess(pre)
    write_cell(
        UnitCellFile("tetragonal", "P", "c", (79.1, 79.1, 37.9, 90, 90, 90)), root / "x.cell"
    )
    common = ["--set", "compute.progress=false"]
    assert main(["serial", "index", "-i", str(root / "pre" / "preprocessed.h5"), "--cell",
                 str(root / "x.cell"), "--space-group", "P 43 21 2", "-o", str(root / "idx"),
                 *common]) == 0  # fmt: skip
    assert main(["serial", "integrate", "--indexed", str(root / "idx"), "-o", str(root / "int"),
                 "--set", "dose.enabled=true", "--set", f"dose.input={root / 'sim' / 'frames.h5'}",
                 "--set", "dose.by=[shot]", "--set", f"dose.exposures={list(EXPOSURES)}",
                 *common]) == 0  # fmt: skip
    assert main(["merge", "--series", str(root / "int" / "dose"), "-o", str(root / "m")]) == 0
    return {"root": root, "int": root / "int", "merged": root / "m"}


def test_every_exposure_is_integrated_with_the_same_crystals(run: dict[str, Path]) -> None:
    index = pd.read_csv(run["int"] / "dose" / "series.csv")
    assert index["n_fractions"].tolist() == list(EXPOSURES)
    # 0.5 e/A^2 per fraction: the exposure of n fractions has n * 0.5 e/A^2
    np.testing.assert_allclose(index["dose_e_per_a2"], 0.5 * np.array(EXPOSURES))
    tables = [read_observations(run["int"] / "dose" / f).table for f in index["file"]]
    ids = [set(t["crystal_id"]) for t in tables]
    assert ids[0] == ids[1] == ids[2] and len(ids[0]) >= 40
    # the same reflections are predicted on every exposure (same solutions)
    keys = [set(map(tuple, t[["crystal_id", "h", "k", "l"]].to_numpy())) for t in tables]
    assert keys[0] == keys[1] == keys[2]
    strong = [t[(t["flags"] & 0b110111) == 0]["I"].sum() for t in tables]
    assert strong[0] < strong[1] < strong[2], strong  # more fractions, more counts


def test_series_statistics_and_recommendation(run: dict[str, Path]) -> None:
    table = pd.read_csv(run["merged"] / "dose_series.csv")
    assert table["n_fractions"].tolist() == list(EXPOSURES)
    assert np.all(np.diff(table["dose_e_per_a2"]) > 0)
    assert table["cc_half"].between(-1, 1).all() and (table["crystals"] > 0).all()
    for n in EXPOSURES:
        assert (run["merged"] / f"exposure_{n:02d}" / "merged.mtz").is_file()
    assert (run["merged"] / "dose_series.png").stat().st_size > 10_000


def test_crystals_follow_their_movie_by_key_columns() -> None:
    crystals = pd.DataFrame({"frame": [10, 10, 11], "crystal": [0, 1, 0], "x": [1.0, 2.0, 3.0]})
    indexed = pd.DataFrame({"frame": [10, 11, 12], "shot": [5, 6, 7]})
    summed = pd.DataFrame({"frame": [0, 4, 8], "shot": [7, 5, 9]})
    moved = carry_crystals(crystals, indexed, summed, ["shot"])
    assert moved[["frame", "crystal", "x"]].values.tolist() == [[4, 0, 1.0], [4, 1, 2.0]]
