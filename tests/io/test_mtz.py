"""Tests of the MTZ reader and writer (crystalscope.io.mtz)."""

from __future__ import annotations

import re
from pathlib import Path

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import DataError, FormatError
from crystalscope.io.mtz import read_mtz, write_mtz
from crystalscope.io.reflection_data import ReflectionData

HEWL = "reciprocalspaceship/HEWL_SSAD_24IDC.mtz"
E5Z = "gemmi/5e5z.mtz"


# --------------------------------------------------------------------------- real files


def test_hewl_acceptance(shared_data: Path) -> None:
    data = read_mtz(shared_data / HEWL)
    assert len(data.table) == 12542
    assert data.merged
    assert data.space_group.hm == "P 43 21 2"
    a, b, c, alpha, beta, gamma = data.cell.parameters
    assert a == pytest.approx(79.34, abs=0.005) and b == pytest.approx(a)
    assert c == pytest.approx(37.81, abs=0.005)
    assert (alpha, beta, gamma) == (90, 90, 90)
    assert data.metadata["labels"]["I"] == "IMEAN"
    assert data.metadata["labels"]["sigma"] == "SIGIMEAN"
    assert data.metadata["resolution_high"] == pytest.approx(1.70, abs=0.01)
    assert data.wavelength is None  # the file's dataset wavelength is 0
    t = data.table
    assert list(t.columns[:5]) == ["h", "k", "l", "I", "sigma"]
    assert t[["h", "k", "l"]].dtypes.tolist() == [np.int32] * 3
    assert t["N(+)"].dtype == np.int32 and "F" not in t


def test_hewl_matches_reciprocalspaceship(shared_data: Path) -> None:
    rs = pytest.importorskip("reciprocalspaceship")
    ours = read_mtz(shared_data / HEWL).table.set_index(["h", "k", "l"])
    ref = rs.read_mtz(str(shared_data / HEWL))
    ref.index = ref.index.set_names(["h", "k", "l"])
    ref = ref[["IMEAN", "SIGIMEAN", "I(-)"]].astype(float).add_prefix("rs_")
    joined = ours.join(ref, how="inner")
    assert len(joined) == 12542
    np.testing.assert_allclose(joined["I"], joined["rs_IMEAN"], rtol=1e-6)
    np.testing.assert_allclose(joined["sigma"], joined["rs_SIGIMEAN"], rtol=1e-6)
    np.testing.assert_allclose(joined["I(-)"], joined["rs_I(-)"], rtol=1e-6, equal_nan=True)


def test_5e5z_intensities_and_amplitudes(shared_data: Path) -> None:
    data = read_mtz(shared_data / E5Z)
    assert len(data.table) == 441
    assert data.space_group.hm == "P 1 21 1"
    assert data.metadata["labels"] == {
        "I": "I", "sigma": "SIGI", "F": "FP", "sigF": "SIGFP", "FREE": "FREE",
    }  # fmt: skip
    t = data.table
    first = t.iloc[0]
    assert (first.h, first.k, first.l) == (-5, 0, 1)
    assert first.I == pytest.approx(0.4157, abs=1e-4)
    assert first.F == pytest.approx(5.364, abs=1e-3)
    # missing values stay NaN; FREE has missing values, so it stays float
    assert t["I"].isna().sum() > 0 and t["FREE"].dtype == np.float64
    assert data.metadata["history"] == ["From cif2mtz 17/ 5/2019 12:15:14"]


def test_chosen_labels_and_missing_label(shared_data: Path) -> None:
    data = read_mtz(shared_data / HEWL, intensity=("I(+)", "SIGI(+)"))
    assert data.metadata["labels"]["I"] == "I(+)"
    assert "IMEAN" in data.table  # the unselected pair is kept under its label
    with pytest.raises(FormatError) as err:
        read_mtz(shared_data / HEWL, intensity=("IOBS", "SIGIOBS"))
    assert err.value.field == "IOBS" and "HEWL" in str(err.value)


def test_merged_round_trip_real_file(shared_data: Path, tmp_path: Path) -> None:
    data = read_mtz(shared_data / E5Z)
    out = tmp_path / "copy.mtz"
    write_mtz(data, out)
    back = read_mtz(out)
    pd.testing.assert_frame_equal(back.table, data.table)
    assert back.metadata["labels"] == data.metadata["labels"]
    assert back.metadata["column_types"] == data.metadata["column_types"]
    assert back.cell.parameters == pytest.approx(data.cell.parameters)
    assert back.space_group.hm == data.space_group.hm


# --------------------------------------------------------------------------- round trips


def _table(n: int, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hkl = rng.integers(-12, 13, (n, 3))
    hkl[np.all(hkl == 0, axis=1)] = (1, 2, 3)
    return pd.DataFrame(
        {
            "h": hkl[:, 0], "k": hkl[:, 1], "l": hkl[:, 2],
            "I": rng.normal(500, 100, n).astype(np.float32),
            "sigma": rng.uniform(1, 9, n).astype(np.float32),
            "batch": rng.integers(1, 7, n),
            "partiality": rng.uniform(0, 1, n).astype(np.float32),
        }
    )  # fmt: skip


def test_merged_round_trip(tmp_path: Path) -> None:
    table = _table(200).drop(columns="batch")
    table["F"] = np.sqrt(np.abs(table["I"])).astype(np.float32)
    table["sigF"] = np.float32(0.5)
    table["nobs"] = 3
    out = tmp_path / "m.mtz"
    write_mtz(table, out, (50.0, 60.0, 70.0, 90, 95, 90), "P 1 21 1", wavelength=0.9793)
    back = read_mtz(out)
    assert back.merged and back.wavelength == pytest.approx(0.9793)
    assert back.metadata["labels"]["I"] == "IMEAN"
    assert back.metadata["column_types"]["nobs"] == "I"
    for col in table.columns:
        np.testing.assert_allclose(back.table[col], table[col], rtol=1e-7, err_msg=col)
    mtz = gemmi.read_mtz_file(str(out))
    assert [c.label for c in mtz.columns] == [
        "H", "K", "L", "IMEAN", "SIGIMEAN", "partiality", "F", "SIGF", "nobs",
    ]  # fmt: skip


def test_unmerged_round_trip(tmp_path: Path) -> None:
    table = _table(300)
    out = tmp_path / "u.mtz"
    write_mtz(table, out, gemmi.UnitCell(79, 79, 38, 90, 90, 90), 96, merged=False,
              wavelength=1.54)  # fmt: skip
    back = read_mtz(out)
    assert not back.merged
    assert back.metadata["batches"] == sorted(set(table["batch"]))
    t = back.table
    for col in ("h", "k", "l", "batch"):
        np.testing.assert_array_equal(t[col], table[col], err_msg=col)
    np.testing.assert_allclose(t["I"], table["I"], rtol=1e-7)
    np.testing.assert_allclose(t["partiality"], table["partiality"], rtol=1e-7)
    # stored indices are in the asymmetric unit and map back through ISYM
    sg = gemmi.SpaceGroup(96)
    asu = gemmi.ReciprocalAsu(sg)
    for row in t.head(50).itertuples():
        assert asu.is_in([row.h_asu, row.k_asu, row.l_asu])
        assert asu.to_asu([row.h, row.k, row.l], sg.operations()) == (
            [row.h_asu, row.k_asu, row.l_asu], row.isym,
        )  # fmt: skip
    # and a second round trip writes the same file content
    write_mtz(back, tmp_path / "u2.mtz")
    again = read_mtz(tmp_path / "u2.mtz")
    pd.testing.assert_frame_equal(again.table, back.table)


def test_unmerged_is_read_by_reciprocalspaceship(tmp_path: Path) -> None:
    rs = pytest.importorskip("reciprocalspaceship")
    table = _table(100, seed=5)
    out = tmp_path / "u.mtz"
    write_mtz(table, out, (79, 79, 38, 90, 90, 90), "P 43 21 2", merged=False)
    ds = rs.read_mtz(str(out)).reset_index()  # rs maps to observed indices itself
    assert not ds.merged
    np.testing.assert_array_equal(ds[["H", "K", "L"]].to_numpy(),
                                  table[["h", "k", "l"]].to_numpy())  # fmt: skip
    np.testing.assert_array_equal(ds["BATCH"].to_numpy(), table["batch"].to_numpy())


def test_reflection_data_and_intensity_less_tables(tmp_path: Path) -> None:
    table = _table(20).drop(columns=["batch"])
    table["I"] = np.nan
    table["F"] = 10.0
    table["sigF"] = 1.0
    out = tmp_path / "f.mtz"
    data = ReflectionData(table, gemmi.UnitCell(10, 10, 10, 90, 90, 90), gemmi.SpaceGroup("P 1"))
    write_mtz(data, out)
    back = read_mtz(out)
    assert "IMEAN" not in [c.label for c in gemmi.read_mtz_file(str(out)).columns]
    assert back.table["I"].isna().all() and back.table["F"].eq(10.0).all()


# --------------------------------------------------------------------------- errors


def test_write_errors(tmp_path: Path) -> None:
    table = _table(5)
    out = tmp_path / "x.mtz"
    with pytest.raises(DataError, match="unit cell"):
        write_mtz(table, out, None, "P 1")
    with pytest.raises(DataError, match="space group"):
        write_mtz(table, out, (10, 10, 10, 90, 90, 90), "P 7 7 7")
    with pytest.raises(DataError, match="unit cell"):
        write_mtz(table, out, (10, 10, -1, 90, 90, 90), "P 1")
    bad = table.assign(panel="p0")
    with pytest.raises(DataError) as err:
        write_mtz(bad, out, (10, 10, 10, 90, 90, 90), "P 1")
    assert err.value.field == "panel"
    with pytest.raises(DataError, match="twice"):
        write_mtz(table.assign(IMEAN=1.0), out, (10, 10, 10, 90, 90, 90), "P 1")
    assert not out.exists()


def test_read_errors_name_the_file(tmp_path: Path, shared_data: Path) -> None:
    missing = tmp_path / "missing.mtz"
    with pytest.raises(FormatError, match="not found"):
        read_mtz(missing)
    junk = tmp_path / "junk.mtz"
    junk.write_bytes(b"MTZ \x00\x01 this is not an mtz file" * 4)
    with pytest.raises(FormatError) as err:
        read_mtz(junk)
    assert "junk.mtz" in str(err.value)
    not_mtz = tmp_path / "text.mtz"
    not_mtz.write_text("hello")
    with pytest.raises(FormatError, match="not an MTZ"):
        read_mtz(not_mtz)
    raw = (shared_data / HEWL).read_bytes()
    cut = tmp_path / "truncated.mtz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FormatError) as err:
        read_mtz(cut)
    assert "truncated.mtz" in str(err.value)
    # the header survives but the data block is short
    header_at = len(raw) - 4000
    short = tmp_path / "short.mtz"
    short.write_bytes(raw[:4] + raw[4:8] + raw[8 : header_at - 8000] + raw[header_at:])
    with pytest.raises(FormatError, match=re.escape("short.mtz")):
        read_mtz(short)


def test_damaged_files_raise_only_format_errors(shared_data: Path, tmp_path: Path) -> None:
    """Random byte damage (mostly in the header records) never escapes as another error."""
    raw = (shared_data / E5Z).read_bytes()
    header_at = (int.from_bytes(raw[4:8], "little") - 1) * 4
    rng = np.random.default_rng(2024)
    path = tmp_path / "damaged.mtz"
    outcomes = {"read": 0, "rejected": 0}
    for _ in range(400):
        damaged = bytearray(raw)
        for _ in range(int(rng.integers(1, 4))):
            lo = header_at if rng.random() < 0.8 else 0
            damaged[int(rng.integers(lo, len(raw)))] = int(rng.integers(0, 256))
        path.write_bytes(bytes(damaged))
        try:
            read_mtz(path)
            outcomes["read"] += 1
        except FormatError as err:
            assert "damaged.mtz" in str(err)
            outcomes["rejected"] += 1
    assert outcomes["read"] > 0 and outcomes["rejected"] > 0
