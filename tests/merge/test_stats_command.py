"""``crystalscope stats`` on merged files: CrystFEL .hkl with half-sets, merged MTZ."""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.cli.main import EXIT_USER_ERROR, main
from crystalscope.io.crystfel_cell import UnitCellFile, write_cell
from crystalscope.io.crystfel_hkl import write_hkl, write_hkl_halves
from crystalscope.io.mtz import write_mtz
from crystalscope.merge.fom import cc_half, possible_reflections
from crystalscope.merge.stats_run import load_merged, run_stats

CELL = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Merged lysozyme-cell data with half-sets of known noise, as .hkl and as MTZ."""
    root = tmp_path_factory.mktemp("stats")
    sg = gemmi.SpaceGroup("P 43 21 2")
    hkl = possible_reflections(gemmi.UnitCell(*CELL), sg, 3.0)[["h", "k", "l"]]
    rng = np.random.default_rng(4)
    true = rng.exponential(1000.0, len(hkl))
    halves = [true + rng.normal(0, 300.0, len(hkl)) for _ in range(2)]
    nobs = rng.integers(2, 9, len(hkl))

    def table(values: np.ndarray, n: np.ndarray) -> pd.DataFrame:
        return hkl.assign(I=values, sigma=300.0, nobs=n).reset_index(drop=True)

    full = table(0.5 * (halves[0] + halves[1]), 2 * nobs)
    write_hkl(full, root / "m.hkl", symmetry="4/mmm")
    write_hkl_halves(table(halves[0], nobs), table(halves[1], nobs), root / "m.hkl",
                     symmetry="4/mmm")  # fmt: skip
    write_cell(UnitCellFile("tetragonal", "P", "c", CELL), root / "x.cell")
    mtz = full.rename(columns={"nobs": "nmeas"})
    write_mtz(mtz, root / "m.mtz", CELL, sg, merged=True)
    return {
        "root": root,
        "hkl": root / "m.hkl",
        "cell": root / "x.cell",
        "mtz": root / "m.mtz",
        "halves": [table(h, nobs) for h in halves],
        "full": full,
    }  # type: ignore[dict-item]


def test_hkl_with_half_sets(files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    out = files["root"]
    code = main(["stats", str(files["hkl"]), "--cell", str(files["cell"]), "--csv",
                 str(out / "s.csv"), "--plot", str(out / "s.png")])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "overall" in text and "P 4/m m m" in text
    overall = pd.read_csv(out / "s.csv").iloc[-1]
    h1, h2 = files["halves"]
    expected = cc_half(h1["I"], h2["I"])
    assert overall["cc_half"] == pytest.approx(expected, abs=2e-3), (overall["cc_half"], expected)
    assert overall["completeness"] == pytest.approx(100.0, abs=0.1)
    assert overall["multiplicity"] == pytest.approx(files["full"]["nobs"].mean(), rel=1e-6)
    assert (out / "s.png").stat().st_size > 10_000


def test_merged_mtz_reads_nmeas_as_multiplicity(files: dict) -> None:
    data = load_merged(files["mtz"])
    stats, _ = run_stats(data)
    overall = stats.shells.loc["overall"]
    assert overall["multiplicity"] == pytest.approx(files["full"]["nobs"].mean(), rel=1e-6)
    assert data.half1 is None and not np.isfinite(overall["cc_half"])


def test_compare_two_sets(files: dict, capsys: pytest.CaptureFixture[str]) -> None:
    root = files["root"]
    code = main(["stats", str(root / "m.hkl1"), "--compare", str(root / "m.hkl2"),
                 "--cell", str(files["cell"])])  # fmt: skip
    assert code == 0
    assert "compared with" in capsys.readouterr().out


def test_bad_input_is_one_line_and_nothing_written(
    files: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    root = files["root"]
    assert main(["stats", str(files["hkl"])]) == EXIT_USER_ERROR  # no cell
    assert "--cell" in capsys.readouterr().err
    (root / "taken.csv").write_text("keep")
    code = main(["stats", str(files["hkl"]), "--cell", str(files["cell"]), "--csv",
                 str(root / "taken.csv")])  # fmt: skip
    assert code == EXIT_USER_ERROR and (root / "taken.csv").read_text() == "keep"
    truncated = root / "t.hkl"
    truncated.write_text(files["hkl"].read_text()[:2000])
    assert main(["stats", str(truncated), "--cell", str(files["cell"])]) == EXIT_USER_ERROR
    assert "truncated" in capsys.readouterr().err
