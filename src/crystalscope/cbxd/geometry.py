"""Geometry of convergent-beam X-ray diffraction (CBXD), seed section 2.1.

Frame and conventions (see ``docs/cbxd.md``)
--------------------------------------------
* Lab frame as NeXus/McStas: ``+z`` along the optical axis (the chief ray), ``+y`` up.
  The **crystal's rotation centre is the lab origin**; the lens focus lies upstream at
  ``z = -defocus_mm`` (the crystal is a distance Delta-f downstream of focus) and the
  detector plane is normal to ``z`` at a distance ``l_D`` from the focus, i.e. at
  ``z = distance_mm - defocus_mm``.
* Wave vectors are in 1/A without 2 pi: ``|k| = 1/lambda``.
* An incident ray is labelled by its angular coordinates ``(phi_x, phi_y)`` (radians):
  ``k_in ~ (tan phi_x, tan phi_y, 1)``.  A ray at ``(phi_x, phi_y)`` leaves the focus and
  crosses the plane ``z = 0`` at ``(Delta-f tan phi_x, Delta-f tan phi_y)`` (seed Fig. 1b).
* Detector pixels ``(fs, ss)`` have the pixel-centre origin; ``fs`` runs along ``-x`` and
  ``ss`` along ``-y`` (the image as seen looking downstream, ``y`` up in a display with
  row 0 at the top), and the optical axis hits pixel ``(centre_fs, centre_ss)``.

Kossel circle (Eqs. 1-3)
------------------------
All wave vectors ``q`` with ``q^2 = 1/lambda^2`` and ``(q - G/2) . G = 0`` (Eq. 1) form the
Kossel circle ``k_K(chi) = G/2 + cos(chi) a + sin(chi) b`` (Eq. 2) of radius
``cos(theta_B)/lambda``.  ``a`` lies in the plane of ``G`` and ``z`` (Eq. 3, ``a_z > 0``) and
``b = a x G / |G|``.  The Bragg streak is ``k_out(chi) = k_K(chi)`` and its deficiency line
``k_in(chi) = k_out(chi) - G``, which is the seed's ``-k_K(pi - chi)`` with ``b`` reversed
(both trace the same circle; we keep ``chi`` the same on both).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import ConfigError

__all__ = [
    "Detector",
    "KosselCircle",
    "LensPupil",
    "LineFocus",
    "MLLPair",
    "angles_to_direction",
    "chi_of_k_in",
    "crystal_position",
    "direction_to_angles",
    "kossel_circle",
    "rotation_matrix",
]


def rotation_matrix(axis: ArrayLike, angle_rad: float) -> np.ndarray:
    """Right-handed rotation by ``angle_rad`` about ``axis`` (Rodrigues); used for
    ``R_omega`` of Eqs. 6-7."""
    u = np.asarray(axis, dtype=float)
    n = np.linalg.norm(u)
    if not n > 0:
        raise ConfigError("rotation axis must be a non-zero vector", field="axis")
    u = u / n
    k = np.array([[0.0, -u[2], u[1]], [u[2], 0.0, -u[0]], [-u[1], u[0], 0.0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1.0 - np.cos(angle_rad)) * (k @ k)


@dataclass(frozen=True)
class KosselCircle:
    """Kossel circles of ``n`` reciprocal lattice points (Eq. 2).

    Attributes
    ----------
    g : ndarray (n, 3)
        Scattering vectors ``G_hkl`` in the lab frame, 1/A.
    a, b : ndarray (n, 3)
        The circle's orthogonal radius vectors of Eq. 2 (1/A); NaN where ``|G| >= 2/lambda``.
    wavelength : float
        A.
    """

    g: np.ndarray
    a: np.ndarray
    b: np.ndarray
    wavelength: float

    @property
    def radius(self) -> np.ndarray:
        """``cos(theta_B) / lambda`` (1/A)."""
        return np.linalg.norm(self.a, axis=-1)

    @property
    def theta(self) -> np.ndarray:
        """Bragg angles ``theta_B`` (rad) from ``sin(theta_B) = lambda |G| / 2``."""
        return np.arcsin(np.clip(self.wavelength * np.linalg.norm(self.g, axis=-1) / 2, 0, 1))

    def k_out(self, chi: ArrayLike) -> np.ndarray:
        """Bragg streak ``k_out(chi) = k_K(chi)`` (Eq. 2); ``chi`` broadcasts against
        ``(n,)``; returns ``chi.shape + (3,)``."""
        c = np.asarray(chi, dtype=float)[..., None]
        return self.g / 2 + np.cos(c) * self.a + np.sin(c) * self.b

    def k_in(self, chi: ArrayLike) -> np.ndarray:
        """Deficiency line ``k_in(chi) = k_out(chi) - G`` (1/A)."""
        return self.k_out(chi) - self.g

    def max_cos_to_axis(self) -> np.ndarray:
        """Largest ``k_in . z * lambda`` on each circle: the cosine of the smallest angle
        between any incident ray of the deficiency line and the optical axis."""
        return self.wavelength * (-self.g[:, 2] / 2 + np.hypot(self.a[:, 2], self.b[:, 2]))


def kossel_circle(g: ArrayLike, wavelength: float) -> KosselCircle:
    """Kossel circles of scattering vectors ``g`` (n, 3) in 1/A (Eqs. 1-3).

    ``a_z^2 = (1/lambda^2 - G^2/4) / (1 + G_z^2 / (G_x^2 + G_y^2))``,
    ``a_x = -a_z G_z G_x / (G_x^2 + G_y^2)``, ``a_y = -a_z G_z G_y / (G_x^2 + G_y^2)``
    (Eq. 3, ``a_z >= 0``); where ``G`` is along ``z`` the choice is ``a`` along ``x``.
    ``b = a x G / |G|`` so that ``|b| = |a|``.
    """
    gv = np.atleast_2d(np.asarray(g, dtype=float))
    g2 = np.sum(gv**2, axis=-1)
    r2 = 1.0 / wavelength**2 - g2 / 4.0
    r2 = np.where(r2 > 0, r2, np.nan)
    gxy2 = gv[:, 0] ** 2 + gv[:, 1] ** 2
    on_axis = gxy2 < 1e-24 * np.maximum(g2, 1e-300)
    safe = np.where(on_axis, 1.0, gxy2)
    az = np.sqrt(r2 / (1.0 + gv[:, 2] ** 2 / safe))
    a = np.stack([-az * gv[:, 2] * gv[:, 0] / safe, -az * gv[:, 2] * gv[:, 1] / safe, az], axis=-1)
    a = np.where(on_axis[:, None], np.stack([np.sqrt(r2), 0 * r2, 0 * r2], axis=-1), a)
    gn = np.sqrt(np.where(g2 > 0, g2, np.nan))
    b = np.cross(a, gv) / gn[:, None]
    return KosselCircle(gv, a, b, float(wavelength))


def chi_of_k_in(circle: KosselCircle, k_in: ArrayLike) -> np.ndarray:
    """Azimuth ``chi`` (rad) of the point of each Kossel circle nearest to ``k_in``
    (exactly on it when ``k_in`` satisfies Bragg's law for ``G``)."""
    v = np.asarray(k_in, dtype=float) + circle.g / 2
    return np.arctan2(np.sum(v * circle.b, -1), np.sum(v * circle.a, -1))


def angles_to_direction(phi_x: ArrayLike, phi_y: ArrayLike) -> np.ndarray:
    """Unit ray direction ``(tan phi_x, tan phi_y, 1) / norm`` for angles in rad."""
    tx, ty = np.tan(np.asarray(phi_x, float)), np.tan(np.asarray(phi_y, float))
    v = np.stack([tx, ty, np.ones_like(tx)], axis=-1)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def direction_to_angles(k: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Angular coordinates ``(phi_x, phi_y)`` (rad) of wave vectors ``k`` (..., 3)."""
    kv = np.asarray(k, dtype=float)
    return np.arctan2(kv[..., 0], kv[..., 2]), np.arctan2(kv[..., 1], kv[..., 2])


def crystal_position(phi_x: ArrayLike, phi_y: ArrayLike, defocus_mm: float) -> np.ndarray:
    """Where the ray ``(phi_x, phi_y)`` from the focus crosses the plane of the crystal's
    rotation centre (``z = 0``): ``(Delta-f tan phi_x, Delta-f tan phi_y, 0)`` in mm."""
    tx, ty = np.tan(np.asarray(phi_x, float)), np.tan(np.asarray(phi_y, float))
    return np.stack([defocus_mm * tx, defocus_mm * ty, np.zeros_like(tx)], axis=-1)


def _rect_solid_angle(x0: float, x1: float, y0: float, y1: float) -> float:
    def f(a: float, b: float) -> float:
        return float(np.arctan(a * b / np.sqrt(1 + a * a + b * b)))

    return f(x1, y1) - f(x0, y1) - f(x1, y0) + f(x0, y0)


@dataclass(frozen=True)
class LensPupil:
    """Rectangular exit pupil of the lens in angular coordinates (rad).

    ``phi_x = (lo, hi)`` and ``phi_y = (lo, hi)``; ``|A|^2 = 1`` inside, 0 outside.  An
    on-axis lens with numerical apertures ``NA_x, NA_y`` spans ``-asin(NA)..asin(NA)``;
    an off-axis lens spans ``asin(inner)..asin(inner + 2 NA)`` on each axis (seed 5.1).
    """

    phi_x: tuple[float, float]
    phi_y: tuple[float, float]

    def __post_init__(self) -> None:
        for name in ("phi_x", "phi_y"):
            lo, hi = getattr(self, name)
            if not (-np.pi / 4 < lo < hi < np.pi / 4):
                raise ConfigError("pupil range must satisfy -45 < lo < hi < 45 deg", field=name)

    @classmethod
    def on_axis(cls, na_x: float, na_y: float) -> LensPupil:
        """Pupil centred on the optical axis, semi-angles ``asin(NA)`` per axis."""
        ax, ay = float(np.arcsin(na_x)), float(np.arcsin(na_y))
        return cls((-ax, ax), (-ay, ay))

    @classmethod
    def off_axis(cls, na_x: float, na_y: float, inner_x: float, inner_y: float) -> LensPupil:
        """Off-axis pupil from ``asin(inner)`` to ``asin(inner + 2 NA)`` on each axis (the
        seed's NA of an off-axis lens is the half-width of its convergence: NA 0.015 with
        apertures 10..45 um from the axis at f = 1.15 mm, inner = 0.0087)."""
        return cls(
            (float(np.arcsin(inner_x)), float(np.arcsin(inner_x + 2 * na_x))),
            (float(np.arcsin(inner_y)), float(np.arcsin(inner_y + 2 * na_y))),
        )

    @property
    def centre(self) -> tuple[float, float]:
        """Angular coordinates of the pupil centre (rad)."""
        return (sum(self.phi_x) / 2, sum(self.phi_y) / 2)

    @property
    def max_angle(self) -> float:
        """Largest angle (rad) between any ray of the pupil and the optical axis."""
        tx = max(abs(np.tan(v)) for v in self.phi_x)
        ty = max(abs(np.tan(v)) for v in self.phi_y)
        return float(np.arctan(np.hypot(tx, ty)))

    @property
    def solid_angle(self) -> float:
        """Solid angle of the pupil (sr), exact for the rectangle in ``tan`` coordinates."""
        tx, ty = np.tan(self.phi_x), np.tan(self.phi_y)
        return _rect_solid_angle(tx[0], tx[1], ty[0], ty[1])

    @property
    def contains_axis(self) -> bool:
        """Whether the chief-ray direction ``(0, 0)`` is inside (on-axis lens)."""
        return bool(self.contains(0.0, 0.0))

    def contains(self, phi_x: ArrayLike, phi_y: ArrayLike, margin: float = 0.0) -> np.ndarray:
        """``True`` inside the pupil grown by ``margin`` rad on each side."""
        px, py = np.asarray(phi_x), np.asarray(phi_y)
        return (
            (px >= self.phi_x[0] - margin)
            & (px <= self.phi_x[1] + margin)
            & (py >= self.phi_y[0] - margin)
            & (py <= self.phi_y[1] + margin)
        )

    def margin(self, phi_x: ArrayLike, phi_y: ArrayLike) -> np.ndarray:
        """Signed angular distance (rad) to the nearest pupil edge along ``phi_x`` or
        ``phi_y``: positive inside, negative outside."""
        px, py = np.asarray(phi_x), np.asarray(phi_y)
        return np.minimum(
            np.minimum(px - self.phi_x[0], self.phi_x[1] - px),
            np.minimum(py - self.phi_y[0], self.phi_y[1] - py),
        )

    def aperture(self, phi_x: ArrayLike, phi_y: ArrayLike) -> np.ndarray:
        """``|A(phi_x, phi_y)|^2`` of Eqs. 5 and 7: 1 inside, 0 outside."""
        return self.contains(phi_x, phi_y).astype(float)


@dataclass(frozen=True)
class LineFocus:
    """A line focus (or the zero-order beam) of an MLL pair at the focal plane.

    ``x_mm``, ``y_mm`` are the ``(lo, hi)`` extents in the focal plane ``z = z_mm`` (a
    line focus has ``lo == hi`` on its focusing axis); ``phi_x``, ``phi_y`` the ranges of
    ray angles it carries (``(0, 0)`` on a collimated axis).
    """

    name: str
    z_mm: float
    x_mm: tuple[float, float]
    y_mm: tuple[float, float]
    phi_x: tuple[float, float]
    phi_y: tuple[float, float]
    weight: float


@dataclass(frozen=True)
class MLLPair:
    """A crossed pair of multilayer Laue lenses (seed 5.1).

    Lens ``x`` focuses in ``x`` (focal length ``focal_x_mm``, diffraction efficiency
    ``efficiency_x``), lens ``y`` in ``y``; both focus to a common plane.  The beam holds a
    2-D focus ``k_in(phi_x, phi_y)``, the vertical line focus ``k_in(phi_x, 0)`` (lens x
    diffracts, lens y zero order), the horizontal line focus ``k_in(0, phi_y)`` and the
    zero order ``k_in(0, 0)``, with weights ``e_x e_y``, ``e_x (1-e_y)``, ``(1-e_x) e_y``,
    ``(1-e_x)(1-e_y)`` of the incident flux.  A ray leaving lens x at height ``h`` crosses
    the focus with ``tan phi_x = -h / f_x``.
    """

    pupil: LensPupil
    focal_x_mm: float
    focal_y_mm: float
    efficiency_x: float = 1.0
    efficiency_y: float = 1.0

    def aperture_heights(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """The lens apertures: ``x`` and ``y`` height ranges (mm) at the lenses."""
        hx = sorted(-self.focal_x_mm * np.tan(v) for v in self.pupil.phi_x)
        hy = sorted(-self.focal_y_mm * np.tan(v) for v in self.pupil.phi_y)
        return (float(hx[0]), float(hx[1])), (float(hy[0]), float(hy[1]))

    def components(self, defocus_mm: float) -> list[LineFocus]:
        """The 2-D focus, both line foci and the zero order, in the focal plane
        ``z = -defocus_mm`` (lab frame with the crystal at the origin)."""
        ex, ey = self.efficiency_x, self.efficiency_y
        hx, hy = self.aperture_heights()
        z = -float(defocus_mm)
        px, py = self.pupil.phi_x, self.pupil.phi_y
        return [
            LineFocus("focus", z, (0.0, 0.0), (0.0, 0.0), px, py, ex * ey),
            LineFocus("line_x", z, (0.0, 0.0), hy, px, (0.0, 0.0), ex * (1 - ey)),
            LineFocus("line_y", z, hx, (0.0, 0.0), (0.0, 0.0), py, (1 - ex) * ey),
            LineFocus("zero", z, hx, hy, (0.0, 0.0), (0.0, 0.0), (1 - ex) * (1 - ey)),
        ]


@dataclass(frozen=True)
class Detector:
    """Flat detector normal to the optical axis, ``distance_mm`` (``l_D``) from the focus.

    ``shape = (n_ss, n_fs)``; ``fs`` along ``-x``, ``ss`` along ``-y``; the optical axis
    hits pixel ``(centre_fs, centre_ss)`` (pixel-centre origin).
    """

    distance_mm: float
    shape: tuple[int, int]
    pixel_mm: float
    centre_fs: float
    centre_ss: float

    def plane_z(self, defocus_mm: float) -> float:
        """Lab ``z`` of the detector plane (mm) with the crystal at the origin."""
        return self.distance_mm - defocus_mm

    def to_pixels(self, xy_mm: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(fs, ss)`` of lab positions ``(x, y)`` in the detector plane."""
        p = np.asarray(xy_mm, dtype=float)
        return self.centre_fs - p[..., 0] / self.pixel_mm, self.centre_ss - p[
            ..., 1
        ] / self.pixel_mm

    def to_lab(self, fs: ArrayLike, ss: ArrayLike, defocus_mm: float) -> np.ndarray:
        """Lab positions (mm) of pixel coordinates ``(fs, ss)``."""
        f, s = np.asarray(fs, float), np.asarray(ss, float)
        x = (self.centre_fs - f) * self.pixel_mm
        y = (self.centre_ss - s) * self.pixel_mm
        return np.stack([x, y, np.full_like(x, self.plane_z(defocus_mm))], axis=-1)

    def hit(self, origin_mm: ArrayLike, k: ArrayLike, defocus_mm: float) -> np.ndarray:
        """Where rays from ``origin_mm`` along wave vectors ``k`` meet the detector plane
        (lab ``(x, y)`` in mm; NaN for rays not going downstream)."""
        o = np.asarray(origin_mm, dtype=float)
        kv = np.asarray(k, dtype=float)
        kz = np.where(kv[..., 2] > 0, kv[..., 2], np.nan)
        t = (self.plane_z(defocus_mm) - o[..., 2]) / kz
        return o[..., :2] + t[..., None] * kv[..., :2]
