"""Fixtures of the acquisition tests."""

from __future__ import annotations

import pytest
from acqsim import Build, make_scope


@pytest.fixture
def build() -> Build:
    """``build(*crystals, camera_changes=..., camera_sim=..., **simulation)``."""
    return make_scope
