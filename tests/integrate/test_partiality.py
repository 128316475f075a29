"""Partiality models (crystalscope.integrate.partiality)."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.errors import ConfigError, DataError
from crystalscope.integrate.partiality import partiality

R = 1.2e-3


@pytest.mark.parametrize("model", ["unity", "xsphere", "gaussian"])
def test_full_reflection_at_zero_excitation_error(model: str) -> None:
    assert partiality(0.0, R, model) == pytest.approx(1.0)
    assert partiality(0.0, R, model, bandwidth=3e-4) == pytest.approx(1.0)


def test_xsphere_is_the_cross_section_of_a_sphere() -> None:
    s = np.array([-2 * R, -R, -0.5 * R, 0.3 * R, R, 1.5 * R])
    expected = np.array([0.0, 0.0, 0.75, 0.91, 0.0, 0.0])
    np.testing.assert_allclose(partiality(s, R), expected, atol=1e-12)


def test_xsphere_with_bandwidth_is_the_slab_volume_and_tends_to_the_cross_section() -> None:
    s = np.linspace(-1.5 * R, 1.5 * R, 61)
    thin = partiality(s, R, bandwidth=1e-8 * R)
    np.testing.assert_allclose(thin, partiality(s, R), atol=1e-6)
    # a slab as thick as the sphere's diameter holds the whole sphere at s = 0: p(s) is
    # then the fraction of the sphere inside a slab of thickness 2R centred on s
    wide = partiality(np.array([R]), R, bandwidth=2 * R)
    assert wide[0] == pytest.approx(0.5)  # the slab then covers exactly half the sphere
    # integral over s of the slab fraction is the bandwidth (times the p(0) norm)
    fine = np.linspace(-3 * R, 3 * R, 20001)
    w = 0.4 * R
    raw = partiality(fine, R, bandwidth=w)
    norm = partiality(0.0, R, bandwidth=w)  # 1 by construction
    area = np.trapezoid(raw, fine) / norm
    lo, hi = 0.5 - 0.5 * w / (2 * R), 0.5 + 0.5 * w / (2 * R)
    centre_fraction = hi**2 * (3 - 2 * hi) - lo**2 * (3 - 2 * lo)
    assert area == pytest.approx(w / centre_fraction, rel=1e-4)


def test_gaussian_has_the_second_moment_of_the_sphere_cross_section() -> None:
    s = np.linspace(-6 * R, 6 * R, 40001)
    moments = []
    for model in ("xsphere", "gaussian"):
        p = partiality(s, R, model)
        moments.append(np.trapezoid(p * s * s, s) / np.trapezoid(p, s))
    assert moments[1] == pytest.approx(moments[0], rel=1e-4)
    assert moments[0] == pytest.approx(R * R / 5, rel=1e-4)


def test_per_reflection_radii_broadcast() -> None:
    p = partiality(np.array([0.5e-3, 0.5e-3]), np.array([1e-3, 2e-3]))
    np.testing.assert_allclose(p, [0.75, 1 - 0.0625])


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown partiality model"):
        partiality(0.0, R, "lorentzian")
    with pytest.raises(ConfigError, match="bandwidth"):
        partiality(0.0, R, bandwidth=-1.0)
    with pytest.raises(DataError, match="profile radius"):
        partiality([0.0, 0.0], [R, 0.0])
    with pytest.raises(DataError, match="profile radius"):
        partiality(0.0, np.nan)
