"""Voxel crystal shapes ``S(x)`` and their projections along rays (seed Eq. 6).

A :class:`VoxelShape` holds ``S`` on a regular grid in the crystal frame: ``values[i, j, k]``
is the crystallinity (0..1) of the voxel centred at
``((i - (nx-1)/2) v, (j - (ny-1)/2) v, (k - (nz-1)/2) v)`` with ``v = voxel_um``; the grid
is centred on the crystal frame's origin, which coincides with the lab origin (the
rotation centre) at ``omega = 0`` up to an optional offset.  The integral of ``S`` is the
crystal volume (seed section 2.2).

Projections ``P_S = integral of S along a ray`` (Eq. 6) are computed exactly for the voxel
model by a 3-D digital differential analyser (Amanatides and Woo, 1987): the ray's length
inside every voxel it crosses, times the voxel's value.  With absorption, the integrand is
weighted by ``exp(-mu (L_in + L_out))`` of Eq. 11 (see :func:`project_rays`).

Built-in shapes (seed Figs. 4 and 6, section 4): :func:`si_f_cuboid`,
:func:`wedged_lamella`, :func:`b12_prism`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import ConfigError

__all__ = [
    "B12_CELL",
    "B12_SPACE_GROUP",
    "VoxelShape",
    "b12_prism",
    "builtin_shape",
    "f_letter_mask",
    "project_rays",
    "si_f_cuboid",
    "wedged_lamella",
]

#: Vitamin-B12-like orthorhombic cell (A, degrees) and space group (seed section 4).
B12_CELL = (15.70, 22.15, 24.96, 90.0, 90.0, 90.0)
B12_SPACE_GROUP = "P 21 21 21"


@dataclass(frozen=True)
class VoxelShape:
    """Crystal shape ``S(x)`` on a voxel grid (see the module docstring).

    Attributes
    ----------
    values : ndarray (nx, ny, nz), float64
        Crystallinity of each voxel, 0..1.
    voxel_um : float
        Voxel edge, micrometres.
    name : str
        What the shape is.
    """

    values: np.ndarray
    voxel_um: float
    name: str = ""

    @property
    def voxel_mm(self) -> float:
        """Voxel edge in mm."""
        return self.voxel_um * 1e-3

    @property
    def volume_um3(self) -> float:
        """Integral of ``S`` (um^3): the diffracting volume."""
        return float(self.values.sum()) * self.voxel_um**3

    @property
    def lower_mm(self) -> np.ndarray:
        """Crystal-frame position (mm) of the grid's lower corner."""
        return -0.5 * np.asarray(self.values.shape, dtype=float) * self.voxel_mm

    def centres_um(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel-centre coordinates along x, y and z (um)."""
        return tuple(  # type: ignore[return-value]
            (np.arange(n) - (n - 1) / 2) * self.voxel_um for n in self.values.shape
        )

    def project_axis(self, axis: int) -> np.ndarray:
        """Projection of ``S`` along a crystal axis (0 = x, 1 = y, 2 = z) in um."""
        return self.values.sum(axis=axis) * self.voxel_um


def _grid(size_um: tuple[float, float, float], voxel_um: float) -> tuple[np.ndarray, ...]:
    if not voxel_um > 0:
        raise ConfigError("voxel size must be positive", field="voxel_um")
    n = [max(1, round(s / voxel_um)) for s in size_um]
    return tuple(np.meshgrid(*[(np.arange(k) - (k - 1) / 2) * voxel_um for k in n], indexing="ij"))


def f_letter_mask(u: ArrayLike, v: ArrayLike) -> np.ndarray:
    """The letter "F" in unit coordinates of a face (``u`` to the right, ``v`` up, both
    0..1): a stem, a top bar and a shorter middle bar."""
    uu, vv = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    stem = (uu >= 0.25) & (uu <= 0.45) & (vv >= 0.15) & (vv <= 0.85)
    top = (uu >= 0.25) & (uu <= 0.8) & (vv >= 0.7) & (vv <= 0.85)
    mid = (uu >= 0.25) & (uu <= 0.65) & (vv >= 0.43) & (vv <= 0.56)
    return stem | top | mid


def si_f_cuboid(
    voxel_um: float = 0.5,
    size_um: tuple[float, float, float] = (10.0, 20.0, 10.0),
    depth_um: float = 2.0,
) -> VoxelShape:
    """Silicon cuboid (x, y, z) with the letter "F" carved ``depth_um`` into the face of
    normal ``-z`` (seed Fig. 6).  On that face, the letter reads with ``u = x``, ``v = y``."""
    x, y, z = _grid(size_um, voxel_um)
    u = (x + size_um[0] / 2) / size_um[0]
    v = (y + size_um[1] / 2) / size_um[1]
    carved = f_letter_mask(u, v) & (z < -size_um[2] / 2 + depth_um)
    values = np.where(carved, 0.0, 1.0)
    return VoxelShape(values, voxel_um, "Si cuboid with a carved letter F")


def wedged_lamella(
    voxel_um: float = 0.25,
    width_um: float = 10.0,
    height_um: float = 8.0,
    thickness_um: tuple[float, float] = (1.0, 3.0),
    hole_radius_um: float = 1.5,
) -> VoxelShape:
    """Wedged lamella (seed Fig. 4): ``width`` along x, ``height`` along y, thickness along z
    growing linearly from ``thickness[0]`` at ``-x`` to ``thickness[1]`` at ``+x``, centred on
    ``z = 0``, with a circular hole of radius ``hole_radius_um`` through its centre."""
    t_max = max(thickness_um)
    x, y, z = _grid((width_um, height_um, t_max), voxel_um)
    frac = (x + width_um / 2) / width_um
    t = thickness_um[0] + (thickness_um[1] - thickness_um[0]) * frac
    inside = (np.abs(z) <= t / 2) & (x**2 + y**2 > hole_radius_um**2)
    return VoxelShape(inside.astype(float), voxel_um, "wedged Si lamella with a hole")


def b12_prism(voxel_um: float = 2.0, width_um: float = 40.0, length_um: float = 60.0) -> VoxelShape:
    """Vitamin-B12-like crystal: a hexagonal prism of ``width_um`` across corners in the
    ``x z`` plane and ``length_um`` along ``y``."""
    r = width_um / 2
    x, y, z = _grid((width_um, length_um, width_um * np.sqrt(3) / 2), voxel_um)
    inside = np.abs(y) <= length_um / 2
    for k in range(6):
        ang = np.pi / 6 + k * np.pi / 3
        inside &= x * np.cos(ang) + z * np.sin(ang) <= r * np.sqrt(3) / 2 + 1e-9
    return VoxelShape(inside.astype(float), voxel_um, "vitamin-B12-like hexagonal prism")


_BUILTIN: dict[str, Callable[..., VoxelShape]] = {
    "si-f-cuboid": si_f_cuboid,
    "si-lamella": wedged_lamella,
    "b12-prism": b12_prism,
}


def builtin_shape(name: str, voxel_um: float) -> VoxelShape:
    """One of ``si-f-cuboid``, ``si-lamella``, ``b12-prism`` at voxel size ``voxel_um``."""
    if name not in _BUILTIN:
        raise ConfigError(f"unknown shape {name!r}; choose from {sorted(_BUILTIN)}", field="shape")
    return _BUILTIN[name](voxel_um=voxel_um)


@numba.njit(cache=True, nogil=True)
def _box_interval(lo: np.ndarray, hi: np.ndarray, o: np.ndarray, d: np.ndarray) -> tuple:
    t0, t1 = -1e300, 1e300
    for ax in range(3):
        if abs(d[ax]) < 1e-300:
            if o[ax] < lo[ax] or o[ax] > hi[ax]:
                return 1.0, 0.0
        else:
            a = (lo[ax] - o[ax]) / d[ax]
            b = (hi[ax] - o[ax]) / d[ax]
            if a > b:
                a, b = b, a
            t0, t1 = max(t0, a), min(t1, b)
    return t0, t1


@numba.njit(cache=True, nogil=True)
def _march(
    s: np.ndarray, lo: np.ndarray, v: float, o: np.ndarray, d: np.ndarray, t_start: float,
    segs: np.ndarray,
) -> int:  # fmt: skip
    """Voxel segments of the ray ``o + t d`` from ``t_start``: rows ``(t_in, t_out, S)``."""
    n = np.array(s.shape)
    hi = lo + n * v
    t0, t1 = _box_interval(lo, hi, o, d)
    t0 = max(t0, t_start)
    if t1 <= t0:
        return 0
    idx = np.empty(3, np.int64)
    step = np.empty(3, np.int64)
    t_max = np.empty(3)
    t_delta = np.empty(3)
    tm = 0.5 * (t0 + min(t1, t0 + 1e-9 * v + 1e-12))
    for ax in range(3):
        p = o[ax] + tm * d[ax]
        i = int(np.floor((p - lo[ax]) / v))
        idx[ax] = min(max(i, 0), n[ax] - 1)
        if d[ax] > 0:
            step[ax] = 1
            t_max[ax] = (lo[ax] + (idx[ax] + 1) * v - o[ax]) / d[ax]
            t_delta[ax] = v / d[ax]
        elif d[ax] < 0:
            step[ax] = -1
            t_max[ax] = (lo[ax] + idx[ax] * v - o[ax]) / d[ax]
            t_delta[ax] = -v / d[ax]
        else:
            step[ax] = 0
            t_max[ax] = 1e300
            t_delta[ax] = 1e300
    t = t0
    count = 0
    while t < t1 and count < segs.shape[0]:
        ax = 0
        if t_max[1] < t_max[ax]:
            ax = 1
        if t_max[2] < t_max[ax]:
            ax = 2
        t_next = min(t_max[ax], t1)
        if t_next > t:
            segs[count, 0] = t
            segs[count, 1] = t_next
            segs[count, 2] = s[idx[0], idx[1], idx[2]]
            count += 1
        t = t_next
        idx[ax] += step[ax]
        if idx[ax] < 0 or idx[ax] >= n[ax]:
            break
        t_max[ax] += t_delta[ax]
    return count


@numba.njit(cache=True, nogil=True)
def _project_one(
    s: np.ndarray, lo: np.ndarray, v: float, o: np.ndarray, d: np.ndarray, dout: np.ndarray,
    mu: float, segs: np.ndarray, segs_out: np.ndarray,
) -> float:  # fmt: skip
    count = _march(s, lo, v, o, d, -1e300, segs)
    total = 0.0
    l_in = 0.0
    for j in range(count):
        length = segs[j, 1] - segs[j, 0]
        sv = segs[j, 2]
        if sv <= 0.0:
            continue
        if mu <= 0.0:
            total += sv * length
            continue
        tm = 0.5 * (segs[j, 0] + segs[j, 1])
        p = o + tm * d
        m = _march(s, lo, v, p, dout, 0.0, segs_out)
        l_out = 0.0
        for k in range(m):
            l_out += segs_out[k, 2] * (segs_out[k, 1] - segs_out[k, 0])
        a = mu * sv * length
        frac = length * (1.0 - np.exp(-a)) / a if a > 1e-12 else length
        total += sv * np.exp(-mu * (l_in + l_out)) * frac
        l_in += sv * length
    return total


@numba.njit(cache=True, nogil=True)
def _project_many(
    s: np.ndarray, lo: np.ndarray, v: float, origins: np.ndarray, dirs: np.ndarray,
    douts: np.ndarray, mu: float,
) -> np.ndarray:  # fmt: skip
    out = np.zeros(origins.shape[0])
    cap = 4 * (s.shape[0] + s.shape[1] + s.shape[2]) + 8
    segs = np.empty((cap, 3))
    segs_out = np.empty((cap, 3))
    for i in range(origins.shape[0]):
        out[i] = _project_one(s, lo, v, origins[i], dirs[i], douts[i], mu, segs, segs_out)
    return out


def project_rays(
    shape: VoxelShape,
    origins_mm: ArrayLike,
    directions: ArrayLike,
    *,
    rotation: ArrayLike | None = None,
    offset_mm: ArrayLike = (0.0, 0.0, 0.0),
    out_directions: ArrayLike | None = None,
    mu_per_mm: float = 0.0,
) -> np.ndarray:
    """Projections ``P_S`` (mm) of the rotated shape along lab rays (Eq. 6).

    Parameters
    ----------
    shape : VoxelShape
        ``S(x)`` in the crystal frame.
    origins_mm, directions : array (n, 3)
        Lab-frame ray origins (mm) and directions (any length; normalised here).
    rotation : array (3, 3), optional
        ``R_omega`` mapping crystal to lab (``S_lab(x) = S(R^T (x) - offset)``).
    offset_mm : array (3,)
        Crystal-frame position of the lab origin relative to the grid centre, negated:
        the shape sits at ``offset`` in the crystal frame before rotation.
    out_directions : array (n, 3), optional
        Diffracted directions ``k_out``; with ``mu_per_mm > 0`` the integrand is weighted
        by ``exp(-mu (L_in + L_out))``, which gives ``P_S T`` of Eq. 11.
    mu_per_mm : float
        Linear absorption coefficient of the crystal (1/mm); 0 switches absorption off.
    """
    r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    o = np.atleast_2d(np.asarray(origins_mm, dtype=float)) @ r - np.asarray(offset_mm, float)
    d = np.atleast_2d(np.asarray(directions, dtype=float)) @ r
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    if out_directions is None:
        dout = d.copy()
    else:
        dout = np.atleast_2d(np.asarray(out_directions, dtype=float)) @ r
        dout = dout / np.linalg.norm(dout, axis=-1, keepdims=True)
    o, d, dout = np.broadcast_arrays(o, d, dout)
    values = np.ascontiguousarray(shape.values, dtype=np.float64)
    return _project_many(
        values, shape.lower_mm, shape.voxel_mm, np.ascontiguousarray(o),
        np.ascontiguousarray(d), np.ascontiguousarray(dout), float(mu_per_mm),
    )  # fmt: skip
