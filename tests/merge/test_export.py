"""Tests of the export of merged data (crystalscope.merge.export) and the statistics files."""

from __future__ import annotations

import re
from pathlib import Path

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import CrystalscopeError, DataError
from crystalscope.io.crystfel_hkl import read_hkl, read_hkl_halves
from crystalscope.io.mtz import read_mtz
from crystalscope.io.shelx import read_shelx_hkl
from crystalscope.merge.export import MergedSet, write_merged
from crystalscope.merge.plots import plot_statistics
from crystalscope.merge.stats import merge_statistics, possible_reflections, write_statistics_csv

CELL = gemmi.UnitCell(79.34, 79.34, 37.81, 90, 90, 90)
SG = gemmi.SpaceGroup("P 43 21 2")
HKLF4 = re.compile(r"^([ \-\d]{3}\d){3}[ \-\d]{4}\d\.\d\d[ \-\d]{4}\d\.\d\d$")  # 3I4, 2F8.2
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_set(n_crystals: int = 12, seed: int = 2) -> MergedSet:
    """A small merged set with half-sets and unmerged observations (original indices)."""
    rng = np.random.default_rng(seed)
    ref = possible_reflections(CELL, SG, 3.5)
    truth = rng.gamma(1.0, 2000.0, len(ref)) + 10.0
    ops = list(SG.operations().sym_ops)
    rows = []
    for cid in range(n_crystals):
        pick = rng.choice(len(ref), size=60, replace=False)
        for j in pick:
            op = ops[rng.integers(len(ops))]
            hkl = op.apply_to_hkl([int(x) for x in ref.loc[j, ["h", "k", "l"]]])
            if rng.random() < 0.5:
                hkl = [-x for x in hkl]
            value = truth[j] * rng.normal(1.0, 0.1)
            rows.append((*hkl, cid, value, 0.1 * truth[j], rng.uniform(0, 500), rng.random()))
    obs = pd.DataFrame(
        rows,
        columns=["h", "k", "l", "crystal_id", "I_full", "sigma_full", "fs", "partiality_model"],
    )
    obs["ss"] = obs["fs"] * 2
    crystals = pd.DataFrame(
        {"crystal_id": np.arange(n_crystals), "rejected": np.arange(n_crystals) == 3}
    )
    merged = ref[["h", "k", "l"]].assign(
        I=truth, sigma=0.02 * truth, nobs=rng.integers(1, 30, len(ref)).astype(np.int32)
    )
    half1 = merged.assign(I=truth * rng.normal(1, 0.05, len(ref)))
    half2 = merged.assign(I=truth * rng.normal(1, 0.05, len(ref)))
    return MergedSet(merged, CELL, SG, 0.02508, half1, half2, obs, crystals)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[MergedSet, dict[str, Path]]:
    data = make_set()
    paths = write_merged(data, tmp_path_factory.mktemp("export") / "out", statistics=True)
    return data, paths


def test_files(written: tuple[MergedSet, dict[str, Path]]) -> None:
    _, paths = written
    assert set(paths) == {
        "merged_mtz",
        "unmerged_mtz",
        "crystfel_hkl",
        "crystfel_hkl1",
        "crystfel_hkl2",
        "shelx_hkl",
        "shelx_ins",
        "stats_csv",
        "stats_txt",
        "stats_png",
    }
    names = sorted(p.name for p in paths.values())
    assert names == sorted(p.name for p in paths["merged_mtz"].parent.iterdir()), names
    assert paths["merged_mtz"].name == "merged.mtz"
    assert paths["unmerged_mtz"].name == "unmerged.mtz"
    assert paths["shelx_hkl"].name == "merged_shelx.hkl"
    assert paths["shelx_ins"].name == "merged_shelx.ins"


def test_merged_mtz_in_gemmi(written: tuple[MergedSet, dict[str, Path]]) -> None:
    data, paths = written
    mtz = gemmi.read_mtz_file(str(paths["merged_mtz"]))
    assert mtz.spacegroup.hm == "P 43 21 2"
    assert mtz.cell.parameters == pytest.approx(CELL.parameters, abs=1e-3)
    assert [(c.label, c.type) for c in mtz.columns] == [
        ("H", "H"),
        ("K", "H"),
        ("L", "H"),
        ("IMEAN", "J"),
        ("SIGIMEAN", "Q"),
        ("nmeas", "I"),
    ]
    assert mtz.nreflections == len(data.merged)
    assert mtz.datasets[-1].wavelength == pytest.approx(0.02508)
    back = read_mtz(paths["merged_mtz"]).table
    want = data.merged.sort_values(["h", "k", "l"], ignore_index=True)
    assert np.array_equal(back[["h", "k", "l"]].to_numpy(), want[["h", "k", "l"]].to_numpy())
    assert np.allclose(back["I"], want["I"], rtol=1e-6)
    assert np.array_equal(back["nmeas"].to_numpy(), want["nobs"].to_numpy())
    asu = gemmi.ReciprocalAsu(SG)
    assert all(asu.is_in([int(x) for x in r]) for r in back[["h", "k", "l"]].to_numpy())


def test_unmerged_mtz(written: tuple[MergedSet, dict[str, Path]]) -> None:
    data, paths = written
    mtz = gemmi.read_mtz_file(str(paths["unmerged_mtz"]))
    labels = [c.label for c in mtz.columns]
    assert labels == ["H", "K", "L", "M/ISYM", "BATCH", "I", "SIGI", "XDET", "YDET", "FRACTIONCALC"]
    assert [c.type for c in mtz.columns][3:7] == ["Y", "B", "J", "Q"]
    obs = data.observations
    assert obs is not None
    kept = obs[obs["crystal_id"] != 3]  # crystal 3 was rejected
    assert sorted(b.number for b in mtz.batches) == sorted(set(kept["crystal_id"] + 1))
    back = read_mtz(paths["unmerged_mtz"]).table  # original indices recovered from M/ISYM
    assert np.array_equal(back[["h", "k", "l"]].to_numpy(), kept[["h", "k", "l"]].to_numpy())
    assert np.allclose(back["I"], kept["I_full"], rtol=1e-6)
    assert np.array_equal(back["batch"].to_numpy(), kept["crystal_id"].to_numpy() + 1)


def test_crystfel_files(written: tuple[MergedSet, dict[str, Path]]) -> None:
    data, paths = written
    merged = read_hkl(paths["crystfel_hkl"])
    assert merged.attrs["symmetry"] == "4/mmm" and len(merged) == len(data.merged)
    assert np.allclose(merged["I"], data.merged["I"], atol=0.006)
    h1, h2 = read_hkl_halves(paths["crystfel_hkl"])
    assert data.half1 is not None and data.half2 is not None
    assert np.allclose(h1["I"], data.half1["I"], atol=0.006)
    assert np.allclose(h2["I"], data.half2["I"], atol=0.006)


def test_shelx_files(written: tuple[MergedSet, dict[str, Path]]) -> None:
    data, paths = written
    lines = paths["shelx_hkl"].read_text().splitlines()
    assert all(HKLF4.match(line) for line in lines[:-1]), lines[:3]
    assert lines[-1].startswith("   0   0   0    0.00    0.00")
    back = read_shelx_hkl(paths["shelx_hkl"])
    assert back.metadata["terminated"] and len(back.table) == len(data.merged)
    ratio = back.table["I"].to_numpy() / data.merged["I"].to_numpy()
    assert np.allclose(ratio, ratio[0], rtol=1e-3)  # one overall scale to fit F8.2
    ins = paths["shelx_ins"].read_text().splitlines()
    assert ins[0] == "TITL merged in P43212" and ins[-2:] == ["HKLF 4", "END"]
    assert ins[1].split()[1:] == [
        "0.02508",
        "79.3400",
        "79.3400",
        "37.8100",
        "90.000",
        "90.000",
        "90.000",
    ]
    assert "LATT -1" in ins and sum(line.startswith("SYMM") for line in ins) == 7


def test_statistics_files(written: tuple[MergedSet, dict[str, Path]]) -> None:
    data, paths = written
    csv = pd.read_csv(paths["stats_csv"], index_col="shell")
    stats = merge_statistics(data.merged, data.half1, data.half2, CELL, SG)
    assert list(csv.index) == list(stats.shells.index)
    assert np.allclose(csv["cc_half"], stats.shells["cc_half"], rtol=1e-5)
    assert "overall" in paths["stats_txt"].read_text()
    raw = paths["stats_png"].read_bytes()
    assert raw[:8] == PNG_MAGIC
    from matplotlib.image import imread

    image = imread(paths["stats_png"])
    assert image.shape[0] > 500 and image.shape[1] > 1000 and image.std() > 0.05


def test_no_overwrite_without_permission(tmp_path: Path) -> None:
    data = make_set(4)
    out = tmp_path / "o"
    out.mkdir()
    (out / "merged_shelx.ins").write_text("mine\n")
    with pytest.raises(CrystalscopeError, match="exists"):
        write_merged(data, out)
    assert [p.name for p in out.iterdir()] == ["merged_shelx.ins"]  # nothing else written
    assert (out / "merged_shelx.ins").read_text() == "mine\n"
    paths = write_merged(data, out, overwrite=True, stem="merged")
    assert paths["shelx_ins"].read_text().startswith("TITL")
    assert not any(p.name.endswith(".part") for p in out.iterdir())


def test_minimal_result_and_errors(tmp_path: Path) -> None:
    full = make_set(2)
    data = MergedSet(full.merged, CELL, SG, 1.0)  # no halves, no observations
    paths = write_merged(data, tmp_path / "m", stem="x")
    assert set(paths) == {"merged_mtz", "crystfel_hkl", "shelx_hkl", "shelx_ins"}
    with pytest.raises(DataError, match="wavelength"):
        write_merged(MergedSet(full.merged, CELL, SG, 0.0), tmp_path / "w")
    empty = full.merged.assign(I=np.nan)
    with pytest.raises(DataError, match="no merged reflections"):
        write_merged(MergedSet(empty, CELL, SG, 1.0), tmp_path / "e")


def test_statistics_csv_and_plot_helpers(tmp_path: Path) -> None:
    data = make_set(2)
    stats = merge_statistics(data.merged, None, None, CELL, SG, n_shells=4)
    path = write_statistics_csv(stats, tmp_path / "s.csv")
    with pytest.raises(CrystalscopeError, match="exists"):
        write_statistics_csv(stats, path)
    assert pd.read_csv(path)["shell"].astype(str).tolist() == ["1", "2", "3", "4", "overall"]
    png = plot_statistics(stats, tmp_path / "s.png", title="no halves")
    assert png.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(CrystalscopeError, match="exists"):
        plot_statistics(stats, png, overwrite=False)
