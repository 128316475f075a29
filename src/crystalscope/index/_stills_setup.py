"""Precomputed tables of still indexing: lattice vectors of the known cell, peak geometry.

* :func:`lattice_table` lists the reciprocal-lattice vectors of a cell up to a length,
  sorted by length, with one representative per orbit of the lattice rotations and the
  lattice-rotation matrices in the crystal Cartesian frame.  Cached per cell, lattice
  and length, so the frames of a data set share it.
* :class:`FrameGeometry` holds the lab positions of one frame's peaks and how they move
  with a lateral detector shift, so that ``q`` can be recomputed while the shift is
  refined (``q = (r/|r| - z)/lambda``, ``r = r_0 + J (dx, dy)``; the detector's
  elliptical distortion is linear and included in ``J``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.index._stills_gn import b_matrix
from crystalscope.index.compare import lattice_symmetry_ops
from crystalscope.model.detector import Detector

__all__ = [
    "FrameGeometry",
    "LatticeTable",
    "cell_b_matrix",
    "frame_geometry",
    "lattice_rotations",
    "lattice_table",
]

#: Largest number of lattice vectors a table may hold (memory, search time).
MAX_TABLE = 2_000_000


def cell_b_matrix(parameters: tuple[float, ...] | np.ndarray) -> np.ndarray:
    """``B`` (columns a*, b*, c* in the crystal Cartesian frame, 1/A) of cell parameters
    (gemmi's orthogonalisation convention; :func:`~crystalscope.index._stills_gn.b_matrix`)."""
    return b_matrix(np.asarray(parameters, dtype=float))


@dataclass(frozen=True)
class LatticeTable:
    """Reciprocal-lattice vectors of a cell in the crystal Cartesian frame.

    Attributes
    ----------
    b_mat, b_inv : (3, 3)
        ``B`` and its inverse.
    hkl : (n, 3) int64
        Indices allowed by the lattice centring, ``0 < |B h| <= max_length``, sorted by
        length.
    vectors : (n, 3)
        ``B h`` (1/A).
    lengths : (n,)
        ``|B h|``, ascending.
    unique : (n,) bool
        True for the first member (in this order) of each orbit under the lattice
        rotations.
    rotations : (m, 3, 3)
        Proper lattice-symmetry rotations ``S = B M B^-1`` in the crystal Cartesian frame
        (``M`` from :func:`~crystalscope.index.compare.lattice_symmetry_ops`).
    """

    b_mat: np.ndarray
    b_inv: np.ndarray
    hkl: np.ndarray
    vectors: np.ndarray
    lengths: np.ndarray
    unique: np.ndarray
    rotations: np.ndarray


def _centring_allowed(hkl: np.ndarray, hall: str) -> np.ndarray:
    ops = gemmi.symops_from_hall(hall)
    allowed = np.ones(len(hkl), dtype=bool)
    for t in ops.cen_ops:
        allowed &= (hkl @ np.array(t, dtype=np.int64)) % gemmi.Op.DEN == 0
    return allowed


@lru_cache(maxsize=16)
def lattice_table(parameters: tuple[float, ...], hall: str, max_length: float) -> LatticeTable:
    """Lattice vectors of the cell ``parameters`` (A, degrees) up to ``max_length`` (1/A).

    ``hall`` is the Hall symbol of the space group (its centring and holohedry are used).

    Raises
    ------
    DataError
        If the table would exceed :data:`MAX_TABLE` vectors.
    """
    b_mat = cell_b_matrix(parameters)
    real = np.linalg.inv(b_mat).T  # rows: a, b, c in the crystal frame (a . a* = 1)
    limits = [math.floor(max_length * float(np.linalg.norm(v))) for v in real]
    estimate = 4.0 / 3.0 * math.pi * max_length**3 / abs(np.linalg.det(b_mat))
    if estimate > MAX_TABLE:
        raise DataError(
            f"about {estimate:.3g} lattice vectors up to {max_length:.3g} 1/A: too many; "
            "is the cell right?",
            field="cell",
        )
    grid = np.mgrid[
        -limits[0] : limits[0] + 1, -limits[1] : limits[1] + 1, -limits[2] : limits[2] + 1
    ].reshape(3, -1)
    hkl = grid.T.astype(np.int64)
    vec = hkl @ b_mat.T
    length = np.linalg.norm(vec, axis=1)
    keep = (length > 0) & (length <= max_length) & _centring_allowed(hkl, hall)
    order = np.argsort(length[keep], kind="stable")
    hkl, vec, length = hkl[keep][order], vec[keep][order], length[keep][order]
    unique = _orbit_representatives(hkl, _proper_ops(hall))
    rotations = lattice_rotations(parameters, hall)
    return LatticeTable(b_mat, np.linalg.inv(b_mat), hkl, vec, length, unique, rotations)


def _proper_ops(hall: str) -> np.ndarray:
    """Proper rotations of the holohedry of the space group ``hall`` (on Miller indices)."""
    ops = lattice_symmetry_ops(gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(hall)))
    return ops[: len(ops) // 2]


@lru_cache(maxsize=16)
def lattice_rotations(parameters: tuple[float, ...], hall: str) -> np.ndarray:
    """Proper lattice rotations ``S = B M B^-1`` in the crystal Cartesian frame, (m, 3, 3).

    An orientation ``R`` and ``R S`` index the same peaks.
    """
    b_mat = cell_b_matrix(parameters)
    b_inv = np.linalg.inv(b_mat)
    out = np.array([b_mat @ m @ b_inv for m in _proper_ops(hall)])
    out.flags.writeable = False
    return out


def _orbit_representatives(hkl: np.ndarray, ops: np.ndarray) -> np.ndarray:
    """True for the first index triple (in table order) of each orbit under ``ops``."""
    if len(hkl) == 0:
        return np.zeros(0, dtype=bool)
    images = np.einsum("kij,nj->kni", ops, hkl)  # (m, n, 3)
    half = int(np.max(np.abs(images)))
    span = 2 * half + 1
    weights = np.array([span * span, span, 1], dtype=np.int64)
    own = (hkl + half) @ weights
    sorter = np.argsort(own)
    keys = (images + half) @ weights  # (m, n)
    pos = np.clip(np.searchsorted(own, keys, sorter=sorter), 0, len(hkl) - 1)
    found = own[sorter[pos]] == keys
    # an image just beyond max_length (rounding) does not count
    rank = np.where(found, sorter[pos], len(hkl))
    return np.min(rank, axis=0) == np.arange(len(hkl))


@dataclass(frozen=True)
class FrameGeometry:
    """Lab positions of one frame's peaks and their dependence on the detector shift.

    Attributes
    ----------
    r0 : (n, 3)
        Lab positions (mm) at the starting shift.
    jx, jy : (n, 3)
        Change of the lab position per mm of shift along x and y (distortion included).
    px_q : (n,)
        Size of one pixel in q at each peak (1/A), mean of the fs and ss directions.
    wavelength : float
        Angstrom.
    """

    r0: np.ndarray
    jx: np.ndarray
    jy: np.ndarray
    px_q: np.ndarray
    wavelength: float

    def positions(self, shift: np.ndarray) -> np.ndarray:
        """Lab positions (mm) for a shift ``(dx, dy)`` (mm) relative to the start."""
        return self.r0 + shift[0] * self.jx + shift[1] * self.jy

    def q(self, shift: np.ndarray) -> np.ndarray:
        """Scattering vectors (1/A) for a shift relative to the start."""
        r = self.positions(shift)
        out = r / np.linalg.norm(r, axis=1)[:, None]
        out[:, 2] -= 1.0
        return out / self.wavelength

    def dq_dshift(self, shift: np.ndarray) -> np.ndarray:
        """``d q / d (dx, dy)``, shape (n, 3, 2), 1/A per mm."""
        r = self.positions(shift)
        norm = np.linalg.norm(r, axis=1)
        unit = r / norm[:, None]
        out = np.empty((len(r), 3, 2))
        for k, j in enumerate((self.jx, self.jy)):
            along = np.sum(unit * j, axis=1)
            out[:, :, k] = (j - along[:, None] * unit) / (norm[:, None] * self.wavelength)
        return out

    def shift_for_offset(self, offset: np.ndarray) -> np.ndarray:
        """Shift (mm) that moves the peaks by ``-offset`` in ``(q_x, q_y)`` (1/A), to first
        order with the mean Jacobian of the frame."""
        jac = self.dq_dshift(np.zeros(2))[:, :2, :].mean(axis=0)
        return np.asarray(np.linalg.solve(jac, -np.asarray(offset, dtype=float)), dtype=float)

    def moved(self, shift: np.ndarray) -> FrameGeometry:
        """The same peaks with the starting shift changed by ``shift`` (mm)."""
        return FrameGeometry(self.positions(shift), self.jx, self.jy, self.px_q, self.wavelength)

    def subset(self, keep: np.ndarray) -> FrameGeometry:
        """The geometry of the peaks selected by ``keep``."""
        return FrameGeometry(
            self.r0[keep], self.jx[keep], self.jy[keep], self.px_q[keep], self.wavelength
        )


def frame_geometry(
    peaks: pd.DataFrame,
    detector: Detector,
    wavelength: float,
    shift_mm: tuple[float, float],
) -> tuple[FrameGeometry, np.ndarray]:
    """Geometry of one frame's peaks and the mask of usable peaks (finite, on a panel).

    ``peaks`` has raw-array pixel-centre ``fs``, ``ss`` and optionally ``panel``.
    """
    fs = peaks["fs"].to_numpy(dtype=float)
    ss = peaks["ss"].to_numpy(dtype=float)
    panel = peaks["panel"].to_numpy() if "panel" in peaks.columns else None
    ok = np.isfinite(fs) & np.isfinite(ss)
    hits = detector.raw_to_panel(
        np.where(ok, fs, -1e9), np.where(ok, ss, -1e9), None if panel is None else panel
    )
    ok &= (hits.panel >= 0) & np.isfinite(hits.fs) & np.isfinite(hits.ss)
    p, f, s = hits.panel[ok], hits.fs[ok], hits.ss[ok]
    base = np.array(shift_mm, dtype=float)
    r0 = detector.pixel_to_lab(p, f, s, shift_mm=base)
    jx = detector.pixel_to_lab(p, f, s, shift_mm=base + np.array([1.0, 0.0])) - r0
    jy = detector.pixel_to_lab(p, f, s, shift_mm=base + np.array([0.0, 1.0])) - r0
    q0 = detector.pixel_to_q(p, f, s, wavelength=wavelength, shift_mm=base)
    q_fs = detector.pixel_to_q(p, f + 1.0, s, wavelength=wavelength, shift_mm=base)
    q_ss = detector.pixel_to_q(p, f, s + 1.0, wavelength=wavelength, shift_mm=base)
    px_q = 0.5 * (np.linalg.norm(q_fs - q0, axis=1) + np.linalg.norm(q_ss - q0, axis=1))
    geom = FrameGeometry(r0, jx, jy, px_q, float(wavelength))
    return geom, ok
