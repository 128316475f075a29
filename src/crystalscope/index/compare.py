"""Comparing crystal orientations modulo the symmetry of their lattice.

Indexing a still finds the orientation of the *lattice*, not of the structure: two
orientation matrices that differ by a symmetry operation of the Bravais lattice (its
holohedry, e.g. ``4/mmm`` for a tetragonal cell, whatever the space group) index the
same peaks and cannot be told apart from peak positions.  :func:`misorientation_deg`
therefore reports the smallest rotation angle over those operations, and
:func:`lattice_symmetry_ops` lists them as integer matrices acting on Miller indices.

Conventions (``docs/conventions.md``): ``UB`` holds ``a*, b*, c*`` as columns in the lab
frame (1/A), ``q = UB h``.  A holohedry operation ``M`` (integer, acting on ``h``) turns
one indexing into an equivalent one, ``UB' = UB M``: ``UB' (M^-1 h) = UB h``.
"""

from __future__ import annotations

from functools import lru_cache

import gemmi
import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import DataError
from crystalscope.model.crystal import SpaceGroupLike, resolve_space_group

__all__ = [
    "BRAVAIS_SPACE_GROUPS",
    "LatticeLike",
    "bravais_symbol",
    "lattice_space_group",
    "lattice_symmetry_ops",
    "misorientation_deg",
]

LatticeLike = SpaceGroupLike
"""A space group (name, number, :class:`gemmi.SpaceGroup`) or a Bravais symbol ``"tP"``."""

#: A representative space group (standard setting) for each Bravais lattice symbol.
BRAVAIS_SPACE_GROUPS: dict[str, str] = {
    "aP": "P 1",
    "mP": "P 1 2 1",
    "mC": "C 1 2 1",
    "oP": "P 2 2 2",
    "oC": "C 2 2 2",
    "oI": "I 2 2 2",
    "oF": "F 2 2 2",
    "tP": "P 4",
    "tI": "I 4",
    "hP": "P 6",
    "hR": "R 3:H",
    "cP": "P 2 3",
    "cI": "I 2 3",
    "cF": "F 2 3",
}

_FAMILY = {
    "triclinic": "a",
    "monoclinic": "m",
    "orthorhombic": "o",
    "tetragonal": "t",
    "trigonal": "h",
    "hexagonal": "h",
    "cubic": "c",
}


def lattice_space_group(lattice: LatticeLike) -> gemmi.SpaceGroup:
    """The space group of a lattice argument: itself, or a representative of a Bravais symbol.

    Parameters
    ----------
    lattice : str or int or gemmi.SpaceGroup
        A space group (see :func:`crystalscope.model.crystal.resolve_space_group`) or a
        Bravais symbol ``aP mP mC oP oC oI oF tP tI hP hR cP cI cF`` (then the lowest
        symmetry space group of that lattice in the standard setting, e.g. ``P 4`` for
        ``tP``; ``hR`` is on hexagonal axes).

    Raises
    ------
    DataError
        For an unknown symbol or space group (``field="lattice"``).
    """
    if isinstance(lattice, str) and lattice.strip() in BRAVAIS_SPACE_GROUPS:
        return resolve_space_group(BRAVAIS_SPACE_GROUPS[lattice.strip()])
    try:
        return resolve_space_group(lattice)
    except DataError as exc:
        raise DataError(
            f"{exc.message}; give a space group or a Bravais symbol "
            f"({' '.join(BRAVAIS_SPACE_GROUPS)})",
            field="lattice",
        ) from None


def bravais_symbol(lattice: LatticeLike) -> str:
    """The Bravais symbol (``"tP"``, ``"hR"``...) of a space group or symbol.

    Trigonal groups on hexagonal axes without rhombohedral centring are ``hP``; ``R``
    groups in either setting are ``hR``.
    """
    sg = lattice_space_group(lattice)
    family = _FAMILY[sg.crystal_system_str()]
    if sg.ext in ("H", "R") and sg.hm.startswith("R"):
        return "hR"
    centring = sg.centring_type()
    if family == "m" and centring in ("A", "B", "C", "I"):
        centring = "C"  # all centred monoclinic settings are one Bravais lattice
    if family == "o" and centring in ("A", "B"):
        centring = "C"
    return family + centring


def _ideal_cell(sg: gemmi.SpaceGroup) -> gemmi.UnitCell:
    """A cell with exactly the metric symmetry of the space group's crystal family."""
    system = sg.crystal_system_str()
    if system == "triclinic":
        return gemmi.UnitCell(1.0, 1.13, 1.29, 77.0, 83.0, 71.0)
    if system == "monoclinic":
        axis = sg.monoclinic_unique_axis()
        angles = {"a": (101.0, 90.0, 90.0), "b": (90.0, 101.0, 90.0), "c": (90.0, 90.0, 101.0)}
        return gemmi.UnitCell(1.0, 1.13, 1.29, *angles[axis])
    if system == "orthorhombic":
        return gemmi.UnitCell(1.0, 1.13, 1.29, 90.0, 90.0, 90.0)
    if system == "tetragonal":
        return gemmi.UnitCell(1.0, 1.0, 1.29, 90.0, 90.0, 90.0)
    if system in ("trigonal", "hexagonal"):
        if sg.ext == "R":  # rhombohedral axes
            return gemmi.UnitCell(1.0, 1.0, 1.0, 75.0, 75.0, 75.0)
        return gemmi.UnitCell(1.0, 1.0, 1.7, 90.0, 90.0, 120.0)
    return gemmi.UnitCell(1.0, 1.0, 1.0, 90.0, 90.0, 90.0)


@lru_cache(maxsize=64)
def _holohedry(hall: str) -> np.ndarray:
    sg = gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(hall))
    cell = _ideal_cell(sg)
    group = gemmi.find_lattice_symmetry(cell, sg.centring_type(), 0.01)
    # gemmi's ops act on fractional coordinates, x' = R x; on Miller indices h' = R^T h
    proper = [np.array(op.rot, dtype=np.int64).T // op.DEN for op in group.sym_ops]
    proper.sort(key=lambda m: (not np.array_equal(m, np.eye(3, dtype=np.int64)), m.tolist()))
    ops = np.array(proper + [-m for m in proper], dtype=np.int64)
    ops.flags.writeable = False
    return ops


def lattice_symmetry_ops(lattice: LatticeLike) -> np.ndarray:
    """The holohedry of a lattice as integer matrices acting on Miller indices.

    Parameters
    ----------
    lattice : str or int or gemmi.SpaceGroup
        Space group or Bravais symbol (:func:`lattice_space_group`).  The holohedry is
        that of the space group's crystal family in the space group's setting
        (``4/mmm`` for ``P 43 21 2``, ``6/mmm`` for ``P 63``, ``-3m`` for ``R 3``, ``2/m``
        about the unique axis for monoclinic groups), not the point group.

    Returns
    -------
    numpy.ndarray, shape (m, 3, 3), int64
        ``m = 2, 4, 8, 16, 24, 12, 48`` matrices ``M`` (``h' = M h``); the first ``m/2``
        are the proper rotations (``det M = +1``, identity first), the rest are the same
        times ``-1`` (inversion).  Read-only.
    """
    return _holohedry(lattice_space_group(lattice).hall)


def _as_ub(value: ArrayLike, field: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"UB is not numeric ({exc})", field=field) from None
    if arr.shape[-2:] != (3, 3):
        raise DataError(f"UB must have shape (3, 3) or (n, 3, 3), got {arr.shape}", field=field)
    if not np.all(np.isfinite(arr)):
        raise DataError("UB contains NaN or infinity", field=field)
    return arr


def _rotation_angles_deg(x: np.ndarray) -> np.ndarray:
    """Rotation angle of the nearest proper rotation to each matrix (inf where det <= 0)."""
    w, _, vt = np.linalg.svd(x)
    r = w @ vt
    det = np.linalg.det(r)
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    return np.where(det > 0, np.degrees(np.arccos(cos)), np.inf)


def misorientation_deg(
    UB_a: ArrayLike, UB_b: ArrayLike, lattice: LatticeLike
) -> float | np.ndarray:
    """Smallest rotation angle between two orientations, modulo the lattice holohedry.

    .. math::

        \\Delta = \\min_{M} \\angle\\, \\mathrm{polar}\\!\\left(UB_a\\, M\\, UB_b^{-1}\\right),
        \\qquad \\angle R = \\arccos\\frac{\\mathrm{tr} R - 1}{2},

    over the holohedry operations ``M`` (:func:`lattice_symmetry_ops`) for which the
    product is a proper transformation; ``polar`` is the nearest rotation (SVD), so small
    differences of the two cells do not count as misorientation.

    Parameters
    ----------
    UB_a, UB_b : array_like, shape (3, 3) or (n, 3, 3)
        Orientation matrices (columns a*, b*, c* in the lab frame, 1/A); broadcast
        against each other.
    lattice : str or int or gemmi.SpaceGroup
        Space group or Bravais symbol of the lattice.

    Returns
    -------
    float or numpy.ndarray
        Degrees (0..180); an array of shape ``(n,)`` for stacked input.

    Raises
    ------
    DataError
        For non-finite or wrongly shaped matrices, singular ``UB_b`` or an unknown
        lattice.
    """
    a = _as_ub(UB_a, "UB_a")
    b = _as_ub(UB_b, "UB_b")
    ops = lattice_symmetry_ops(lattice).astype(float)
    det = np.linalg.det(b)
    if np.any(np.abs(det) <= 1e-12 * np.prod(np.linalg.norm(b, axis=-2), axis=-1)):
        raise DataError("UB_b is singular", field="UB_b")
    b_inv = np.linalg.inv(b)
    x = a[..., None, :, :] @ ops @ b_inv[..., None, :, :]  # (..., m, 3, 3)
    best = np.min(_rotation_angles_deg(x), axis=-1)
    if best.ndim == 0:
        return float(best)
    return np.asarray(best, dtype=float)
