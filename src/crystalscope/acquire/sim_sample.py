"""The simulated specimen: a TEM grid with crystals, and its geometry on the stage.

Specimen model
--------------
A copper mesh grid (square holes of pitch ``mesh_pitch_um``, opaque bars of width
``bar_width_um``, a hole centred on the grid origin) carries a thin support film
(transmission ``film_transmission`` in images) and crystals.  Each crystal is a right
prism: a convex outline in the grid plane (a disc, an ellipse or a polygon, given about
its centre, in micrometres) extruded by its ``thickness_um`` along the grid normal, with
its centre at grid coordinates ``(x_um, y_um, z_um)``; ``z_um`` is the height of the
centre along the beam direction (lab ``+z``) at zero tilt.  Its orientation ``U`` (a
proper rotation, crystal Cartesian frame to lab frame at zero tilt, docs/conventions.md)
is given or drawn uniformly from ``default_rng([seed, 10, i])``; all crystals share one
structure (``source``, the project's structure-factor configuration).

Stage geometry
--------------
The stage position ``S = (x_um, y_um, z_um)`` is the specimen point brought to the
eucentric point (the lab origin, where the optical axis meets the alpha axis).  A
specimen point ``p`` (grid coordinates, um) is at the lab position

.. math::

    \\mathbf{r} = R_x(\\alpha)\\, R_y(\\beta)\\, (\\mathbf{p} - \\mathbf{S}),

right-handed rotations about lab ``x`` (alpha, the goniometer axis, NeXus) and the
holder's ``y`` (beta).  A crystal whose centre is ``dz`` above the rotation axis
(``p - S = (0, 0, dz)``) therefore projects at ``(x, y) = (0, -dz sin alpha)``: it
drifts across the field of view as the stage turns, the drift that crystal tracking
corrects.  The orientation at the stage position is ``R_x(alpha) R_y(beta) U``.

The projection of a crystal along the beam is the convex hull of its prism's vertices
(both faces) in the lab ``xy`` plane: a plate seen at tilt is foreshortened by
``cos(alpha)`` and widened by ``thickness * sin(alpha)``.  Discs and ellipses are
polygons of :data:`OUTLINE_VERTICES` vertices scaled to the exact area.

Overlaps
--------
:func:`polygon_disc_area` is the exact area of a convex polygon inside a disc (the
selected-area aperture): the sum over the polygon's edges of the signed area of the
triangle (disc centre, edge) inside the disc, each part a triangle where the edge runs
inside the disc and a circular sector where it runs outside.
:func:`polygon_coverage` rasterises a polygon onto a pixel grid (pixel-centre
coordinates): exact along ``fs``, sampled on :data:`COVERAGE_ROWS` lines per pixel along
``ss``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field, model_validator

from crystalscope.acquire.interfaces import StagePosition
from crystalscope.config import StrictModel
from crystalscope.errors import ConfigError
from crystalscope.model.orientation import random_rotation
from crystalscope.simulate.config import CrystalConfig, SourceConfig
from crystalscope.simulate.rotation import check_orientation
from crystalscope.simulate.structure_factors import StructureFactors, load_structure_factors

__all__ = [
    "COVERAGE_ROWS",
    "OUTLINE_VERTICES",
    "CrystalSpec",
    "GridConfig",
    "RandomCrystalsConfig",
    "Sample",
    "SampleConfig",
    "SimCrystal",
    "convex_hull",
    "grid_plane_coordinates",
    "polygon_area",
    "polygon_coverage",
    "polygon_disc_area",
    "specimen_to_lab",
    "stage_matrix",
]

#: Vertices of the polygon standing for a disc or an ellipse.
OUTLINE_VERTICES = 96
#: Sample lines per pixel along the slow-scan axis in :func:`polygon_coverage`.
COVERAGE_ROWS = 4


# ---------------------------------------------------------------------- configuration


class CrystalSpec(StrictModel):
    """One crystal on the grid (lengths in micrometres, angles in degrees)."""

    x_um: float = 0.0
    y_um: float = 0.0
    z_um: float = Field(0.0, description="height of the centre along the beam at zero tilt")
    shape: Literal["disc", "ellipse", "polygon"] = "disc"
    size_um: float = Field(0.5, gt=0, description="disc diameter or ellipse major axis")
    minor_um: float | None = Field(None, gt=0, description="ellipse minor axis")
    angle_deg: float = Field(0.0, description="in-plane rotation of the outline")
    vertices_um: list[tuple[float, float]] | None = Field(
        None, description="polygon outline about the centre (convex; else its hull)"
    )
    thickness_um: float = Field(0.2, gt=0)
    orientation_u: tuple[float, float, float, float, float, float, float, float, float] | None = (
        Field(None, description="U at zero tilt, row by row; None: random from the seed")
    )

    @model_validator(mode="after")
    def _shape_fields(self) -> CrystalSpec:
        if self.shape == "ellipse" and self.minor_um is None:
            raise ValueError("an ellipse needs minor_um")
        if self.shape == "polygon" and (self.vertices_um is None or len(self.vertices_um) < 3):
            raise ValueError("a polygon needs at least 3 vertices_um")
        return self


class RandomCrystalsConfig(StrictModel):
    """Crystals scattered at random over an area (in the grid holes only)."""

    n: int = Field(0, ge=0)
    area_um: tuple[float, float, float, float] = Field(
        (-100.0, 100.0, -100.0, 100.0), description="x_min, x_max, y_min, y_max"
    )
    size_um: tuple[float, float] = Field((0.3, 1.0), description="range of sizes")
    aspect: tuple[float, float] = Field((0.5, 1.0), description="minor/major axis range")
    thickness_um: tuple[float, float] = (0.1, 0.3)
    z_um: tuple[float, float] = Field((-1.0, 1.0), description="range of heights")
    min_separation_um: float = Field(1.5, ge=0, description="between crystal centres")


class GridConfig(StrictModel):
    """The mesh grid and its support film."""

    mesh_pitch_um: float = Field(63.5, gt=0, description="400 mesh")
    bar_width_um: float = Field(25.0, ge=0)
    film_transmission: float = Field(0.95, gt=0, le=1, description="in images")

    @model_validator(mode="after")
    def _bars_fit(self) -> GridConfig:
        if self.bar_width_um >= self.mesh_pitch_um:
            raise ValueError("bar_width_um must be smaller than mesh_pitch_um")
        return self


class SampleConfig(StrictModel):
    """A specimen: structure, crystal shape parameters, crystals and grid."""

    seed: int = 0
    source: SourceConfig = Field(
        default_factory=lambda: SourceConfig(structure="builtin:monoclinic-organic", d_min=0.8)
    )
    profile: Literal["gaussian", "shape"] = "gaussian"
    mosaicity_deg: float = Field(0.05, ge=0)
    crystals: list[CrystalSpec] = Field(default_factory=list)
    random: RandomCrystalsConfig = Field(default_factory=RandomCrystalsConfig)
    grid: GridConfig = Field(default_factory=GridConfig)


# ---------------------------------------------------------------------- geometry


def stage_matrix(alpha_deg: float, beta_deg: float = 0.0) -> np.ndarray:
    """``R_x(alpha) @ R_y(beta)``: specimen (holder) frame to lab frame, right-handed."""
    a, b = math.radians(alpha_deg), math.radians(beta_deg)
    ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, ca, -sa], [0.0, sa, ca]])
    ry = np.array([[cb, 0.0, sb], [0.0, 1.0, 0.0], [-sb, 0.0, cb]])
    return rx @ ry


def _stage_vector(position: StagePosition) -> np.ndarray:
    return np.array([position.x_um, position.y_um, position.z_um])


def specimen_to_lab(points_um: ArrayLike, position: StagePosition) -> np.ndarray:
    """Lab positions (um) of specimen points ``(..., 3)`` at a stage position."""
    p = np.asarray(points_um, dtype=float)
    r = stage_matrix(position.alpha_deg, position.beta_deg)
    return np.asarray((p - _stage_vector(position)) @ r.T, dtype=float)


def grid_plane_coordinates(lab_xy_um: ArrayLike, position: StagePosition) -> np.ndarray:
    """Grid-plane coordinates ``(x, y)`` (um) seen along the beam at lab ``(x, y)``.

    The point of the grid plane ``z = 0`` whose projection lands on ``lab_xy_um``
    (``(..., 2)``); NaN where the plane is seen edge-on.
    """
    xy = np.asarray(lab_xy_um, dtype=float)
    r = stage_matrix(position.alpha_deg, position.beta_deg)
    a = r[:2, :2]
    s = _stage_vector(position)
    if abs(np.linalg.det(a)) < 1e-9:
        return np.full(xy.shape, np.nan)
    rhs = xy + (r[:2, :] @ s)
    return np.asarray(np.linalg.solve(a, rhs.reshape(-1, 2).T).T.reshape(xy.shape), dtype=float)


def convex_hull(points: ArrayLike) -> np.ndarray:
    """Convex hull of 2-D points (monotone chain), counter-clockwise, shape (K, 2)."""
    pts = np.unique(np.asarray(points, dtype=float).reshape(-1, 2), axis=0)
    if len(pts) < 3:
        return pts

    def half(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2 and _cross(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def polygon_area(poly: ArrayLike) -> float:
    """Area of a simple polygon (shoelace formula; positive for counter-clockwise)."""
    p = np.asarray(poly, dtype=float).reshape(-1, 2)
    if len(p) < 3:
        return 0.0
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def polygon_disc_area(poly: ArrayLike, centre: ArrayLike, radius: float) -> float:
    """Exact area of a counter-clockwise polygon inside a disc (module docstring).

    Parameters
    ----------
    poly : array_like, shape (M, 2)
        Polygon vertices, counter-clockwise (any length unit).
    centre : (x, y)
        Disc centre, same unit.
    radius : float
        Disc radius, same unit.
    """
    p = np.asarray(poly, dtype=float).reshape(-1, 2) - np.asarray(centre, dtype=float)
    if len(p) < 3 or radius <= 0:
        return 0.0
    a, b = p, np.roll(p, -1, axis=0)
    d = b - a
    qa = np.einsum("ij,ij->i", d, d)
    qb = 2.0 * np.einsum("ij,ij->i", a, d)
    qc = np.einsum("ij,ij->i", a, a) - radius**2
    disc = qb**2 - 4.0 * qa * qc
    root = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(qa > 0, (-qb - root) / (2.0 * qa), 0.0)
        t2 = np.where(qa > 0, (-qb + root) / (2.0 * qa), 0.0)
    t1 = np.where(disc > 0, np.clip(t1, 0.0, 1.0), 0.0)
    t2 = np.where(disc > 0, np.clip(t2, 0.0, 1.0), 0.0)
    ts = np.stack([np.zeros_like(t1), t1, t2, np.ones_like(t1)], axis=1)  # (M, 4)
    pts = a[:, None, :] + ts[:, :, None] * d[:, None, :]
    p0, p1 = pts[:, :-1].reshape(-1, 2), pts[:, 1:].reshape(-1, 2)
    mid = 0.5 * (p0 + p1)
    inside = np.einsum("ij,ij->i", mid, mid) <= radius**2
    cross = p0[:, 0] * p1[:, 1] - p0[:, 1] * p1[:, 0]
    dot = np.einsum("ij,ij->i", p0, p1)
    area = np.where(inside, 0.5 * cross, 0.5 * radius**2 * np.arctan2(cross, dot))
    return max(float(np.sum(area)), 0.0)


def polygon_coverage(
    poly_px: ArrayLike, shape: tuple[int, int], *, rows_per_px: int = COVERAGE_ROWS
) -> np.ndarray:
    """Fraction of each pixel covered by a convex polygon.

    Parameters
    ----------
    poly_px : array_like, shape (M, 2)
        Vertices ``(fs, ss)`` in pixel-centre coordinates (pixel ``[i, j]`` covers
        ``j - 0.5 .. j + 0.5`` along fs and ``i - 0.5 .. i + 0.5`` along ss).
    shape : (ny, nx)
        Image shape.
    rows_per_px : int
        Sample lines per pixel along ss (exact along fs).

    Returns
    -------
    numpy.ndarray, shape (ny, nx), float64
    """
    out = np.zeros(shape, dtype=float)
    p = np.asarray(poly_px, dtype=float).reshape(-1, 2)
    if len(p) < 3:
        return out
    ny, nx = shape
    i0 = max(math.floor(p[:, 1].min() + 0.5), 0)
    i1 = min(math.ceil(p[:, 1].max() + 0.5), ny)
    j0 = max(math.floor(p[:, 0].min() + 0.5), 0)
    j1 = min(math.ceil(p[:, 0].max() + 0.5), nx)
    if i1 <= i0 or j1 <= j0:
        return out
    n = int(rows_per_px)
    y = (np.arange(i0, i1)[:, None] - 0.5 + (np.arange(n)[None, :] + 0.5) / n).ravel()
    a, b = p, np.roll(p, -1, axis=0)
    ya, yb = a[:, 1][None, :], b[:, 1][None, :]
    spans = ((ya <= y[:, None]) & (yb > y[:, None])) | ((yb <= y[:, None]) & (ya > y[:, None]))
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (y[:, None] - ya) / (yb - ya)
    x = a[:, 0][None, :] + t * (b[:, 0] - a[:, 0])[None, :]
    left = np.where(spans, x, np.inf).min(axis=1)
    right = np.where(spans, x, -np.inf).max(axis=1)
    cols = np.arange(j0, j1)[None, :]
    cover = np.clip(
        np.minimum(right[:, None], cols + 0.5) - np.maximum(left[:, None], cols - 0.5), 0.0, 1.0
    )
    out[i0:i1, j0:j1] = cover.reshape(i1 - i0, n, j1 - j0).mean(axis=1)
    return out


def _ellipse(major: float, minor: float, angle_deg: float) -> np.ndarray:
    n = OUTLINE_VERTICES
    t = 2.0 * math.pi * np.arange(n) / n
    # scale so the polygon has the ellipse's exact area
    k = math.sqrt((2.0 * math.pi / n) / math.sin(2.0 * math.pi / n))
    pts = np.column_stack([0.5 * major * k * np.cos(t), 0.5 * minor * k * np.sin(t)])
    return _turn(pts, angle_deg)


def _turn(pts: np.ndarray, angle_deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return np.asarray(pts @ np.array([[c, s], [-s, c]]), dtype=float)


def _outline(spec: CrystalSpec, where: str) -> np.ndarray:
    if spec.shape == "disc":
        return _ellipse(spec.size_um, spec.size_um, 0.0)
    if spec.shape == "ellipse":
        assert spec.minor_um is not None
        return _ellipse(spec.size_um, spec.minor_um, spec.angle_deg)
    hull = convex_hull(np.asarray(spec.vertices_um, dtype=float))
    if len(hull) < 3 or polygon_area(hull) <= 0:
        raise ConfigError("the polygon has no area", field=f"{where}.vertices_um")
    return _turn(hull, spec.angle_deg)


# ---------------------------------------------------------------------- crystals


@dataclass(frozen=True, eq=False)
class SimCrystal:
    """A crystal of the simulated specimen.

    Attributes
    ----------
    index : int
        Position in :attr:`Sample.crystals`.
    centre_um : numpy.ndarray, shape (3,)
        Centre in grid coordinates, um.
    outline_um : numpy.ndarray, shape (M, 2)
        Convex outline in the grid plane about the centre, counter-clockwise, um.
    thickness_um : float
        Extent along the grid normal, um.
    U : numpy.ndarray, shape (3, 3)
        Orientation at zero tilt (crystal Cartesian frame to lab frame).
    """

    index: int
    centre_um: np.ndarray
    outline_um: np.ndarray
    thickness_um: float
    U: np.ndarray

    @cached_property
    def prism_um(self) -> np.ndarray:
        """Vertices of both faces in grid coordinates, shape (2M, 3)."""
        m = len(self.outline_um)
        half = 0.5 * self.thickness_um
        top = np.column_stack([self.outline_um, np.full(m, half)])
        bottom = np.column_stack([self.outline_um, np.full(m, -half)])
        return np.vstack([top, bottom]) + self.centre_um

    @property
    def area_um2(self) -> float:
        """Area of the outline in the grid plane, um^2."""
        return polygon_area(self.outline_um)

    def lab_centre_um(self, position: StagePosition) -> np.ndarray:
        """Lab position (um) of the centre at a stage position."""
        return specimen_to_lab(self.centre_um, position)

    def projection_um(self, position: StagePosition) -> np.ndarray:
        """Outline of the projection along the beam, lab ``(x, y)`` um, counter-clockwise."""
        return convex_hull(specimen_to_lab(self.prism_um, position)[:, :2])

    def crystal_config(self, profile: str, mosaicity_deg: float) -> CrystalConfig:
        """The simulator's crystal section (thickness and lateral size in A)."""
        lateral = 2.0 * math.sqrt(self.area_um2 / math.pi)
        return CrystalConfig(
            thickness_a=self.thickness_um * 1e4,
            lateral_size_a=lateral * 1e4,
            profile=profile,  # type: ignore[arg-type]
            mosaicity_deg=mosaicity_deg,
        )


def _in_hole(x: float, y: float, grid: GridConfig, margin: float) -> bool:
    half = 0.5 * (grid.mesh_pitch_um - grid.bar_width_um) - margin
    p = grid.mesh_pitch_um
    return abs(x - p * round(x / p)) < half and abs(y - p * round(y / p)) < half


def _random_specs(cfg: SampleConfig) -> list[CrystalSpec]:
    """Random crystals in the grid holes, at least ``min_separation_um`` apart."""
    rnd = cfg.random
    rng = np.random.default_rng([cfg.seed, 11])
    taken = [(c.x_um, c.y_um) for c in cfg.crystals]
    specs: list[CrystalSpec] = []
    x0, x1, y0, y1 = rnd.area_um
    for _ in range(200 * max(rnd.n, 1)):
        if len(specs) == rnd.n:
            break
        size = float(rng.uniform(*rnd.size_um))
        x, y = float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1))
        near = any(math.hypot(x - a, y - b) < rnd.min_separation_um for a, b in taken)
        if near or not _in_hole(x, y, cfg.grid, 0.5 * size):
            continue
        taken.append((x, y))
        specs.append(
            CrystalSpec(
                x_um=x,
                y_um=y,
                z_um=float(rng.uniform(*rnd.z_um)),
                shape="ellipse",
                size_um=size,
                minor_um=size * float(rng.uniform(*rnd.aspect)),
                angle_deg=float(rng.uniform(0.0, 180.0)),
                thickness_um=float(rng.uniform(*rnd.thickness_um)),
            )
        )
    if len(specs) < rnd.n:
        raise ConfigError(
            f"could place only {len(specs)} of {rnd.n} crystals; enlarge area_um or reduce "
            "min_separation_um",
            field="random.n",
        )
    return specs


@dataclass
class Sample:
    """The specimen: crystals, grid and the shared structure.

    Build it with :meth:`from_config`.
    """

    config: SampleConfig
    crystals: tuple[SimCrystal, ...]
    _sf: dict[str, StructureFactors] = field(default_factory=dict, repr=False)

    @classmethod
    def from_config(cls, config: SampleConfig) -> Sample:
        """Resolve outlines, orientations and random crystals.

        Raises
        ------
        ConfigError
            For a polygon without area, a U that is not a rotation, or random crystals
            that do not fit.
        """
        specs = [*config.crystals, *_random_specs(config)]
        crystals = []
        for i, spec in enumerate(specs):
            where = f"crystals.{i}" if i < len(config.crystals) else "random"
            u = check_orientation(spec.orientation_u)
            if u is None:
                u = random_rotation(np.random.default_rng([config.seed, 10, i]))
            centre = np.array([spec.x_um, spec.y_um, spec.z_um])
            crystals.append(SimCrystal(i, centre, _outline(spec, where), spec.thickness_um, u))
        return cls(config, tuple(crystals))

    @property
    def grid(self) -> GridConfig:
        """Grid and film parameters."""
        return self.config.grid

    def structure_factors(self, radiation: str = "electron") -> StructureFactors:
        """Structure factors of the sample's structure (computed once per radiation)."""
        if radiation not in self._sf:
            self._sf[radiation] = load_structure_factors(self.config.source, radiation)
        return self._sf[radiation]

    def crystal_config(self, index: int) -> CrystalConfig:
        """Simulator crystal section of crystal ``index``."""
        return self.crystals[index].crystal_config(self.config.profile, self.config.mosaicity_deg)

    def grid_transmission(self, lab_xy_um: ArrayLike, position: StagePosition) -> np.ndarray:
        """Transmission of grid and film at lab ``(x, y)`` points (0 on bars, NaN-safe)."""
        uv = grid_plane_coordinates(lab_xy_um, position)
        g = self.grid
        half = 0.5 * (g.mesh_pitch_um - g.bar_width_um)
        with np.errstate(invalid="ignore"):
            off = np.abs(uv - g.mesh_pitch_um * np.round(uv / g.mesh_pitch_um))
            hole = np.all(off < half, axis=-1)
        return np.where(hole, g.film_transmission, 0.0)

    def grid_open_fraction(
        self, centre_xy_um: ArrayLike, radius_um: float, position: StagePosition
    ) -> float:
        """Fraction of a lab disc that lies over a grid hole (sampled on a 24 x 24 grid)."""
        n = 24
        u = (np.arange(n) + 0.5) / n * 2.0 - 1.0
        xx, yy = np.meshgrid(u, u)
        keep = xx**2 + yy**2 <= 1.0
        pts = np.column_stack([xx[keep], yy[keep]]) * radius_um + np.asarray(centre_xy_um)
        return float(np.mean(self.grid_transmission(pts, position) > 0))
