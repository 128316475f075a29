"""Fixtures of this folder: small simulated SerialED data sets (smallsim.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from smallsim import small_config

from crystalscope.simulate.serial import simulate_serial


@pytest.fixture(scope="session")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three raw frame files of :data:`CRYSTALS_PER_FILE` stills each (different seeds)."""
    root = tmp_path_factory.mktemp("small-serial")
    files = []
    for i in range(3):
        result = simulate_serial(small_config(100 + i), root / f"sim{i}", say=lambda _m: None)
        target = root / f"frames_{i}.h5"
        Path(result.dataset).rename(target)
        files.append(target)
    # the detector geometry (the same for all three) beside the frames
    Path(root / "sim0" / "detector.geom").rename(root / "detector.geom")
    return files
