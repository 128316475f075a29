"""Voxel crystal shapes and their ray projections (seed Eq. 6, Figs. 4 and 6)."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.cbxd.geometry import rotation_matrix
from crystalscope.cbxd.shapes import (
    VoxelShape,
    b12_prism,
    builtin_shape,
    f_letter_mask,
    project_rays,
    si_f_cuboid,
    wedged_lamella,
)
from crystalscope.errors import ConfigError

# area of the letter F in unit face coordinates: stem + top bar + middle bar (no overlaps)
F_AREA = 0.2 * 0.7 + (0.8 - 0.45) * 0.15 + (0.65 - 0.45) * 0.13


def test_f_cuboid_volume_and_voxels() -> None:
    s = si_f_cuboid(voxel_um=0.5)
    assert s.values.shape == (20, 40, 20)
    carved = F_AREA * 10 * 20 * 2.0
    assert s.volume_um3 == pytest.approx(2000.0 - carved, rel=0.01)
    assert set(np.unique(s.values)) == {0.0, 1.0}


def test_f_mask_in_the_projection_along_z() -> None:
    s = si_f_cuboid(voxel_um=0.5)
    pz = s.project_axis(2)  # (x, y) in um
    assert set(np.round(np.unique(pz), 9)) == {8.0, 10.0}
    x, y, _ = s.centres_um()
    mask = f_letter_mask((x[:, None] + 5) / 10, (y[None, :] + 10) / 20)
    np.testing.assert_array_equal(pz < 9.0, mask)
    # the carving is on the -z face, 2 um deep: slabs near +z are full
    assert s.values[:, :, -16:].all()
    assert not s.values[:, :, :4].all()
    # along y and x the cuboid is 20 and 10 um long outside the carved slab
    assert s.project_axis(1)[:, -1].max() == pytest.approx(20.0)
    assert s.project_axis(0)[:, -1].max() == pytest.approx(10.0)


def test_lamella_and_prism_volumes() -> None:
    lam = wedged_lamella(voxel_um=0.1)
    expected = 10 * 8 * 2.0 - np.pi * 1.5**2 * 2.0  # mean thickness 2 um, hole at t = 2 um
    assert lam.volume_um3 == pytest.approx(expected, rel=0.02)
    pz = lam.project_axis(2)
    assert pz[pz.shape[0] // 2, pz.shape[1] // 2] == 0.0  # the hole
    assert pz[2, 5] < pz[-3, 5]  # the wedge thickens towards +x
    prism = b12_prism(voxel_um=1.0)
    r = 20.0
    assert prism.volume_um3 == pytest.approx(1.5 * np.sqrt(3) * r**2 * 60.0, rel=0.03)


def test_builtin_shape_names() -> None:
    assert builtin_shape("si-lamella", 0.5).name.startswith("wedged")
    with pytest.raises(ConfigError, match="unknown shape") as err:
        builtin_shape("cube", 1.0)
    assert err.value.field == "shape"
    with pytest.raises(ConfigError):
        si_f_cuboid(voxel_um=0.0)


def test_rays_along_axes_equal_axis_projections() -> None:
    s = si_f_cuboid(voxel_um=0.5)
    x, y, _ = s.centres_um()
    xx, yy = np.meshgrid(x * 1e-3, y * 1e-3, indexing="ij")
    o = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, -1.0)], -1)
    p = project_rays(s, o, np.broadcast_to([0.0, 0.0, 1.0], o.shape))
    np.testing.assert_allclose(p.reshape(xx.shape) * 1e3, s.project_axis(2), atol=1e-9)
    # rotated by 90 deg about y, lab rays along x run along the crystal's z
    rot = rotation_matrix((0, 1, 0), np.pi / 2)
    o2 = np.stack([np.full(xx.size, -1.0), yy.ravel(), -xx.ravel()], -1)
    p2 = project_rays(s, o2, np.broadcast_to([1.0, 0.0, 0.0], o2.shape), rotation=rot)
    np.testing.assert_allclose(p2.reshape(xx.shape) * 1e3, s.project_axis(2), atol=1e-9)


def test_inclined_rays_through_a_slab_and_offsets() -> None:
    slab = VoxelShape(np.ones((40, 40, 8)), 0.5, "slab")  # 20 x 20 x 4 um
    ang = np.radians([0.0, 5.0, 20.0])
    d = np.stack([np.sin(ang), 0 * ang, np.cos(ang)], -1)
    o = -2.0 * d  # rays through the centre
    p = project_rays(slab, o, d)
    np.testing.assert_allclose(p * 1e3, 4.0 / np.cos(ang), rtol=1e-12)
    # shifted by 15 um in the crystal frame, the central ray misses
    miss = project_rays(slab, o[:1], d[:1], offset_mm=(0.015, 0.0, 0.0))
    assert miss[0] == 0.0


def test_absorption_matches_eq11_for_a_slab() -> None:
    # incident along +z through a slab of t = 10 um; exit through the back face at 2 theta
    t, mu = 0.010, 60.0  # mm, 1/mm: mu t = 0.6 for a clear effect
    slab = VoxelShape(np.ones((200, 4, 40)), 0.25, "slab")  # 50 x 1 x 10 um
    tt = np.radians(25.0)
    dout = np.array([[np.sin(tt), 0.0, np.cos(tt)]])
    o = np.array([[-0.02, 0.0, -1.0]])
    p = project_rays(slab, o, [[0.0, 0.0, 1.0]], out_directions=dout, mu_per_mm=mu)
    c = np.cos(tt)
    k = mu * (1 - 1 / c)
    analytic = np.exp(-mu * t / c) * (1 - np.exp(-k * t)) / k  # integral of Eq. 11 times t
    assert p[0] == pytest.approx(analytic, rel=1e-4)
    assert p[0] < t
    free = project_rays(slab, o, [[0.0, 0.0, 1.0]], out_directions=dout)
    assert free[0] == pytest.approx(t)
