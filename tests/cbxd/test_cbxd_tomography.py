"""Tomography of the diffraction efficiency: projector, its transpose, SIRT, Crowther."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.cbxd.tomography import (
    backproject,
    crowther_resolution,
    project,
    sirt,
    view_axes,
)
from crystalscope.errors import DataError


def _directions(n: int, seed: int = 1) -> np.ndarray:
    """``n`` directions spread over a hemisphere (Fibonacci lattice)."""
    k = np.arange(n) + 0.5
    z = k / n
    phi = np.pi * (1 + 5**0.5) * k + seed
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def test_view_axes_are_orthonormal() -> None:
    axes = view_axes(_directions(10) * 3.0)
    for m in axes:
        np.testing.assert_allclose(m @ m.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(m) == pytest.approx(1.0)
    with pytest.raises(DataError):
        view_axes([[0.0, 0.0, 0.0]])


def test_backprojection_is_the_transpose() -> None:
    rng = np.random.default_rng(0)
    vol = rng.random((12, 14, 16)).astype(np.float32)
    dirs = _directions(7)
    imgs = rng.random((7, 25, 27)).astype(np.float32)
    lhs = float(np.vdot(project(vol, dirs, (25, 27)).astype(np.float64), imgs))
    rhs = float(np.vdot(vol.astype(np.float64), backproject(imgs, dirs, vol.shape)))
    assert lhs == pytest.approx(rhs, rel=1e-5)


def test_projection_of_a_sphere_is_its_chord_length() -> None:
    n, radius = 48, 15.0
    c = np.arange(n) - (n - 1) / 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    sphere = (x**2 + y**2 + z**2 <= radius**2).astype(np.float32)
    for d in ([0.0, 0.0, 1.0], [1.0, 2.0, 0.5]):
        img = project(sphere, [d], (65, 65))[0]
        assert img[32, 32] == pytest.approx(2 * radius, rel=0.04)
        assert img.sum() == pytest.approx(sphere.sum(), rel=1e-5)  # mass is conserved


def test_sirt_recovers_a_carved_block() -> None:
    shape = (24, 24, 24)
    truth = np.zeros(shape, np.float32)
    truth[6:18, 4:20, 6:18] = 1.0
    truth[15:18, 8:16, 9:11] = 0.0  # a groove carved into the top face
    dirs = _directions(36)
    images = project(truth, dirs, (41, 41))
    recon = sirt(images, dirs, shape, iterations=100)
    assert np.corrcoef(recon.ravel(), truth.ravel())[0, 1] > 0.95
    groove = recon[15:18, 9:15, 9:11].mean()
    solid = recon[8:14, 8:16, 8:16].mean()
    assert groove < 0.3 * solid
    with pytest.raises(DataError, match="relaxation"):
        sirt(images, dirs, shape, relaxation=2.5)
    with pytest.raises(DataError, match="one image per direction"):
        sirt(images[:3], dirs, shape)


def test_sirt_ignores_missing_pixels() -> None:
    shape = (16, 16, 16)
    truth = np.zeros(shape, np.float32)
    truth[4:12, 4:12, 4:12] = 1.0
    dirs = _directions(24)
    images = project(truth, dirs, (29, 29))
    images[:, :5, :] = np.nan  # a gap in every topograph
    recon = sirt(images, dirs, shape, iterations=60)
    assert np.corrcoef(recon.ravel(), truth.ravel())[0, 1] > 0.9


def test_crowther_resolution() -> None:
    angles = np.radians(np.arange(0, 180, 5.0))  # a single-axis series, 5 degree steps
    dirs = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    assert crowther_resolution(20.0, dirs) == pytest.approx(20.0 * np.radians(5.0))
