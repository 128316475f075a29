"""Tests of the SHELX HKLF 4 reader and writer (crystalscope.io.shelx)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import gemmi
import numpy as np
import pandas as pd
import pytest
from hypothesis import given

from crystalscope.errors import DataError, FormatError
from crystalscope.io.shelx import read_shelx_hkl, read_shelx_hkl_text, write_shelx_hkl
from fuzzing import FUZZ_SETTINGS, assert_only_format_errors, mutations

# The first lines of the HKLF 4 data embedded in COD 2242624 (fixed columns: note
# "-118982.80" = l -1, I 18982.80), with a batch column, and the terminator.
SEED = """\
   0   0  -118982.80   55.28   1
   0   0   118990.10   51.21   1
   0   0   224721.60  113.75   1
   0   1  -311162.30  160.19   1
  -1   2  -3 4041.08  214.59   1
   1  -2   3 4312.65  187.81   2
  -2  -1   014779.90  135.44   1
   3   2  -1 4701.17  114.50   1
  -3  -2  -1 2294.56  216.07   1
   0   0   0    0.00    0.00   0
"""


def _write(tmp: Path, text: str, name: str = "x.hkl") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def test_fixed_columns(tmp_path: Path) -> None:
    data = read_shelx_hkl(_write(tmp_path, SEED))
    t = data.table
    assert len(t) == 9 and not data.merged and data.metadata["terminated"]
    assert t.iloc[0][["h", "k", "l"]].tolist() == [0, 0, -1]
    assert t.iloc[0]["I"] == 18982.80 and t.iloc[0]["sigma"] == 55.28
    assert t.iloc[6][["h", "k", "l", "I"]].tolist() == [-2, -1, 0, 14779.90]
    assert t["batch"].tolist() == [1, 1, 1, 1, 1, 2, 1, 1, 1]
    assert data.cell is None and data.space_group is None


def test_terminator_and_trailing_text(tmp_path: Path) -> None:
    text = SEED + "this is not read\n"
    assert len(read_shelx_hkl(_write(tmp_path, text)).table) == 9
    unterminated = SEED.rsplit("   0   0   0", 1)[0]
    data = read_shelx_hkl(_write(tmp_path, unterminated, "u.hkl"))
    assert len(data.table) == 9 and not data.metadata["terminated"]
    no_batch = "".join(line[:28] + "\n" for line in SEED.splitlines())
    assert "batch" not in read_shelx_hkl(_write(tmp_path, no_batch, "n.hkl")).table


def test_errors_name_file_line_and_field(tmp_path: Path) -> None:
    lines = SEED.splitlines()
    lines[3] = "   0   x  -311162.30  160.19   1"
    with pytest.raises(FormatError) as err:
        read_shelx_hkl(_write(tmp_path, "\n".join(lines), "bad.hkl"))
    assert (err.value.line, err.value.field) == (4, "k") and "bad.hkl:4" in str(err.value)
    lines[3] = "   0   1  -3 nan      160.19   1"
    with pytest.raises(FormatError) as err:
        read_shelx_hkl(_write(tmp_path, "\n".join(lines), "nan.hkl"))
    assert err.value.field == "I"
    with pytest.raises(FormatError, match="shorter"):
        read_shelx_hkl(_write(tmp_path, "   1   2   3  100.0\n", "short.hkl"))
    with pytest.raises(FormatError, match="not found"):
        read_shelx_hkl(tmp_path / "missing.hkl")


def test_real_cif_embedded_hklf4(shared_data: Path) -> None:
    data = read_shelx_hkl(shared_data / "gemmi/2242624.cif")
    t = data.table
    assert len(t) == 117  # _diffrn_reflns_number of the CIF
    assert data.metadata["terminated"]
    assert data.space_group.hm == "P -1"
    # the CIF gives 105.22(4) 110.60(4) 91.39(3); its .hkl twin 105.224 110.601 91.389
    assert data.cell.parameters == pytest.approx((2.4473, 3.4688, 3.5144, 105.22, 110.60, 91.39))
    assert data.wavelength == pytest.approx(0.30996)  # _diffrn_radiation_wavelength
    assert t.iloc[0][["h", "k", "l", "I", "sigma"]].tolist() == [0, 0, -1, 18982.80, 55.28]
    assert t.iloc[-1][["h", "k", "l", "I", "sigma"]].tolist() == [-3, -2, -1, 2294.56, 216.07]
    assert set(t["batch"]) == {1}


def test_real_cod_hkl_cif_agrees_with_embedded_data(shared_data: Path) -> None:
    """COD's .hkl (a CIF loop of merged F^2) against the merged embedded HKLF 4 data."""
    unmerged = read_shelx_hkl(shared_data / "gemmi/2242624.cif")
    merged = read_shelx_hkl(shared_data / "gemmi/2242624.hkl")
    assert len(merged.table) == 71 and merged.merged
    assert merged.space_group.hm == "P -1"
    sg = unmerged.space_group
    asu, ops = gemmi.ReciprocalAsu(sg), sg.operations()

    def keyed(table: pd.DataFrame) -> pd.DataFrame:
        keys = [tuple(asu.to_asu(list(r), ops)[0]) for r in table[["h", "k", "l"]].values.tolist()]
        return table.assign(key=keys)

    mean = keyed(unmerged.table).groupby("key")["I"].mean()
    joined = keyed(merged.table).set_index("key").join(mean.rename("I_merged"), how="inner")
    assert len(mean) == 71 and len(joined) == 71
    assert np.corrcoef(joined["I"], joined["I_merged"])[0, 1] > 0.999
    assert float((joined["I_merged"] / joined["I"]).median()) == pytest.approx(60.0, rel=0.01)


def test_round_trip_with_scale(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    n = 100
    hkl = rng.integers(-20, 21, (n, 3))
    hkl[np.all(hkl == 0, axis=1)] = (1, 1, 1)
    table = pd.DataFrame({"h": hkl[:, 0], "k": hkl[:, 1], "l": hkl[:, 2],
                          "I": rng.uniform(-500, 2.5e6, n), "sigma": rng.uniform(1, 3e3, n),
                          "batch": rng.integers(1, 4, n)})  # fmt: skip
    out = tmp_path / "out.hkl"
    scale = write_shelx_hkl(table, out)
    assert scale == pytest.approx(0.01)
    lines = out.read_text().splitlines()
    assert all(len(line) == 32 for line in lines)
    assert lines[-1] == "   0   0   0    0.00    0.00   0"
    back = read_shelx_hkl(out).table
    np.testing.assert_array_equal(back[["h", "k", "l", "batch"]], table[["h", "k", "l", "batch"]])
    np.testing.assert_allclose(back["I"], table["I"] * scale, atol=0.005 + 1e-9)
    np.testing.assert_allclose(back["sigma"], table["sigma"] * scale, atol=0.005 + 1e-9)
    # values that fit are written unscaled; an explicit scale is applied as given
    small = table.assign(I=table["I"] / 100, sigma=table["sigma"] / 100).drop(columns="batch")
    assert write_shelx_hkl(small, out) == 1.0
    assert write_shelx_hkl(small, out, scale=0.5) == 0.5
    np.testing.assert_allclose(read_shelx_hkl(out).table["I"], small["I"] * 0.5, atol=0.005)


def test_write_errors(tmp_path: Path) -> None:
    base = pd.DataFrame(
        {"h": [1, 2], "k": [0, 0], "l": [0, 1], "I": [1.0, 2.0], "sigma": [1.0] * 2}
    )
    out = tmp_path / "e.hkl"
    with pytest.raises(DataError, match="0 0 0"):
        write_shelx_hkl(base.assign(h=[0, 2]), out)
    with pytest.raises(DataError, match="finite"):
        write_shelx_hkl(base.assign(I=[np.nan, 1.0]), out)
    with pytest.raises(DataError, match="I4"):
        write_shelx_hkl(base.assign(h=[10000, 1]), out)
    with pytest.raises(DataError, match=re.escape("F8.2")):
        write_shelx_hkl(base.assign(I=[1e6, 1.0]), out, scale=1.0)
    assert not out.exists()


def test_text_parser_line_offset() -> None:
    with pytest.raises(FormatError) as err:
        read_shelx_hkl_text("   1   2   3  bad!!!    1.00\n", source="in.cif", first_line=40)
    assert err.value.line == 40 and err.value.path == "in.cif"


@FUZZ_SETTINGS
@given(mutations(SEED))
def test_fuzz_shelx_reader(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        assert_only_format_errors(read_shelx_hkl, text, Path(tmp) / "fuzz.hkl")


def test_cif_picks_the_block_with_reflections(tmp_path: Path) -> None:
    text = (
        "# two blocks: a global one and the structure with its SHELX data\n"
        "data_global\n_journal_year 2024\n\n"
        "data_I\n_cell_length_a 5\n_cell_length_b 6\n_cell_length_c 7\n"
        "_cell_angle_alpha 90\n_cell_angle_beta 90\n_cell_angle_gamma 90\n"
        "_space_group_name_H-M_alt 'P 21 21 21'\n_shelx_hkl_file\n;\n" + SEED + ";\n"
    )
    data = read_shelx_hkl(_write(tmp_path, text, "two.cif"))
    assert len(data.table) == 9 and data.space_group.hm == "P 21 21 21"
    assert data.metadata["cif_block"] == "I"
    bad = text.replace("   0   1  -311162.30", "   0   1  -3111x2.30")
    with pytest.raises(FormatError) as err:
        read_shelx_hkl(_write(tmp_path, bad, "bad.cif"))
    assert err.value.line == bad.splitlines().index("   0   1  -3111x2.30  160.19   1") + 1
