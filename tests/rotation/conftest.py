"""Fixtures of the rotation tests."""

from __future__ import annotations

import numpy as np
import pytest
from credtools import make_frames, make_scan

from crystalscope.rotation.scan import RotationScanInfo


@pytest.fixture
def scan() -> RotationScanInfo:
    """A typical cRED series (credtools.make_scan)."""
    return make_scan()


@pytest.fixture
def frames(scan: RotationScanInfo) -> dict[int, np.ndarray]:
    """Synthetic integer frames of ``scan`` (credtools.make_frames)."""
    return make_frames(scan)
