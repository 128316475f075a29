"""Crystal tomography from topographs: parallel projections along any direction and SIRT.

Seed 000, sections 3.3 and 5.2.5: each normalised topograph is a projection of the
diffraction efficiency ``S(x)`` along its incident direction ``k_in``; topographs from
many reflections (binned by direction) are combined into ``S(x)`` with the simultaneous
iterative reconstruction technique (SIRT).

Projector
---------
The volume is ``(nz, ny, nx)`` voxels of edge 1 (any unit; projections are in voxel
lengths) centred on the origin, voxel ``(k, j, i)`` at ``(i - (nx-1)/2, j - (ny-1)/2,
k - (nz-1)/2)`` in ``(x, y, z)``.  A view along the unit vector ``d`` has the detector
axes ``u = normalise(a x d)`` and ``v = d x u`` (``a`` the lab axis least parallel to
``d``; :func:`view_axes`) and ``n_u x n_v`` pixels of edge 1 centred on the origin.  The
forward projection is voxel driven: each voxel adds its value to the four pixels around
its projected centre ``(p.u, p.v)`` with bilinear weights, which approximates the line
integral ``int S(x) dt`` with a voxel counted over its own length 1.  The
back-projection gathers with the same weights, so it is the exact transpose ``A^T``
(:func:`project` and :func:`backproject`, numba, parallel over views and over voxels).

SIRT
----
With ``R = 1 / (A 1)`` (per pixel) and ``C = 1 / (A^T 1)`` (per voxel),
``x <- x + lambda C A^T R (b - A x)`` from ``x = 0``, clipped at zero when
``positive`` (the diffraction efficiency is not negative).  Pixels whose ray misses the
volume have ``A 1 = 0`` and no weight.

Resolution
----------
:func:`crowther_resolution`: the object's diameter times the mean angular separation of
neighbouring views (radians), the estimate the seed quotes (Crowther et al. 1970).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import DataError

__all__ = ["backproject", "crowther_resolution", "project", "sirt", "view_axes"]


def view_axes(directions: ArrayLike) -> np.ndarray:
    """``(n, 3, 3)``: rows ``u``, ``v``, ``d`` of each view (module docstring).

    Raises
    ------
    DataError
        For directions that are not non-zero 3-vectors.
    """
    d = np.asarray(directions, dtype=np.float64).reshape(-1, 3)
    norm = np.linalg.norm(d, axis=1)
    if d.size == 0 or np.any(~np.isfinite(norm)) or np.any(norm == 0):
        raise DataError("view directions must be finite non-zero 3-vectors", field="directions")
    d = d / norm[:, None]
    out = np.empty((len(d), 3, 3))
    for n, dn in enumerate(d):
        a = np.zeros(3)
        a[int(np.argmin(np.abs(dn)))] = 1.0
        u = np.cross(a, dn)
        u /= np.linalg.norm(u)
        out[n] = (u, np.cross(dn, u), dn)
    return out


@numba.njit(cache=True, nogil=True)
def _splat_setup(
    axes: np.ndarray, shape: tuple[int, int, int], n_u: int, n_v: int
) -> tuple[float, float, float, float, float, float, float, float]:
    """Detector coordinates (pixel index units) of voxel (0, 0, 0) and their steps."""
    nz, ny, nx = shape
    u, v = axes[0], axes[1]
    x0, y0, z0 = -(nx - 1) / 2.0, -(ny - 1) / 2.0, -(nz - 1) / 2.0
    cu = (n_u - 1) / 2.0 + x0 * u[0] + y0 * u[1] + z0 * u[2]
    cv = (n_v - 1) / 2.0 + x0 * v[0] + y0 * v[1] + z0 * v[2]
    return cu, cv, u[0], u[1], u[2], v[0], v[1], v[2]


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _project(volume: np.ndarray, axes: np.ndarray, n_u: int, n_v: int) -> np.ndarray:
    nz, ny, nx = volume.shape
    n_views = axes.shape[0]
    out = np.zeros((n_views, n_v, n_u), dtype=np.float32)
    for view in numba.prange(n_views):
        cu, cv, ux, uy, uz, vx, vy, vz = _splat_setup(axes[view], (nz, ny, nx), n_u, n_v)
        img = out[view]
        for k in range(nz):
            for j in range(ny):
                pu = cu + j * uy + k * uz
                pv = cv + j * vy + k * vz
                for i in range(nx):
                    value = volume[k, j, i]
                    fu, fv = pu + i * ux, pv + i * vx
                    if 0.0 <= fu < n_u - 1 and 0.0 <= fv < n_v - 1:  # all four pixels exist
                        iu, iv = int(fu), int(fv)
                        wu, wv = fu - iu, fv - iv
                        a = value * (1 - wv)
                        b = value * wv
                        img[iv, iu] += a * (1 - wu)
                        img[iv, iu + 1] += a * wu
                        img[iv + 1, iu] += b * (1 - wu)
                        img[iv + 1, iu + 1] += b * wu
                    else:
                        iu, iv = math.floor(fu), math.floor(fv)
                        wu, wv = fu - iu, fv - iv
                        for dv in range(2):
                            for du in range(2):
                                a, b = iu + du, iv + dv
                                if 0 <= a < n_u and 0 <= b < n_v:
                                    w = (wu if du else 1 - wu) * (wv if dv else 1 - wv)
                                    img[b, a] += value * w
    return out


@numba.njit(cache=True, nogil=True, parallel=True, fastmath=True)
def _backproject(images: np.ndarray, axes: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    nz, ny, nx = shape
    n_views, n_v, n_u = images.shape
    out = np.zeros((nz, ny, nx), dtype=np.float32)
    setup = np.empty((n_views, 8))
    for view in range(n_views):
        setup[view] = _splat_setup(axes[view], (nz, ny, nx), n_u, n_v)
    for k in numba.prange(nz):
        for view in range(n_views):
            cu, cv, ux, uy, uz, vx, vy, vz = setup[view]
            img = images[view]
            for j in range(ny):
                pu = cu + j * uy + k * uz
                pv = cv + j * vy + k * vz
                row = out[k, j]
                for i in range(nx):
                    fu, fv = pu + i * ux, pv + i * vx
                    if 0.0 <= fu < n_u - 1 and 0.0 <= fv < n_v - 1:  # all four pixels exist
                        iu, iv = int(fu), int(fv)
                        wu, wv = fu - iu, fv - iv
                        top = img[iv, iu] * (1 - wu) + img[iv, iu + 1] * wu
                        bottom = img[iv + 1, iu] * (1 - wu) + img[iv + 1, iu + 1] * wu
                        row[i] += top * (1 - wv) + bottom * wv
                        continue
                    iu, iv = math.floor(fu), math.floor(fv)
                    wu, wv = fu - iu, fv - iv
                    total = 0.0
                    for dv in range(2):
                        for du in range(2):
                            a, b = iu + du, iv + dv
                            if 0 <= a < n_u and 0 <= b < n_v:
                                w = (wu if du else 1 - wu) * (wv if dv else 1 - wv)
                                total += img[b, a] * w
                    row[i] += total
    return out


def _check_volume(volume: np.ndarray) -> np.ndarray:
    vol = np.ascontiguousarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise DataError(f"a volume must be 3-D, got shape {vol.shape}", field="volume")
    return vol


def project(volume: ArrayLike, directions: ArrayLike, detector: tuple[int, int]) -> np.ndarray:
    """Parallel projections ``(n_views, n_v, n_u)`` of ``volume`` along ``directions``
    onto ``detector = (n_v, n_u)`` pixels (module docstring)."""
    vol = _check_volume(np.asarray(volume))
    n_v, n_u = detector
    return np.asarray(_project(vol, view_axes(directions), int(n_u), int(n_v)))


def backproject(
    images: ArrayLike, directions: ArrayLike, shape: tuple[int, int, int]
) -> np.ndarray:
    """The transpose of :func:`project`: ``(nz, ny, nx)`` from ``(n_views, n_v, n_u)``."""
    imgs = np.ascontiguousarray(images, dtype=np.float32)
    axes = view_axes(directions)
    if imgs.ndim != 3 or imgs.shape[0] != len(axes):
        raise DataError(f"need one image per direction, got {imgs.shape} for {len(axes)}",
                        field="images")  # fmt: skip
    nz, ny, nx = (int(n) for n in shape)
    return np.asarray(_backproject(imgs, axes, (nz, ny, nx)))


def sirt(
    images: ArrayLike,
    directions: ArrayLike,
    shape: tuple[int, int, int],
    *,
    iterations: int = 100,
    relaxation: float = 1.0,
    positive: bool = True,
) -> np.ndarray:
    """SIRT reconstruction of a ``shape`` volume from projections (module docstring).

    Parameters
    ----------
    images : (n_views, n_v, n_u)
        Projections, e.g. normalised topographs binned by direction; NaN pixels (no
        data) carry no weight.
    directions : (n_views, 3)
        View directions (lab frame; need not be unit vectors).
    shape : (nz, ny, nx)
        Volume to reconstruct.
    iterations, relaxation, positive
        Number of updates, step ``lambda`` (0 < lambda < 2), clip at zero.

    Raises
    ------
    DataError
        For mismatched shapes or a relaxation outside (0, 2).
    """
    if not 0 < relaxation < 2:
        raise DataError(f"must be in (0, 2), got {relaxation}", field="relaxation")
    b = np.asarray(images, dtype=np.float32)
    axes = view_axes(directions)
    if b.ndim != 3 or b.shape[0] != len(axes):
        raise DataError(f"need one image per direction, got {b.shape} for {len(axes)}",
                        field="images")  # fmt: skip
    known = np.isfinite(b)
    b = np.where(known, b, 0.0).astype(np.float32)
    nz, ny, nx = (int(n) for n in shape)
    n_v, n_u = b.shape[1:]
    ones = np.ones((nz, ny, nx), np.float32)
    row = _project(ones, axes, n_u, n_v)
    r = np.where(known & (row > 1e-6), 1.0 / np.maximum(row, 1e-6), 0.0).astype(np.float32)
    col = _backproject(np.where(known, 1.0, 0.0).astype(np.float32), axes, (nz, ny, nx))
    c = np.where(col > 1e-6, relaxation / np.maximum(col, 1e-6), 0.0).astype(np.float32)
    x = np.zeros((nz, ny, nx), np.float32)
    for _ in range(int(iterations)):
        residual = (b - _project(x, axes, n_u, n_v)) * r
        x += c * _backproject(residual.astype(np.float32), axes, (nz, ny, nx))
        if positive:
            np.maximum(x, 0.0, out=x)
    return x


def crowther_resolution(diameter: float, directions: ArrayLike) -> float:
    """Object diameter times the mean angle (radians) between each view direction and
    its nearest neighbour (``d`` and ``-d`` are the same view)."""
    axes = view_axes(directions)
    d = axes[:, 2]
    if len(d) < 2:
        raise DataError("need at least two views", field="directions")
    cos = np.abs(d @ d.T)
    np.fill_diagonal(cos, -1.0)
    nearest = np.arccos(np.clip(cos.max(axis=1), -1.0, 1.0))
    return float(diameter * nearest.mean())
