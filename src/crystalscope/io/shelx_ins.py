"""SHELX instruction files (``.ins``) to go with an HKLF 4 reflection file.

:func:`write_shelx_ins` writes the header SHELXT/SHELXL need to start from a ``.hkl``
file (Sheldrick 2015, *Acta Cryst.* A71, 3; C71, 3)::

    TITL crystalscope in P43212
    CELL 0.02508 79.3400 79.3400 37.8100 90.000 90.000 90.000
    ZERR 8 0.0000 0.0000 0.0000 0.000 0.000 0.000
    LATT -1
    SYMM -X, -Y, 1/2+Z
    ...
    SFAC C H N O S
    UNIT 1234 1976 333 370 12
    HKLF 4
    END

* ``CELL`` carries the wavelength (A) and the cell (A, degrees); ``ZERR`` the number of
  formula units ``Z`` (default: the number of symmetry operators, one molecule per
  asymmetric unit) and the cell's standard uncertainties (default 0: unknown).
* ``LATT n``: ``n`` = 1 P, 2 I, 3 R (obverse, hexagonal axes), 4 F, 5 A, 6 B, 7 C;
  positive when the structure has an inversion centre at the origin (SHELX generates
  ``-x, -y, -z`` and the products itself), negative otherwise.
* ``SYMM``: the operators other than the identity that the lattice centring and, for
  positive ``LATT``, the inversion do not generate (gemmi's operators, with the
  translation written first as in International Tables: ``1/2-X``).
* ``UNIT``: atoms per cell for each ``SFAC`` element.  Without ``unit=`` a rough guess
  from the cell volume (18 A^3 per non-hydrogen atom, proportions of an average
  amino-acid residue, C5 H8 N1.35 O1.5 S0.05); edit it for the real content.

For electron diffraction, SHELXL needs electron scattering factors: replace the short
``SFAC`` line with explicit coefficients (``SFAC El a1 b1 ... c ...``); this file uses
the built-in (X-ray) ones.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import gemmi
import numpy as np

from crystalscope.errors import DataError
from crystalscope.io.atomic import atomic_write
from crystalscope.model.crystal import SpaceGroupLike, resolve_space_group

__all__ = ["LATT_NUMBERS", "shelx_symmetry", "write_shelx_ins"]

#: SHELX LATT number of each lattice centring (gemmi's ``centring_type()``).
LATT_NUMBERS = {"P": 1, "I": 2, "R": 3, "F": 4, "A": 5, "B": 6, "C": 7}
_RATIOS = {"C": 5.0, "H": 8.0, "N": 1.35, "O": 1.5, "S": 0.05}
_VOLUME_PER_ATOM = 18.0  # A^3 per non-hydrogen atom (organic crystals)


def shelx_symmetry(space_group: SpaceGroupLike) -> tuple[int, list[str]]:
    """``LATT`` number and ``SYMM`` operator strings for a space group.

    Returns
    -------
    (int, list of str)
        ``LATT`` (negative for non-centrosymmetric groups and for centrosymmetric ones
        whose inversion centre is not at the origin) and the ``SYMM`` operators.

    Raises
    ------
    DataError
        If the space group is unknown or its centring has no LATT code.
    """
    sg = resolve_space_group(space_group)
    centring = sg.centring_type()
    if centring not in LATT_NUMBERS:
        raise DataError(f"no SHELX LATT code for centring {centring!r} of {sg.xhm()}",
                        field="space_group")  # fmt: skip
    ops = sg.operations()
    centro = _inversion_at_origin(ops)
    chosen: list[gemmi.Op] = []
    seen: set[bytes] = set()
    for op in ops.sym_ops:
        rot = np.array(op.rot, dtype=np.int64)
        if rot.tobytes() in seen or (centro and (-rot).tobytes() in seen):
            continue
        seen.add(rot.tobytes())
        chosen.append(op)
    symm = [_shelx_triplet(op) for op in chosen if op.triplet() != "x,y,z"]
    latt = LATT_NUMBERS[centring]
    return (latt if centro else -latt), symm


def _inversion_at_origin(ops: gemmi.GroupOps) -> bool:
    """Whether ``-x, -y, -z`` (possibly combined with a centring vector) is in the group."""
    minus = (-np.eye(3, dtype=np.int64) * gemmi.Op.DEN).tobytes()
    cen = {tuple(np.mod(t, gemmi.Op.DEN)) for t in ops.cen_ops}
    for op in ops.sym_ops:
        if np.array(op.rot, dtype=np.int64).tobytes() == minus:
            return tuple(np.mod(op.tran, gemmi.Op.DEN)) in cen
    return False


def _shelx_triplet(op: gemmi.Op) -> str:
    """``1/2-X, -Y, 1/4+Z`` style text of an operator (translation first, upper case)."""
    parts = []
    for row, shift in zip(op.rot, op.tran, strict=True):
        terms = ""
        for coef, axis in zip(row, "XYZ", strict=True):
            c = Fraction(int(coef), gemmi.Op.DEN)
            if c == 0:
                continue
            size = "" if abs(c) == 1 else f"{abs(c)}*"
            terms += ("-" if c < 0 else "+") + size + axis
        t = Fraction(int(shift) % gemmi.Op.DEN, gemmi.Op.DEN)
        if t == 0:
            parts.append(terms.lstrip("+"))
        else:
            parts.append(f"{t}{terms}")
    return ", ".join(parts)


def _default_unit(cell: gemmi.UnitCell, sfac: Sequence[str], z: int) -> list[int]:
    per_residue = sum(v for k, v in _RATIOS.items() if k != "H")
    residues = cell.volume / _VOLUME_PER_ATOM / per_residue
    return [max(1, round(residues * _RATIOS[el.capitalize()])) if el.capitalize() in _RATIOS
            else z for el in sfac]  # fmt: skip


def write_shelx_ins(
    path: str | os.PathLike[str],
    cell: gemmi.UnitCell | Sequence[float],
    space_group: SpaceGroupLike,
    wavelength: float,
    *,
    title: str = "crystalscope",
    sfac: Sequence[str] = ("C", "H", "N", "O", "S"),
    unit: Sequence[float] | None = None,
    z: int | None = None,
    cell_esd: Sequence[float] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a SHELX ``.ins`` header (TITL, CELL, ZERR, LATT, SYMM, SFAC, UNIT, HKLF 4, END).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (written atomically); use the ``.hkl`` file's name with ``.ins``.
    cell : gemmi.UnitCell or 6 floats
        Unit cell, A and degrees.
    space_group : gemmi.SpaceGroup or str or int
        Space group.
    wavelength : float
        Wavelength, A.
    title : str
        ``TITL`` text (`` in <space group>`` is appended).
    sfac : sequence of str
        Element symbols.
    unit : sequence of float, optional
        Atoms per cell for each element (default: a guess, see the module notes).
    z : int, optional
        Formula units per cell for ``ZERR`` (default: the number of symmetry operators).
    cell_esd : 6 floats, optional
        Standard uncertainties of the cell parameters (default zeros).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    DataError
        If an argument is invalid (cell, wavelength, element symbols, unit count).
    """
    uc = _cell(cell)
    sg = resolve_space_group(space_group)
    if not (math.isfinite(wavelength) and wavelength > 0):
        raise DataError(f"wavelength must be a positive number of A, got {wavelength}",
                        field="wavelength")  # fmt: skip
    elements = [_element(el) for el in sfac]
    z_value = len(list(sg.operations())) if z is None else int(z)
    counts = _default_unit(uc, elements, z_value) if unit is None else list(unit)
    if len(counts) != len(elements):
        raise DataError(f"UNIT needs {len(elements)} numbers, got {len(counts)}", field="unit")
    esd = [0.0] * 6 if cell_esd is None else [float(x) for x in cell_esd]
    if len(esd) != 6:
        raise DataError("cell_esd needs 6 numbers", field="cell_esd")
    latt, symm = shelx_symmetry(sg)
    p = uc.parameters
    lines = [
        f"TITL {' '.join(title.split())[:60]} in {sg.hm.replace(' ', '')}",
        f"CELL {wavelength:.5f} {p[0]:.4f} {p[1]:.4f} {p[2]:.4f} {p[3]:.3f} {p[4]:.3f} {p[5]:.3f}",
        f"ZERR {z_value} {esd[0]:.4f} {esd[1]:.4f} {esd[2]:.4f} {esd[3]:.3f} {esd[4]:.3f} "
        f"{esd[5]:.3f}",
        f"LATT {latt}",
        *[f"SYMM {s}" for s in symm],
        "SFAC " + " ".join(elements),
        "UNIT " + " ".join(_number(c) for c in counts),
        "HKLF 4",
        "END",
    ]
    with atomic_write(path, overwrite=overwrite) as fh:
        fh.write("\n".join(lines) + "\n")
    return Path(path)


def _cell(cell: gemmi.UnitCell | Sequence[float]) -> gemmi.UnitCell:
    if isinstance(cell, gemmi.UnitCell):
        return cell
    try:
        values = [float(x) for x in cell]
    except (TypeError, ValueError):
        raise DataError(f"invalid unit cell {cell!r}", field="cell") from None
    if len(values) != 6 or not all(math.isfinite(v) and v > 0 for v in values):
        raise DataError(f"a unit cell needs 6 positive numbers, got {cell!r}", field="cell")
    return gemmi.UnitCell(*values)


def _element(symbol: str) -> str:
    name = str(symbol).strip().capitalize()
    if gemmi.Element(name).atomic_number == 0:
        raise DataError(f"unknown element {symbol!r}", field="sfac")
    return name


def _number(value: float) -> str:
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise DataError(f"UNIT counts must be positive, got {value}", field="unit")
    return str(int(number)) if number == int(number) else f"{number:g}"
