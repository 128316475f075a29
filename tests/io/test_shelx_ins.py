"""Tests of the SHELX .ins writer (crystalscope.io.shelx_ins)."""

from __future__ import annotations

from pathlib import Path

import gemmi
import numpy as np
import pytest

from crystalscope.errors import CrystalscopeError, DataError
from crystalscope.io.shelx_ins import shelx_symmetry, write_shelx_ins

_CENTRING = {
    1: [[0, 0, 0]],
    2: [[0, 0, 0], [12, 12, 12]],
    3: [[0, 0, 0], [16, 8, 8], [8, 16, 16]],
    4: [[0, 0, 0], [0, 12, 12], [12, 0, 12], [12, 12, 0]],
    5: [[0, 0, 0], [0, 12, 12]],
    6: [[0, 0, 0], [12, 0, 12]],
    7: [[0, 0, 0], [12, 12, 0]],
}


def rebuild_group(latt: int, symm: list[str]) -> set[tuple[int, ...]]:
    """All operators (rotation, translation mod 1) that SHELX generates from LATT + SYMM."""
    base = [gemmi.Op("x,y,z")] + [gemmi.Op(s) for s in symm]
    if latt > 0:
        base += [gemmi.Op("-x,-y,-z") * op for op in base]
    out = set()
    for op in base:
        for t in _CENTRING[abs(latt)]:
            tran = [(a + b) % 24 for a, b in zip(op.tran, t, strict=True)]
            out.add((*np.ravel(op.rot), *tran))
    return out


def group_of(sg: gemmi.SpaceGroup) -> set[tuple[int, ...]]:
    return {(*np.ravel(op.rot), *(x % 24 for x in op.tran)) for op in sg.operations()}


def test_symm_and_latt_regenerate_every_space_group() -> None:
    """For all 230 groups (reference settings) and extra settings, LATT + SYMM = the group."""
    settings = [gemmi.find_spacegroup_by_number(n) for n in range(1, 231)]
    settings += [
        gemmi.SpaceGroup(n)
        for n in (
            "P 1 1 21",
            "C 1 c 1",
            "R 3:R",
            "R -3 m:R",
            "P n n n:2",
            "F d -3 m:2",
            "I 41/a:2",
            "A 1 2/m 1",
            "B 1 1 2",
        )
    ]
    for sg in settings:
        latt, symm = shelx_symmetry(sg)
        assert rebuild_group(latt, symm) == group_of(sg), sg.xhm()
        assert len(symm) + 1 == len(group_of(sg)) // len(_CENTRING[abs(latt)]) // (
            2 if latt > 0 else 1
        ), sg.xhm()
        assert (latt > 0) <= sg.is_centrosymmetric(), sg.xhm()


def test_known_examples() -> None:
    latt, symm = shelx_symmetry("P 21 21 21")
    assert latt == -1
    assert sorted(symm) == sorted(["1/2-X, -Y, 1/2+Z", "-X, 1/2+Y, 1/2-Z", "1/2+X, 1/2-Y, -Z"])
    assert shelx_symmetry("P 1 21/c 1") == (1, ["-X, 1/2+Y, 1/2-Z"])
    assert shelx_symmetry("C 1 2/c 1") == (7, ["-X, Y, 1/2-Z"])
    assert shelx_symmetry("P -1") == (1, [])
    latt, symm = shelx_symmetry("I 41/a")  # origin choice 1: inversion not at the origin
    assert latt == -2 and "-X, 1/2-Y, 1/4-Z" in symm, symm
    assert shelx_symmetry("I 41/a:2")[0] == 2


def parse_ins(text: str) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        word, *rest = line.split(maxsplit=1)
        out.setdefault(word, []).append(rest[0].split() if rest else [])
    return out


def test_write_ins_fields(tmp_path: Path) -> None:
    path = tmp_path / "hewl.ins"
    cell = gemmi.UnitCell(79.34, 79.34, 37.81, 90, 90, 90)
    got = write_shelx_ins(
        path,
        cell,
        "P 43 21 2",
        0.02508,
        title="lysozyme  test",
        unit=[4000, 6300, 1100, 1200, 80],
        cell_esd=[0.02] * 3 + [0] * 3,
    )
    assert got == path
    text = path.read_text()
    lines = text.splitlines()
    assert lines[0] == "TITL lysozyme test in P43212"
    assert [line.split()[0] for line in lines] == (
        ["TITL", "CELL", "ZERR", "LATT"] + ["SYMM"] * 7 + ["SFAC", "UNIT", "HKLF", "END"]
    )
    fields = parse_ins(text)
    values = [float(x) for x in fields["CELL"][0]]
    assert values == pytest.approx([0.02508, 79.34, 79.34, 37.81, 90, 90, 90])
    assert fields["ZERR"][0] == ["8", "0.0200", "0.0200", "0.0200", "0.000", "0.000", "0.000"]
    assert fields["SFAC"][0] == ["C", "H", "N", "O", "S"]
    assert fields["UNIT"][0] == ["4000", "6300", "1100", "1200", "80"]
    assert fields["HKLF"][0] == ["4"]
    latt = int(fields["LATT"][0][0])
    symm = [line[5:] for line in lines if line.startswith("SYMM")]
    assert rebuild_group(latt, symm) == group_of(gemmi.SpaceGroup("P 43 21 2"))


def test_default_unit_and_errors(tmp_path: Path) -> None:
    cell = gemmi.UnitCell(10, 12, 15, 90, 95, 90)
    path = write_shelx_ins(tmp_path / "a.ins", cell, "P 1 21/c 1", 0.71073, sfac=["c", "h", "Cl"])
    fields = parse_ins(path.read_text())
    assert fields["SFAC"][0] == ["C", "H", "Cl"]
    counts = [int(x) for x in fields["UNIT"][0]]
    # 1787 A^3 / 18 A^3 per non-H atom, average-residue proportions; Cl unknown: Z = 4
    assert counts[0] == round(cell.volume / 18 / 7.9 * 5) and counts[2] == 4, counts
    assert fields["ZERR"][0][0] == "4"
    with pytest.raises(CrystalscopeError, match="exists"):
        write_shelx_ins(tmp_path / "a.ins", cell, "P 1 21/c 1", 0.71073)
    write_shelx_ins(tmp_path / "a.ins", cell, "P 1 21/c 1", 1.54, overwrite=True)
    assert "CELL 1.54000" in (tmp_path / "a.ins").read_text()
    with pytest.raises(DataError, match="element"):
        write_shelx_ins(tmp_path / "b.ins", cell, "P 1", 1.0, sfac=["Qq"])
    with pytest.raises(DataError, match="UNIT"):
        write_shelx_ins(tmp_path / "b.ins", cell, "P 1", 1.0, unit=[1, 2])
    with pytest.raises(DataError, match="wavelength"):
        write_shelx_ins(tmp_path / "b.ins", cell, "P 1", 0.0)
    with pytest.raises(DataError, match="cell"):
        write_shelx_ins(tmp_path / "b.ins", [10, 10, -1, 90, 90, 90], "P 1", 1.0)
    assert not (tmp_path / "b.ins").exists()
