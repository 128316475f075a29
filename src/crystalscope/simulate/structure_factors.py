"""Structure factors for the simulators: |F|^2 for every P1 reflection to a resolution limit.

Sources (:func:`load_structure_factors`, chosen by :class:`~.config.SourceConfig`):

* ``builtin:NAME``: structures shipped with the package (:func:`builtin_structures`):
  silicon, NaCl, rutile, corundum (small-molecule CIFs in ``crystalscope/data/structures``)
  and random-atom models built at run time (:func:`random_atom_structure`):
  ``lysozyme-like`` (protein, tP), ``monoclinic-organic`` (small molecule, mP) and
  ``p63-protein`` (protein with a merohedral indexing ambiguity).
* a structure file: PDB (``.pdb``, ``.ent``), mmCIF or small-molecule CIF (``.cif``,
  ``.mmcif``), optionally gzipped, read with gemmi.
* a merged MTZ file of measured intensities (``source.mtz``), expanded to P1.

Structure factors of a structure are computed by exact direct summation over all atoms of
the unit cell,

.. math::

    F(\\mathbf{h}) = \\sum_j f_j(s)\\, o_j\\, \\exp\\!\\left(-\\frac{B_j s^2}{4}\\right)
    \\exp\\left(2 \\pi i\\, \\mathbf{h} \\cdot \\mathbf{x}_j\\right), \\qquad s = 1/d,

with neutral-atom form factors ``f_j``: X-ray IT92 (International Tables Vol. C,
Table 6.1.1.4; ``F`` in electrons) or electron (Table 4.3.2.2, Peng et al. 1996;
non-relativistic, ``F`` in A: the relativistic factor ``gamma`` belongs to the
scattering strength, see :mod:`~crystalscope.simulate.kinematics`).  ``B_j`` is the atom's
own isotropic B (A^2).  |F| is computed once per reciprocal asymmetric unit (Laue class:
no anomalous scattering, so Friedel's law holds) and expanded to the full sphere with the
:class:`~crystalscope.model.crystal.Crystal` mapping ``to_asu``.  Systematically absent
reflections are not in the table; reflections forbidden only by special positions (e.g.
silicon 222) are, with ``F = 0``.

An extra overall B factor (``source.b_factor``) multiplies ``F`` by ``exp(-B s^2 / 4)``
and ``F2`` by ``exp(-B s^2 / 2)`` (:meth:`StructureFactors.with_b_factor`).

Measured MTZ intensities have no absolute scale: ``F2 = I`` in the file's arbitrary units
(``absolute = False``), ``F = sqrt(F2)``; negative intensities are clipped to 0 (noted in
``notes``) and reflections missing from the file are missing from the table.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal, cast

import gemmi
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from crystalscope.errors import ConfigError, DataError, FormatError
from crystalscope.io.mtz import read_mtz
from crystalscope.model.crystal import Crystal
from crystalscope.simulate._sf_atoms import (
    RANDOM_ATOM_MODELS,
    AtomModel,
    lysozyme_like_structure,
    model_from_small_structure,
    model_from_structure,
    random_atom_structure,
    read_atom_model,
    sum_structure_factors,
)
from crystalscope.simulate.config import SourceConfig

__all__ = [
    "TABLE_COLUMNS",
    "StructureFactors",
    "builtin_structures",
    "clear_cache",
    "load_structure_factors",
    "lysozyme_like_structure",
    "random_atom_structure",
    "structure_factors_from_model",
]

Radiation = Literal["xray", "electron"]

#: Columns and dtypes of :attr:`StructureFactors.table`.
TABLE_COLUMNS: dict[str, str] = {
    "h": "int32",
    "k": "int32",
    "l": "int32",
    "d": "float64",
    "F": "float64",
    "F2": "float64",
}

_BUILTIN_FILES: dict[str, str] = {
    "silicon": "silicon.cif",
    "nacl": "nacl.cif",
    "rutile": "rutile.cif",
    "corundum": "corundum.cif",
}
_BUILTINS: dict[str, str] = {
    "lysozyme-like": (
        "random-atom protein model in the tetragonal lysozyme cell (P 43 21 2, a = 79.1, "
        "c = 37.9 A, 1001 C/N/O/S atoms per asymmetric unit, B = 20 A^2): Wilson "
        "statistics of a protein crystal, not the lysozyme structure"
    ),
    "monoclinic-organic": (
        "random-atom small-molecule model, P 1 21/c 1, a = 7.92, b = 10.61, c = 13.84 A, "
        "beta = 104.5 deg, 21 C/N/O atoms per asymmetric unit, B = 3 A^2"
    ),
    "p63-protein": (
        "random-atom protein model, P 63, a = 58.3, c = 71.6 A (merohedral indexing "
        "ambiguity k,h,-l), 950 C/N/O/S atoms per asymmetric unit, B = 25 A^2"
    ),
    "silicon": "Si, diamond structure, F d -3 m, a = 5.431 A, B = 0.46 A^2",
    "nacl": "NaCl, rock salt, F m -3 m, a = 5.640 A",
    "rutile": "TiO2 (rutile), P 42/m n m, a = 4.594 A, c = 2.959 A",
    "corundum": "alpha-Al2O3 (corundum), R -3 c (hexagonal axes), a = 4.761 A, c = 12.996 A",
}
_BOUNDARY = 1e-9  # relative margin so that whole symmetry orbits at d_min stay together
_CACHE_SIZE = 8
_cache: OrderedDict[tuple[object, ...], StructureFactors] = OrderedDict()
_cache_lock = threading.Lock()


class StructureFactors:
    """|F| and |F|^2 for every P1 reflection to ``d_min``.

    Attributes
    ----------
    cell : gemmi.UnitCell
        Unit cell of the source (A, degrees).
    space_group : gemmi.SpaceGroup
        Space group of the source.
    radiation : {"xray", "electron"}
        Form factors that gave ``F`` (X-ray: electrons; electron: A).  For MTZ sources the
        radiation the data were requested for.
    absolute : bool
        ``F`` on an absolute scale (computed from a structure); ``False`` for MTZ data.
    d_min : float
        Resolution limit of the table in A: the source's ``d_min``, or for an MTZ file
        the file's own high-resolution limit where that is lower in resolution.
    table : pandas.DataFrame
        Columns :data:`TABLE_COLUMNS`: ``h, k, l`` (int32), ``d`` (A), ``F`` and
        ``F2 = F^2``; both Friedel mates and all symmetry equivalents, no systematic
        absences, no ``(0, 0, 0)``.
    source : str
        Where the values come from (file or ``builtin:NAME``).
    notes : tuple of str
        Approximations and data edits (clipped negative intensities, ...).
    """

    def __init__(
        self,
        cell: gemmi.UnitCell,
        space_group: gemmi.SpaceGroup,
        radiation: Radiation,
        table: pd.DataFrame,
        *,
        d_min: float,
        absolute: bool = True,
        source: str = "",
        notes: Iterable[str] = (),
    ) -> None:
        missing = [c for c in TABLE_COLUMNS if c not in table.columns]
        if missing:
            raise DataError(f"structure-factor table lacks columns {missing}", field="table")
        self.cell = gemmi.UnitCell(*cell.parameters)
        self.space_group = space_group
        self.radiation: Radiation = _check_radiation(radiation)
        self.absolute = bool(absolute)
        self.d_min = float(d_min)
        self.table = pd.DataFrame(
            {c: np.asarray(table[c], dtype=t) for c, t in TABLE_COLUMNS.items()}
        )
        self.source = str(source)
        self.notes = tuple(notes)
        self._build_index()

    def _build_index(self) -> None:
        hkl = self.table[["h", "k", "l"]].to_numpy(dtype=np.int64)
        self._offset = int(np.max(np.abs(hkl))) + 1 if len(hkl) else 1
        keys = _pack(hkl, self._offset)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._sorted_f2 = self.table["F2"].to_numpy()[order]

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        kind = "absolute" if self.absolute else "relative"
        return (
            f"StructureFactors({len(self)} reflections to {self.d_min:g} A, "
            f"{self.space_group.xhm()}, {self.radiation}, {kind}, source={self.source!r})"
        )

    def lookup(self, hkl: ArrayLike) -> np.ndarray:
        """|F|^2 of Miller indices, 0.0 where a reflection is not in the table.

        Parameters
        ----------
        hkl : array_like of int, shape (N, 3) or (3,)

        Returns
        -------
        numpy.ndarray of float64, shape (N,) or ()
        """
        arr = np.asarray(hkl)
        single = arr.shape == (3,)
        arr = arr.reshape(1, 3) if single else arr
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise DataError(f"Miller indices must have shape (N, 3), got {arr.shape}", field="hkl")
        if arr.dtype.kind not in "iu":
            rounded = np.rint(arr.astype(float))
            if not np.all(rounded == arr):
                raise DataError("Miller indices must be integers", field="hkl")
            arr = rounded
        arr = arr.astype(np.int64)
        out = np.zeros(len(arr))
        inside = np.all(np.abs(arr) < self._offset, axis=1)
        if np.any(inside) and len(self._keys):
            keys = _pack(arr[inside], self._offset)
            pos = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
            found = self._keys[pos] == keys
            out[np.flatnonzero(inside)[found]] = self._sorted_f2[pos[found]]
        return out[0] if single else out

    def with_b_factor(self, b: float) -> StructureFactors:
        """A copy with an extra overall B factor ``b`` (A^2).

        ``F2`` is multiplied by ``exp(-b s^2 / 2)`` and ``F`` by ``exp(-b s^2 / 4)`` with
        ``s = 1/d``; a negative ``b`` sharpens.
        """
        b = float(b)
        if not math.isfinite(b):
            raise DataError(f"B factor must be finite, got {b}", field="b_factor")
        table = self.table.copy()
        if b != 0.0:
            s2 = 1.0 / table["d"].to_numpy() ** 2
            table["F"] = table["F"].to_numpy() * np.exp(-b * s2 / 4.0)
            table["F2"] = table["F2"].to_numpy() * np.exp(-b * s2 / 2.0)
        notes = (*self.notes, f"extra overall B = {b:g} A^2") if b else self.notes
        return StructureFactors(
            self.cell,
            self.space_group,
            self.radiation,
            table,
            d_min=self.d_min,
            absolute=self.absolute,
            source=self.source,
            notes=notes,
        )


# ------------------------------------------------------------------------- public API


def builtin_structures() -> dict[str, str]:
    """Built-in structures: name (use as ``builtin:NAME``) -> description."""
    return dict(_BUILTINS)


def clear_cache() -> None:
    """Forget the structure-factor tables computed so far (they are kept in memory)."""
    with _cache_lock:
        _cache.clear()


def load_structure_factors(source: SourceConfig, radiation: str) -> StructureFactors:
    """Structure factors of a configured source, to ``source.d_min``.

    Parameters
    ----------
    source : SourceConfig
        ``structure`` (``builtin:NAME`` or a file) or ``mtz`` (with optional
        ``mtz_labels``), ``form_factors`` (``auto`` follows ``radiation``), ``b_factor``
        (extra overall B, A^2) and ``d_min`` (A).
    radiation : {"xray", "electron"}
        The beam's radiation.

    Returns
    -------
    StructureFactors
        A fresh object (computed tables are cached in memory per source, form factors and
        ``d_min``; the cache is never handed out).

    Raises
    ------
    ConfigError
        Unknown built-in, both or neither of ``structure`` and ``mtz``, bad radiation, or a
        ``d_min`` that needs too many reflections.
    FormatError
        Missing or unreadable file, missing MTZ labels (naming the file and the field).
    """
    kind = _check_radiation(radiation)
    if source.form_factors != "auto":
        kind = cast(Radiation, source.form_factors)
    d_min = float(source.d_min)
    if source.mtz is not None:
        if source.structure is not None and "structure" in source.model_fields_set:
            raise ConfigError("give either a structure or an MTZ file, not both", field="mtz")
        path = Path(source.mtz)
        key: tuple[object, ...] = ("mtz", _digest(path), source.mtz_labels, d_min, kind)
        base = _cached(key, lambda: _from_mtz(path, source.mtz_labels, d_min, kind))
    elif source.structure is None:
        raise ConfigError("no source: give a structure (or builtin:NAME) or an MTZ file",
                          field="structure")  # fmt: skip
    elif source.structure.strip().lower().startswith("builtin:"):
        name = _builtin_name(source.structure)
        base = _cached(("builtin", name, kind, d_min), lambda: _from_builtin(name, kind, d_min))
    else:
        path = Path(source.structure).expanduser()
        key = ("file", _digest(path), path.name.lower(), kind, d_min)
        base = _cached(key, lambda: _from_file(path, kind, d_min))
    return base.with_b_factor(source.b_factor)


def structure_factors_from_model(model: AtomModel, kind: str, d_min: float) -> StructureFactors:
    """Structure factors of an :class:`~._sf_atoms.AtomModel` for all P1 reflections.

    |F| is summed directly for one reflection per Laue-class asymmetric unit and copied
    to all symmetry equivalents and Friedel mates.
    """
    kind = _check_radiation(kind)
    where = None if model.source.startswith("builtin:") else model.source
    crystal = _crystal(model.cell, model.space_group, where)
    hkl, asu = _p1_sphere(crystal, d_min, where)
    offset = int(np.max(np.abs(asu))) + 1 if len(asu) else 1
    _, first, inverse = np.unique(_pack(asu, offset), return_index=True, return_inverse=True)
    amplitude = np.abs(sum_structure_factors(model, asu[first], kind))[inverse]
    table = _table(hkl, crystal, amplitude)
    return StructureFactors(
        model.cell, model.space_group, kind, table, d_min=d_min, source=model.source,
        notes=model.notes,
    )  # fmt: skip


# ------------------------------------------------------------------------ the sources


def _from_builtin(name: str, kind: Radiation, d_min: float) -> StructureFactors:
    if name in RANDOM_ATOM_MODELS:
        structure = random_atom_structure(RANDOM_ATOM_MODELS[name])
        model = model_from_structure(structure, source=f"builtin:{name}")
        return structure_factors_from_model(model, kind, d_min)
    resource = importlib.resources.files("crystalscope") / "data" / "structures"
    text = (resource / _BUILTIN_FILES[name]).read_text(encoding="utf-8")
    small = gemmi.make_small_structure_from_block(gemmi.cif.read_string(text).sole_block())
    return structure_factors_from_model(
        model_from_small_structure(small, source=f"builtin:{name}"), kind, d_min
    )


def _from_file(path: Path, kind: Radiation, d_min: float) -> StructureFactors:
    return structure_factors_from_model(read_atom_model(path), kind, d_min)


def _from_mtz(
    path: Path, labels: tuple[str, str] | None, d_min: float, radiation: Radiation
) -> StructureFactors:
    data = read_mtz(path, intensity=labels)
    if not data.merged:
        raise FormatError("unmerged MTZ file: merge the intensities first", path=path,
                          field="M/ISYM")  # fmt: skip
    if "I" not in data.metadata.get("labels", {}):
        raise FormatError("no intensity column (type J); name it in source.mtz_labels",
                          path=path, field="I")  # fmt: skip
    if data.cell is None or data.space_group is None:  # pragma: no cover - read_mtz checks
        raise FormatError("MTZ file has no cell or space group", path=path, field="CELL")
    if not data.cell.is_compatible_with_spacegroup(data.space_group, 1e-3):
        raise FormatError(f"cell {tuple(data.cell.parameters)} does not obey the symmetry of "
                          f"{data.space_group.xhm()}", path=path, field="CELL")  # fmt: skip
    crystal = _crystal(data.cell, data.space_group, path)
    hkl = data.table[["h", "k", "l"]].to_numpy(dtype=np.int32)
    intensity = data.table["I"].to_numpy(dtype=float)
    label = data.metadata["labels"]["I"]
    representatives, values, notes = _mtz_unique(crystal, hkl, intensity, d_min, label)
    measured = np.isfinite(intensity)
    limit = max(d_min, _min_d(crystal, hkl[measured]))
    p1 = asu = np.zeros((0, 3), dtype=np.int32)
    if len(representatives):  # enumerate to the last class present, whole classes kept
        p1, asu = _p1_sphere(crystal, _min_d(crystal, representatives), path)
    index = _match(representatives, asu)
    found = index >= 0
    intensity_p1 = values[index[found]]
    table = _table(p1[found], crystal, np.sqrt(intensity_p1), intensity_p1)
    notes.append("intensities on the file's arbitrary scale: F2 = I (absolute = False)")
    return StructureFactors(
        data.cell, data.space_group, radiation, table, d_min=limit, absolute=False,
        source=str(path), notes=notes,
    )  # fmt: skip


def _mtz_unique(
    crystal: Crystal, hkl: np.ndarray, intensity: np.ndarray, d_min: float, label: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Sorted ASU representatives and mean intensities of the usable records."""
    notes: list[str] = []
    missing = ~np.isfinite(intensity)
    if np.any(missing):
        notes.append(f"{int(missing.sum())} reflections without {label} left out")
    absent = np.asarray(crystal.is_absent(hkl), dtype=bool) if len(hkl) else missing
    if np.any(absent & ~missing):
        notes.append(f"{int((absent & ~missing).sum())} systematically absent reflections left out")
    inv_d2 = np.asarray(crystal.cell.calculate_1_d2_array(hkl), dtype=float)
    keep = ~missing & ~absent & (inv_d2 <= 1.0 / d_min**2) & (inv_d2 > 0)
    hkl, intensity = hkl[keep], intensity[keep]
    negative = intensity < 0
    if np.any(negative):
        notes.append(f"{int(negative.sum())} negative intensities of {len(intensity)} "
                     "clipped to 0")  # fmt: skip
    intensity = np.clip(intensity, 0.0, None)
    asu = crystal.to_asu(hkl)[0] if len(hkl) else hkl.astype(np.int32)
    offset = int(np.max(np.abs(asu))) + 1 if len(asu) else 1
    unique_keys, first, inverse, counts = np.unique(
        _pack(asu, offset), return_index=True, return_inverse=True, return_counts=True
    )
    if np.any(counts > 1):
        notes.append(f"{int((counts > 1).sum())} reflections given more than once: averaged")
    mean = np.bincount(inverse, weights=intensity, minlength=len(unique_keys)) / np.maximum(
        counts, 1
    )
    return asu[first].astype(np.int64), mean, notes


# ---------------------------------------------------------------------------- helpers


def _p1_sphere(
    crystal: Crystal, d_min: float, where: str | os.PathLike[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    """All non-absent P1 reflections whose symmetry class lies within ``d_min``.

    Enumerates slightly beyond ``d_min`` and keeps a reflection when its asymmetric-unit
    representative satisfies ``1/d^2 <= 1/d_min^2``, so that rounding never splits a
    class of equivalents at the boundary.
    """
    try:
        refl = crystal.enumerate_reflections(d_min * (1.0 - _BOUNDARY))
    except DataError as exc:
        raise ConfigError(f"cannot enumerate reflections: {exc.message}", path=where,
                          field="d_min") from None  # fmt: skip
    hkl = refl[["h", "k", "l"]].to_numpy(dtype=np.int32)
    asu = refl[["h_asu", "k_asu", "l_asu"]].to_numpy(dtype=np.int32)
    inv_d2 = np.asarray(crystal.cell.calculate_1_d2_array(asu), dtype=float)
    keep = inv_d2 <= 1.0 / d_min**2
    return hkl[keep], asu[keep]


def _table(
    hkl: np.ndarray, crystal: Crystal, amplitude: np.ndarray, intensity: np.ndarray | None = None
) -> pd.DataFrame:
    """The table; ``F2 = intensity`` where given (exactly, for measured data), else ``F^2``."""
    d = np.asarray(crystal.cell.calculate_d_array(hkl.astype(np.int32)), dtype=float)
    return pd.DataFrame(
        {
            "h": hkl[:, 0].astype(np.int32),
            "k": hkl[:, 1].astype(np.int32),
            "l": hkl[:, 2].astype(np.int32),
            "d": d,
            "F": amplitude,
            "F2": amplitude**2 if intensity is None else intensity,
        }
    )


def _crystal(
    cell: gemmi.UnitCell, sg: gemmi.SpaceGroup, where: str | os.PathLike[str] | None
) -> Crystal:
    try:
        return Crystal(cell, sg)
    except DataError as exc:
        raise FormatError(exc.message, path=where, field=exc.field or "cell") from None


def _min_d(crystal: Crystal, hkl: np.ndarray) -> float:
    """Smallest d (A) of the indices; 0 when there are none (or only (0, 0, 0))."""
    inv_d2 = np.asarray(crystal.cell.calculate_1_d2_array(hkl.astype(np.int32)), dtype=float)
    biggest = float(np.max(inv_d2)) if len(inv_d2) else 0.0
    return 1.0 / math.sqrt(biggest) if biggest > 0 else 0.0


def _pack(hkl: np.ndarray, offset: int) -> np.ndarray:
    """Injective int64 key of Miller indices with ``|index| < offset``."""
    base = 2 * offset + 1
    h = np.asarray(hkl, dtype=np.int64) + offset
    return (h[:, 0] * base + h[:, 1]) * base + h[:, 2]


def _match(sorted_hkl: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Row of ``query`` in ``sorted_hkl`` (lexicographically sorted), -1 where absent."""
    if not len(sorted_hkl) or not len(query):
        return np.full(len(query), -1, dtype=np.int64)
    offset = max(int(np.max(np.abs(sorted_hkl))), int(np.max(np.abs(query)))) + 1
    keys, wanted = _pack(sorted_hkl, offset), _pack(query, offset)
    pos = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[pos] == wanted, pos, -1)


def _check_radiation(radiation: str) -> Radiation:
    if radiation not in ("xray", "electron"):
        raise ConfigError(f"radiation must be 'xray' or 'electron', got {radiation!r}",
                          field="radiation")  # fmt: skip
    return cast(Radiation, radiation)


def _builtin_name(structure: str) -> str:
    name = structure.strip().split(":", 1)[1].strip().lower()
    if name not in _BUILTINS:
        known = ", ".join(f"builtin:{n}" for n in _BUILTINS)
        raise ConfigError(f"unknown built-in structure {structure!r} (known: {known})",
                          field="source.structure")  # fmt: skip
    return name


def _digest(path: Path) -> str:
    """Content hash of a source file (the cache key: edits are always seen)."""
    if not path.is_file():
        raise FormatError("file not found", path=path)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise FormatError(f"cannot read file: {exc.strerror}", path=path) from None


def _cached(key: tuple[object, ...], compute: Callable[[], StructureFactors]) -> StructureFactors:
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = compute()
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value
