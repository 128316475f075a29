"""Atom models for the structure-factor calculation: reading, built-ins and the kernel.

An :class:`AtomModel` holds what the direct summation needs: the cell and space group,
the atoms of the asymmetric unit (element, occupancy, isotropic B in A^2) and the
fractional positions of all their images in the unit cell.  It is built from

* macromolecular files (PDB, mmCIF) read with :func:`gemmi.read_structure`: the first
  model, every image of every atom under all operations of the space group (PDB
  convention: the occupancy of an atom on a special position already carries the
  site-symmetry factor, e.g. 0.5 for a water on a two-fold axis, as gemmi assumes);
* small-molecule CIF files read with :func:`gemmi.make_small_structure_from_block`:
  images that coincide (closer than 0.01 A) are counted once, because CIF occupancies
  are chemical occupancies (IUCr convention);
* the protein-sized random-atom model :func:`lysozyme_like_structure`.

The summation itself (:func:`sum_structure_factors`) is exact and runs in numba.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import gemmi
import numba
import numpy as np

from crystalscope.errors import CrystalscopeError, FormatError

__all__ = [
    "LYSOZYME_LIKE_COMPOSITION",
    "RANDOM_ATOM_MODELS",
    "AtomModel",
    "RandomAtomModel",
    "form_factor_table",
    "lysozyme_like_structure",
    "model_from_small_structure",
    "model_from_structure",
    "random_atom_structure",
    "read_atom_model",
    "sum_structure_factors",
]

#: Non-hydrogen atoms per asymmetric unit of the random-atom lysozyme model.
LYSOZYME_LIKE_COMPOSITION: dict[str, int] = {"C": 613, "N": 193, "O": 185, "S": 10}
_LYSOZYME_CELL = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)
_LYSOZYME_SG = "P 43 21 2"
_LYSOZYME_B = 20.0  # A^2
_LYSOZYME_SEED = 1_946_011  # fixed: the model is part of the package's behaviour

_DEDUP_TOLERANCE_A = 0.01  # images of a small-molecule site closer than this coincide
_STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")


@dataclass
class AtomModel:
    """Atoms of one crystal structure, ready for direct summation.

    Attributes
    ----------
    cell, space_group
        Unit cell (A, degrees) and space group.
    elements : list of str
        Distinct element symbols; ``element_index`` points into it.
    element_index, occupancy, b_iso : numpy.ndarray, shape (A,)
        Per asymmetric-unit atom: element, occupancy and isotropic B (A^2).
    image_start : numpy.ndarray of int64, shape (A + 1,)
        Images of atom ``a`` are ``positions[image_start[a]:image_start[a + 1]]``.
    positions : numpy.ndarray, shape (M, 3)
        Fractional coordinates of all images in the unit cell.
    source : str
        The file or built-in the atoms come from.
    notes : list of str
        Approximations made while reading (charges ignored, B_eq for anisotropic ADPs).
    """

    cell: gemmi.UnitCell
    space_group: gemmi.SpaceGroup
    elements: list[str]
    element_index: np.ndarray
    occupancy: np.ndarray
    b_iso: np.ndarray
    image_start: np.ndarray
    positions: np.ndarray
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def n_atoms(self) -> int:
        """Atoms in the asymmetric unit (with non-zero occupancy)."""
        return len(self.element_index)


# ------------------------------------------------------------------------ form factors


def form_factor_table(elements: list[str], stol2: np.ndarray, kind: str) -> np.ndarray:
    """Atomic form factors of neutral atoms, shape ``(len(stol2), len(elements))``.

    ``kind="xray"``: International Tables Vol. C Table 6.1.1.4 (IT92), four Gaussians and a
    constant, in electrons.  ``kind="electron"``: Table 4.3.2.2 (Peng et al. 1996, five
    Gaussians), non-relativistic, in A.  Both are evaluated as
    ``sum_i a_i exp(-b_i stol2) (+ c)`` with ``stol2 = (sin(theta)/lambda)^2 = 1/(4 d^2)``
    and the coefficients of gemmi's tables.
    """
    out = np.empty((len(stol2), len(elements)))
    for j, symbol in enumerate(elements):
        a, b, c = _coefficients(symbol, kind)
        out[:, j] = np.exp(-np.outer(stol2, b)) @ a + c
    return out


def _coefficients(symbol: str, kind: str) -> tuple[np.ndarray, np.ndarray, float]:
    element = gemmi.Element(symbol)
    table = element.it92 if kind == "xray" else element.c4322
    if table is None:  # pragma: no cover - guarded by _check_element
        raise ValueError(f"no {kind} form factor for {symbol}")
    coefs = np.asarray(table.get_coefs(), dtype=float)
    if kind == "xray":
        return coefs[0:4], coefs[4:8], float(coefs[8])
    return coefs[0:5], coefs[5:10], 0.0


def _check_element(element: gemmi.Element, path: Any, field_name: str, label: str) -> str:
    if element.atomic_number == 0 or element.it92 is None or element.c4322 is None:
        raise FormatError(
            f"atom {label!r}: unknown element or no tabulated form factor ({element.name!r})",
            path=path,
            field=field_name,
        )
    return "H" if element.atomic_number == 1 else str(element.name)


# ----------------------------------------------------------------------------- kernel


_TABLE_BUDGET_BYTES = 256 * 2**20  # phase tables of one chunk of atoms
# numba's default (workqueue) threading layer aborts the process when two threads launch
# parallel kernels at once: calls from threaded schedulers are serialised here.
_KERNEL_LOCK = threading.Lock()


@numba.njit(parallel=True, fastmath=True, cache=True)
def _sum_kernel(
    hkl: np.ndarray,
    group_start: np.ndarray,
    ff: np.ndarray,
    element_index: np.ndarray,
    occupancy: np.ndarray,
    b_iso: np.ndarray,
    stol2: np.ndarray,
    atom_of_image: np.ndarray,
    n_images: np.ndarray,
    tables: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    lows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """Direct summation, one (h, k) column of reflections per parallel task.

    ``tables`` hold cos and sin of ``2 pi h x_m`` (and k y_m, l z_m) for every index in
    range (rows) and image (columns), so each term costs two complex products instead
    of a sine and a cosine.  ``ff[i, e]`` is the form factor of element ``e`` at
    reflection ``i``.
    """
    cx, sx, cy, sy, cz, sz = tables
    n_atoms = b_iso.shape[0]
    n_img = atom_of_image.shape[0]
    re = np.zeros(hkl.shape[0])
    im = np.zeros(hkl.shape[0])
    scale = np.zeros(hkl.shape[0])
    for g in numba.prange(group_start.shape[0] - 1):
        first = group_start[g]
        hi = hkl[first, 0] - lows[0]
        ki = hkl[first, 1] - lows[1]
        col_re = np.empty(n_img)
        col_im = np.empty(n_img)
        for m in range(n_img):
            col_re[m] = cx[hi, m] * cy[ki, m] - sx[hi, m] * sy[ki, m]
            col_im[m] = cx[hi, m] * sy[ki, m] + sx[hi, m] * cy[ki, m]
        w = np.empty(n_atoms)
        for i in range(first, group_start[g + 1]):
            li = hkl[i, 2] - lows[2]
            total = 0.0
            for a in range(n_atoms):
                w[a] = ff[i, element_index[a]] * occupancy[a] * math.exp(-b_iso[a] * stol2[i])
                total += abs(w[a]) * n_images[a]
            sum_re = 0.0
            sum_im = 0.0
            for m in range(n_img):
                wm = w[atom_of_image[m]]
                sum_re += wm * (col_re[m] * cz[li, m] - col_im[m] * sz[li, m])
                sum_im += wm * (col_re[m] * sz[li, m] + col_im[m] * cz[li, m])
            re[i] = sum_re
            im[i] = sum_im
            scale[i] = total
    return re, im, scale


def sum_structure_factors(model: AtomModel, hkl: np.ndarray, kind: str) -> np.ndarray:
    """Complex structure factors by direct summation over all atom images.

    .. math::

        F(\\mathbf{h}) = \\sum_j f_j(s)\\, o_j\\, e^{-B_j s^2 / 4}
        \\sum_{m \\in \\mathrm{images}(j)} e^{2 \\pi i\\, \\mathbf{h} \\cdot \\mathbf{x}_m},
        \\qquad s = 1/d,

    in electrons (``kind="xray"``) or A (``kind="electron"``).  Values whose modulus is
    below 1e-9 of the sum of the moduli of all terms (exact cancellation, e.g. reflections
    forbidden by a special position) are set to exactly 0.

    Parameters
    ----------
    model : AtomModel
    hkl : numpy.ndarray of int, shape (N, 3)
        Miller indices.
    kind : {"xray", "electron"}

    Returns
    -------
    numpy.ndarray of complex128, shape (N,)
    """
    hkl = np.asarray(hkl, dtype=np.int64).reshape(-1, 3)
    F = np.zeros(len(hkl), dtype=np.complex128)
    if len(hkl) == 0 or model.n_atoms == 0:
        return F
    order = np.lexsort((hkl[:, 2], hkl[:, 1], hkl[:, 0]))
    sorted_hkl = np.ascontiguousarray(hkl[order])
    change = np.any(np.diff(sorted_hkl[:, :2], axis=0) != 0, axis=1)
    group_start = np.concatenate([[0], np.flatnonzero(change) + 1, [len(hkl)]]).astype(np.int64)
    stol2 = 0.25 * np.asarray(model.cell.calculate_1_d2_array(sorted_hkl.astype(np.int32)))
    ff = np.ascontiguousarray(form_factor_table(model.elements, stol2, kind))
    lows = sorted_hkl.min(axis=0)
    highs = sorted_hkl.max(axis=0)
    re = np.zeros(len(hkl))
    im = np.zeros(len(hkl))
    scale = np.zeros(len(hkl))
    for atoms in _atom_chunks(model, int(np.sum(highs - lows + 1))):
        a0, a1 = atoms.start, atoms.stop
        m0, m1 = int(model.image_start[a0]), int(model.image_start[a1])
        counts = np.diff(model.image_start[a0 : a1 + 1]).astype(np.int64)
        atom_of_image = np.repeat(np.arange(a1 - a0, dtype=np.int64), counts)
        tables = _phase_tables(model.positions[m0:m1], lows, highs)
        with _KERNEL_LOCK:
            part = _sum_kernel(
                sorted_hkl, group_start, ff, np.ascontiguousarray(model.element_index[a0:a1]),
                np.ascontiguousarray(model.occupancy[a0:a1], dtype=np.float64),
                np.ascontiguousarray(model.b_iso[a0:a1], dtype=np.float64), stol2,
                atom_of_image, counts, tables, lows.astype(np.int64),
            )  # fmt: skip
        re += part[0]
        im += part[1]
        scale += part[2]
    values = re + 1j * im
    values[np.abs(values) <= 1e-9 * scale] = 0.0
    F[order] = values
    return F


def _atom_chunks(model: AtomModel, n_rows: int) -> list[slice]:
    """Consecutive atom ranges whose phase tables fit in the memory budget."""
    per_image = 16 * max(n_rows, 1)  # cos + sin, float64, for every index row
    max_images = max(1, _TABLE_BUDGET_BYTES // per_image)
    chunks, first = [], 0
    for a in range(1, model.n_atoms + 1):
        if model.image_start[a] - model.image_start[first] > max_images and a - 1 > first:
            chunks.append(slice(first, a - 1))
            first = a - 1
    chunks.append(slice(first, model.n_atoms))
    return chunks


def _phase_tables(
    positions: np.ndarray, lows: np.ndarray, highs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """cos and sin of ``2 pi n x`` for ``n`` in ``lows..highs`` per axis, rows by ``n``."""
    out: list[np.ndarray] = []
    for axis in range(3):
        n = np.arange(lows[axis], highs[axis] + 1, dtype=np.float64)
        arg = 2.0 * math.pi * np.outer(n, positions[:, axis])
        out.extend((np.ascontiguousarray(np.cos(arg)), np.ascontiguousarray(np.sin(arg))))
    return (out[0], out[1], out[2], out[3], out[4], out[5])


# ---------------------------------------------------------------------------- readers


def read_atom_model(path: str | os.PathLike[str]) -> AtomModel:
    """Read a PDB, mmCIF or small-molecule CIF file (optionally gzipped).

    Raises
    ------
    FormatError
        If the file is missing, cannot be parsed, has no atoms, no usable cell or space
        group, or atoms with unknown elements or invalid numbers.
    """
    p = Path(path)
    if not p.is_file():
        raise FormatError("structure file not found", path=p)
    name = p.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix not in _STRUCTURE_SUFFIXES:
        raise FormatError(
            f"unknown structure file type {suffix!r} (expected .pdb, .ent, .cif or .mmcif)",
            path=p,
        )
    if suffix == ".cif":
        block = _cif_block_with_atoms(p)
        if _has_fractional_sites(block):
            small = _guarded(p, "_atom_site", gemmi.make_small_structure_from_block, block)
            return _guarded(
                p, "_atom_site", lambda: model_from_small_structure(small, source=str(p))
            )
    structure = _guarded(p, "", gemmi.read_structure, str(p))
    fields = MMCIF_FIELDS if suffix in (".cif", ".mmcif") else PDB_FIELDS
    return _guarded(
        p, fields.atoms, lambda: model_from_structure(structure, source=str(p), fields=fields)
    )


def _has_fractional_sites(block: gemmi.cif.Block) -> bool:
    return bool(block.find_loop("_atom_site_fract_x")) or (
        block.find_value("_atom_site_fract_x") is not None
    )


def _guarded(path: Path, field_name: str, func: Any, *args: Any) -> Any:
    """Call gemmi on a file's content; any failure there is the file's fault.

    gemmi raises RuntimeError, ValueError, IndexError, and UnicodeDecodeError when a
    name in the file is not valid UTF-8 and is read from Python.
    """
    try:
        return func(*args)
    except CrystalscopeError:
        raise
    except Exception as exc:  # gemmi raises RuntimeError, ValueError, IndexError, ...
        raise FormatError(
            f"cannot read structure: {exc}", path=path, field=field_name or None
        ) from None


def _cif_block_with_atoms(path: Path) -> gemmi.cif.Block:
    doc = _guarded(path, "", gemmi.cif.read, str(path))
    for block in doc:
        if _has_fractional_sites(block):
            return block
        if block.find_loop("_atom_site.Cartn_x"):
            return block
    raise FormatError("no atom sites in the CIF file", path=path, field="_atom_site")


class _Fields(NamedTuple):
    """Names of the file fields that errors point to, per format."""

    atoms: str
    element: str
    xyz: str
    occupancy: str
    b: str
    cell: str
    symmetry: str


PDB_FIELDS = _Fields("ATOM", "ATOM element", "ATOM x", "ATOM occupancy", "ATOM tempFactor",
                     "CRYST1", "CRYST1")  # fmt: skip
MMCIF_FIELDS = _Fields("_atom_site", "_atom_site.type_symbol", "_atom_site.Cartn_x",
                       "_atom_site.occupancy", "_atom_site.B_iso_or_equiv", "_cell.length_a",
                       "_symmetry.space_group_name_H-M")  # fmt: skip
SMALL_FIELDS = _Fields("_atom_site", "_atom_site_type_symbol", "_atom_site_fract_x",
                       "_atom_site_occupancy", "_atom_site_U_iso_or_equiv", "_cell_length_a",
                       "_space_group_symop_operation_xyz")  # fmt: skip


def model_from_structure(
    structure: gemmi.Structure, *, source: str, fields: _Fields = PDB_FIELDS
) -> AtomModel:
    """Atom model of the first model of a macromolecular structure.

    Every atom is placed at all its images under the space group's operations; atoms of
    zero occupancy are left out; anisotropic ADPs are replaced by the atom's ``B_iso``.
    """
    where = source if source and not source.startswith("builtin:") else None
    cell, sg = _structure_symmetry(structure, where, fields)
    if len(structure) == 0:
        raise FormatError("no atoms in the structure", path=where, field=fields.atoms)
    symbols, occ, b_iso, xyz, notes = [], [], [], [], set()
    for cra in structure[0].all():
        atom = cra.atom
        symbols.append(_check_element(atom.element, where, fields.element, atom.name))
        occ.append(atom.occ)
        b_iso.append(atom.b_iso)
        xyz.append(atom.pos.tolist())
        if atom.charge:
            notes.add("charges ignored: neutral-atom form factors")
        if atom.aniso.nonzero():
            notes.add("anisotropic ADPs replaced by the atoms' isotropic B")
    cartesian = np.asarray(xyz, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(cartesian)):
        raise FormatError("atom coordinates are not finite numbers", path=where, field=fields.xyz)
    frac = cartesian @ np.asarray(cell.frac.mat).T
    atoms = _Atoms(symbols, np.asarray(occ, float), np.asarray(b_iso, float), frac)
    return _build(cell, sg, atoms, _Origin(where, source, fields), sorted(notes), dedup=False)


def model_from_small_structure(small: gemmi.SmallStructure, *, source: str) -> AtomModel:
    """Atom model of a small-molecule structure (CIF conventions).

    Coinciding images of a site on a special position are counted once; ``U_iso`` (or
    ``U_eq`` from anisotropic ADPs) becomes ``B = 8 pi^2 U``.
    """
    where = source if source and not source.startswith("builtin:") else None
    fields = SMALL_FIELDS
    if small.spacegroup is None:
        raise FormatError("no space group (no symmetry operators, Hall or H-M symbol)",
                          path=where, field=fields.symmetry)  # fmt: skip
    cell = _checked_cell(small.cell, where, fields.cell)
    symbols, occ, b_iso, frac, notes = [], [], [], [], set()
    for site in small.sites:
        symbols.append(_check_element(site.element, where, fields.element, site.label))
        occ.append(site.occ)
        u = site.u_iso
        if u == 0.0 and site.aniso.nonzero():
            u = _u_equivalent(site.aniso, cell)
            notes.add("anisotropic ADPs replaced by U_eq")
        b_iso.append(8.0 * math.pi**2 * u)
        frac.append(site.fract.tolist())
        if site.charge:
            notes.add("charges ignored: neutral-atom form factors")
    atoms = _Atoms(symbols, np.asarray(occ, float), np.asarray(b_iso, float),
                   np.asarray(frac, dtype=float).reshape(-1, 3))  # fmt: skip
    origin = _Origin(where, source, fields)
    return _build(cell, small.spacegroup, atoms, origin, sorted(notes), dedup=True)


class _Atoms(NamedTuple):
    symbols: list[str]
    occupancy: np.ndarray
    b_iso: np.ndarray
    frac: np.ndarray


class _Origin(NamedTuple):
    path: str | None  # the file, None for built-ins
    source: str
    fields: _Fields


def _structure_symmetry(
    structure: gemmi.Structure, where: str | None, fields: _Fields
) -> tuple[gemmi.UnitCell, gemmi.SpaceGroup]:
    if not structure.cell.is_crystal():
        raise FormatError("no unit cell", path=where, field=fields.cell)
    cell = _checked_cell(structure.cell, where, fields.cell)
    sg = structure.find_spacegroup()
    if sg is None:
        raise FormatError(f"unknown or missing space group {structure.spacegroup_hm!r}",
                          path=where, field=fields.symmetry)  # fmt: skip
    return cell, sg


def _checked_cell(cell: gemmi.UnitCell, where: str | None, field_name: str) -> gemmi.UnitCell:
    params = np.asarray(cell.parameters, dtype=float)
    ok = np.all(np.isfinite(params)) and np.all(params[:3] > 0)
    ok = ok and np.all((params[3:] > 0) & (params[3:] < 180))
    if not ok or not (math.isfinite(cell.volume) and cell.volume > 1e-6 * np.prod(params[:3])):
        raise FormatError(f"invalid unit cell {tuple(params)}", path=where, field=field_name)
    return gemmi.UnitCell(*params)


def _u_equivalent(aniso: Any, cell: gemmi.UnitCell) -> float:
    """U_eq = (1/3) sum_ij U^ij a*_i a*_j (a_i . a_j) (Fischer & Tillmanns 1988)."""
    u = np.array(aniso.as_mat33().tolist(), dtype=float)
    n = np.array(cell.reciprocal().parameters[:3], dtype=float)
    orth = np.asarray(cell.orth.mat, dtype=float)
    metric = orth.T @ orth
    return float(np.sum(u * np.outer(n, n) * metric) / 3.0)


def _build(
    cell: gemmi.UnitCell,
    sg: gemmi.SpaceGroup,
    atoms: _Atoms,
    origin: _Origin,
    notes: list[str],
    *,
    dedup: bool,
) -> AtomModel:
    where, fields = origin.path, origin.fields
    _check_numbers(atoms, where, fields)
    if not cell.is_compatible_with_spacegroup(sg, 1e-3):
        raise FormatError(f"cell {tuple(cell.parameters)} does not obey the symmetry of "
                          f"{sg.xhm()}", path=where, field=fields.cell)  # fmt: skip
    keep = atoms.occupancy > 0
    if not np.any(keep):
        raise FormatError("no atoms with non-zero occupancy", path=where, field=fields.occupancy)
    symbols = np.asarray(atoms.symbols)[keep]
    elements = sorted(set(symbols.tolist()))
    index = np.array([elements.index(s) for s in symbols], dtype=np.int64)
    start, positions = _images(atoms.frac[keep], sg, cell, dedup)
    return AtomModel(cell, sg, elements, index, atoms.occupancy[keep], atoms.b_iso[keep],
                     start, positions, origin.source, notes)  # fmt: skip


def _check_numbers(atoms: _Atoms, where: str | None, fields: _Fields) -> None:
    if len(atoms.occupancy) == 0:
        raise FormatError("no atoms in the structure", path=where, field=fields.atoms)
    if not np.all(np.isfinite(atoms.frac)) or np.any(np.abs(atoms.frac) > 1e6):
        raise FormatError("atom coordinates are not finite numbers", path=where,
                          field=fields.xyz)  # fmt: skip
    if not np.all(np.isfinite(atoms.occupancy)) or np.any(atoms.occupancy < 0):
        raise FormatError("occupancies must be finite and >= 0", path=where,
                          field=fields.occupancy)  # fmt: skip
    b = atoms.b_iso
    if not np.all(np.isfinite(b)) or np.any(b < 0) or np.any(b > 1e4):
        raise FormatError("displacement parameters must be finite, >= 0 and < 1e4 A^2",
                          path=where, field=fields.b)  # fmt: skip


def _images(
    frac: np.ndarray, sg: gemmi.SpaceGroup, cell: gemmi.UnitCell, dedup: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional positions of all images, grouped by atom (CSR layout)."""
    ops = list(sg.operations())
    rot = np.array([np.array(op.rot, dtype=float) / op.DEN for op in ops])  # (K, 3, 3)
    tran = np.array([np.array(op.tran, dtype=float) / op.DEN for op in ops])  # (K, 3)
    images = np.einsum("kij,aj->aki", rot, frac) + tran[None, :, :]  # (A, K, 3)
    images -= np.floor(images)
    if not dedup:
        start = np.arange(len(frac) + 1, dtype=np.int64) * len(ops)
        return start, images.reshape(-1, 3)
    orth = np.asarray(cell.orth.mat, dtype=float)
    kept: list[np.ndarray] = []
    counts = np.zeros(len(frac), dtype=np.int64)
    for a, site_images in enumerate(images):
        unique = _distinct(site_images, orth)
        kept.append(unique)
        counts[a] = len(unique)
    start = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return start, np.concatenate(kept)


def _distinct(images: np.ndarray, orth: np.ndarray) -> np.ndarray:
    """Images of one site, those within the tolerance of an earlier one removed."""
    diff = images[:, None, :] - images[None, :, :]
    diff -= np.round(diff)
    dist = np.linalg.norm(diff @ orth.T, axis=2)
    keep = np.ones(len(images), dtype=bool)
    for i in range(1, len(images)):
        keep[i] = not np.any(dist[i, :i][keep[:i]] < _DEDUP_TOLERANCE_A)
    return images[keep]


# --------------------------------------------------------------- random-atom models


@dataclass(frozen=True)
class RandomAtomModel:
    """Recipe of a random-atom crystal: cell, space group, composition per asymmetric
    unit, isotropic B (A^2) and the fixed seed of its atom positions."""

    name: str
    cell: tuple[float, float, float, float, float, float]
    space_group: str
    composition: dict[str, int]
    b_iso: float
    seed: int


#: Built-in random-atom models.  The seeds are fixed: the models are part of the
#: package's behaviour.
RANDOM_ATOM_MODELS: dict[str, RandomAtomModel] = {
    "lysozyme-like": RandomAtomModel(
        "lysozyme-like", _LYSOZYME_CELL, _LYSOZYME_SG, LYSOZYME_LIKE_COMPOSITION,
        _LYSOZYME_B, _LYSOZYME_SEED,
    ),
    "monoclinic-organic": RandomAtomModel(
        "monoclinic-organic", (7.92, 10.61, 13.84, 90.0, 104.5, 90.0), "P 1 21/c 1",
        {"C": 16, "N": 2, "O": 3}, 3.0, 20_260_001,
    ),
    "p63-protein": RandomAtomModel(
        "p63-protein", (58.3, 58.3, 71.6, 90.0, 90.0, 120.0), "P 63",
        {"C": 600, "N": 165, "O": 180, "S": 5}, 25.0, 20_260_063,
    ),
}  # fmt: skip


def random_atom_structure(recipe: RandomAtomModel) -> gemmi.Structure:
    """A random-atom crystal (a Wilson-statistics model) from its recipe.

    The atoms of ``recipe.composition`` are placed uniformly at random in gemmi's
    asymmetric-unit brick of the space group, occupancy 1, ``B = recipe.b_iso``.  The
    positions come from the raw 64-bit output of PCG64 with the recipe's seed (a stream
    that numpy guarantees to be stable), so the model is the same on every installation.

    Such a model is **not** a real structure: its intensities follow the Wilson
    statistics of a crystal of this size and composition (acentric/centric
    distributions, mean intensity per resolution shell), but phases, low-resolution
    solvent contrast and any real structural feature are absent.  Atoms may come closer
    than chemistry allows; diffraction geometry, symmetry and systematic absences are
    exact.

    Returns
    -------
    gemmi.Structure
        One model, one chain ``A``, one residue ``UNK`` per atom.
    """
    sg = gemmi.find_spacegroup_by_name(recipe.space_group)
    cell = gemmi.UnitCell(*recipe.cell)
    box = gemmi.find_asu_brick(sg).get_extent()
    lo = np.array(box.minimum.tolist()).clip(0.0, 1.0)
    hi = np.array(box.maximum.tolist()).clip(0.0, 1.0)
    symbols = [s for s, n in recipe.composition.items() for _ in range(n)]
    raw = np.random.PCG64(recipe.seed).random_raw(3 * len(symbols))
    uniform = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53
    frac = lo + uniform.reshape(-1, 3) * (hi - lo)
    xyz = frac @ np.asarray(cell.orth.mat, dtype=float).T
    structure = gemmi.Structure()
    structure.name = recipe.name
    structure.cell = cell
    structure.spacegroup_hm = sg.xhm()
    chain = gemmi.Chain("A")
    for i, (symbol, pos) in enumerate(zip(symbols, xyz, strict=True)):
        residue = gemmi.Residue()
        residue.name = "UNK"
        residue.seqid = gemmi.SeqId(i + 1, " ")
        atom = gemmi.Atom()
        atom.name = symbol
        atom.element = gemmi.Element(symbol)
        atom.pos = gemmi.Position(*pos)
        atom.occ = 1.0
        atom.b_iso = recipe.b_iso
        residue.add_atom(atom)
        chain.add_residue(residue)
    try:
        model = gemmi.Model(1)  # gemmi >= 0.7 numbers its models
    except TypeError:  # pragma: no cover - gemmi 0.6 names them
        model = gemmi.Model("1")  # type: ignore[arg-type]
    model.add_chain(chain)
    structure.add_model(model)
    structure.setup_entities()
    return structure


def lysozyme_like_structure() -> gemmi.Structure:
    """The built-in random-atom model of a lysozyme crystal (a Wilson-statistics model).

    Tetragonal lysozyme's cell (a = 79.1, c = 37.9 A, P 43 21 2, 8 molecules per cell)
    with 1001 non-hydrogen atoms per asymmetric unit in lysozyme's composition
    (:data:`LYSOZYME_LIKE_COMPOSITION`), B = 20 A^2; see :func:`random_atom_structure`.
    It is **not** the lysozyme structure.
    """
    return random_atom_structure(RANDOM_ATOM_MODELS["lysozyme-like"])
