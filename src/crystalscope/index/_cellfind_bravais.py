"""Bravais lattices compatible with a reduced cell: Le Page's twofold-axis criterion.

A lattice has a twofold rotation axis along the direct-lattice vector ``u`` exactly when
``u`` is perpendicular to a lattice plane ``h`` (Le Page, 1982, J. Appl. Cryst. 15,
255).  With noisy cell parameters the two are only nearly parallel; the angle between
them, the *obliquity*

.. math::

    \\cos\\delta = \\frac{|u \\cdot h|}{\\sqrt{u^T G u}\\,\\sqrt{h^T G^{-1} h}},

(``G`` the real-space metric tensor, ``u`` and ``h`` integer vectors with
``|u . h| = 1`` or ``2``) measures how far the measured metric is from having that
axis.  A Bravais lattice of a higher crystal family requires a set of twofold axes in
its conventional basis (monoclinic ``[010]``; orthorhombic the three axes; tetragonal
also ``[110]``, ``[1-10]``; hexagonal six axes in the plane and ``[001]``; rhombohedral
three axes in the hexagonal plane; cubic nine).  Its *deviation* is the largest
obliquity of those axes in the best conventional basis, in degrees.

Candidate conventional bases are built from short direct-lattice vectors of the reduced
cell (coefficients up to 2): twofold-axis vectors for the axes that must be twofold,
any short vector otherwise (monoclinic ``a``, ``c``; rhombohedral ``c``).  A basis
``T`` (columns: conventional axes in reduced coordinates) is valid for a centring when
``det T`` equals the number of lattice points per conventional cell and every reduced
basis vector has conventional coordinates in the centring's translation set.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

_MAX_INDEX = 2

#: Bravais symbol -> (crystal family, centring, symmetry order of the holohedry).
BRAVAIS: dict[str, tuple[str, str, int]] = {
    "aP": ("triclinic", "P", 2),
    "mP": ("monoclinic", "P", 4),
    "mC": ("monoclinic", "C", 4),
    "oP": ("orthorhombic", "P", 8),
    "oC": ("orthorhombic", "C", 8),
    "oI": ("orthorhombic", "I", 8),
    "oF": ("orthorhombic", "F", 8),
    "tP": ("tetragonal", "P", 16),
    "tI": ("tetragonal", "I", 16),
    "hR": ("rhombohedral", "R", 12),
    "hP": ("hexagonal", "P", 24),
    "cP": ("cubic", "P", 48),
    "cI": ("cubic", "I", 48),
    "cF": ("cubic", "F", 48),
}

_CENTRING: dict[str, tuple[tuple[float, float, float], ...]] = {
    "P": ((0, 0, 0),),
    "C": ((0, 0, 0), (0.5, 0.5, 0)),
    "I": ((0, 0, 0), (0.5, 0.5, 0.5)),
    "F": ((0, 0, 0), (0, 0.5, 0.5), (0.5, 0, 0.5), (0.5, 0.5, 0)),
    "R": ((0, 0, 0), (2 / 3, 1 / 3, 1 / 3), (1 / 3, 2 / 3, 2 / 3)),
}

_AXES_ORTHO = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
_AXES_TETRA = (*_AXES_ORTHO, (1, 1, 0), (1, -1, 0))
_AXES_HEX_PLANE = ((1, 0, 0), (0, 1, 0), (1, 1, 0))
_AXES_HEX = (*_AXES_HEX_PLANE, (1, -1, 0), (1, 2, 0), (2, 1, 0), (0, 0, 1))
_AXES_CUBIC = (*_AXES_TETRA, (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, 1, -1))

#: Twofold axes ``[uvw]`` a family requires, in its conventional basis.
_FAMILY_AXES: dict[str, tuple[tuple[int, int, int], ...]] = {
    "triclinic": (),
    "monoclinic": ((0, 1, 0),),
    "orthorhombic": _AXES_ORTHO,
    "tetragonal": _AXES_TETRA,
    "rhombohedral": _AXES_HEX_PLANE,
    "hexagonal": _AXES_HEX,
    "cubic": _AXES_CUBIC,
}

#: Ideal conventional real-space metric of each family (shape only), used to find the
#: plane ``h`` perpendicular to each required axis.
_IDEAL_METRIC: dict[str, np.ndarray] = {
    "triclinic": np.eye(3),
    "monoclinic": np.array([[1.0, 0, -0.3], [0, 1.7, 0], [-0.3, 0, 2.3]]),
    "orthorhombic": np.diag([1.0, 1.7, 2.3]),
    "tetragonal": np.diag([1.0, 1.0, 2.3]),
    "rhombohedral": np.array([[1.0, -0.5, 0], [-0.5, 1.0, 0], [0, 0, 2.3]]),
    "hexagonal": np.array([[1.0, -0.5, 0], [-0.5, 1.0, 0], [0, 0, 2.3]]),
    "cubic": np.eye(3),
}


def _plane_of(axis: tuple[int, int, int], metric: np.ndarray) -> np.ndarray:
    """Smallest integer plane normal ``h`` parallel to ``metric @ axis``."""
    h = metric @ np.asarray(axis, float)
    h = h / np.min(np.abs(h[np.abs(h) > 1e-9]))
    for scale in (1, 2, 3, 6):
        if np.allclose(h * scale, np.round(h * scale), atol=1e-9):
            return np.round(h * scale).astype(np.int64)
    raise AssertionError(f"no integer plane for axis {axis}")  # pragma: no cover


_REQUIRED: dict[str, tuple[np.ndarray, np.ndarray]] = {
    family: (
        np.array(axes, dtype=np.int64).reshape(-1, 3),
        np.array([_plane_of(a, _IDEAL_METRIC[family]) for a in axes], np.int64).reshape(-1, 3),
    )
    for family, axes in _FAMILY_AXES.items()
}


@dataclass(frozen=True)
class BravaisMatch:
    """The best conventional setting of one Bravais lattice for a reduced cell.

    Attributes
    ----------
    bravais : str
        Symbol, e.g. ``"mP"``.
    transform : numpy.ndarray, shape (3, 3), int
        Columns: the conventional axes in coordinates of the reduced basis.
    deviation_deg : float
        Largest obliquity of the required twofold axes (Le Page), degrees.
    metric : numpy.ndarray, shape (3, 3)
        Real-space metric of the conventional cell as measured (A^2), not symmetrised.
    """

    bravais: str
    transform: np.ndarray
    deviation_deg: float
    metric: np.ndarray


def _short_vectors() -> np.ndarray:
    """Primitive integer vectors with coefficients in [-2, 2], one sign each."""
    out = []
    for v in itertools.product(range(-_MAX_INDEX, _MAX_INDEX + 1), repeat=3):
        if v == (0, 0, 0) or math.gcd(*map(abs, v)) != 1:
            continue
        first = next(x for x in v if x != 0)
        if first > 0:
            out.append(v)
    return np.array(out, dtype=np.int64)


_VECTORS = _short_vectors()


def obliquities(metric: np.ndarray, axes: np.ndarray, planes: np.ndarray) -> np.ndarray:
    """Le Page obliquity (degrees) of axes ``u`` and planes ``h`` (rows) for metric ``G``."""
    inv = np.linalg.inv(metric)
    uu = np.einsum("ni,ij,nj->n", axes, metric, axes)
    hh = np.einsum("ni,ij,nj->n", planes, inv, planes)
    dot = np.abs(np.einsum("ni,ni->n", axes, planes))
    cos = np.clip(dot / np.sqrt(uu * hh), -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def twofold_axes(metric: np.ndarray, max_obliquity_deg: float) -> np.ndarray:
    """Short direct vectors (reduced coordinates) that are twofold axes within tolerance."""
    inv = np.linalg.inv(metric)
    u, h = _VECTORS, _VECTORS
    dot = np.abs(u @ h.T)
    uu = np.einsum("ni,ij,nj->n", u, metric, u)
    hh = np.einsum("ni,ij,nj->n", h, inv, h)
    cos = dot / np.sqrt(np.outer(uu, hh))
    cos[(dot != 1) & (dot != 2)] = 0.0
    best = np.degrees(np.arccos(np.clip(cos.max(axis=1), -1.0, 1.0)))
    return u[best <= max_obliquity_deg]


def _centring_ok(transforms: np.ndarray, centring: str) -> np.ndarray:
    """Which bases ``(n, 3, 3)`` describe the reduced lattice with this centring."""
    points = np.array(_CENTRING[centring])
    det = np.rint(np.abs(np.linalg.det(transforms)))
    ok = det == len(points)
    coords = np.linalg.inv(np.where(ok[:, None, None], transforms, np.eye(3)))
    frac = coords - np.floor(coords + 1e-6)  # (n, 3 coords, 3 basis vectors)
    dist = np.abs(frac.transpose(0, 2, 1)[:, :, None, :] - points[None, None, :, :])
    member = np.any(np.all(dist < 1e-4, axis=-1), axis=-1)  # (n, 3 basis vectors)
    return np.asarray(ok & np.all(member, axis=1))


def _deviations(conv: np.ndarray, family: str) -> np.ndarray:
    """Largest obliquity (degrees) of a family's required axes for metrics ``(n, 3, 3)``."""
    axes, planes = _REQUIRED[family]
    inv = np.linalg.inv(conv)
    uu = np.einsum("ai,nij,aj->na", axes, conv, axes)
    hh = np.einsum("ai,nij,aj->na", planes, inv, planes)
    dot = np.abs(np.einsum("ai,ai->a", axes, planes))
    cos = np.clip(dot[None, :] / np.sqrt(uu * hh), -1.0, 1.0)
    return np.asarray(np.degrees(np.arccos(cos)).max(axis=1))


_FAMILIES_OF_AXIS_TRIPLES = ("orthorhombic", "tetragonal", "hexagonal", "cubic")


def _bases(metric: np.ndarray, axes: np.ndarray) -> list[tuple[np.ndarray, tuple[str, ...]]]:
    """Candidate conventional bases with the families they can describe.

    Axis triples serve the families whose three axes are all twofold; a twofold ``b``
    with ``a``, ``c`` from the short vectors (near) perpendicular to it the monoclinic
    family; two twofold axes at 120 degrees with a short vector perpendicular to both
    the rhombohedral family (hexagonal axes).
    """
    out: list[tuple[np.ndarray, tuple[str, ...]]] = []
    for a, b, c in itertools.permutations(range(len(axes)), 3):
        out.append((np.column_stack([axes[a], axes[b], axes[c]]), _FAMILIES_OF_AXIS_TRIPLES))
    for b in axes:
        plane = _VECTORS[np.abs(_cosines(metric, _VECTORS, b)) < 0.2]
        for a, c in itertools.permutations(range(len(plane)), 2):
            out.append((np.column_stack([plane[a], b, plane[c]]), ("monoclinic",)))
    inv = np.linalg.inv(metric)
    for a, b in itertools.permutations(range(len(axes)), 2):
        if abs(_cosine(metric, axes[a], axes[b]) + 0.5) > 0.1:
            continue
        h = np.cross(axes[a], axes[b])  # plane of a and b; its normal is inv @ h
        normal = inv @ h
        for points in (1, 3):  # c along the normal with det [a b c] = points
            c = np.rint(points * normal / (h @ normal)).astype(np.int64)
            if h @ c == points:
                out.append((np.column_stack([axes[a], axes[b], c]), ("rhombohedral",)))
                out.append((np.column_stack([-axes[a], -axes[b], c]), ("rhombohedral",)))
    return [(t if np.linalg.det(t) > 0 else -t, f) for t, f in out if abs(np.linalg.det(t)) > 0.5]


def _cosine(metric: np.ndarray, u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ metric @ v / math.sqrt((u @ metric @ u) * (v @ metric @ v)))


def _cosines(metric: np.ndarray, many: np.ndarray, v: np.ndarray) -> np.ndarray:
    uu = np.einsum("ni,ij,nj->n", many, metric, many)
    return (many @ metric @ v) / np.sqrt(uu * (v @ metric @ v))


def _settings(transforms: np.ndarray, metric: np.ndarray, family: str) -> np.ndarray:
    """Conventional orientation of each basis: monoclinic beta >= 90 degrees."""
    if family != "monoclinic":
        return transforms
    a, c = transforms[:, :, 0], transforms[:, :, 2]
    flip = np.einsum("ni,ij,nj->n", a, metric, c) > 0
    return np.where(flip[:, None, None], transforms * np.array([-1, -1, 1]), transforms)


def _niceness(conv: np.ndarray) -> np.ndarray:
    """Sort keys between equally good settings: short axes, then ``a <= b <= c``."""
    lengths = np.sqrt(np.einsum("nii->ni", conv))
    return np.column_stack([np.round(lengths.sum(axis=1), 3), lengths])


def bravais_matches(metric: np.ndarray, *, max_deviation_deg: float = 5.0) -> list[BravaisMatch]:
    """Best setting of every Bravais lattice within ``max_deviation_deg`` of a reduced cell.

    Parameters
    ----------
    metric : numpy.ndarray, shape (3, 3)
        Real-space metric tensor ``G`` (A^2) of a (Niggli) reduced primitive cell.
    max_deviation_deg : float
        Largest Le Page deviation reported.

    Returns
    -------
    list of BravaisMatch
        One per Bravais lattice found (``aP`` always, deviation 0), unordered.
    """
    axes = twofold_axes(metric, max_deviation_deg)
    out = [BravaisMatch("aP", np.eye(3, dtype=np.int64), 0.0, metric.copy())]
    bases = _bases(metric, axes)
    for symbol, (family, centring, _) in BRAVAIS.items():
        chosen = [t for t, families in bases if family in families]
        if not chosen:
            continue
        transforms = np.array(chosen, dtype=np.int64)
        transforms = _settings(transforms[_centring_ok(transforms, centring)], metric, family)
        if len(transforms) == 0:
            continue
        conv = np.einsum("nji,jk,nkl->nil", transforms, metric, transforms)
        deviation = _deviations(conv, family)
        keep = deviation <= max_deviation_deg
        if not keep.any():
            continue
        transforms, conv, deviation = transforms[keep], conv[keep], deviation[keep]
        keys = np.column_stack([np.round(deviation, 2), _niceness(conv)])
        best = np.lexsort(keys.T[::-1])[0]
        out.append(BravaisMatch(symbol, transforms[best], float(deviation[best]), conv[best]))
    return out
