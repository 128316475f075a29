"""The elliptical distortion carried by the Detector model (pixel <-> lab mapping)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from crystalscope.model.beam import Beam
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.simulate.presets import detector_preset

BEAM = Beam.from_voltage_kv(200.0)


@pytest.fixture(scope="module")
def detector():
    return detector_preset("lambda-750k", 1100.0, BEAM)


@pytest.mark.parametrize("angle", [0.0, 33.0, 121.0])
def test_lab_to_pixel_applies_the_simulator_convention(detector, angle: float) -> None:
    """A distorted detector maps rays where EllipticalDistortion.apply puts them."""
    dist = EllipticalDistortion(1.03, angle)
    distorted = dataclasses.replace(detector, distortion=dist)
    rng = np.random.default_rng(3)
    rays = np.column_stack([rng.uniform(-0.01, 0.01, (200, 2)), np.ones(200)])
    shift = (0.11, -0.07)
    plain = detector.lab_to_pixel(rays, shift_mm=shift)
    hit = distorted.lab_to_pixel(rays, shift_mm=shift)
    centre = detector.lab_to_pixel(np.array([0.0, 0.0, 1.0]), shift_mm=shift)
    ok = (plain.panel >= 0) & (hit.panel >= 0)
    assert ok.sum() > 100

    # LAMBDA raw coordinates are detector-plane coordinates: compare in raw pixels
    def raw(h, sel):
        p = (
            np.array([detector.panels[i].min_fs for i in h.panel[sel]]),
            np.array([detector.panels[i].min_ss for i in h.panel[sel]]),
        )
        return h.fs[sel] + p[0], h.ss[sel] + p[1]

    c = (float(centre.fs) + detector.panels[int(centre.panel)].min_fs,
         float(centre.ss) + detector.panels[int(centre.panel)].min_ss)  # fmt: skip
    want = dist.apply(*raw(plain, ok), c)
    got = raw(hit, ok)
    np.testing.assert_allclose(got[0], want[0], atol=1e-9)
    np.testing.assert_allclose(got[1], want[1], atol=1e-9)


def test_pixel_to_lab_inverts_lab_to_pixel(detector) -> None:
    distorted = dataclasses.replace(detector, distortion=EllipticalDistortion(1.02, 75.0))
    rng = np.random.default_rng(4)
    fs, ss = rng.uniform(0, 255, 50), rng.uniform(0, 255, 50)
    lab = distorted.pixel_to_lab(3, fs, ss, shift_mm=(0.05, 0.02))
    back = distorted.lab_to_pixel(lab, shift_mm=(0.05, 0.02))
    assert np.all(back.panel == 3)
    np.testing.assert_allclose(back.fs, fs, atol=1e-9)
    np.testing.assert_allclose(back.ss, ss, atol=1e-9)
    # the correction changes resolution: the undistorted detector disagrees
    d0 = detector.resolution(3, fs, ss)
    d1 = distorted.resolution(3, fs, ss)
    assert np.max(np.abs(d1 / d0 - 1)) > 1e-3


def test_no_distortion_is_identity(detector) -> None:
    same = dataclasses.replace(detector, distortion=EllipticalDistortion(1.0, 0.0))
    np.testing.assert_allclose(same.lab_map(), detector.lab_map(), equal_nan=True)
    assert not detector.isclose(
        dataclasses.replace(detector, distortion=EllipticalDistortion(1.01))
    )
