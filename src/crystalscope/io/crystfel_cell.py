"""CrystFEL unit cell files (``.cell``): read, validate and write.

A CrystFEL unit cell file looks like this::

    CrystFEL unit cell file version 1.0

    lattice_type = hexagonal
    centering = H
    unique_axis = c

    a = 66.2 A
    b = 66.2 A
    c = 150.2 A

    al = 90.0 deg
    be = 90.0 deg
    ga = 120.0 deg

Each field line is ``key = value [unit]``; lengths are in ``A`` or ``nm``, angles in
``deg`` or ``rad``; lines starting with ``;`` are comments.  The file may give only the
lattice (no parameters), as CrystFEL allows.  Values are checked as CrystFEL checks them
(``libcrystfel/src/cell-utils.c``): unknown lattice types, centerings, unique axes and
units, malformed lines, duplicate or partial parameters and physically impossible angles
are :class:`~crystalscope.errors.FormatError`; a missing unique axis for monoclinic,
tetragonal and hexagonal lattices is an error too (CrystFEL refuses such a file).
Unconventional but usable files (not a Bravais lattice, parameters that break the
lattice type's constraints such as tetragonal with ``a != b``, a unique axis for a
lattice that has none, unknown keys) give a :class:`CellWarning`, as CrystFEL prints a
warning and carries on.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import gemmi

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_write
from crystalscope.io.textfile import read_text

__all__ = [
    "CELL_HEADER",
    "CENTERINGS",
    "LATTICE_TYPES",
    "CellWarning",
    "UnitCellFile",
    "parse_cell",
    "read_cell",
    "write_cell",
]

#: First line of every CrystFEL unit cell file.
CELL_HEADER = "CrystFEL unit cell file version 1.0"

#: Lattice types CrystFEL knows (``str_lattice``).
LATTICE_TYPES = (
    "triclinic",
    "monoclinic",
    "orthorhombic",
    "tetragonal",
    "rhombohedral",
    "hexagonal",
    "cubic",
)

#: Centering letters CrystFEL accepts (``check_centering``); ``H`` is the hexagonal
#: setting of a rhombohedral lattice.
CENTERINGS = "PABCIFRH"

_WITH_UNIQUE_AXIS = ("monoclinic", "tetragonal", "hexagonal")
_LENGTH_UNITS = {"A": 1.0, "nm": 10.0}
_PARAMS = ("a", "b", "c", "al", "be", "ga")
_LENGTH_TOL = 1e-3  # relative tolerance of "equal" cell edges in the constraint check
_ANGLE_TOL_DEG = 0.01


class CellWarning(UserWarning):
    """A unit cell is usable but unconventional or inconsistent with its lattice type."""


@dataclass(frozen=True)
class UnitCellFile:
    """The content of a CrystFEL unit cell file.

    Attributes
    ----------
    lattice_type : str
        One of :data:`LATTICE_TYPES`.
    centering : str
        One letter of :data:`CENTERINGS`.
    unique_axis : str
        ``"a"``, ``"b"`` or ``"c"``; ``"?"`` when not given (lattices without one).
    parameters : tuple of 6 floats or None
        ``(a, b, c, alpha, beta, gamma)`` in Angstrom and degrees, or ``None`` when the
        file gives only the lattice.
    """

    lattice_type: str = "triclinic"
    centering: str = "P"
    unique_axis: str = "?"
    parameters: tuple[float, float, float, float, float, float] | None = None

    @property
    def has_parameters(self) -> bool:
        """True when the file gives the six cell parameters."""
        return self.parameters is not None

    @property
    def cell(self) -> gemmi.UnitCell:
        """The cell as a :class:`gemmi.UnitCell` (Angstrom, degrees).

        Raises
        ------
        DataError
            If the file gives only the lattice and no parameters.
        """
        if self.parameters is None:
            raise DataError("the unit cell file gives no cell parameters", field="a")
        return gemmi.UnitCell(*self.parameters)

    @classmethod
    def from_cell(
        cls,
        cell: gemmi.UnitCell,
        lattice_type: str = "triclinic",
        centering: str = "P",
        unique_axis: str = "?",
    ) -> UnitCellFile:
        """Build from a :class:`gemmi.UnitCell` and the lattice description."""
        params = (
            float(cell.a),
            float(cell.b),
            float(cell.c),
            float(cell.alpha),
            float(cell.beta),
            float(cell.gamma),
        )
        return cls(lattice_type, centering, unique_axis, params)

    def to_text(self) -> str:
        """The file content as CrystFEL's ``write_cell`` lays it out."""
        lines = [CELL_HEADER, "", f"lattice_type = {self.lattice_type}"]
        if self.lattice_type in _WITH_UNIQUE_AXIS:
            lines.append(f"unique_axis = {self.unique_axis}")
        lines.append(f"centering = {self.centering}")
        if self.parameters is not None:
            for name, value in zip(_PARAMS, self.parameters, strict=True):
                unit = "A" if name in ("a", "b", "c") else "deg"
                lines.append(f"{name} = {_fmt(value)} {unit}")
        return "\n".join(lines) + "\n"


def _fmt(value: float) -> str:
    """``%.2f`` as CrystFEL writes, or the exact shortest form when that would lose digits."""
    short = f"{value:.2f}"
    return short if float(short) == value else repr(float(value))


def read_cell(path: str | os.PathLike[str]) -> UnitCellFile:
    """Read a CrystFEL unit cell file.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.cell`` file.

    Returns
    -------
    UnitCellFile

    Raises
    ------
    FormatError
        If the file is missing, unreadable or malformed (see the module docstring).
    """
    p = Path(path)
    text = read_text(p)
    return parse_cell(text, path=p)


def parse_cell(
    text: str, *, path: str | os.PathLike[str] | None = None, first_line: int = 1
) -> UnitCellFile:
    """Parse the text of a CrystFEL unit cell file.

    Parameters
    ----------
    text : str
        The file content.
    path : str or os.PathLike, optional
        File named in errors and warnings.
    first_line : int
        Line number of the first line of ``text`` in that file (for cells embedded in
        a stream).

    Returns
    -------
    UnitCellFile
    """
    lines = text.split("\n")
    if lines[0].rstrip("\r") != CELL_HEADER:
        raise FormatError(
            f"not a CrystFEL unit cell file (first line must be '{CELL_HEADER}')",
            path=path,
            line=first_line,
        )
    fields: dict[str, tuple[str, int]] = {}
    values: dict[str, float] = {}
    for i, raw in enumerate(lines[1:], start=first_line + 1):
        _parse_line(raw.rstrip("\r"), i, fields, values, path)
    lattice, cen, ua = _lattice(fields, path, first_line)
    params = _parameters(values, fields, path)
    result = UnitCellFile(lattice, cen, ua, params)
    _validate(result, fields, path)
    return result


def _parse_line(
    line: str,
    lineno: int,
    fields: dict[str, tuple[str, int]],
    values: dict[str, float],
    path: str | os.PathLike[str] | None,
) -> None:
    bits = line.split()
    if not bits or bits[0].startswith(";"):
        return
    key = bits[0]
    if len(bits) < 3 or bits[1] != "=":
        raise FormatError("expected 'key = value'", path=path, line=lineno, field=key)
    if key in fields:
        raise FormatError("field given twice", path=path, line=lineno, field=key)
    fields[key] = (bits[2], lineno)
    if key in _PARAMS:
        values[key] = _value_with_unit(bits, lineno, path)
    elif key in ("lattice_type", "centering", "unique_axis"):
        if len(bits) > 3:
            raise FormatError("unexpected text after the value", path=path, line=lineno, field=key)
    else:
        warnings.warn(
            f"{path}:{lineno}: unknown field '{key}' in unit cell file ignored",
            CellWarning,
            stacklevel=4,
        )


def _value_with_unit(bits: list[str], lineno: int, path: str | os.PathLike[str] | None) -> float:
    key = bits[0]
    if len(bits) != 4:
        raise FormatError("expected 'key = value unit'", path=path, line=lineno, field=key)
    try:
        value = float(bits[2])
    except ValueError:
        raise FormatError(
            f"invalid number '{bits[2]}'", path=path, line=lineno, field=key
        ) from None
    unit = bits[3]
    if key in ("a", "b", "c"):
        if unit not in _LENGTH_UNITS:
            raise FormatError(
                f"unknown length unit '{unit}' (use A or nm)", path=path, line=lineno, field=key
            )
        value *= _LENGTH_UNITS[unit]
        if not (math.isfinite(value) and value > 0):
            raise FormatError("cell edge must be positive", path=path, line=lineno, field=key)
        return value
    if unit == "rad":
        value = math.degrees(value)
    elif unit != "deg":
        raise FormatError(
            f"unknown angle unit '{unit}' (use deg or rad)", path=path, line=lineno, field=key
        )
    if not (math.isfinite(value) and 0 < value < 180):
        raise FormatError(
            "cell angle must lie between 0 and 180 deg", path=path, line=lineno, field=key
        )
    return value


def _lattice(
    fields: dict[str, tuple[str, int]], path: str | os.PathLike[str] | None, first_line: int
) -> tuple[str, str, str]:
    lattice, line = fields.get("lattice_type", ("triclinic", first_line))
    if lattice not in LATTICE_TYPES:
        raise FormatError(
            f"unknown lattice type '{lattice}' (one of {', '.join(LATTICE_TYPES)})",
            path=path,
            line=line,
            field="lattice_type",
        )
    cen, line = fields.get("centering", ("P", first_line))
    if len(cen) != 1 or cen not in CENTERINGS:
        raise FormatError(
            f"unknown centering '{cen}' (one of {', '.join(CENTERINGS)})",
            path=path,
            line=line,
            field="centering",
        )
    ua, line = fields.get("unique_axis", ("?", first_line))
    if "unique_axis" in fields and ua not in ("a", "b", "c"):
        raise FormatError(
            f"unknown unique axis '{ua}' (a, b or c)", path=path, line=line, field="unique_axis"
        )
    if lattice in _WITH_UNIQUE_AXIS and ua == "?":
        raise FormatError(
            f"the unique axis must be given for lattice type {lattice}",
            path=path,
            line=fields.get("lattice_type", ("", first_line))[1],
            field="unique_axis",
        )
    return lattice, cen, ua


def _parameters(
    values: dict[str, float],
    fields: dict[str, tuple[str, int]],
    path: str | os.PathLike[str] | None,
) -> tuple[float, float, float, float, float, float] | None:
    if not values:
        return None
    missing = [k for k in _PARAMS if k not in values]
    if missing:
        line = min(fields[k][1] for k in values)
        raise FormatError(
            f"incomplete cell parameters: {', '.join(missing)} missing",
            path=path,
            line=line,
            field=missing[0],
        )
    a, b, c, al, be, ga = (values[k] for k in _PARAMS)
    if not _angles_possible(al, be, ga):
        raise FormatError(
            "cell angles are physically impossible (no such parallelepiped)",
            path=path,
            line=fields["al"][1],
            field="al",
        )
    return (a, b, c, al, be, ga)


def _angles_possible(al: float, be: float, ga: float) -> bool:
    """CrystFEL's ``cell_is_sensible``: the three angles can form a parallelepiped."""
    sums = (al + be + ga, al + be - ga, al - be + ga, -al + be + ga)
    return all(0.0 < s < 360.0 for s in sums)


def _validate(cell: UnitCellFile, fields: dict[str, tuple[str, int]], path: object) -> None:
    """Warn, as CrystFEL does, about unconventional but usable cells."""
    problems = []
    if cell.lattice_type not in _WITH_UNIQUE_AXIS and "unique_axis" in fields:
        problems.append(
            f"unique axis '{cell.unique_axis}' makes no sense for lattice type {cell.lattice_type}"
        )
    if not is_bravais(cell.lattice_type, cell.centering, cell.unique_axis):
        problems.append(
            f"{cell.lattice_type} {cell.centering} (unique axis {cell.unique_axis}) "
            "is not a conventional Bravais lattice"
        )
    if (
        cell.lattice_type == "monoclinic"
        and cell.centering in "ABC"
        and cell.centering.lower() == cell.unique_axis
    ):
        problems.append("A, B or C centering matches the unique axis")
    if cell.parameters is not None:
        problems += _constraint_problems(cell)
        a, b, c, al, be, ga = cell.parameters
        if max(a, b, c) > 1e6 * min(a, b, c) or min(al, be, ga) < 10.0:
            problems.append("impractical cell parameters (edge ratio > 1e6 or angle < 10 deg)")
    for problem in problems:
        warnings.warn(f"{path}: {problem}", CellWarning, stacklevel=3)


def is_bravais(lattice_type: str, centering: str, unique_axis: str) -> bool:
    """CrystFEL's ``bravais_lattice``: is this a conventional Bravais lattice?"""
    if centering == "P":
        return True
    if centering in "ABC":
        if lattice_type == "monoclinic":
            return unique_axis in "abc" and unique_axis != centering.lower()
        return lattice_type == "orthorhombic"
    if centering == "I":
        return lattice_type in ("monoclinic", "orthorhombic", "tetragonal", "cubic")
    if centering == "F":
        return lattice_type in ("orthorhombic", "cubic")
    if centering == "H":
        return lattice_type == "hexagonal" and unique_axis == "c"
    if centering == "R":
        return lattice_type == "rhombohedral"
    return False


def _constraint_problems(cell: UnitCellFile) -> list[str]:
    """Messages for each constraint of the lattice type the parameters break."""
    assert cell.parameters is not None
    a, b, c, al, be, ga = cell.parameters
    lengths = {"a": a, "b": b, "c": c}
    angles = {"a": al, "b": be, "c": ga}
    lt, ua = cell.lattice_type, cell.unique_axis
    equal_edges: list[str] = []
    fixed: dict[str, float] = {}
    if lt == "monoclinic":
        fixed = {x: 90.0 for x in "abc" if x != ua}
    elif lt == "orthorhombic":
        fixed = {x: 90.0 for x in "abc"}
    elif lt in ("tetragonal", "hexagonal"):
        equal_edges = [x for x in "abc" if x != ua]
        fixed = {x: 90.0 for x in "abc"}
        if lt == "hexagonal":
            fixed[ua] = 120.0
    elif lt in ("cubic", "rhombohedral"):
        equal_edges = ["a", "b", "c"]
        fixed = {x: 90.0 for x in "abc"} if lt == "cubic" else {}
    problems = []
    ref = lengths[equal_edges[0]] if equal_edges else 0.0
    if any(abs(lengths[x] - ref) > _LENGTH_TOL * ref for x in equal_edges):
        problems.append(f"{lt} cell needs {' = '.join(equal_edges)}, got " + _show(lengths))
    wrong = [x for x, v in fixed.items() if abs(angles[x] - v) > _ANGLE_TOL_DEG]
    if lt == "rhombohedral" and (max(al, be, ga) - min(al, be, ga)) > _ANGLE_TOL_DEG:
        wrong = ["a", "b", "c"]
    if wrong:
        problems.append(f"{lt} cell (unique axis {ua}) has inconsistent angles " + _show(angles))
    return problems


def _show(values: dict[str, float]) -> str:
    return ", ".join(f"{v:g}" for v in values.values())


def write_cell(
    cell: UnitCellFile | gemmi.UnitCell,
    path: str | os.PathLike[str],
    *,
    overwrite: bool = True,
) -> None:
    """Write a CrystFEL unit cell file atomically.

    Parameters
    ----------
    cell : UnitCellFile or gemmi.UnitCell
        The cell; a bare :class:`gemmi.UnitCell` is written as triclinic P.
    path : str or os.PathLike
        Output file.
    overwrite : bool
        Replace an existing file.
    """
    if isinstance(cell, gemmi.UnitCell):
        cell = UnitCellFile.from_cell(cell)
    with atomic_write(path, overwrite=overwrite) as fh:
        fh.write(cell.to_text())
