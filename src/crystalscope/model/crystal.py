"""A crystal: unit cell, space group and orientation, with reflections from gemmi.

Frames and conventions (see ``docs/conventions.md``):

* The crystal Cartesian frame is gemmi's/PDB's: ``a`` along ``x``, ``b`` in the ``xy``
  plane, ``c*`` along ``z``.  ``B`` holds ``a*, b*, c*`` as its **columns** in that
  frame, ``B = cell.frac.mat^T`` (1/A, no factor 2 pi, ``a . a* = 1``).
* ``U`` is a proper rotation from the crystal Cartesian frame to the lab frame (NeXus:
  ``+z`` along the beam), ``UB = U @ B``, and the scattering vector of reflection ``h`` in
  the lab frame is ``q = UB @ h`` (1/A), ``|q| = 1/d``.
* :attr:`Crystal.reciprocal_vectors` and :attr:`Crystal.real_space_vectors` return the
  lab-frame basis vectors as **rows** (``[a*, b*, c*]`` = ``UB.T``, ``[a, b, c]``).
* Symmetry (systematic absences, asymmetric unit, centric flags, epsilon) is gemmi's:
  :class:`gemmi.GroupOps` and :class:`gemmi.ReciprocalAsu`.  ``isym`` is gemmi's/MTZ's:
  ``isym = 2 k + 1`` when symmetry operator ``k`` (``GroupOps.sym_ops[k]``) takes ``h`` to
  its asymmetric-unit representative, ``2 k + 2`` when the operator followed by the
  Friedel inversion does (odd: I(+), even: I(-)).

The excitation error of a reflection for wavelength ``lambda`` (A) is

.. math::

    s = \\frac{1}{\\lambda} - \\left| \\mathbf{q} + \\mathbf{k}_0 \\right|, \\qquad
    \\mathbf{k}_0 = (0, 0, 1/\\lambda),

the signed distance (1/A) of the reciprocal-lattice point from the Ewald sphere (centre
``-k0``, radius ``1/lambda``), measured along the sphere's radius: **positive inside the
sphere**, zero in the diffracting condition, as in the usual electron-microscopy
convention (``s_g > 0`` for a point inside the sphere).
"""

from __future__ import annotations

import math
from typing import Any

import gemmi
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from crystalscope.errors import DataError
from crystalscope.model.orientation import (
    as_generator,
    check_rotation,
    random_rotation,
    rotation_matrix,
)

__all__ = [
    "REFLECTION_COLUMNS",
    "Crystal",
    "SpaceGroupLike",
    "crystfel_lattice",
    "make_cell",
    "resolve_space_group",
]

SpaceGroupLike = gemmi.SpaceGroup | str | int

#: Columns and dtypes of :meth:`Crystal.enumerate_reflections`.
REFLECTION_COLUMNS: dict[str, str] = {
    "h": "int32",
    "k": "int32",
    "l": "int32",
    "d": "float64",
    "s": "float64",
    "absent": "bool",
    "centric": "bool",
    "epsilon": "int32",
    "h_asu": "int32",
    "k_asu": "int32",
    "l_asu": "int32",
    "isym": "int32",
}

_MAX_REFLECTIONS = 200_000_000  # refuse enumerations larger than this (memory)
_GRID_CHUNK = 4_000_000  # grid points evaluated at once while enumerating
_INT32_MAX = np.iinfo(np.int32).max


def resolve_space_group(space_group: SpaceGroupLike) -> gemmi.SpaceGroup:
    """A :class:`gemmi.SpaceGroup` from a gemmi object, a name or an ITA number.

    Parameters
    ----------
    space_group : gemmi.SpaceGroup or str or int
        A gemmi space group; a Hermann-Mauguin name with or without spaces and setting
        (``"P 43 21 2"``, ``"P43212"``, ``"R 3:H"``, ``"P 1 1 21"``); a Hall symbol
        (``"P 4nw 2abw"``); or an International Tables number 1-230 (as int or string;
        the reference setting).

    Raises
    ------
    DataError
        If the space group is unknown.
    """
    found: gemmi.SpaceGroup | None
    if isinstance(space_group, gemmi.SpaceGroup):
        found = gemmi.find_spacegroup_by_name(space_group.xhm())
    elif isinstance(space_group, int | np.integer) and not isinstance(space_group, bool):
        found = _by_number(int(space_group))
    elif isinstance(space_group, str):
        text = space_group.strip()
        found = _by_number(int(text)) if text.isdigit() else _by_name(text)
    else:
        raise DataError(
            f"space group must be a name, a number or gemmi.SpaceGroup, got {space_group!r}",
            field="space_group",
        )
    if found is None:
        raise DataError(f"unknown space group {space_group!r}", field="space_group")
    return found


def _by_number(number: int) -> gemmi.SpaceGroup | None:
    if not 1 <= number <= 230:
        raise DataError(f"space group number must be 1-230, got {number}", field="space_group")
    return gemmi.find_spacegroup_by_number(number)


def _by_name(name: str) -> gemmi.SpaceGroup | None:
    if not name:
        return None
    found = gemmi.find_spacegroup_by_name(name)
    if found is not None:
        return found
    try:  # maybe a Hall symbol
        return gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(name))
    except (RuntimeError, ValueError):
        return None


def make_cell(
    a: float, b: float, c: float, alpha: float, beta: float, gamma: float
) -> gemmi.UnitCell:
    """A validated :class:`gemmi.UnitCell` (lengths in A, angles in degrees).

    Raises
    ------
    DataError
        If a length is not a positive finite number, an angle is outside (0, 180)
        degrees, or the angles do not form a cell of positive volume.
    """
    names = ("a", "b", "c", "alpha", "beta", "gamma")
    values: list[float] = []
    for name, value in zip(names, (a, b, c, alpha, beta, gamma), strict=True):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DataError(f"cell parameter is not a number: {value!r}", field=name) from None
        values.append(number)
    for name, value in zip(names[:3], values[:3], strict=True):
        if not (math.isfinite(value) and value > 0):
            raise DataError(f"cell length must be positive, got {value} A", field=name)
    for name, value in zip(names[3:], values[3:], strict=True):
        if not (math.isfinite(value) and 0 < value < 180):
            raise DataError(f"cell angle must be in (0, 180) degrees, got {value}", field=name)
    cell = gemmi.UnitCell(*values)
    relative_volume = cell.volume / (values[0] * values[1] * values[2])
    if not (math.isfinite(relative_volume) and relative_volume > 1e-6):
        raise DataError(
            f"cell angles {values[3]:g}, {values[4]:g}, {values[5]:g} deg do not form a cell",
            field="alpha",
        )
    return cell


def crystfel_lattice(space_group: gemmi.SpaceGroup) -> tuple[str, str, str]:
    """CrystFEL's ``(lattice_type, centering, unique_axis)`` for a space group.

    ``lattice_type`` is one of triclinic, monoclinic, orthorhombic, tetragonal,
    rhombohedral, hexagonal, cubic; trigonal groups on hexagonal axes are ``hexagonal``
    (centring ``P``, or ``H`` for R groups on hexagonal axes), on rhombohedral axes
    ``rhombohedral`` with centring ``R``.  ``unique_axis`` is the monoclinic unique axis,
    ``c`` for tetragonal and hexagonal lattices and ``*`` (none) otherwise.
    """
    system = space_group.crystal_system_str()
    centring = space_group.centring_type()
    if system == "trigonal":
        if space_group.ext == "R":
            return "rhombohedral", "R", "*"
        return "hexagonal", "H" if centring == "R" else centring, "c"
    if system == "monoclinic":
        return system, centring, space_group.monoclinic_unique_axis()
    if system in ("tetragonal", "hexagonal"):
        return system, centring, "c"
    return system, centring, "*"


def _frozen(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=float)
    out.flags.writeable = False
    return out


def _as_miller(hkl: ArrayLike, field: str = "hkl") -> tuple[np.ndarray, bool]:
    """Miller indices as a C-contiguous int32 (N, 3) array, and whether one was given."""
    try:
        arr = np.asarray(hkl, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"Miller indices are not numeric ({exc})", field=field) from None
    single = arr.shape == (3,)
    arr = arr.reshape(1, 3) if single else arr
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise DataError(f"Miller indices must have shape (N, 3), got {arr.shape}", field=field)
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
        raise DataError("Miller indices must be integers", field=field)
    if arr.size and np.max(np.abs(arr)) > _INT32_MAX // 1000:
        raise DataError("Miller indices are implausibly large", field=field)
    return np.ascontiguousarray(arr, dtype=np.int32), single


def _as_vectors(hkl: ArrayLike, field: str = "hkl") -> tuple[np.ndarray, bool]:
    """Possibly fractional indices as a float64 (N, 3) array, and whether one was given."""
    try:
        arr = np.asarray(hkl, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"indices are not numeric ({exc})", field=field) from None
    single = arr.shape == (3,)
    arr = arr.reshape(1, 3) if single else arr
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise DataError(f"indices must have shape (N, 3), got {arr.shape}", field=field)
    return arr, single


class Crystal:
    """Unit cell, space group and orientation of one crystal.

    Immutable: methods that change the orientation return a new crystal.  Instances
    pickle through their cell parameters, the extended Hermann-Mauguin symbol and ``U``,
    so they can be shipped to dask workers.

    Parameters
    ----------
    cell : gemmi.UnitCell
        Unit cell (A, degrees); copied and validated.
    space_group : gemmi.SpaceGroup or str or int
        Space group (see :func:`resolve_space_group`).
    U : array_like, shape (3, 3), optional
        Orientation: proper rotation from the crystal Cartesian frame to the lab frame;
        identity by default.

    Raises
    ------
    DataError
        Invalid cell, unknown space group, or ``U`` not a proper rotation.
    """

    __slots__ = ("_B", "_U", "_UB", "_cell", "_ops", "_sg")

    def __init__(
        self,
        cell: gemmi.UnitCell,
        space_group: SpaceGroupLike = "P 1",
        U: ArrayLike | None = None,
    ) -> None:
        if not isinstance(cell, gemmi.UnitCell):
            raise DataError(f"cell must be a gemmi.UnitCell, got {type(cell).__name__}")
        self._setup(make_cell(*cell.parameters), resolve_space_group(space_group), U)

    def _setup(self, cell: gemmi.UnitCell, sg: gemmi.SpaceGroup, U: ArrayLike | None) -> None:
        self._cell = cell
        self._sg = sg
        self._ops = sg.operations()
        self._U = _frozen(check_rotation(np.eye(3) if U is None else U))
        self._B = _frozen(np.array(cell.frac.mat, dtype=float).T)
        self._UB = _frozen(self._U @ self._B)

    # ----------------------------------------------------------------- constructors

    @classmethod
    def from_parameters(
        cls,
        a: float,
        b: float,
        c: float,
        alpha: float = 90.0,
        beta: float = 90.0,
        gamma: float = 90.0,
        space_group: SpaceGroupLike = "P 1",
        U: ArrayLike | None = None,
    ) -> Crystal:
        """Crystal from cell lengths (A), angles (degrees), space group and orientation."""
        return cls(make_cell(a, b, c, alpha, beta, gamma), space_group, U)

    @classmethod
    def from_ub(cls, UB: ArrayLike, space_group: SpaceGroupLike = "P 1") -> Crystal:
        """Crystal from an orientation matrix ``UB`` (columns a*, b*, c* in the lab frame, 1/A).

        The cell follows from the reciprocal metric tensor ``G* = UB^T UB``, ``B`` from the
        cell (gemmi's convention) and ``U = UB B^-1``.

        Raises
        ------
        DataError
            If ``UB`` is not a finite, non-singular 3x3 matrix, its columns form a
            left-handed basis (``det UB < 0``), or the recovered ``U`` is not a proper
            rotation.
        """
        try:
            ub = np.array(UB, dtype=float)
        except (TypeError, ValueError) as exc:
            raise DataError(f"UB is not numeric ({exc})", field="UB") from None
        if ub.shape != (3, 3) or not np.all(np.isfinite(ub)):
            raise DataError(f"UB must be a finite 3x3 matrix, got shape {ub.shape}", field="UB")
        det = float(np.linalg.det(ub))
        scale = float(np.prod(np.linalg.norm(ub, axis=0)))
        if scale == 0.0 or abs(det) <= 1e-9 * scale:
            raise DataError("UB is singular: a*, b*, c* are not independent", field="UB")
        if det < 0:
            raise DataError("a*, b*, c* form a left-handed basis (det UB < 0)", field="UB")
        cell = _cell_from_metric(np.linalg.inv(ub.T @ ub))
        B = np.array(cell.frac.mat, dtype=float).T
        U = ub @ np.linalg.inv(B)
        try:
            check_rotation(U, field="UB")
        except DataError as exc:
            raise DataError(f"UB does not factor as U B: {exc.message}", field="UB") from None
        return cls(cell, space_group, U)

    @classmethod
    def from_reciprocal_vectors(
        cls,
        astar: ArrayLike,
        bstar: ArrayLike,
        cstar: ArrayLike,
        space_group: SpaceGroupLike = "P 1",
    ) -> Crystal:
        """Crystal from lab-frame reciprocal basis vectors in 1/A (as in CrystFEL streams).

        CrystFEL writes ``astar``, ``bstar``, ``cstar`` in nm^-1: divide them by 10 first.
        """
        vectors = []
        for name, vec in (("astar", astar), ("bstar", bstar), ("cstar", cstar)):
            arr = np.asarray(vec, dtype=float)
            if arr.shape != (3,):
                raise DataError(f"{name} must be a 3-vector, got shape {arr.shape}", field=name)
            vectors.append(arr)
        return cls.from_ub(np.column_stack(vectors), space_group)

    # ------------------------------------------------------------------- properties

    @property
    def cell(self) -> gemmi.UnitCell:
        """The unit cell (a copy; A and degrees)."""
        return gemmi.UnitCell(*self._cell.parameters)

    @property
    def parameters(self) -> tuple[float, float, float, float, float, float]:
        """``(a, b, c, alpha, beta, gamma)`` in A and degrees."""
        a, b, c, alpha, beta, gamma = self._cell.parameters
        return (a, b, c, alpha, beta, gamma)

    @property
    def space_group(self) -> gemmi.SpaceGroup:
        """The space group (gemmi's table entry)."""
        return self._sg

    @property
    def group_ops(self) -> gemmi.GroupOps:
        """Symmetry operations of the space group."""
        return self._ops

    @property
    def U(self) -> np.ndarray:
        """Orientation matrix (3, 3): crystal Cartesian frame to lab frame (read-only)."""
        return self._U

    @property
    def B(self) -> np.ndarray:
        """Columns a*, b*, c* in the crystal Cartesian frame, 1/A (``cell.frac.mat^T``)."""
        return self._B

    @property
    def UB(self) -> np.ndarray:
        """``U @ B``: columns a*, b*, c* in the lab frame, 1/A; ``q = UB @ h``."""
        return self._UB

    @property
    def reciprocal_vectors(self) -> np.ndarray:
        """Lab-frame reciprocal basis as **rows** ``[a*, b*, c*]`` (1/A), i.e. ``UB.T``."""
        return _frozen(self._UB.T)

    @property
    def real_space_vectors(self) -> np.ndarray:
        """Lab-frame real-space basis as **rows** ``[a, b, c]`` (A).

        ``real_space_vectors @ reciprocal_vectors.T`` is the identity (no 2 pi).
        """
        orth = np.array(self._cell.orth.mat, dtype=float)  # columns a, b, c
        return _frozen((self._U @ orth).T)

    @property
    def volume(self) -> float:
        """Unit-cell volume in A^3."""
        return float(self._cell.volume)

    @property
    def point_group(self) -> str:
        """Hermann-Mauguin symbol of the point group, e.g. ``"422"``."""
        return str(self._sg.point_group_hm())

    @property
    def laue_group(self) -> str:
        """Hermann-Mauguin symbol of the Laue class, e.g. ``"4/mmm"``."""
        return str(self._sg.laue_str())

    @property
    def crystal_system(self) -> str:
        """gemmi's crystal system: triclinic .. cubic, with ``trigonal``."""
        return str(self._sg.crystal_system_str())

    @property
    def lattice_type(self) -> str:
        """CrystFEL lattice type (see :func:`crystfel_lattice`)."""
        return crystfel_lattice(self._sg)[0]

    @property
    def centring(self) -> str:
        """CrystFEL centring letter: P, A, B, C, I, F, R or H."""
        return crystfel_lattice(self._sg)[1]

    @property
    def unique_axis(self) -> str:
        """CrystFEL unique axis: ``a``, ``b``, ``c`` or ``*`` for none."""
        return crystfel_lattice(self._sg)[2]

    def is_cell_compatible(self, eps: float = 1e-3) -> bool:
        """Whether the cell obeys the space group's metric constraints (gemmi, ``eps``)."""
        return bool(self._cell.is_compatible_with_spacegroup(self._sg, eps))

    # ------------------------------------------------------------------ orientation

    def with_orientation(self, U: ArrayLike) -> Crystal:
        """The same crystal with orientation ``U`` (a proper rotation)."""
        return Crystal(self._cell, self._sg, U)

    def rotated(self, axis: ArrayLike, angle_deg: float) -> Crystal:
        """The crystal turned by ``angle_deg`` (right-handed) about a lab-frame ``axis``.

        The new orientation is ``R(axis, angle) @ U``.
        """
        return self.with_orientation(rotation_matrix(axis, angle_deg) @ self._U)

    def with_random_orientation(self, rng: np.random.Generator | int | None = None) -> Crystal:
        """The same crystal in a uniformly random (Haar) orientation."""
        return self.with_orientation(random_rotation(as_generator(rng)))

    # ---------------------------------------------------------------- reciprocal space

    def q_lab(self, hkl: ArrayLike) -> np.ndarray:
        """Scattering vectors ``UB @ h`` in the lab frame (1/A).

        Parameters
        ----------
        hkl : array_like, shape (3,) or (N, 3)
            Miller indices (fractional indices are allowed).

        Returns
        -------
        numpy.ndarray, shape (3,) or (N, 3)
        """
        arr, single = _as_vectors(hkl)
        q = arr @ self._UB.T
        return q[0] if single else q

    def excitation_error(self, hkl: ArrayLike, wavelength: float) -> np.ndarray:
        """Signed distance of reciprocal-lattice points from the Ewald sphere (1/A).

        ``s = 1/lambda - |q + k0|`` with ``q = UB @ h`` and ``k0 = (0, 0, 1/lambda)``:
        positive inside the sphere, zero on it.  Evaluated in the cancellation-free form
        ``s = -(|q|^2 + 2 q . k0) / (1/lambda + |q + k0|)``.

        Parameters
        ----------
        hkl : array_like, shape (3,) or (N, 3)
            Miller indices.
        wavelength : float
            Wavelength in A.

        Returns
        -------
        numpy.ndarray, shape () or (N,)
        """
        lam = float(wavelength)
        if not (math.isfinite(lam) and lam > 0):
            raise DataError(f"wavelength must be positive, got {wavelength} A", field="wavelength")
        arr, single = _as_vectors(hkl)
        q = arr @ self._UB.T
        k = 1.0 / lam
        k_out = np.linalg.norm(q + np.array([0.0, 0.0, k]), axis=1)
        s = -(np.einsum("ij,ij->i", q, q) + 2.0 * k * q[:, 2]) / (k + k_out)
        return s[0] if single else s

    def d_spacing(self, hkl: ArrayLike) -> np.ndarray:
        """Resolution ``d`` in A of Miller indices, shape () or (N,) (gemmi)."""
        arr, single = _as_miller(hkl)
        d = np.asarray(self._cell.calculate_d_array(arr), dtype=float)
        return d[0] if single else d

    def is_absent(self, hkl: ArrayLike) -> np.ndarray:
        """Systematic absence flags (centring and screw/glide conditions), gemmi."""
        arr, single = _as_miller(hkl)
        flags = np.asarray(self._ops.systematic_absences(arr), dtype=bool)
        return flags[0] if single else flags

    def is_centric(self, hkl: ArrayLike) -> np.ndarray:
        """Centric flags of Miller indices, gemmi."""
        arr, single = _as_miller(hkl)
        flags = np.asarray(self._ops.centric_flag_array(arr), dtype=bool)
        return flags[0] if single else flags

    def epsilon(self, hkl: ArrayLike) -> np.ndarray:
        """Statistical weight epsilon of Miller indices, without centring (as in CCP4)."""
        arr, single = _as_miller(hkl)
        eps = np.asarray(self._ops.epsilon_factor_without_centering_array(arr), dtype=np.int32)
        return eps[0] if single else eps

    def to_asu(self, hkl: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Map Miller indices into gemmi's reciprocal asymmetric unit, vectorised.

        Friedel mates map to the same representative (the Laue-group ASU); the parity
        of ``isym`` tells them apart (odd: I(+), even: I(-)).

        Parameters
        ----------
        hkl : array_like, shape (N, 3) or (3,)
            Miller indices.

        Returns
        -------
        hkl_asu : numpy.ndarray of int32, shape (N, 3) or (3,)
            Representative in the asymmetric unit.
        isym : numpy.ndarray of int32, shape (N,) or ()
            gemmi/MTZ symmetry-operator number (see the module docstring).
        """
        arr, single = _as_miller(hkl)
        asu = self._asu_representatives(arr)
        isym = _isym(arr, asu, self._ops)
        return (asu[0], isym[0]) if single else (asu, isym)

    def enumerate_reflections(
        self,
        d_min: float,
        d_max: float = math.inf,
        *,
        unique: bool = False,
        include_absent: bool = False,
        anomalous: bool = False,
    ) -> pd.DataFrame:
        """All reflections with ``d_min <= d < d_max`` (A), as gemmi counts them.

        Parameters
        ----------
        d_min : float
            High-resolution limit in A (inclusive).
        d_max : float
            Low-resolution limit in A (exclusive, as in gemmi); infinite by default.
            ``(0, 0, 0)`` is never listed.
        unique : bool
            Only one reflection per asymmetric-unit class: the representative itself.
        include_absent : bool
            Also list systematically absent reflections (flagged in ``absent``).
        anomalous : bool
            With ``unique=True``: keep Friedel mates apart, i.e. list the representative
            and, for acentric reflections, its Friedel mate ``-hkl_asu`` (``isym`` 2).
            Without it Friedel mates are merged (one per Laue-group ASU).  Ignored when
            ``unique=False``.

        Returns
        -------
        pandas.DataFrame
            Columns :data:`REFLECTION_COLUMNS`: ``h, k, l`` (int32), ``d`` (A), ``s = 1/d``
            (1/A), ``absent``, ``centric``, ``epsilon`` (without centring), the
            representative ``h_asu, k_asu, l_asu`` and ``isym``.  Rows are in ``h, k, l``
            order (``l`` fastest), as gemmi's ``make_miller_array``.

        Raises
        ------
        DataError
            If the limits are invalid or the enumeration would be too large.
        """
        hkl = self._hkl_in_shell(d_min, d_max)
        absent = np.asarray(self._ops.systematic_absences(hkl), dtype=bool)
        if not include_absent:
            hkl, absent = hkl[~absent], absent[~absent]
        asu = self._asu_representatives(hkl)
        if unique:
            keep = np.all(hkl == asu, axis=1)
            if anomalous:
                minus = np.all(hkl == -asu, axis=1)
                minus[minus] &= ~np.asarray(self._ops.centric_flag_array(hkl[minus]), dtype=bool)
                keep |= minus
            hkl, asu, absent = hkl[keep], asu[keep], absent[keep]
        return self._reflection_table(hkl, asu, absent)

    def _asu_representatives(self, hkl: np.ndarray) -> np.ndarray:
        """ASU representatives of int32 (N, 3) indices (gemmi's C++ loop, order kept)."""
        data = gemmi.IntAsuData(self._cell, self._sg, hkl, np.zeros(len(hkl), np.int32))
        data.ensure_asu()
        return np.ascontiguousarray(np.asarray(data.miller_array), dtype=np.int32)

    def _reflection_table(
        self, hkl: np.ndarray, asu: np.ndarray, absent: np.ndarray
    ) -> pd.DataFrame:
        d = np.asarray(self._cell.calculate_d_array(hkl), dtype=float)
        columns: dict[str, Any] = {
            "h": hkl[:, 0],
            "k": hkl[:, 1],
            "l": hkl[:, 2],
            "d": d,
            "s": 1.0 / d,
            "absent": absent,
            "centric": self._ops.centric_flag_array(hkl),
            "epsilon": self._ops.epsilon_factor_without_centering_array(hkl),
            "h_asu": asu[:, 0],
            "k_asu": asu[:, 1],
            "l_asu": asu[:, 2],
            "isym": _isym(hkl, asu, self._ops),
        }
        return pd.DataFrame(
            {name: np.asarray(columns[name], dtype=t) for name, t in REFLECTION_COLUMNS.items()}
        )

    def _hkl_in_shell(self, d_min: float, d_max: float) -> np.ndarray:
        """int32 (N, 3) indices with ``1/d_max^2 < 1/d^2 <= 1/d_min^2`` (gemmi's test)."""
        d_min, d_max = _check_limits(d_min, d_max)
        estimate = 4.0 / 3.0 * math.pi * self.volume / d_min**3
        if estimate > _MAX_REFLECTIONS:
            raise DataError(
                f"about {estimate:.3g} reflections to {d_min} A: too many to enumerate",
                field="d_min",
            )
        inv_max = 1.0 / d_min**2
        inv_min = 0.0 if math.isinf(d_max) else 1.0 / d_max**2
        lim = self._cell.get_hkl_limits(d_min)
        k, l = np.meshgrid(  # noqa: E741
            np.arange(-lim[1], lim[1] + 1), np.arange(-lim[2], lim[2] + 1), indexing="ij"
        )
        kl = np.column_stack([k.ravel(), l.ravel()]).astype(np.int32)
        step = max(1, _GRID_CHUNK // len(kl))
        parts = []
        for h0 in range(-lim[0], lim[0] + 1, step):
            h = np.arange(h0, min(h0 + step, lim[0] + 1), dtype=np.int32)
            grid = np.column_stack([np.repeat(h, len(kl)), np.tile(kl, (len(h), 1))])
            grid = np.ascontiguousarray(grid, dtype=np.int32)
            inv_d2 = np.asarray(self._cell.calculate_1_d2_array(grid))
            parts.append(grid[(inv_d2 <= inv_max) & (inv_d2 > inv_min)])
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.int32)

    # -------------------------------------------------------------------- protocol

    def __getstate__(self) -> dict[str, Any]:
        return {
            "parameters": tuple(self._cell.parameters),
            "space_group": self._sg.xhm(),
            "U": self._U.tolist(),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        cell = make_cell(*state["parameters"])
        self._setup(cell, resolve_space_group(state["space_group"]), state["U"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Crystal):
            return NotImplemented
        return (
            self._cell.parameters == other._cell.parameters
            and self._sg.hall == other._sg.hall
            and bool(np.array_equal(self._U, other._U))
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        a, b, c, alpha, beta, gamma = self.parameters
        return (
            f"Crystal(a={a:g}, b={b:g}, c={c:g}, alpha={alpha:g}, beta={beta:g}, "
            f"gamma={gamma:g}, space_group={self._sg.xhm()!r})"
        )


def _check_limits(d_min: float, d_max: float) -> tuple[float, float]:
    try:
        lo, hi = float(d_min), float(d_max)
    except (TypeError, ValueError):
        raise DataError(f"resolution limits must be numbers: {d_min!r}, {d_max!r}") from None
    if not (math.isfinite(lo) and lo > 0):
        raise DataError(f"d_min must be a positive number of A, got {d_min}", field="d_min")
    if not hi > lo:
        raise DataError(f"d_max ({d_max} A) must exceed d_min ({d_min} A)", field="d_max")
    return lo, hi


def _cell_from_metric(metric: np.ndarray) -> gemmi.UnitCell:
    """Cell parameters (A, degrees) from the real-space metric tensor ``G``."""
    lengths = np.sqrt(np.diag(metric))
    a, b, c = (float(x) for x in lengths)

    def angle(i: int, j: int) -> float:
        cos = metric[i, j] / (lengths[i] * lengths[j])
        return math.degrees(math.acos(min(1.0, max(-1.0, float(cos)))))

    return make_cell(a, b, c, angle(1, 2), angle(0, 2), angle(0, 1))


def _isym(hkl: np.ndarray, asu: np.ndarray, ops: gemmi.GroupOps) -> np.ndarray:
    """gemmi's isym for each ``hkl`` given its representative ``asu``, vectorised.

    Reproduces ``ReciprocalAsu.to_asu``: the first operator ``k`` (in ``ops.sym_ops``
    order) that takes ``hkl`` into the ASU gives ``2k+1``, its Friedel inverse ``2k+2``.
    The ASU holds exactly one member of each class, so "lands in the ASU" equals "lands
    on ``asu``".  Indices are compared through the injective integer key
    ``x . (M^2, M, 1)``; gemmi applies an operator to ``h`` as ``h^T R``, so the key of
    an image is ``h . (R w)``.
    """
    n = len(hkl)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    m = 2 * int(np.max(np.abs(hkl))) + 3
    weights = np.array([m * m, m, 1], dtype=np.int64)
    rot_keys = np.stack(
        [(np.array(op.rot, dtype=np.int64) // op.DEN) @ weights for op in ops.sym_ops], axis=1
    )  # (3, nops)
    isym = np.empty(n, dtype=np.int32)
    step = max(1, 20_000_000 // (2 * rot_keys.shape[1]))
    for start in range(0, n, step):
        stop = min(n, start + step)
        keys = hkl[start:stop].astype(np.int64) @ rot_keys  # (chunk, nops)
        target = (asu[start:stop].astype(np.int64) @ weights)[:, None]
        hits = np.stack([keys == target, keys == -target], axis=2).reshape(len(keys), -1)
        first = np.argmax(hits, axis=1)
        if not np.all(hits[np.arange(len(keys)), first]):  # pragma: no cover - gemmi bug
            raise RuntimeError("a symmetry operator failed to map hkl to its ASU representative")
        isym[start:stop] = first + 1
    return isym
