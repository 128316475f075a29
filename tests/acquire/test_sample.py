"""Specimen geometry: stage transform, projections, exact overlaps, rasterising, the grid."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crystalscope.acquire.interfaces import StagePosition
from crystalscope.acquire.sim_sample import (
    OUTLINE_VERTICES,
    CrystalSpec,
    GridConfig,
    RandomCrystalsConfig,
    Sample,
    SampleConfig,
    convex_hull,
    grid_plane_coordinates,
    polygon_area,
    polygon_coverage,
    polygon_disc_area,
    specimen_to_lab,
    stage_matrix,
)
from crystalscope.errors import ConfigError
from crystalscope.model.orientation import rotation_matrix
from crystalscope.simulate.rotation_sim import disc_overlap_area


def test_stage_matrix_is_right_handed_about_x_then_y() -> None:
    for a, b in [(30.0, 0.0), (-50.0, 12.0), (0.0, -20.0)]:
        expected = rotation_matrix((1, 0, 0), a) @ rotation_matrix((0, 1, 0), b)
        assert np.allclose(stage_matrix(a, b), expected)


@pytest.mark.parametrize("alpha", [-60.0, -20.0, 0.0, 35.0, 70.0])
def test_height_offset_drifts_as_minus_dz_sin_alpha(alpha: float) -> None:
    dz = 1.5
    lab = specimen_to_lab([3.0, 4.0, dz], StagePosition(3.0, 4.0, 0.0, alpha, 0.0))
    a = math.radians(alpha)
    assert np.allclose(lab, [0.0, -dz * math.sin(a), dz * math.cos(a)])
    # raising the stage by dz brings the crystal onto the rotation axis
    lab = specimen_to_lab([3.0, 4.0, dz], StagePosition(3.0, 4.0, dz, alpha, 0.0))
    assert np.allclose(lab, 0.0)


def test_grid_plane_coordinates_invert_the_projection() -> None:
    pos = StagePosition(10.0, -5.0, 0.3, 40.0, 8.0)
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-20, 20, 50), rng.uniform(-20, 20, 50), np.zeros(50)])
    lab = specimen_to_lab(pts, pos)
    assert np.allclose(grid_plane_coordinates(lab[:, :2], pos), pts[:, :2])


def test_convex_hull_and_area() -> None:
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(200, 2))
    hull = convex_hull(pts)
    assert polygon_area(hull) > 0  # counter-clockwise
    # every point is inside or on the hull
    for a, b in zip(hull, np.roll(hull, -1, axis=0), strict=True):
        cross = (b[0] - a[0]) * (pts[:, 1] - a[1]) - (b[1] - a[1]) * (pts[:, 0] - a[0])
        assert np.all(cross >= -1e-12)
    square = convex_hull([[0, 0], [1, 0], [1, 1], [0, 1], [0.5, 0.5]])
    assert len(square) == 4 and polygon_area(square) == pytest.approx(1.0)


@pytest.mark.parametrize("d", [0.0, 0.3, 0.6, 0.9, 1.0, 1.2])
def test_polygon_disc_area_matches_disc_overlap(d: float) -> None:
    sample = Sample.from_config(SampleConfig(crystals=[CrystalSpec(size_um=0.5)]))
    poly = sample.crystals[0].outline_um + np.array([d, 0.0])
    area = polygon_disc_area(poly, (0.0, 0.0), 0.75)
    exact = float(disc_overlap_area(d, 0.25, 0.75))
    assert area == pytest.approx(exact, rel=2e-3, abs=1e-6)


def test_polygon_disc_area_against_monte_carlo() -> None:
    poly = convex_hull([[0.1, -0.4], [1.3, 0.0], [0.9, 0.8], [-0.2, 0.5]])
    rng = np.random.default_rng(2)
    pts = rng.uniform(-0.5, 1.5, size=(400_000, 2))
    in_disc = np.hypot(pts[:, 0] - 0.2, pts[:, 1] - 0.1) <= 0.7
    in_poly = np.ones(len(pts), bool)
    for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        in_poly &= (b[0] - a[0]) * (pts[:, 1] - a[1]) - (b[1] - a[1]) * (pts[:, 0] - a[0]) >= 0
    mc = float(np.mean(in_disc & in_poly)) * 4.0
    assert polygon_disc_area(poly, (0.2, 0.1), 0.7) == pytest.approx(mc, rel=0.01)
    assert polygon_disc_area(poly, (10.0, 10.0), 0.7) == pytest.approx(0.0, abs=1e-12)
    assert polygon_disc_area(poly, (0.5, 0.2), 50.0) == pytest.approx(polygon_area(poly))


def test_polygon_coverage_integrates_to_the_area() -> None:
    poly = convex_hull([[10.2, 20.7], [40.9, 18.1], [35.3, 44.6], [12.5, 39.0]])
    cover = polygon_coverage(poly, (64, 64))
    assert cover.sum() == pytest.approx(polygon_area(poly), rel=2e-3)
    assert cover.max() <= 1.0 and cover.min() >= 0.0
    assert cover[30, 25] == 1.0 and cover[5, 5] == 0.0
    # clipped by the frame edge
    assert polygon_coverage(poly - 30.0, (64, 64)).sum() < polygon_area(poly)


def test_projection_of_a_tilted_plate() -> None:
    spec = CrystalSpec(shape="ellipse", size_um=1.0, minor_um=0.4, angle_deg=0.0, thickness_um=0.2)
    crystal = Sample.from_config(SampleConfig(crystals=[spec])).crystals[0]
    assert crystal.area_um2 == pytest.approx(math.pi * 0.5 * 0.2, rel=1e-9)
    assert len(crystal.outline_um) == OUTLINE_VERTICES
    flat = crystal.projection_um(StagePosition())
    assert polygon_area(flat) == pytest.approx(crystal.area_um2, rel=1e-9)
    tilted = crystal.projection_um(StagePosition(alpha_deg=60.0))
    # the minor axis (along y) shrinks by cos(alpha) and widens by t sin(alpha)
    height = tilted[:, 1].max() - tilted[:, 1].min()
    assert height == pytest.approx(0.4 * 0.5 + 0.2 * math.sin(math.radians(60)), rel=1e-3)
    width = tilted[:, 0].max() - tilted[:, 0].min()
    assert width == pytest.approx(flat[:, 0].max() - flat[:, 0].min(), rel=1e-9)


def test_polygon_crystals_and_bad_polygons() -> None:
    spec = CrystalSpec(shape="polygon", vertices_um=[(0, 0), (1, 0), (0.5, 0.2), (1, 1), (0, 1)])
    crystal = Sample.from_config(SampleConfig(crystals=[spec])).crystals[0]
    assert crystal.area_um2 == pytest.approx(1.0)  # the hull of a non-convex outline
    bad = CrystalSpec(shape="polygon", vertices_um=[(0, 0), (1, 1), (2, 2)])
    with pytest.raises(ConfigError, match="no area") as err:
        Sample.from_config(SampleConfig(crystals=[bad]))
    assert err.value.field == "crystals.0.vertices_um"
    with pytest.raises(ConfigError, match="rotation"):
        Sample.from_config(SampleConfig(crystals=[CrystalSpec(orientation_u=(1,) * 9)]))


def test_orientations_random_from_the_seed_or_given() -> None:
    u = tuple(float(v) for v in rotation_matrix((0, 0, 1), 30.0).ravel())
    cfg = SampleConfig(seed=3, crystals=[CrystalSpec(), CrystalSpec(orientation_u=u)])
    a, b = Sample.from_config(cfg), Sample.from_config(cfg)
    assert np.allclose(a.crystals[0].U, b.crystals[0].U)
    assert np.allclose(a.crystals[1].U, np.reshape(u, (3, 3)))
    other = Sample.from_config(cfg.model_copy(update={"seed": 4}))
    assert not np.allclose(other.crystals[0].U, a.crystals[0].U)
    assert np.isclose(np.linalg.det(a.crystals[0].U), 1.0)


def test_random_crystals_sit_in_holes_apart() -> None:
    grid = GridConfig()
    rnd = RandomCrystalsConfig(n=60, area_um=(-120, 120, -120, 120), min_separation_um=2.0)
    sample = Sample.from_config(SampleConfig(random=rnd, grid=grid))
    assert len(sample.crystals) == 60
    xy = np.array([c.centre_um[:2] for c in sample.crystals])
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    assert dist[np.triu_indices(60, 1)].min() >= 2.0
    assert np.all(sample.grid_transmission(xy, StagePosition()) == grid.film_transmission)
    with pytest.raises(ConfigError, match="could place only") as err:
        Sample.from_config(SampleConfig(random=RandomCrystalsConfig(n=50, area_um=(0, 2, 0, 2))))
    assert err.value.field == "random.n"


def test_grid_bars_and_open_fraction() -> None:
    sample = Sample.from_config(SampleConfig())
    pitch, bar = sample.grid.mesh_pitch_um, sample.grid.bar_width_um
    pos = StagePosition()
    t = sample.grid_transmission([[0.0, 0.0], [pitch / 2, 0.0], [0.0, pitch / 2]], pos)
    assert list(t) == [sample.grid.film_transmission, 0.0, 0.0]
    edge = pitch / 2 - bar / 2  # where the bar starts
    assert sample.grid_open_fraction((0.0, 0.0), 1.0, pos) == 1.0
    assert sample.grid_open_fraction((edge, 0.0), 1.0, pos) == pytest.approx(0.5, abs=0.05)
    # moving the stage by a pitch shows the same hole pattern
    moved = StagePosition(x_um=pitch)
    assert sample.grid_open_fraction((edge, 0.0), 1.0, moved) == pytest.approx(0.5, abs=0.05)
