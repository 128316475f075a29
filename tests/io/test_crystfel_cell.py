"""Tests of the CrystFEL unit cell file reader and writer (crystalscope.io.crystfel_cell)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import gemmi
import pytest
from hypothesis import given

from crystalscope.errors import CrystalscopeError, DataError, FormatError
from crystalscope.io.crystfel_cell import (
    CellWarning,
    UnitCellFile,
    is_bravais,
    parse_cell,
    read_cell,
    write_cell,
)
from fuzzing import FUZZ_SETTINGS, assert_only_format_errors, mutations

SEED = """\
CrystFEL unit cell file version 1.0

; lysozyme, as in the CrystFEL tutorial
lattice_type = tetragonal
centering = P
unique_axis = c

a = 79.10 A
b = 79.10 A
c = 3.79 nm

al = 90.00 deg
be = 90.00 deg
ga = 1.5707963267948966 rad
"""


def _cell(body: str) -> str:
    return "CrystFEL unit cell file version 1.0\n\n" + body


def _params() -> str:
    return "a = 10 A\nb = 20 A\nc = 30 A\nal = 90 deg\nbe = 90 deg\nga = 90 deg\n"


@pytest.fixture()
def no_warnings():  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_real_cell_file(shared_data: Path, no_warnings: None) -> None:
    cell = read_cell(shared_data / "crystfel" / "cell-example.cell")
    assert (cell.lattice_type, cell.centering, cell.unique_axis) == ("hexagonal", "H", "c")
    assert cell.parameters == (66.2, 66.2, 150.2, 90.0, 90.0, 120.0)
    assert isinstance(cell.cell, gemmi.UnitCell)
    assert cell.cell.volume == pytest.approx(66.2**2 * 150.2 * 3**0.5 / 2)


def test_seed_units_are_converted(no_warnings: None) -> None:
    cell = parse_cell(SEED)
    assert (cell.lattice_type, cell.centering, cell.unique_axis) == ("tetragonal", "P", "c")
    assert cell.parameters == pytest.approx((79.1, 79.1, 37.9, 90.0, 90.0, 90.0))


def test_layout_is_crystfels_write_cell(tmp_path: Path) -> None:
    path = tmp_path / "out.cell"
    write_cell(UnitCellFile("monoclinic", "C", "b", (61.4, 122.6, 168.0, 90.0, 97.25, 90.0)), path)
    assert path.read_text() == (
        "CrystFEL unit cell file version 1.0\n\n"
        "lattice_type = monoclinic\nunique_axis = b\ncentering = C\n"
        "a = 61.40 A\nb = 122.60 A\nc = 168.00 A\n"
        "al = 90.00 deg\nbe = 97.25 deg\nga = 90.00 deg\n"
    )
    path2 = tmp_path / "ortho.cell"
    write_cell(UnitCellFile("orthorhombic", "P", "?", None), path2)
    assert path2.read_text() == (
        "CrystFEL unit cell file version 1.0\n\nlattice_type = orthorhombic\ncentering = P\n"
    )


@pytest.mark.parametrize(
    "cell",
    [
        UnitCellFile("triclinic", "P", "?", (5.1234567, 6.5, 7.25, 80.123456789, 85.0, 95.5)),
        UnitCellFile("monoclinic", "I", "b", (20.0, 10.0, 30.0, 90.0, 110.0, 90.0)),
        UnitCellFile("orthorhombic", "F", "?", (10.0, 11.0, 12.0, 90.0, 90.0, 90.0)),
        UnitCellFile("tetragonal", "I", "a", (37.9, 79.1, 79.1, 90.0, 90.0, 90.0)),
        UnitCellFile("rhombohedral", "R", "?", (50.0, 50.0, 50.0, 75.5, 75.5, 75.5)),
        UnitCellFile("hexagonal", "P", "b", (40.0, 100.0, 40.0, 90.0, 120.0, 90.0)),
        UnitCellFile("cubic", "F", "?", (100.0, 100.0, 100.0, 90.0, 90.0, 90.0)),
        UnitCellFile("cubic", "P", "?", None),
    ],
)
def test_round_trip(cell: UnitCellFile, tmp_path: Path, no_warnings: None) -> None:
    path = tmp_path / "rt.cell"
    write_cell(cell, path)
    assert read_cell(path) == cell


def test_gemmi_cell_and_from_cell(tmp_path: Path) -> None:
    gcell = gemmi.UnitCell(79.1, 79.1, 37.9, 90, 90, 90)
    path = tmp_path / "g.cell"
    write_cell(gcell, path)
    back = read_cell(path)
    assert back.lattice_type == "triclinic" and back.cell.parameters == gcell.parameters
    tet = UnitCellFile.from_cell(gcell, "tetragonal", "P", "c")
    assert tet.parameters == (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)


def test_lattice_only_file(no_warnings: None) -> None:
    cell = parse_cell(_cell("lattice_type = monoclinic\nunique_axis = b\ncentering = C\n"))
    assert not cell.has_parameters and cell.parameters is None
    with pytest.raises(DataError):
        _ = cell.cell


@pytest.mark.parametrize(
    ("body", "line", "field"),
    [
        ("lattice_type = trigonal\n", 3, "lattice_type"),
        ("centering = Q\n", 3, "centering"),
        ("centering = PP\n", 3, "centering"),
        ("lattice_type = monoclinic\nunique_axis = d\n", 4, "unique_axis"),
        ("lattice_type = monoclinic\ncentering = P\n", 3, "unique_axis"),
        ("a = 10 pm\n", 3, "a"),
        ("a = 10\n", 3, "a"),
        ("a = ten A\n", 3, "a"),
        ("a = -10 A\n", 3, "a"),
        ("al = 190 deg\n", 3, "al"),
        ("al = 90 grad\n", 3, "al"),
        ("a = 10 A\nb = 10 A\n", 3, "c"),
        ("a = 10 A\na = 11 A\n", 4, "a"),
        ("lattice_type cubic\n", 3, "lattice_type"),
        ("a = 1 A\nb = 1 A\nc = 1 A\nal = 170 deg\nbe = 170 deg\nga = 30 deg\n", 6, "al"),
    ],
)
def test_errors_name_line_and_field(tmp_path: Path, body: str, line: int, field: str) -> None:
    path = tmp_path / "bad.cell"
    path.write_text(_cell(body))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FormatError) as info:
            read_cell(path)
    assert (info.value.line, info.value.field) == (line, field), str(info.value)
    assert "bad.cell" in str(info.value)


def test_not_a_cell_file(tmp_path: Path) -> None:
    path = tmp_path / "x.cell"
    path.write_text("CRYST1   79.100   79.100   37.900  90.00  90.00  90.00 P 43 21 2\n")
    with pytest.raises(FormatError, match="not a CrystFEL unit cell file"):
        read_cell(path)
    with pytest.raises(FormatError, match="not found"):
        read_cell(tmp_path / "absent.cell")
    path.write_bytes(b"CrystFEL unit cell file version 1.0\n\xff\n")
    with pytest.raises(FormatError, match="UTF-8") as info:
        read_cell(path)
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("lattice_type = tetragonal\nunique_axis = c\n" + _params(), "a = b"),
        (
            "lattice_type = hexagonal\nunique_axis = c\na = 10 A\nb = 10 A\nc = 30 A\n"
            "al = 90 deg\nbe = 90 deg\nga = 90 deg\n",
            "angles",
        ),
        ("lattice_type = monoclinic\nunique_axis = c\ncentering = C\n", "centering matches"),
        ("lattice_type = orthorhombic\nunique_axis = c\n", "makes no sense"),
        ("lattice_type = orthorhombic\ncentering = R\n", "not a conventional Bravais"),
        ("lattice_type = cubic\nspace_group = P23\n", "unknown field"),
        (
            "a = 1 A\nb = 1 A\nc = 1e7 A\nal = 90 deg\nbe = 90 deg\nga = 90 deg\n",
            "impractical",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore::crystalscope.io.crystfel_cell.CellWarning")
def test_warnings_as_crystfel(body: str, match: str) -> None:
    with pytest.warns(CellWarning, match=match):
        parse_cell(_cell(body), path="w.cell")


def test_is_bravais_follows_crystfel() -> None:
    assert is_bravais("monoclinic", "C", "b") and not is_bravais("monoclinic", "B", "b")
    assert is_bravais("hexagonal", "H", "c") and not is_bravais("hexagonal", "H", "a")
    assert is_bravais("rhombohedral", "R", "?") and not is_bravais("hexagonal", "R", "c")
    assert is_bravais("monoclinic", "I", "b") and not is_bravais("tetragonal", "F", "c")


def test_write_respects_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "c.cell"
    path.write_text("keep")
    with pytest.raises(CrystalscopeError):
        write_cell(UnitCellFile(), path, overwrite=False)
    assert path.read_text() == "keep"


def test_seed_is_small() -> None:
    assert len(SEED) < 5000


@FUZZ_SETTINGS
@given(mutations(SEED))
def test_fuzz_cell_reader(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_only_format_errors(read_cell, text, Path(tmp) / "fuzz.cell")
