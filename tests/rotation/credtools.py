"""Helpers of the rotation tests: a typical scan, synthetic frames, the DIALS gate."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from crystalscope.acquire import timepix
from crystalscope.rotation.scan import RotationScanInfo

needs_dials = pytest.mark.skipif(
    shutil.which("dials.import") is None,
    reason="DIALS is not installed (Debian: apt-get install dials)",
)

DIALS_PYTHONS = ("dials.python", "libtbx.python", "cctbx.python")


def dials_python() -> str | None:
    """The Python interpreter that imports dxtbx, if any."""
    for name in DIALS_PYTHONS:
        found = shutil.which(name)
        if found:
            return found
    return None


def make_scan(**changes: object) -> RotationScanInfo:
    """A 200 kV Timepix-quad series: 30 frames, every 10th a defocused image."""
    values: dict[str, object] = {
        "wavelength_a": 0.025079,
        "camera_length_mm": 530.0,
        "pixel_size_mm": 0.055,
        "detector_shape": timepix.EXPANDED_SHAPE,
        "beam_centre_px": (241.3, 236.8),
        "rotation_axis": (0.6, -0.8, 0.0),
        "start_angle_deg": -20.0,
        "oscillation_deg": 0.5,
        "n_frames": 30,
        "exposure_s": 0.5,
        "excluded_frames": (10, 20, 30),
        "untrusted_rectangles": timepix.cross_rectangles(),
    }
    values.update(changes)
    return RotationScanInfo(**values)  # type: ignore[arg-type]


def make_frames(scan: RotationScanInfo, seed: int = 0) -> dict[int, np.ndarray]:
    """Integer frames with a direct beam at the scan's centre, background and spots."""
    rng = np.random.default_rng(seed)
    ny, nx = scan.detector_shape
    ss, fs = np.mgrid[0:ny, 0:nx]
    cf, cs = scan.beam_centre_px
    r2 = (fs - cf) ** 2 + (ss - cs) ** 2
    beam = 50000.0 * np.exp(-r2 / (2 * 2.0**2)) + 40.0 / (1.0 + r2 / 400.0)
    frames = {}
    for i in scan.data_frames:
        image = beam.copy()
        for _ in range(5):
            sf, sx = rng.uniform(20, nx - 20), rng.uniform(20, ny - 20)
            image += 800.0 * np.exp(-((fs - sf) ** 2 + (ss - sx) ** 2) / 2.0)
        frames[i] = rng.poisson(image).astype(np.int64)
    return frames
