"""Symmetry for merged data: CrystFEL point-group names and gemmi space groups.

CrystFEL's reflection lists and ``partialator -y`` name a *point group* (``422``,
``4/mmm``, ``2/m_uab``, ``321_H``, ``-3m_R``...), not a space group.  The statistics
need only what a point group and the lattice centring fix (which reflections are
equivalent, which are absent by centring), so :func:`space_group_of_point_group` picks
the symmorphic space group with that point group and centring: ``422`` with ``P``
gives ``P 4 2 2``, ``2/m_uab`` with ``C`` gives ``C 1 2/m 1``, ``-3m_R`` gives
``R -3 m:R``.  Screw axes and glide planes do not matter there (CrystFEL counts only
centring absences as impossible reflections).
"""

from __future__ import annotations

import re

import gemmi

from crystalscope.errors import ConfigError

__all__ = ["point_group_of_space_group", "space_group_of_point_group"]

_ELEMENT = re.compile(r"-?\d(?:/m)?|m")
_MONOCLINIC_AXIS = {"uaa": 0, "uab": 1, "uac": 2}


def _elements(symbol: str) -> list[str]:
    found = _ELEMENT.findall(symbol)
    if "".join(found) != symbol:
        raise ConfigError(f"not a point group symbol: {symbol!r}", field="symmetry")
    return found


def space_group_of_point_group(point_group: str, centring: str = "P") -> gemmi.SpaceGroup:
    """The symmorphic space group of a CrystFEL point group and a lattice centring.

    Parameters
    ----------
    point_group : str
        CrystFEL name: Hermann-Mauguin point group, optionally with ``_uaa``/``_uab``/
        ``_uac`` (monoclinic unique axis; default c, as CrystFEL) or ``_H``/``_R``
        (trigonal groups on hexagonal or rhombohedral axes).
    centring : str
        ``P, A, B, C, I, F`` or ``R``/``H`` (rhombohedral lattice).

    Raises
    ------
    ConfigError
        If the name or the combination is unknown.
    """
    base, _, suffix = point_group.strip().partition("_")
    parts = _elements(base)
    letter = centring.strip().upper()
    if letter == "H":
        letter = "R"
    setting = ""
    if len(parts) == 1 and parts[0] in ("2", "m", "2/m"):
        axis = _MONOCLINIC_AXIS.get(suffix or "uac")
        if axis is None:
            raise ConfigError(f"unknown unique axis in {point_group!r}", field="symmetry")
        parts = ["1", "1", "1"]
        parts[axis] = base
    elif suffix in ("H", "R") and letter == "R":
        if len(parts) == 3 and parts[-1] == "1":
            parts = parts[:2]  # 321 -> R 3 2, -3m1 -> R -3 m
        setting = ":" + suffix
    name = f"{letter} {' '.join(parts)}{setting}"
    sg = gemmi.find_spacegroup_by_name(name)
    if sg is None:
        raise ConfigError(
            f"no space group with point group {point_group!r} and centring {centring!r} "
            f"(tried {name!r})", field="symmetry",
        )  # fmt: skip
    return sg


def point_group_of_space_group(space_group: gemmi.SpaceGroup, *, laue: bool = False) -> str:
    """CrystFEL's name of the point (or Laue) group of ``space_group``.

    Monoclinic groups get their unique axis (``2/m_uab``), trigonal ones ``_H`` or
    ``_R``, and the two-axis trigonal groups their full three-element symbol
    (``321_H``, ``-3m1_H``).
    """
    symbol = space_group.laue_str() if laue else space_group.point_group_hm()
    hm = space_group.hm.split()
    if space_group.crystal_system_str() == "monoclinic":
        axis = next((i for i, part in enumerate(hm[1:]) if part != "1"), 2)
        return f"{symbol}_ua{'abc'[axis]}"
    if space_group.crystal_system_str() == "trigonal":
        if hm[0] == "R":
            return f"{symbol}_{'R' if space_group.ext == 'R' else 'H'}"
        ops = _elements(symbol)
        if len(hm) == 4 and len(ops) == 2:  # 32, 3m, -3m: which of the two settings
            symbol = f"{ops[0]}{ops[1]}1" if hm[3] == "1" else f"{ops[0]}1{ops[1]}"
        return f"{symbol}_H"
    return symbol
