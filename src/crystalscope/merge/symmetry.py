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


def _point_element(element: str) -> str:
    """The point-group element of one Hermann-Mauguin position (``43`` -> ``4``,
    ``21/c`` -> ``2/m``, ``n`` -> ``m``)."""
    match = re.fullmatch(r"(-?\d)\d?(?:/\w)?|[a-z]", element)
    if match is None:
        raise ConfigError(f"cannot read the symmetry element {element!r}", field="symmetry")
    if match.group(1) is None:
        return "m"
    return match.group(1) + ("/m" if "/" in element else "")


def point_group_of_space_group(space_group: gemmi.SpaceGroup, *, laue: bool = False) -> str:
    """CrystFEL's name of the point (or, with ``laue``, Laue) group of ``space_group``.

    The symbol keeps the setting of the space group's Hermann-Mauguin symbol
    (``P -4 m 2`` -> ``-4m2``, ``P 31 1 2`` -> ``312_H``); monoclinic groups get their
    unique axis (``2/m_uab``), trigonal ones ``_H`` or ``_R`` (``R 3 2:H`` -> ``321_H``).
    """
    hm = space_group.hm.split()
    parts = [_point_element(e) for e in hm[1:]]
    system = space_group.crystal_system_str()
    if system == "monoclinic":
        axis = next((i for i, part in enumerate(hm[1:]) if part != "1"), 2)
        return f"{'2/m' if laue else parts[axis]}_ua{'abc'[axis]}"
    if system == "trigonal":
        if laue:  # 3 -> -3, 2 -> m (the mirror perpendicular to the two-fold)
            parts = ["-3" if "3" in p else p if p == "1" else "m" for p in parts]
        if hm[0] == "R" and space_group.ext != "R" and len(parts) == 2:
            parts.append("1")  # hexagonal axes: R 3 2 -> 321_H, R -3 m -> -3m1_H
        return f"{''.join(parts)}_{'R' if space_group.ext == 'R' else 'H'}"
    if laue:
        return space_group.laue_str()
    return "".join(parts)
