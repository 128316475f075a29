"""Running DIALS and XDS: missing programs, failing steps, and parsing their results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from credtools import make_frames, make_scan, needs_dials

from crystalscope.errors import CrystalscopeError
from crystalscope.rotation.handoff import write_handoff
from crystalscope.rotation.process import (
    ProcessingFailed,
    ProgramMissing,
    cell_from_vectors,
    parse_dials_merging,
    parse_dials_results,
    parse_xds_correct,
    parse_xds_results,
    run_dials,
    run_xds,
)

# The end of a dials.scale.log (DIALS 3.12), Overall column last
SCALE_SUMMARY = """
            -------------Summary of merging statistics--------------

                                            Suggested   Low    High  Overall
High resolution limit                           0.89    2.40    0.89    0.60
Low resolution limit                            8.32    8.32    0.91    8.32
Completeness                                   63.5    59.4    61.7    33.8
Multiplicity                                    1.9     1.7     1.9     1.7
I/sigma                                       125.0   222.9    22.0    71.5
Rmerge(I)                                     0.045   0.172   0.026   0.045
Rmerge(I+/-)                                  0.022   0.084   0.023   0.022
Rmeas(I)                                      0.063   0.243   0.036   0.063
Rpim(I)                                       0.044   0.172   0.025   0.044
CC half                                       0.945   0.682   1.000   0.948
Anomalous slope                               1.434
Total observations                             2179     103      93    3296
Total unique                                   1127      60      50    1970

Writing html report to dials.scale.html
"""

INDEX_TABLE = """
+------------+-------------+---------------+-------------+
|   Imageset |   # indexed |   # unindexed | % indexed   |
|------------+-------------+---------------+-------------|
|          0 |        2108 |            57 | 97.4%       |
+------------+-------------+---------------+-------------+
Saving refined experiments to indexed.expt
"""

# A CORRECT.LP resolution table in the layout of XDS (the version with CC(1/2))
CORRECT_LP = (Path(__file__).parent / "data" / "CORRECT.LP").read_text()


def test_parse_dials_merging() -> None:
    stats = parse_dials_merging(SCALE_SUMMARY)
    assert stats is not None
    assert (stats.d_max, stats.d_min) == (8.32, 0.60)
    assert stats.completeness_percent == 33.8 and stats.multiplicity == 1.7
    assert stats.i_over_sigma == 71.5 and stats.r_merge == 0.045 and stats.r_meas == 0.063
    assert stats.r_pim == 0.044 and stats.cc_half == 0.948
    assert (stats.n_observations, stats.n_unique) == (3296, 1970)
    assert parse_dials_merging("no table here") is None


def test_parse_dials_results(tmp_path: Path) -> None:
    (tmp_path / "dials.find_spots.log").write_text("...\nSaved 2166 reflections to strong.refl\n")
    (tmp_path / "dials.index.log").write_text(INDEX_TABLE)
    (tmp_path / "dials.scale.log").write_text(SCALE_SUMMARY)
    beta = np.radians(104.5)
    crystal = {
        "real_space_a": [7.92, 0, 0],
        "real_space_b": [0, 10.61, 0],
        "real_space_c": [13.84 * np.cos(beta), 0, 13.84 * np.sin(beta)],
        "space_group_hall_symbol": " P 2yb",
    }
    (tmp_path / "scaled.expt").write_text(json.dumps({"crystal": [crystal]}))
    (tmp_path / "scaled.mtz").write_bytes(b"MTZ ")
    result = parse_dials_results(tmp_path)
    assert (result.n_spots, result.n_indexed) == (2166, 2108)
    assert result.indexed_fraction == pytest.approx(2108 / 2166)
    assert result.cell == pytest.approx((7.92, 10.61, 13.84, 90.0, 104.5, 90.0))
    assert result.space_group == "P 1 21 1" and result.laue_group == "2/m"
    assert result.mtz == tmp_path / "scaled.mtz" and result.shelx == []
    assert "97.3 %" in result.summary() and "2/m" in result.summary()
    json.dumps(result.to_dict())


def test_cell_from_vectors() -> None:
    a, b, c = np.eye(3) * [5.0, 6.0, 7.0]
    assert cell_from_vectors(a, b, c) == pytest.approx((5, 6, 7, 90, 90, 90))


def test_parse_xds(tmp_path: Path) -> None:
    stats = parse_xds_correct(CORRECT_LP)
    assert stats is not None
    assert (stats.n_observations, stats.n_unique) == (2179, 1127)
    assert stats.completeness_percent == 61.4 and stats.i_over_sigma == 11.2
    assert stats.r_merge == pytest.approx(0.045) and stats.r_meas == pytest.approx(0.063)
    assert stats.cc_half == pytest.approx(0.945) and stats.d_min == 0.89
    assert stats.multiplicity == pytest.approx(2179 / 1127)
    older = CORRECT_LP.replace("CC(1/2)", "Rmrgd-F")
    assert math.isnan(parse_xds_correct(older).cc_half)  # type: ignore[union-attr]
    (tmp_path / "CORRECT.LP").write_text(CORRECT_LP)
    (tmp_path / "IDXREF.LP").write_text("\n     1290 OUT OF      1340 SPOTS INDEXED.\n")
    result = parse_xds_results(tmp_path)
    assert (result.n_indexed, result.n_spots) == (1290, 1340)
    assert result.cell == pytest.approx((7.92, 10.61, 13.841, 90.0, 104.494, 90.0))
    assert result.space_group == "P 1 21/c 1" and result.laue_group == "2/m"


def test_missing_programs_say_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scan = make_scan()
    write_handoff(tmp_path, make_frames(scan), scan, formats=("smv",))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(ProgramMissing, match="apt-get install dials") as info:
        run_dials(tmp_path, say=lambda m: None)
    assert "dials." in str(info.value)
    with pytest.raises(ProgramMissing, match="xds_par"):
        run_xds(tmp_path, say=lambda m: None)
    with pytest.raises(CrystalscopeError, match=r"dials_process\.sh"):
        run_dials(tmp_path / "SMV" / "data")


@needs_dials
def test_a_failing_step_reports_its_log(tmp_path: Path) -> None:
    scan = make_scan()
    write_handoff(tmp_path, make_frames(scan), scan, formats=("smv",))
    for p in (tmp_path / "SMV" / "data").iterdir():
        p.unlink()  # nothing to import
    lines: list[str] = []
    with pytest.raises(ProcessingFailed) as info:
        run_dials(tmp_path, say=lines.append)
    assert info.value.field == "dials.import" and "exit status" in str(info.value)
    assert lines == [
        "[1/11] dials.import template=data/#####.img geometry.goniometer.axes="
        "0.600000,0.800000,0.000000 ..."
    ]
