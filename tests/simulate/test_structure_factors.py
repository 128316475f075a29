"""Structure factors for the simulators: independent checks of |F|^2.

Expectations are computed here from first principles (written-out IT92 coefficients,
the diamond-structure geometric factor, the Mott-Bethe formula with CODATA constants),
from gemmi's own direct-summation calculator, or from reciprocalspaceship's P1
expansion, never with the code under test.
"""

from __future__ import annotations

import importlib.resources
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import gemmi
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from scipy import constants

from crystalscope.errors import ConfigError, DataError, FormatError
from crystalscope.io.mtz import write_mtz
from crystalscope.simulate import _sf_atoms
from crystalscope.simulate.config import SourceConfig
from crystalscope.simulate.structure_factors import (
    TABLE_COLUMNS,
    StructureFactors,
    builtin_structures,
    clear_cache,
    load_structure_factors,
    lysozyme_like_structure,
)
from fuzzing import FUZZ_SETTINGS, assert_only_format_errors, mutations

REPO = Path(__file__).resolve().parents[2]
HEWL = ("reciprocalspaceship", "HEWL_SSAD_24IDC.mtz")

# International Tables Vol. C, Table 6.1.1.4: Si, a1..a4, b1..b4, c.
SI_IT92 = ([6.2915, 3.0353, 1.9891, 1.5410], [2.4386, 32.3337, 0.6785, 81.6937], 1.1407)
SI_B = 8 * math.pi**2 * 0.005867  # the built-in silicon's U_iso, as B (A^2)
SI_A = 5.43102

PDB_SEED = """\
CRYST1   20.000   25.000   30.000  90.00 100.00  90.00 P 1 21 1      2
ATOM      1  N   GLY A   1       1.000   2.000   3.000  1.00 10.00           N
ATOM      2  CA  GLY A   1       2.400   2.100   3.100  1.00 11.00           C
ATOM      3  C   GLY A   1       3.000   3.500   3.200  1.00 12.00           C
ATOM      4  O   GLY A   1       2.300   4.500   3.300  1.00 13.00           O
ATOM      5  N   CYS A   2       4.300   3.600   3.400  1.00 14.00           N
ATOM      6  CA  CYS A   2       5.000   4.900   3.500  1.00 15.00           C
ATOM      7  SG  CYS A   2       6.700   4.700   3.900  0.50 16.00           S
HETATM    8  O   HOH A 101       8.000   9.000  10.000  1.00 30.00           O
END
"""


def si_f_xray(stol2: np.ndarray) -> np.ndarray:
    """IT92 form factor of Si (electrons) at (sin(theta)/lambda)^2."""
    a, b, c = SI_IT92
    return sum(ai * np.exp(-bi * stol2) for ai, bi in zip(a, b, strict=True)) + c


def source(structure: str | None = None, **kwargs: object) -> SourceConfig:
    return SourceConfig(structure=structure, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lyso() -> StructureFactors:
    return load_structure_factors(source("builtin:lysozyme-like", d_min=3.0), "xray")


# ------------------------------------------------------------------- silicon (X-ray)


def test_silicon_matches_the_diamond_structure_formula() -> None:
    """|F(111)| = 4 sqrt(2) f T, |F(220)| = 8 f T, |F(222)| = 0 (special position)."""
    sf = load_structure_factors(source("builtin:silicon", d_min=0.7), "xray")
    for hkl, geometric in [((1, 1, 1), 4 * math.sqrt(2)), ((2, 2, 0), 8.0),
                           ((4, 0, 0), 8.0), ((3, 1, 1), 4 * math.sqrt(2))]:  # fmt: skip
        stol2 = sum(x * x for x in hkl) / (4 * SI_A**2)
        expected = geometric * si_f_xray(np.array(stol2)) * math.exp(-SI_B * stol2)
        for sign in (1, -1):
            f2 = sf.lookup(np.array([[sign * x for x in hkl]]))[0]
            assert f2 == pytest.approx(expected**2, rel=1e-5), hkl
    row = sf.table[(sf.table.h == 2) & (sf.table.k == 2) & (sf.table.l == 2)]
    assert len(row) == 1 and row.F.iat[0] == 0.0 and row.F2.iat[0] == 0.0


def test_space_group_absences_are_not_in_the_table() -> None:
    sf = load_structure_factors(source("builtin:silicon", d_min=0.7), "xray")
    hkl = sf.table[["h", "k", "l"]].to_numpy()
    for absent in [(2, 0, 0), (0, 2, 0), (1, 0, 0), (2, 1, 0), (4, 2, 0)]:
        assert not np.any(np.all(hkl == absent, axis=1)), absent
        assert sf.lookup(np.array([absent]))[0] == 0.0
    # face-centred: h, k, l all even or all odd
    parity = hkl % 2
    assert np.all((parity == parity[:, :1]).all(axis=1))


def test_table_is_the_full_sphere_as_gemmi_counts_it(lyso: StructureFactors) -> None:
    sg = gemmi.find_spacegroup_by_name("P 43 21 2")
    cell = gemmi.UnitCell(79.1, 79.1, 37.9, 90, 90, 90)
    expected = gemmi.make_miller_array(cell, sg, 3.0, 0, unique=False)
    got = {tuple(x) for x in lyso.table[["h", "k", "l"]].to_numpy().tolist()}
    assert got == {tuple(int(v) for v in x) for x in expected}
    assert {c: str(t) for c, t in lyso.table.dtypes.items()} == TABLE_COLUMNS
    assert lyso.d_min == 3.0 and lyso.absolute and lyso.radiation == "xray"
    assert np.all(lyso.table.d >= 3.0)
    np.testing.assert_allclose(lyso.table.F2, lyso.table.F**2, rtol=1e-12)


# ---------------------------------------------------------------------- symmetry


def test_friedel_mates_have_equal_intensities(lyso: StructureFactors) -> None:
    hkl = lyso.table[["h", "k", "l"]].to_numpy()
    np.testing.assert_array_equal(lyso.lookup(-hkl), lyso.table.F2.to_numpy())


def test_symmetry_equivalents_have_equal_intensities(lyso: StructureFactors) -> None:
    """Apply every operator of P 43 21 2 with gemmi (not the code under test)."""
    ops = gemmi.find_spacegroup_by_name("P 43 21 2").operations()
    rng = np.random.default_rng(3)
    table = lyso.table[lyso.table.F2 > 0]
    picks = table.iloc[rng.choice(len(table), 300, replace=False)]
    for h, k, l, f2 in picks[["h", "k", "l", "F2"]].itertuples(index=False):  # noqa: E741
        images = np.array([op.apply_to_hkl([int(h), int(k), int(l)]) for op in ops.sym_ops])
        np.testing.assert_allclose(lyso.lookup(images), f2, rtol=1e-12)
        np.testing.assert_allclose(lyso.lookup(-images), f2, rtol=1e-12)


# ----------------------------------------------------------------- against gemmi


@pytest.mark.parametrize("radiation", ["xray", "electron"])
def test_lysozyme_like_agrees_with_gemmi_direct_summation(
    lyso: StructureFactors, radiation: str
) -> None:
    sf = load_structure_factors(source("builtin:lysozyme-like", d_min=3.0), radiation)
    st = lysozyme_like_structure()
    st.setup_cell_images()
    calc = (
        gemmi.StructureFactorCalculatorX(st.cell)
        if radiation == "xray"
        else gemmi.StructureFactorCalculatorE(st.cell)
    )
    rng = np.random.default_rng(5)
    rows = sf.table.iloc[rng.choice(len(sf.table), 60, replace=False)]
    for h, k, l, f in rows[["h", "k", "l", "F"]].itertuples(index=False):  # noqa: E741
        expected = abs(calc.calculate_sf_from_model(st[0], [int(h), int(k), int(l)]))
        assert f == pytest.approx(expected, rel=1e-5, abs=1e-4 * sf.table.F.max())


def test_summation_in_chunks_of_atoms_is_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    """Large structures are summed in chunks of atoms; the result must not change."""
    model = _sf_atoms.model_from_structure(lysozyme_like_structure(), source="builtin:x")
    hkl = np.array([[1, 2, 3], [10, -5, 7], [0, 0, 4], [20, 13, -11], [-7, 30, 2]])
    whole = _sf_atoms.sum_structure_factors(model, hkl, "xray")
    monkeypatch.setattr(_sf_atoms, "_TABLE_BUDGET_BYTES", 16 * 100 * 500)
    assert len(_sf_atoms._atom_chunks(model, 100)) > 10
    np.testing.assert_allclose(_sf_atoms.sum_structure_factors(model, hkl, "xray"), whole,
                               rtol=1e-10)  # fmt: skip


def test_lysozyme_like_model_is_as_documented() -> None:
    st = lysozyme_like_structure()
    assert st.cell.parameters == pytest.approx((79.1, 79.1, 37.9, 90, 90, 90))
    assert st.find_spacegroup().xhm() == "P 43 21 2"
    atoms = [cra.atom for cra in st[0].all()]
    counts = {e: sum(a.element.name == e for a in atoms) for e in "CNOS"}
    assert counts == {"C": 613, "N": 193, "O": 185, "S": 10}
    assert {a.b_iso for a in atoms} == {20.0} and {a.occ for a in atoms} == {1.0}
    frac = np.array([st.cell.fractionalize(a.pos).tolist() for a in atoms])
    assert np.all(frac >= 0) and np.all(frac <= 0.5 + 1e-9)  # gemmi's ASU brick
    other = lysozyme_like_structure()
    again = np.array([cra.atom.pos.tolist() for cra in other[0].all()])
    np.testing.assert_array_equal(again, [a.pos.tolist() for a in atoms])  # deterministic


def test_lysozyme_like_follows_wilson_statistics(lyso: StructureFactors) -> None:
    """Acentric <|F|^4>/<|F|^2>^2 = 2 and <|F|^2> = eps * sum f^2 per shell."""
    t = lyso.table
    acentric = (t.h != 0) & (t.k != 0) & (t.l != 0) & (t.h.abs() != t.k.abs())
    shell = t[acentric & (t.d < 4.0)]
    ratio = (shell.F2**2).mean() / shell.F2.mean() ** 2
    assert ratio == pytest.approx(2.0, abs=0.15)
    stol2 = 1.0 / (4 * shell.d.to_numpy() ** 2)
    c = gemmi.Element("C").it92
    f = {e: np.array([gemmi.Element(e).it92.calculate_sf(x) for x in stol2]) for e in "CNOS"}
    assert c is not None
    sigma = 8 * (613 * f["C"] ** 2 + 193 * f["N"] ** 2 + 185 * f["O"] ** 2 + 10 * f["S"] ** 2)
    expected = np.mean(sigma * np.exp(-2 * 20.0 * stol2))
    assert shell.F2.mean() == pytest.approx(expected, rel=0.1)


def test_pdb_file_agrees_with_gemmi(shared_data: Path) -> None:
    path = shared_data / "gemmi" / "1lzh.pdb.gz"
    sf = load_structure_factors(source(str(path), d_min=4.0), "xray")
    st = gemmi.read_structure(str(path))
    st.setup_cell_images()
    calc = gemmi.StructureFactorCalculatorX(st.cell)
    assert sf.space_group.xhm() == "P 1 21 1" and sf.source == str(path)
    rng = np.random.default_rng(1)
    rows = sf.table.iloc[rng.choice(len(sf.table), 40)]
    for h, k, l, f in rows[["h", "k", "l", "F"]].itertuples(index=False):  # noqa: E741
        expected = abs(calc.calculate_sf_from_model(st[0], [int(h), int(k), int(l)]))
        assert f == pytest.approx(expected, rel=1e-5, abs=1e-3)


def test_small_molecule_cif_counts_special_positions_once(shared_data: Path) -> None:
    """SiC (F -4 3 m, both atoms on special positions): gemmi's calculator sums every
    operator, so it agrees once occupancies are made crystallographic (occ / multiplicity).
    """
    path = shared_data / "gemmi" / "1011031.cif"
    sf = load_structure_factors(source(str(path), d_min=0.8), "xray")
    small = gemmi.read_small_structure(str(path))
    small.change_occupancies_to_crystallographic()
    small.setup_cell_images()
    calc = gemmi.StructureFactorCalculatorX(small.cell)
    assert len(sf.table) > 50
    for h, k, l, f in sf.table[["h", "k", "l", "F"]].itertuples(index=False):  # noqa: E741
        expected = abs(calc.calculate_sf_from_small_structure(small, [int(h), int(k), int(l)]))
        assert f == pytest.approx(expected, rel=1e-6, abs=1e-6)
    # zinc blende: |F(200)| = 4 |f_Si - f_C|, |F(111)|^2 = 16 (f_Si^2 + f_C^2)
    s2 = 4 / (4 * 4.358**2)
    fsi, fc = gemmi.Element("Si").it92.calculate_sf(s2), gemmi.Element("C").it92.calculate_sf(s2)
    assert sf.lookup(np.array([[2, 0, 0]]))[0] == pytest.approx(16 * (fsi - fc) ** 2, rel=1e-5)


# ------------------------------------------------------------- electrons vs X-rays


def test_electron_and_xray_factors_obey_mott_bethe() -> None:
    """f_e(s) = m0 e^2 / (8 pi eps0 h^2) (Z - f_x(s)) / s^2, s = sin(theta)/lambda."""
    k_a = constants.m_e * constants.e**2 / (8 * math.pi * constants.epsilon_0 * constants.h**2)
    k_a *= 1e-10  # (1/m) -> A, with s in 1/A: 0.023934 A
    assert k_a == pytest.approx(0.023934, rel=1e-4)
    cfg = source("builtin:silicon", d_min=0.5)
    xray = load_structure_factors(cfg, "xray").table
    elec = load_structure_factors(cfg, "electron").table
    pd.testing.assert_frame_equal(xray[["h", "k", "l", "d"]], elec[["h", "k", "l", "d"]])
    stol2 = 1.0 / (4 * xray.d.to_numpy() ** 2)
    keep = (xray.F.to_numpy() > 0) & (stol2 > 0.2**2) & (stol2 < 1.0)
    fx = si_f_xray(stol2[keep])
    geometry = xray.F.to_numpy()[keep] / fx  # |structure geometry| x Debye-Waller
    mott_bethe = k_a * (14.0 - fx) / stol2[keep] * geometry
    np.testing.assert_allclose(elec.F.to_numpy()[keep], mott_bethe, rtol=0.01)
    assert not np.allclose(elec.F.to_numpy()[keep], xray.F.to_numpy()[keep], rtol=0.5)


def test_form_factors_option_overrides_the_radiation() -> None:
    forced = load_structure_factors(source("builtin:nacl", d_min=1.0, form_factors="xray"),
                                    "electron")  # fmt: skip
    xray = load_structure_factors(source("builtin:nacl", d_min=1.0), "xray")
    assert forced.radiation == "xray"
    np.testing.assert_array_equal(forced.table.F2, xray.table.F2)


# --------------------------------------------------------------------- B factors


def test_b_factor_reduces_intensities_by_debye_waller() -> None:
    base = load_structure_factors(source("builtin:rutile", d_min=0.6), "xray")
    extra = load_structure_factors(source("builtin:rutile", d_min=0.6, b_factor=3.0), "xray")
    s2 = 1.0 / base.table.d.to_numpy() ** 2
    np.testing.assert_allclose(extra.table.F2, base.table.F2 * np.exp(-3.0 * s2 / 2), rtol=1e-12)
    np.testing.assert_allclose(extra.table.F, base.table.F * np.exp(-3.0 * s2 / 4), rtol=1e-12)
    high = base.table.d < 0.7
    assert np.all(extra.table.F2[high] < 0.2 * base.table.F2[high] + 1e-12)
    same = base.with_b_factor(2.0).with_b_factor(-2.0)
    np.testing.assert_allclose(same.table.F2, base.table.F2, rtol=1e-12)


def test_extra_b_adds_to_the_atoms_own_b() -> None:
    sf = load_structure_factors(source("builtin:silicon", d_min=0.7, b_factor=1.5), "xray")
    stol2 = 8 / (4 * SI_A**2)
    expected = 8 * si_f_xray(np.array(stol2)) * math.exp(-(SI_B + 1.5) * stol2)
    assert sf.lookup(np.array([[2, 2, 0]]))[0] == pytest.approx(expected**2, rel=1e-5)


# ------------------------------------------------------------------------ lookup


def test_lookup_is_vectorised_and_zero_outside_the_table(lyso: StructureFactors) -> None:
    hkl = lyso.table[["h", "k", "l"]].to_numpy()
    queries = np.concatenate([hkl, [[0, 0, 0], [0, 0, 1], [500, 0, 0], [1, 1, 100]]])
    out = lyso.lookup(queries)
    assert out.shape == (len(queries),)
    np.testing.assert_array_equal(out[: len(hkl)], lyso.table.F2.to_numpy())
    np.testing.assert_array_equal(out[len(hkl) :], 0.0)  # 001 is a 43 screw absence
    assert lyso.lookup(hkl[7]) == lyso.table.F2.iat[7]
    assert lyso.lookup(hkl[7].astype(float)) == lyso.table.F2.iat[7]
    assert lyso.lookup(np.zeros((0, 3), dtype=int)).shape == (0,)
    with pytest.raises(DataError):
        lyso.lookup(np.array([[0.5, 0, 1]]))
    with pytest.raises(DataError):
        lyso.lookup(np.ones((4, 2), dtype=int))


def test_empty_table_lookup() -> None:
    table = pd.DataFrame({c: np.zeros(0, dtype=t) for c, t in TABLE_COLUMNS.items()})
    sf = StructureFactors(gemmi.UnitCell(5, 5, 5, 90, 90, 90), gemmi.SpaceGroup("P 1"),
                          "xray", table, d_min=1.0)  # fmt: skip
    np.testing.assert_array_equal(sf.lookup(np.array([[1, 0, 0]])), [0.0])


# --------------------------------------------------------------------------- MTZ


def test_mtz_expansion_matches_reciprocalspaceship(shared_data: Path) -> None:
    rs = pytest.importorskip("reciprocalspaceship")
    path = shared_data.joinpath(*HEWL)
    sf = load_structure_factors(SourceConfig(mtz=path, d_min=1.0), "electron")
    ds = rs.read_mtz(str(path))[["IMEAN"]].dropna()
    assert len(ds) == 12_542
    p1 = ds.expand_to_p1().expand_anomalous()
    assert len(sf) == len(p1) == 184_388
    intensity = p1["IMEAN"].to_numpy(dtype=float)
    np.testing.assert_allclose(sf.lookup(p1.get_hkls()), np.clip(intensity, 0, None), rtol=1e-12)
    assert not sf.absolute and sf.radiation == "electron"
    assert sf.space_group.xhm() == "P 43 21 2"
    assert sf.d_min == pytest.approx(float(ds.compute_dHKL()["dHKL"].min()))
    assert np.all(sf.table.F2 >= 0)
    assert any("15 negative intensities" in note for note in sf.notes)
    np.testing.assert_allclose(sf.table.F, np.sqrt(sf.table.F2))


def test_mtz_resolution_limit_and_labels(shared_data: Path) -> None:
    path = shared_data.joinpath(*HEWL)
    cut = load_structure_factors(SourceConfig(mtz=path, d_min=3.0), "xray")
    assert cut.d_min == 3.0 and cut.table.d.min() >= 3.0 * (1 - 1e-9)
    plus = load_structure_factors(SourceConfig(mtz=path, d_min=3.0, mtz_labels=("I(+)", "SIGI(+)")),
                                  "xray")  # fmt: skip
    assert 0 < len(plus) <= len(cut)
    with pytest.raises(FormatError) as err:
        load_structure_factors(SourceConfig(mtz=path, mtz_labels=("IOBS", "SIGIOBS")), "xray")
    assert err.value.field == "IOBS" and path.name in str(err.value)


def test_mtz_missing_and_negative_reflections(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {"h": [1, 2, 0, 3, 1], "k": [0, 1, 0, 2, 1], "l": [0, 0, 2, 1, 1],
         "I": [10.0, np.nan, -4.0, 7.0, 5.0], "sigma": [1.0] * 5}
    )  # fmt: skip
    path = tmp_path / "small.mtz"
    write_mtz(table, path, (10.0, 11.0, 12.0, 90, 90, 90), "P 2 2 2", merged=True)
    sf = load_structure_factors(SourceConfig(mtz=path, d_min=1.0), "xray")
    # P222 has 8 equivalents (with Friedel mates) for general, 2 for axial reflections
    assert sf.lookup(np.array([[1, 0, 0], [-1, 0, 0]])).tolist() == [10.0, 10.0]
    assert sf.lookup(np.array([[2, 1, 0], [2, -1, 0]])).tolist() == [0.0, 0.0]  # missing
    assert sf.lookup(np.array([[0, 0, 2], [0, 0, -2]])).tolist() == [0.0, 0.0]  # clipped
    assert sf.lookup(np.array([[-3, 2, -1]]))[0] == 7.0
    assert len(sf) == 2 + 2 + 8 + 8
    assert any("negative" in n for n in sf.notes) and any("without" in n for n in sf.notes)


def test_mtz_without_intensities_is_a_format_error(tmp_path: Path) -> None:
    mtz = gemmi.Mtz(with_base=True)
    mtz.spacegroup = gemmi.SpaceGroup("P 1")
    mtz.set_cell_for_all(gemmi.UnitCell(10, 10, 10, 90, 90, 90))
    mtz.add_dataset("amplitudes")
    mtz.add_column("FP", "F")
    mtz.add_column("SIGFP", "Q")
    mtz.set_data(np.array([[1, 0, 0, 3.0, 0.1]], dtype=np.float32))
    path = tmp_path / "amplitudes.mtz"
    mtz.write_to_file(str(path))
    with pytest.raises(FormatError) as err:
        load_structure_factors(SourceConfig(mtz=path), "xray")
    assert err.value.field == "I" and "amplitudes.mtz" in str(err.value)


def test_mtz_with_a_cell_breaking_its_symmetry_is_rejected(tmp_path: Path) -> None:
    table = pd.DataFrame({"h": [1], "k": [0], "l": [0], "I": [1.0], "sigma": [0.1]})
    path = tmp_path / "skewed.mtz"
    write_mtz(table, path, (10.0, 11.0, 12.0, 90, 90, 90), "P 4", merged=True)
    with pytest.raises(FormatError) as err:
        load_structure_factors(SourceConfig(mtz=path), "xray")
    assert err.value.field == "CELL" and "skewed.mtz" in str(err.value)


# ------------------------------------------------------------------------ errors


def test_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_structure_factors(source("builtin:insulin"), "xray")
    assert "builtin:lysozyme-like" in str(err.value) and err.value.field == "source.structure"
    with pytest.raises(ConfigError):
        load_structure_factors(source("builtin:silicon"), "neutron")
    with pytest.raises(ConfigError):
        load_structure_factors(source(None), "xray")
    mtz = tmp_path / "x.mtz"
    with pytest.raises(ConfigError):
        load_structure_factors(SourceConfig(structure="builtin:silicon", mtz=mtz), "xray")
    with pytest.raises(ConfigError) as err:
        load_structure_factors(source("builtin:lysozyme-like", d_min=0.05), "xray")
    assert err.value.field == "d_min"


def test_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    missing = tmp_path / "nothere.pdb"
    with pytest.raises(FormatError, match=r"nothere\.pdb"):
        load_structure_factors(source(str(missing)), "xray")
    cases = {
        "nocell.pdb": (PDB_SEED.replace(PDB_SEED.splitlines()[0], "REMARK"), "CRYST1"),
        "badsg.pdb": (PDB_SEED.replace("P 1 21 1", "Q 9 9 9 "), "CRYST1"),
        "element.pdb": (PDB_SEED.replace("           S", "          Qq"), "ATOM element"),
        "negb.pdb": (PDB_SEED.replace("0.50 16.00", "0.50-16.00"), "ATOM tempFactor"),
        "noatoms.pdb": (PDB_SEED.splitlines()[0] + "\nEND\n", "ATOM"),
        "garbage.cif": ("data_x\n_cell_length_a 5\n", "_atom_site"),
        "file.xyz": ("1\n\nC 0 0 0\n", None),
    }
    for name, (text, field) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(FormatError) as err:
            load_structure_factors(source(str(path), d_min=3.0), "xray")
        assert name in str(err.value)
        assert err.value.field == field, (name, err.value)


def test_cif_with_incompatible_cell_is_rejected(tmp_path: Path) -> None:
    text = builtin_text("rutile.cif").replace("_cell_length_b                   4.5937",
                                              "_cell_length_b                   4.7")  # fmt: skip
    path = tmp_path / "stretched.cif"
    path.write_text(text)
    with pytest.raises(FormatError) as err:
        load_structure_factors(source(str(path)), "xray")
    assert err.value.field == "_cell_length_a" and "stretched.cif" in str(err.value)


# --------------------------------------------------------------- package data


def builtin_text(name: str) -> str:
    resource = importlib.resources.files("crystalscope") / "data" / "structures" / name
    return resource.read_text(encoding="utf-8")


def test_builtin_structures_are_listed_and_load() -> None:
    names = builtin_structures()
    assert set(names) == {
        "lysozyme-like", "monoclinic-organic", "p63-protein", "silicon", "nacl", "rutile",
        "corundum",
    }  # fmt: skip
    expected_sites = {"silicon": 8, "nacl": 8, "rutile": 6, "corundum": 30}
    for name, n_sites in expected_sites.items():
        small = gemmi.make_small_structure_from_block(
            gemmi.cif.read_string(builtin_text(f"{name}.cif")).sole_block()
        )
        assert len(small.get_all_unit_cell_sites()) == n_sites
        sf = load_structure_factors(source(f"builtin:{name}", d_min=1.0), "electron")
        assert len(sf) > 50 and sf.source == f"builtin:{name}"
        assert np.all(np.isfinite(sf.table.F2)) and sf.table.F2.max() > 0


@pytest.mark.parametrize(
    ("name", "sg", "cell"),
    [
        ("monoclinic-organic", "P 1 21/c 1", (7.92, 10.61, 13.84, 90.0, 104.5, 90.0)),
        ("p63-protein", "P 63", (58.3, 58.3, 71.6, 90.0, 90.0, 120.0)),
    ],
)
def test_random_atom_builtins_have_their_symmetry(
    name: str, sg: str, cell: tuple[float, ...]
) -> None:
    """Cell, space group and systematic absences of the random-atom built-ins."""
    sf = load_structure_factors(source(f"builtin:{name}", d_min=3.0), "xray")
    assert sf.space_group.xhm() == gemmi.find_spacegroup_by_name(sg).xhm()
    np.testing.assert_allclose(sf.cell.parameters, cell)
    t = sf.table
    assert np.all(np.isfinite(t.F2)) and t.F2.max() > 0
    if name == "monoclinic-organic":  # 21 along b: 0k0 with k odd; c glide: h0l with l odd
        zone = ((t.h == 0) & (t.l == 0)) | (t.k == 0)
        odd = np.where(t.k == 0, t.l % 2 == 1, t.k % 2 == 1)
    else:  # 63 along c: 00l with l odd
        zone = (t.h == 0) & (t.k == 0)
        odd = t.l % 2 == 1
    assert zone.sum() > 4 and not np.any(zone & odd & (t.F2 > 0))
    again = load_structure_factors(source(f"builtin:{name}", d_min=3.0), "xray")
    np.testing.assert_array_equal(again.table.F2, t.F2)


def test_builtin_names_are_case_insensitive() -> None:
    a = load_structure_factors(source(" BUILTIN:NaCl ", d_min=1.0), "xray")
    b = load_structure_factors(source("builtin:nacl", d_min=1.0), "xray")
    np.testing.assert_array_equal(a.table.F2, b.table.F2)


def test_nacl_even_and_odd_reflections() -> None:
    """Rock salt: |F| = 4 |f_Na +- f_Cl| T (even / odd), from the IT92 tables."""
    sf = load_structure_factors(source("builtin:nacl", d_min=1.0), "xray")
    a = 5.6402
    b_na, b_cl = 8 * math.pi**2 * 0.0203, 8 * math.pi**2 * 0.0152
    for hkl, sign in (((1, 1, 1), -1), ((2, 0, 0), 1), ((3, 1, 1), -1), ((2, 2, 2), 1)):
        s2 = sum(x * x for x in hkl) / (4 * a * a)
        na = gemmi.Element("Na").it92.calculate_sf(s2) * math.exp(-b_na * s2)
        cl = gemmi.Element("Cl").it92.calculate_sf(s2) * math.exp(-b_cl * s2)
        assert sf.lookup(np.array([hkl]))[0] == pytest.approx((4 * (na + sign * cl)) ** 2,
                                                              rel=1e-5)  # fmt: skip


def test_returned_tables_are_independent_copies() -> None:
    first = load_structure_factors(source("builtin:corundum", d_min=1.0), "xray")
    first.table["F2"] = -1.0
    second = load_structure_factors(source("builtin:corundum", d_min=1.0), "xray")
    assert second.table.F2.min() >= 0.0


def test_edited_file_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "model.pdb"
    path.write_text(PDB_SEED)
    first = load_structure_factors(source(str(path), d_min=3.0), "xray")
    path.write_text(PDB_SEED.replace("1.00 30.00", "1.00 60.00"))
    second = load_structure_factors(source(str(path), d_min=3.0), "xray")
    assert not np.array_equal(first.table.F2, second.table.F2)


def test_lysozyme_like_table_is_computed_once() -> None:
    """The serial demo's default source to 2 A; a second request comes from the cache."""
    clear_cache()
    sf = load_structure_factors(source("builtin:lysozyme-like", d_min=2.0), "electron")
    assert len(sf) == 124_040
    from crystalscope.simulate import structure_factors as module

    cached = dict(module._cache)
    again = load_structure_factors(source("builtin:lysozyme-like", d_min=2.0), "electron")
    assert dict(module._cache) == cached  # nothing new was computed
    np.testing.assert_array_equal(again.table["F2"], sf.table["F2"])


@pytest.mark.slow
def test_builtins_load_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build a wheel, install it by unpacking, and load the package data from there."""
    tree = tmp_path / "tree"
    shutil.copytree(
        REPO / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(tree)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("crystalscope-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        for name in ("silicon", "nacl", "rutile", "corundum"):
            assert f"crystalscope/data/structures/{name}.cif" in names
        zf.extractall(tmp_path / "site")
    code = (
        "import crystalscope, sys\n"
        "from crystalscope.simulate.config import SourceConfig\n"
        "from crystalscope.simulate.structure_factors import load_structure_factors\n"
        "assert crystalscope.__file__.startswith(sys.argv[1]), crystalscope.__file__\n"
        "for n in ('silicon', 'nacl', 'rutile', 'corundum'):\n"
        "    sf = load_structure_factors(SourceConfig(structure='builtin:' + n), 'xray')\n"
        "    print(n, len(sf))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"),
           "NUMBA_CACHE_DIR": str(tmp_path / "numba")}  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "site")], env=env,
                         capture_output=True, text=True, check=False, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "silicon" in run.stdout and "corundum" in run.stdout


# ------------------------------------------------------------------------ fuzzing


def fuzz_reader(path: Path) -> None:
    load_structure_factors(source(str(path), d_min=3.0), "xray")


def mmcif_seed() -> str:
    st = gemmi.read_pdb_string(PDB_SEED)
    st.setup_entities()
    return st.make_mmcif_document().as_string()


RUTILE_SEED = builtin_text("rutile.cif")
MMCIF_SEED = mmcif_seed()


def test_fuzz_seeds_are_valid_and_small() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (("a.pdb", PDB_SEED), ("b.cif", RUTILE_SEED), ("c.cif", MMCIF_SEED)):
            assert len(text) < 5000
            path = Path(tmp) / name
            path.write_text(text)
            assert len(load_structure_factors(source(str(path), d_min=3.0), "xray")) > 0


@FUZZ_SETTINGS
@given(mutations(PDB_SEED))
def test_fuzz_pdb(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "model.pdb"
    assert_only_format_errors(fuzz_reader, text, path)


@FUZZ_SETTINGS
@given(mutations(RUTILE_SEED))
def test_fuzz_small_molecule_cif(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "small.cif"
    assert_only_format_errors(fuzz_reader, text, path)


@FUZZ_SETTINGS
@given(mutations(MMCIF_SEED))
def test_fuzz_mmcif(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "model.cif"
    assert_only_format_errors(fuzz_reader, text, path)
