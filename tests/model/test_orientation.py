"""Tests of the rotation utilities: handedness, validation and Haar-uniform sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.transform import Rotation

from crystalscope.errors import DataError
from crystalscope.model.orientation import (
    as_generator,
    check_rotation,
    nearest_rotation,
    random_rotation,
    random_rotations,
    rotation_angle_deg,
    rotation_matrix,
)

N_SAMPLE = 200_000


def uniformity_z_scores(rotations: np.ndarray) -> tuple[float, float]:
    """z-scores of mean(U[2,2]) against 0 and of mean(U[2,2]^2) against 1/3.

    Under the Haar measure the (2, 2) entry (the cosine of the angle between z and its
    image) is uniform on [-1, 1]: mean 0, variance 1/3; its square has mean 1/3 and
    variance 1/5 - 1/9 = 4/45.
    """
    u22 = rotations[:, 2, 2]
    n = len(u22)
    z_mean = float(np.mean(u22)) / math.sqrt(1 / 3 / n)
    z_square = (float(np.mean(u22**2)) - 1 / 3) / math.sqrt(4 / 45 / n)
    return z_mean, z_square


def angle_ks_pvalue(rotations: np.ndarray) -> float:
    """KS p-value of the rotation angles against the Haar law F(t) = (t - sin t) / pi."""
    angles = Rotation.from_matrix(rotations).magnitude()
    return float(stats.kstest(angles, lambda t: (t - np.sin(t)) / np.pi).pvalue)


def naive_euler_rotations(n: int, seed: int) -> np.ndarray:
    """A classic mistake: ZYZ Euler angles drawn uniformly (clusters about the poles)."""
    rng = np.random.default_rng(seed)
    angles = rng.uniform([0, 0, 0], [2 * np.pi, np.pi, 2 * np.pi], size=(n, 3))
    return np.asarray(Rotation.from_euler("ZYZ", angles).as_matrix())


def test_random_rotations_are_proper_and_seeded() -> None:
    rots = random_rotations(1000, 5)
    assert rots.shape == (1000, 3, 3)
    np.testing.assert_allclose(
        rots @ rots.transpose(0, 2, 1), np.broadcast_to(np.eye(3), rots.shape), atol=1e-12
    )
    np.testing.assert_allclose(np.linalg.det(rots), 1.0, atol=1e-12)
    np.testing.assert_array_equal(rots, random_rotations(1000, 5))
    np.testing.assert_array_equal(rots, random_rotations(1000, np.random.default_rng(5)))
    assert not np.array_equal(rots, random_rotations(1000, 6))
    assert random_rotation(3).shape == (3, 3)
    assert random_rotations(0).shape == (0, 3, 3)
    with pytest.raises(DataError):
        random_rotations(-1)
    gen = np.random.default_rng(0)
    assert as_generator(gen) is gen


def test_random_rotations_are_haar_uniform() -> None:
    rots = random_rotations(N_SAMPLE, 20240601)
    z_mean, z_square = uniformity_z_scores(rots)
    assert abs(z_mean) < 5 and abs(z_square) < 5
    # every entry, not only (2, 2): mean 0, mean square 1/3 (tolerance ~ 6 sigma)
    np.testing.assert_allclose(rots.mean(axis=0), 0.0, atol=6 * math.sqrt(1 / 3 / N_SAMPLE))
    np.testing.assert_allclose((rots**2).mean(axis=0), 1 / 3, atol=6 * math.sqrt(4 / 45 / N_SAMPLE))
    assert angle_ks_pvalue(rots[:20_000]) > 1e-3


def test_uniformity_checks_reject_a_non_uniform_sampler() -> None:
    """Negative control: the same statistics fail loudly for uniform Euler angles."""
    rots = naive_euler_rotations(N_SAMPLE, 1)
    _, z_square = uniformity_z_scores(rots)
    assert abs(z_square) > 50  # mean cos^2(beta) = 1/2, not 1/3
    assert angle_ks_pvalue(rots[:20_000]) < 1e-6


def test_rotation_matrix_is_right_handed() -> None:
    x, y, z = np.eye(3)
    np.testing.assert_allclose(rotation_matrix(z, 90) @ x, y, atol=1e-15)
    np.testing.assert_allclose(rotation_matrix(x, 90) @ y, z, atol=1e-15)
    np.testing.assert_allclose(rotation_matrix(y, 90) @ z, x, atol=1e-15)
    np.testing.assert_allclose(rotation_matrix([0, 0, 5], 90), rotation_matrix(z, 90))
    np.testing.assert_allclose(rotation_matrix(z, -30), rotation_matrix(-z, 30), atol=1e-15)
    axis = np.array([1.0, -2.0, 0.5])
    r = rotation_matrix(axis, 37.0)
    np.testing.assert_allclose(r @ axis, axis, atol=1e-14)  # the axis is fixed
    assert rotation_angle_deg(r) == pytest.approx(37.0, abs=1e-12)
    for bad_axis in ([0, 0, 0], [1, 0], [np.nan, 0, 1]):
        with pytest.raises(DataError) as info:
            rotation_matrix(bad_axis, 10)
        assert info.value.field == "axis"
    with pytest.raises(DataError):
        rotation_matrix(z, math.inf)


def test_check_rotation_messages() -> None:
    good = rotation_matrix([1, 2, 3], 40)
    np.testing.assert_array_equal(check_rotation(good), good)
    with pytest.raises(DataError, match="orthonormal"):
        check_rotation(good * 1.001)
    with pytest.raises(DataError, match="proper"):
        check_rotation(-good)
    with pytest.raises(DataError, match="3x3"):
        check_rotation(np.eye(2))
    with pytest.raises(DataError, match="not numeric"):
        check_rotation([["a", "b", "c"]] * 3)
    with pytest.raises(DataError) as info:
        check_rotation(np.full((3, 3), np.inf), field="goniometer")
    assert info.value.field == "goniometer"


def test_nearest_rotation_and_angles() -> None:
    rng = np.random.default_rng(3)
    good = random_rotation(rng)
    noisy = good + rng.normal(scale=1e-5, size=(3, 3))
    cleaned = nearest_rotation(noisy)
    check_rotation(cleaned, tol=1e-12)
    assert np.max(np.abs(cleaned - good)) < 1e-4
    mirrored = nearest_rotation(np.diag([1.0, 1.0, -1.0]))
    assert np.linalg.det(mirrored) == pytest.approx(1.0)
    for angle in (1e-7, 0.5, 90.0, 179.999):
        r = rotation_matrix([0.3, -0.2, 0.9], angle)
        assert rotation_angle_deg(r) == pytest.approx(angle, rel=1e-7)
    with pytest.raises(DataError):
        nearest_rotation(np.eye(2))
