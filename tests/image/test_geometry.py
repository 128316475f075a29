"""Detector-plane coordinates and radius maps (crystalscope.image.geometry)."""

from __future__ import annotations

import numpy as np
import pytest

from crystalscope.errors import DataError
from crystalscope.image.geometry import (
    lateral_detector,
    plane_coordinates,
    plane_to_lab_shift,
    radius_map,
)
from crystalscope.io.crystfel_geom import read_geom
from crystalscope.model.beam import Beam
from crystalscope.simulate.presets import detector_preset


def test_lambda_plane_coordinates_are_raw_indices() -> None:
    det = detector_preset("lambda-750k", 1100.0, Beam.from_voltage_kv(200.0))
    x, y = plane_coordinates(det)
    ss, fs = np.indices(det.raw_shape)
    ok = np.isfinite(x)
    assert 0.97 < ok.mean() < 0.99  # the raw gap columns/rows belong to no panel
    np.testing.assert_allclose(x[ok], fs[ok], atol=1e-4)
    np.testing.assert_allclose(y[ok], ss[ok], atol=1e-4)


def test_plane_coordinates_follow_the_lab_frame(shared_data) -> None:
    """On a 64-panel CSPAD, plane distances equal lab distances in pixels."""
    det = read_geom(shared_data / "crystfel" / "cspad-single.geom")
    x, y = plane_coordinates(det)
    lab = lateral_detector(det).lab_map()
    ok = np.isfinite(x)
    rng = np.random.default_rng(0)
    a, b = rng.choice(np.flatnonzero(ok), 500), rng.choice(np.flatnonzero(ok), 500)
    d_plane = np.hypot(x.flat[a] - x.flat[b], y.flat[a] - y.flat[b])
    la, lb = lab.reshape(-1, 3)[a], lab.reshape(-1, 3)[b]
    d_lab = np.hypot(*(la[:, :2] - lb[:, :2]).T) / det.panels[0].pixel_size_mm
    np.testing.assert_allclose(d_plane, d_lab, rtol=1e-5, atol=1e-2)


def test_shift_puts_the_beam_on_the_centre() -> None:
    det = detector_preset("single", 1000.0, Beam.from_voltage_kv(200.0))
    dx, dy = plane_to_lab_shift(det, 520.0, 500.0)
    hit = det.lab_to_pixel(np.array([0.0, 0.0, 1.0]), shift_mm=(dx, dy))
    assert (float(hit.fs), float(hit.ss)) == pytest.approx((520.0, 500.0), abs=1e-9)


def test_radius_map() -> None:
    y, x = np.indices((5, 7)).astype(np.float32)
    x[0, 0] = np.nan
    r = radius_map(x, y, (3.0, 2.0))
    assert r[2, 3] == 0 and r[2, 6] == pytest.approx(3.0) and np.isnan(r[0, 0])
    with pytest.raises(DataError):
        radius_map(x, y[:4], (0.0, 0.0))
