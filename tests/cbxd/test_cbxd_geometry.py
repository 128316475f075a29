"""CBXD geometry against hand-computed cases (seed Eqs. 1-3, Fig. 1, Methods 5.1)."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.cbxd.geometry import (
    Detector,
    LensPupil,
    MLLPair,
    angles_to_direction,
    chi_of_k_in,
    crystal_position,
    direction_to_angles,
    kossel_circle,
    rotation_matrix,
)
from crystalscope.errors import ConfigError

# lambda = 1 A, 2 theta = 30 deg: G = k_out - k_in with k_in = z, k_out = (sin 30, 0, cos 30)
TWO_THETA = np.radians(30.0)
G_HAND = np.array([np.sin(TWO_THETA), 0.0, np.cos(TWO_THETA) - 1.0])


def test_kossel_circle_hand_case() -> None:
    c = kossel_circle(G_HAND, 1.0)
    # Eq. 3 by hand: a_z^2 = Gx^2/4 cot^2(15 deg), a_x = -a_z Gz / Gx
    az = 0.5 * 0.5 / np.tan(np.radians(15.0))
    assert c.a[0, 2] == pytest.approx(az, rel=1e-12)
    assert c.a[0, 0] == pytest.approx(-az * G_HAND[2] / G_HAND[0], rel=1e-12)
    assert c.a[0, 1] == 0.0
    assert c.radius[0] == pytest.approx(np.cos(np.radians(15.0)), rel=1e-12)
    assert c.theta[0] == pytest.approx(np.radians(15.0), rel=1e-12)
    # chi = 0 is the chief ray: k_out(0) = (sin 30, 0, cos 30), k_in(0) = z
    np.testing.assert_allclose(c.k_out(0.0)[0], [0.5, 0.0, np.cos(TWO_THETA)], atol=1e-12)
    np.testing.assert_allclose(c.k_in(0.0)[0], [0.0, 0.0, 1.0], atol=1e-12)
    assert chi_of_k_in(c, np.array([[0.0, 0.0, 1.0]]))[0] == pytest.approx(0.0, abs=1e-12)


def test_kossel_circle_satisfies_eq1_everywhere() -> None:
    rng = np.random.default_rng(3)
    g = rng.normal(size=(50, 3)) * 0.4
    lam = 0.7085
    c = kossel_circle(g, lam)
    ok = np.isfinite(c.radius)
    assert ok.sum() > 30
    chi = np.linspace(0, 2 * np.pi, 17)[:, None]
    q = c.k_out(chi)[:, ok]
    gg = g[ok]
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1 / lam, rtol=1e-12)
    np.testing.assert_allclose(np.sum((q - gg / 2) * gg, -1), 0.0, atol=1e-12)
    # a in the plane of G and z; b orthogonal to a and G; |a| = |b|
    np.testing.assert_allclose(np.sum(c.a[ok] * np.cross(gg, [0, 0, 1]), -1), 0, atol=1e-12)
    np.testing.assert_allclose(np.sum(c.b[ok] * c.a[ok], -1), 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(c.b[ok], axis=-1), c.radius[ok], rtol=1e-12)
    # deficiency line and streak are separated by 2 theta everywhere (Fig. 1e)
    kin = c.k_in(chi)[:, ok]
    cos2t = np.sum(kin * q, -1) * lam**2
    np.testing.assert_allclose(
        cos2t, np.broadcast_to(np.cos(2 * c.theta[ok]), cos2t.shape), atol=1e-12
    )
    assert not np.isfinite(kossel_circle([[3.0, 0, 0]], lam).radius[0])  # |G| > 2/lambda


def test_g_along_axis_is_handled() -> None:
    c = kossel_circle([[0.0, 0.0, -0.2]], 1.0)
    q = c.k_out(np.linspace(0, 6, 7)[:, None])[:, 0]
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, rtol=1e-12)


def test_max_cos_to_axis_is_the_best_sample() -> None:
    rng = np.random.default_rng(5)
    c = kossel_circle(rng.normal(size=(20, 3)) * 0.3, 1.0)
    ok = np.isfinite(c.radius)
    chi = np.linspace(0, 2 * np.pi, 20001)[:, None]
    best = c.k_in(chi)[..., 2].max(axis=0)
    np.testing.assert_allclose(c.max_cos_to_axis()[ok], best[ok], atol=1e-7)


def test_deficiency_line_inside_the_pupil_is_an_arc_through_the_chief_ray() -> None:
    pupil = LensPupil.on_axis(0.02, 0.01)
    c = kossel_circle(G_HAND, 1.0)
    chi = np.linspace(-0.2, 0.2, 40001)
    px, py = direction_to_angles(c.k_in(chi[:, None])[:, 0])
    inside = pupil.contains(px, py)
    assert inside[len(chi) // 2]
    runs = np.flatnonzero(np.diff(inside.astype(int)))
    assert len(runs) == 2  # one contiguous arc
    # the streak is a straight-ish line along y here (G in xz): its k_in spans phi_y
    assert np.ptp(py[inside]) == pytest.approx(2 * np.arcsin(0.01), rel=1e-3)
    assert np.all(np.abs(px[inside]) <= np.arcsin(0.02) + 1e-12)


def test_pupils() -> None:
    on = LensPupil.on_axis(0.028, 0.028)
    assert on.contains_axis and on.centre == (0.0, 0.0)
    a = np.arcsin(0.028)
    assert on.solid_angle == pytest.approx((2 * np.tan(a)) ** 2, rel=1e-3)
    off = LensPupil.off_axis(0.015, 0.015, 0.0087, 0.0087)
    assert not off.contains_axis
    assert off.phi_x[1] == pytest.approx(np.arcsin(0.0387))
    assert off.aperture(0.02, 0.02) == 1.0 and off.aperture(0.0, 0.02) == 0.0
    with pytest.raises(ConfigError):
        LensPupil((0.1, -0.1), (0.0, 0.1))


def test_mll_line_foci() -> None:
    # seed 5.1: on-axis lenses of NA 0.028, f = 1.25 and 1.26 mm: apertures about 70 um high
    pair = MLLPair(LensPupil.on_axis(0.028, 0.028), 1.25, 1.26, 0.8, 0.6)
    (hx0, hx1), (hy0, hy1) = pair.aperture_heights()
    assert hx1 - hx0 == pytest.approx(0.070, abs=0.001)
    assert hy1 == pytest.approx(1.26 * np.tan(np.arcsin(0.028)), rel=1e-12)
    comps = {c.name: c for c in pair.components(defocus_mm=3.5)}
    assert sum(c.weight for c in comps.values()) == pytest.approx(1.0)
    assert comps["focus"].weight == pytest.approx(0.48)
    vline = comps["line_x"]  # lens x focuses, lens y zero order: a vertical line at x = 0
    assert vline.z_mm == -3.5 and vline.x_mm == (0.0, 0.0)
    assert vline.y_mm == pytest.approx((hy0, hy1)) and vline.phi_y == (0.0, 0.0)
    hline = comps["line_y"]
    assert hline.y_mm == (0.0, 0.0) and hline.x_mm == pytest.approx((hx0, hx1))
    assert comps["zero"].phi_x == (0.0, 0.0) and comps["zero"].phi_y == (0.0, 0.0)
    # off-axis pair of seed 5.1: apertures 10..45 um from the axis at f = 1.15 mm
    off = MLLPair(LensPupil.off_axis(0.015, 0.015, 0.0087, 0.0087), 1.15, 1.25)
    (x0, x1), _ = off.aperture_heights()
    assert -x1 == pytest.approx(0.010, abs=5e-4) and -x0 == pytest.approx(0.0445, abs=1e-3)


def test_crystal_position_and_magnification() -> None:
    # a 75 um pixel at l_D maps to l_D / Delta-f smaller steps on the crystal (seed 2.3)
    p = crystal_position([0.0, 0.01], [0.0, -0.02], 3.5)
    np.testing.assert_allclose(p[1], [3.5 * np.tan(0.01), 3.5 * np.tan(-0.02), 0.0])
    det = Detector(200.0, (100, 100), 0.075, 49.5, 49.5)
    ray = angles_to_direction(0.01, 0.0)
    hit = det.hit(crystal_position(0.01, 0.0, 3.5), ray, 3.5)
    assert hit[0] == pytest.approx(200.0 * np.tan(0.01), rel=1e-12)  # from the focus


def test_detector_pixel_mapping() -> None:
    det = Detector(164.0, (64, 80), 0.3, 39.5, 31.5)
    fs, ss = det.to_pixels(np.array([[0.0, 0.0], [0.3, 0.0], [0.0, 0.6]]))
    np.testing.assert_allclose(fs, [39.5, 38.5, 39.5])  # fs along -x
    np.testing.assert_allclose(ss, [31.5, 31.5, 29.5])  # ss along -y
    lab = det.to_lab([0.0, 12.25], [3.0, 7.5], defocus_mm=1.0)
    assert lab[0, 2] == 163.0
    back = det.to_pixels(lab[:, :2])
    np.testing.assert_allclose(back, [[0.0, 12.25], [3.0, 7.5]], atol=1e-12)
    assert np.isnan(det.hit([0, 0, 0], [0.1, 0, -1.0], 1.0)[0])


def test_rotation_matrix_is_right_handed() -> None:
    r = rotation_matrix((0, 1, 0), np.pi / 2)
    np.testing.assert_allclose(r @ [0, 0, 1], [1, 0, 0], atol=1e-15)
    with pytest.raises(ConfigError):
        rotation_matrix((0, 0, 0), 1.0)
