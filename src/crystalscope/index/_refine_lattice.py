"""Lattice models for cell refinement: free parameters, centring and predicted lines.

A :class:`LatticeModel` says which of the six cell parameters a Bravais lattice (or a
space group) leaves free, how the others follow from them (``b = a`` in a tetragonal
cell, ``gamma = 120`` deg in a hexagonal one ...), which reflections the centring (and,
for a space group, the screw axes and glide planes) extinguishes, and where the lines
of the virtual powder pattern and of the pair-distance histogram lie for a cell:

* powder lines: ``|q| = 1/d = sqrt(h^T G* h)`` of the allowed reflections ``h``;
* pair lines: the lengths of all lattice vectors of the reciprocal lattice, which
  obey only the centring conditions (the difference of two allowed reflections is any
  vector of the centred lattice, screw-axis and glide absences do not survive it).

``G*`` is the reciprocal metric tensor, the inverse of the real-space metric ``G``
(``G_ij = a_i . a_j``).  Lines are grouped by their metric form, so that reflections
whose ``1/d`` coincide for every cell of the lattice (symmetry equivalents and
accidental coincidences such as ``(5 0 0)`` and ``(3 4 0)`` in a tetragonal cell) are
one line with a multiplicity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gemmi
import numpy as np

from crystalscope.errors import ConfigError, CrystalscopeError

__all__ = ["BRAVAIS_SYMBOLS", "LatticeModel", "lattice_model"]

BRAVAIS_SYMBOLS = (
    "aP",
    "mP",
    "mC",
    "oP",
    "oC",
    "oI",
    "oF",
    "tP",
    "tI",
    "hP",
    "hR",
    "cP",
    "cI",
    "cF",
)

PARAMETER_NAMES = ("a", "b", "c", "alpha", "beta", "gamma")

_CENTRING: dict[str, tuple[tuple[float, float, float], ...]] = {
    "P": (),
    "A": ((0.0, 0.5, 0.5),),
    "B": ((0.5, 0.0, 0.5),),
    "C": ((0.5, 0.5, 0.0),),
    "I": ((0.5, 0.5, 0.5),),
    "F": ((0.0, 0.5, 0.5), (0.5, 0.0, 0.5), (0.5, 0.5, 0.0)),
    "R": ((2 / 3, 1 / 3, 1 / 3), (1 / 3, 2 / 3, 2 / 3)),  # obverse, hexagonal axes
}

# Each of a, b, c, alpha, beta, gamma is a free parameter (int: its index) or fixed
# (float: the value in degrees).  The free parameters are listed in ``names``.
_Tie = int | float
Params = Sequence[float] | np.ndarray  # free cell parameters
_SYSTEMS: dict[str, tuple[tuple[str, ...], tuple[_Tie, ...]]] = {
    "triclinic": (("a", "b", "c", "alpha", "beta", "gamma"), (0, 1, 2, 3, 4, 5)),
    "monoclinic-a": (("a", "b", "c", "alpha"), (0, 1, 2, 3, 90.0, 90.0)),
    "monoclinic-b": (("a", "b", "c", "beta"), (0, 1, 2, 90.0, 3, 90.0)),
    "monoclinic-c": (("a", "b", "c", "gamma"), (0, 1, 2, 90.0, 90.0, 3)),
    "orthorhombic": (("a", "b", "c"), (0, 1, 2, 90.0, 90.0, 90.0)),
    "tetragonal": (("a", "c"), (0, 0, 1, 90.0, 90.0, 90.0)),
    "hexagonal": (("a", "c"), (0, 0, 1, 90.0, 90.0, 120.0)),
    "rhombohedral": (("a", "alpha"), (0, 0, 0, 1, 1, 1)),
    "cubic": (("a",), (0, 0, 0, 90.0, 90.0, 90.0)),
}
_BRAVAIS_SYSTEM = {
    "a": "triclinic", "m": "monoclinic", "o": "orthorhombic", "t": "tetragonal",
    "h": "hexagonal", "c": "cubic",
}  # fmt: skip
_MONOCLINIC_C_CENTRING = {"a": "B", "b": "C", "c": "A"}  # mC with unique axis a, b, c


@dataclass(frozen=True)
class LatticeModel:
    """Constraints and extinctions of one lattice (see the module docstring).

    Attributes
    ----------
    bravais : str
        Bravais symbol, e.g. ``"tP"``.
    system : str
        Key of the constraint pattern (``"tetragonal"``, ``"monoclinic-b"`` ...).
    names : tuple of str
        Names of the free parameters, e.g. ``("a", "c")``.
    ties : tuple
        For each of a, b, c, alpha, beta, gamma: index of its free parameter or a fixed
        value in degrees.
    centring : tuple of (3,) tuples
        Centring translations (fractions of the cell edges).
    space_group : gemmi.SpaceGroup or None
        Space group whose absences apply to the powder lines, if one was given.
    """

    bravais: str
    system: str
    names: tuple[str, ...]
    ties: tuple[_Tie, ...]
    centring: tuple[tuple[float, float, float], ...]
    space_group: gemmi.SpaceGroup | None = None

    @property
    def n_free(self) -> int:
        """Number of free cell parameters."""
        return len(self.names)

    def params(self, cell: Sequence[float]) -> np.ndarray:
        """Free parameters of a 6-parameter cell (A, degrees), averaging tied ones."""
        sums = np.zeros(self.n_free)
        counts = np.zeros(self.n_free)
        for value, tie in zip(cell, self.ties, strict=True):
            if isinstance(tie, int):
                sums[tie] += value
                counts[tie] += 1
        return sums / counts

    def expand(self, params: Params) -> tuple[float, ...]:
        """The six cell parameters ``(a, b, c, alpha, beta, gamma)`` from free ones."""
        return tuple(float(params[t]) if isinstance(t, int) else float(t) for t in self.ties)

    def expand_sigmas(self, sigmas: Params) -> tuple[float, ...]:
        """Standard errors of the six cell parameters (0 for fixed ones)."""
        return tuple(float(sigmas[t]) if isinstance(t, int) else 0.0 for t in self.ties)

    def check_cell(
        self,
        cell: Sequence[float],
        *,
        rel_tol: float = 0.01,
        deg_tol: float = 1.0,
        field: str = "start",
    ) -> None:
        """Raise :class:`ConfigError` if ``cell`` violates the lattice's metric constraints.

        Tied lengths may differ by ``rel_tol`` (relative), tied or fixed angles by
        ``deg_tol`` degrees; :meth:`params` averages such small differences away.
        """
        values = [float(v) for v in cell]
        params = self.params(values)
        for i, (value, tie) in enumerate(zip(values, self.ties, strict=True)):
            target = params[tie] if isinstance(tie, int) else tie
            bad = abs(value - target) > (rel_tol * target if i < 3 else deg_tol)
            if bad:
                raise ConfigError(
                    f"cell {_format_cell(values)} is not a {self.bravais} cell "
                    f"({PARAMETER_NAMES[i]} should be {target:g}); give the cell in the "
                    "conventional setting of the lattice",
                    field=field,
                )

    def reciprocal_metric(self, params: Params) -> np.ndarray | None:
        """``G*`` (1/A^2) for free parameters, or None if they do not form a cell."""
        a, b, c, al, be, ga = self.expand(params)
        if min(a, b, c) <= 0:
            return None
        ca, cb, cg = (math.cos(math.radians(x)) for x in (al, be, ga))
        metric = np.array(
            [
                [a * a, a * b * cg, a * c * cb],
                [a * b * cg, b * b, b * c * ca],
                [a * c * cb, b * c * ca, c * c],
            ]
        )
        det = 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg
        if not det > 1e-6:
            return None
        return np.linalg.inv(metric)

    def one_over_d(self, params: Params, hkl: np.ndarray) -> np.ndarray:
        """``1/d = sqrt(h^T G* h)`` (1/A) of integer ``hkl`` (N, 3); NaN for no cell."""
        gstar = self.reciprocal_metric(params)
        if gstar is None:
            return np.full(len(hkl), np.nan)
        h = hkl.astype(float)
        return np.sqrt(np.maximum(np.sum((h @ gstar) * h, axis=1), 0.0))

    def centring_allowed(self, hkl: np.ndarray) -> np.ndarray:
        """Flags of the reflections (lattice vectors) the centring allows."""
        ok = np.ones(len(hkl), dtype=bool)
        for t in self.centring:
            phase = hkl.astype(float) @ np.asarray(t)
            ok &= np.abs(phase - np.round(phase)) < 1e-6
        return ok

    def lines(self, params: Params, s_max: float, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """Grouped predicted lines up to ``s_max`` (1/A) for the cell ``params``.

        Parameters
        ----------
        params : sequence of float
            Free parameters.
        s_max : float
            Largest ``1/d`` (1/A).
        kind : {"powder", "pairs"}
            Reflections (centring and space-group absences removed) or lattice vectors
            (centring absences only).

        Returns
        -------
        hkl : numpy.ndarray of int, shape (n, 3)
            One representative per line, sorted by ``1/d``.
        multiplicity : numpy.ndarray of int, shape (n,)
            Number of ``hkl`` (Friedel mates counted) on each line.
        """
        hkl = self._hkl_within(params, s_max)
        keep = self.centring_allowed(hkl)
        if kind == "powder" and self.space_group is not None and len(hkl):
            ops = self.space_group.operations()
            keep &= ~np.asarray(ops.systematic_absences(hkl.astype(np.int32)), dtype=bool)
        hkl = hkl[keep]
        if not len(hkl):
            return np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
        return self._group(params, hkl)

    def _hkl_within(self, params: Params, s_max: float) -> np.ndarray:
        gstar = self.reciprocal_metric(params)
        if gstar is None:
            raise ConfigError(
                f"cell {_format_cell(self.expand(params))} is not valid", field="start"
            )
        # |h_i| <= s_max * |a_i| bounds every index (|a_i| = sqrt(G_ii), G = inv(G*))
        lim = np.floor(s_max * np.sqrt(np.diag(np.linalg.inv(gstar))) + 1e-9).astype(int)
        if np.prod(2 * lim + 1) > 4e7:
            raise ConfigError(
                f"too many reflections to 1/d = {s_max:g} 1/A for this cell; lower the largest 1/d",
                field="max_one_over_d",
            )
        grids = np.meshgrid(*(np.arange(-m, m + 1) for m in lim), indexing="ij")
        hkl = np.stack([g.ravel() for g in grids], axis=1)
        h = hkl.astype(float)
        s2 = np.sum((h @ gstar) * h, axis=1)
        return hkl[(s2 <= s_max * s_max) & (s2 > 0)]

    def _group(self, params: Params, hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Merge reflections whose ``1/d`` agree at the cell and at a perturbed cell."""
        rng = np.random.default_rng(12345)
        p = np.asarray(params, dtype=float)
        other = p * (1.0 + rng.uniform(0.01, 0.03, p.size))
        s1 = self.one_over_d(p, hkl)
        s2 = self.one_over_d(other, hkl)
        if not np.all(np.isfinite(s2)):
            s2 = s1
        # one int64 key (1e-8 1/A steps of both 1/d, each < 2^32): a 1-D unique is ~5x
        # faster than np.unique(axis=0) and groups (and orders) the same way
        k1 = np.round(s1 * 1e8).astype(np.int64)
        k2 = np.round(s2 * 1e8).astype(np.int64)
        if k1.max(initial=0) >= 2**31 or k2.max(initial=0) >= 2**32:
            raise ConfigError(
                "1/d beyond 21 1/A: not a diffraction pattern", field="max_one_over_d"
            )
        _, first, counts = np.unique((k1 << 32) | k2, return_index=True, return_counts=True)
        order = np.argsort(s1[first], kind="stable")
        return hkl[first][order], counts[order]


def _format_cell(cell: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in cell) + ")"


def _unique_axis_of(cell: Sequence[float]) -> str:
    """Monoclinic unique axis: the one whose angle is furthest from 90 deg (b if none is).

    The other two angles must be within 1 degree of 90.
    """
    off = np.abs(np.asarray(cell[3:], dtype=float) - 90.0)
    if off.max() < 1e-3:
        return "b"
    axis = int(np.argmax(off))
    if np.sum(off > 1.0) > 1:
        raise ConfigError(
            f"cell {_format_cell(cell)} has more than one angle != 90 deg: not monoclinic",
            field="start",
        )
    return "abc"[axis]


def _from_bravais(symbol: str, cell: Sequence[float]) -> LatticeModel:
    family, letter = symbol[0], symbol[1]
    if symbol == "hR":
        hexagonal_axes = abs(float(cell[5]) - 120.0) < 5.0
        if hexagonal_axes:
            return LatticeModel("hR", "hexagonal", *_SYSTEMS["hexagonal"], _CENTRING["R"])
        return LatticeModel("hR", "rhombohedral", *_SYSTEMS["rhombohedral"], ())
    system = _BRAVAIS_SYSTEM[family]
    if system == "monoclinic":
        axis = _unique_axis_of(cell)
        system = f"monoclinic-{axis}"
        letter = _MONOCLINIC_C_CENTRING[axis] if letter == "C" else "P"
    return LatticeModel(symbol, system, *_SYSTEMS[system], _CENTRING[letter])


def _bravais_of(sg: gemmi.SpaceGroup) -> tuple[str, str]:
    """``(bravais symbol, constraint system)`` of a space group in its setting."""
    system = str(sg.crystal_system_str())
    centring = str(sg.centring_type())
    if system == "trigonal":
        if sg.ext == "R":
            return "hR", "rhombohedral"
        return ("hR" if centring == "R" else "hP"), "hexagonal"
    if system == "monoclinic":
        letter = "P" if centring == "P" else "C"
        return "m" + letter, f"monoclinic-{sg.monoclinic_unique_axis()}"
    family = {
        "triclinic": "a",
        "orthorhombic": "o",
        "tetragonal": "t",
        "hexagonal": "h",
        "cubic": "c",
    }
    letter = "C" if system == "orthorhombic" and centring in "ABC" else centring
    return family[system] + letter, system


def _from_space_group(sg: gemmi.SpaceGroup) -> LatticeModel:
    bravais, system = _bravais_of(sg)
    den = float(gemmi.Op.DEN)
    centring = tuple(
        (x / den, y / den, z / den) for x, y, z in sg.operations().cen_ops if (x, y, z) != (0, 0, 0)
    )
    return LatticeModel(bravais, system, *_SYSTEMS[system], centring, sg)


def lattice_model(lattice: Any, cell: Sequence[float], *, field: str = "start") -> LatticeModel:
    """The :class:`LatticeModel` of a Bravais symbol or space group, for a start cell.

    Parameters
    ----------
    lattice : str or int or gemmi.SpaceGroup
        One of :data:`BRAVAIS_SYMBOLS`, or a space group (name, number, gemmi object).
    cell : sequence of 6 float
        Start cell (A, degrees); picks the monoclinic unique axis and the hR setting for
        Bravais symbols, and is checked against the constraints.

    field : str
        Name of the cell in error messages.

    Raises
    ------
    ConfigError
        Unknown lattice, or a cell that does not obey the lattice's constraints.
    """
    if isinstance(lattice, str) and lattice.strip() in BRAVAIS_SYMBOLS:
        model = _from_bravais(lattice.strip(), cell)
    else:
        from crystalscope.model.crystal import resolve_space_group

        try:
            sg = resolve_space_group(lattice)
        except CrystalscopeError:
            raise ConfigError(
                f"unknown lattice {lattice!r}: give a Bravais symbol "
                f"({' '.join(BRAVAIS_SYMBOLS)}) or a space group",
                field="lattice",
            ) from None
        model = _from_space_group(sg)
    model.check_cell(cell, field=field)
    return model
