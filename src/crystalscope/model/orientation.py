"""Rotation utilities for crystal orientations.

Orientation matrices ``U`` are proper rotations (``det U = +1``) that map the crystal's
Cartesian frame (gemmi/PDB: ``a`` along ``x``, ``c*`` along ``z``) onto the lab frame
(NeXus/McStas: ``+z`` along the beam, ``+y`` up).  Rotations are right-handed: a positive
angle turns counter-clockwise when looking from the tip of the axis towards the origin,
so a rotation by +90 degrees about ``z`` takes ``x`` onto ``y``.  Angles are in degrees at
the interface.

Random orientations are drawn from the Haar (uniform) measure on SO(3) with
:meth:`scipy.spatial.transform.Rotation.random`, from a :class:`numpy.random.Generator`
so that a seed reproduces them.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike
from scipy.spatial.transform import Rotation

from crystalscope.errors import DataError

__all__ = [
    "ROTATION_TOLERANCE",
    "as_generator",
    "check_rotation",
    "nearest_rotation",
    "random_rotation",
    "random_rotations",
    "rotation_angle_deg",
    "rotation_matrix",
]

#: Largest accepted deviation of ``U^T U`` from the identity (and of ``det U`` from 1).
ROTATION_TOLERANCE = 1e-6


def as_generator(rng: np.random.Generator | int | None = None) -> np.random.Generator:
    """Return ``rng`` if it is a Generator, else a new Generator seeded with it."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def rotation_matrix(axis: ArrayLike, angle_deg: float) -> np.ndarray:
    """Right-handed rotation by ``angle_deg`` degrees about ``axis``.

    Parameters
    ----------
    axis : array_like, shape (3,)
        Rotation axis in the lab frame; need not be normalised.
    angle_deg : float
        Rotation angle in degrees; positive is counter-clockwise seen from the axis tip.

    Returns
    -------
    numpy.ndarray, shape (3, 3)
        The rotation matrix ``R``; rotate a column vector as ``R @ v``.

    Raises
    ------
    DataError
        If the axis is not a finite non-zero 3-vector or the angle is not finite.
    """
    vec = np.asarray(axis, dtype=float)
    if vec.shape != (3,) or not np.all(np.isfinite(vec)):
        raise DataError(f"rotation axis must be a finite 3-vector, got {axis!r}", field="axis")
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        raise DataError("rotation axis must not be the zero vector", field="axis")
    angle = float(angle_deg)
    if not math.isfinite(angle):
        raise DataError(f"rotation angle must be finite, got {angle_deg!r}", field="angle_deg")
    rotvec = vec / norm * math.radians(angle)
    return np.asarray(Rotation.from_rotvec(rotvec).as_matrix(), dtype=float)


def random_rotations(n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """``n`` rotation matrices drawn uniformly (Haar measure) from SO(3).

    Parameters
    ----------
    n : int
        Number of rotations (>= 0).
    rng : numpy.random.Generator or int or None
        Random generator or seed; the same seed gives the same rotations.

    Returns
    -------
    numpy.ndarray, shape (n, 3, 3)
    """
    if int(n) != n or n < 0:
        raise DataError(f"number of rotations must be a non-negative integer, got {n!r}")
    if n == 0:
        return np.zeros((0, 3, 3))
    rot = Rotation.random(int(n), rng=as_generator(rng))
    return np.asarray(rot.as_matrix(), dtype=float).reshape(int(n), 3, 3)


def random_rotation(rng: np.random.Generator | int | None = None) -> np.ndarray:
    """One rotation matrix, shape (3, 3), drawn uniformly from SO(3)."""
    return random_rotations(1, rng)[0]


def check_rotation(
    matrix: ArrayLike, *, tol: float = ROTATION_TOLERANCE, field: str = "U"
) -> np.ndarray:
    """Validate a proper rotation matrix and return it as a float64 (3, 3) array.

    Parameters
    ----------
    matrix : array_like, shape (3, 3)
        Candidate rotation.
    tol : float
        Largest accepted ``max |U^T U - I|`` and ``|det U - 1|``.
    field : str
        Name used in the error message.

    Raises
    ------
    DataError
        If the matrix has the wrong shape, is not finite, is not orthonormal or is an
        improper rotation (a reflection, ``det = -1``).
    """
    try:
        mat = np.array(matrix, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"orientation matrix is not numeric ({exc})", field=field) from None
    if mat.shape != (3, 3):
        raise DataError(f"orientation matrix must be 3x3, got shape {mat.shape}", field=field)
    if not np.all(np.isfinite(mat)):
        raise DataError("orientation matrix contains NaN or infinity", field=field)
    err = float(np.max(np.abs(mat.T @ mat - np.eye(3))))
    if err > tol:
        raise DataError(
            f"orientation matrix is not orthonormal (max |U^T U - I| = {err:.3g} > {tol:g})",
            field=field,
        )
    det = float(np.linalg.det(mat))
    if abs(det - 1.0) > tol:
        raise DataError(
            f"orientation matrix is not a proper rotation (det = {det:.6f}, must be +1)",
            field=field,
        )
    return mat


def nearest_rotation(matrix: ArrayLike) -> np.ndarray:
    """The proper rotation closest (Frobenius norm) to a 3x3 matrix.

    Uses the polar decomposition through the SVD ``M = W S V^T``: ``R = W D V^T`` with
    ``D = diag(1, 1, det(W V^T))`` so that ``det R = +1``.  Use it to clean up matrices
    that are rotations up to rounding (e.g. read from text files with few digits).
    """
    mat = np.asarray(matrix, dtype=float)
    if mat.shape != (3, 3) or not np.all(np.isfinite(mat)):
        raise DataError("matrix must be a finite 3x3 array", field="U")
    w, _, vt = np.linalg.svd(mat)
    d = np.diag([1.0, 1.0, float(np.sign(np.linalg.det(w @ vt))) or 1.0])
    return np.asarray(w @ d @ vt, dtype=float)


def rotation_angle_deg(matrix: ArrayLike) -> float:
    """Rotation angle in degrees (0..180) of a rotation matrix, e.g. ``U1 @ U2.T``."""
    mat = np.asarray(matrix, dtype=float)
    if mat.shape != (3, 3):
        raise DataError(f"rotation matrix must be 3x3, got shape {mat.shape}", field="U")
    cos = (float(np.trace(mat)) - 1.0) / 2.0
    axis = np.array([mat[2, 1] - mat[1, 2], mat[0, 2] - mat[2, 0], mat[1, 0] - mat[0, 1]])
    sin = float(np.linalg.norm(axis)) / 2.0
    return math.degrees(math.atan2(sin, cos))  # accurate at small and large angles
