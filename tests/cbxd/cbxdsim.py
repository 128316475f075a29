"""Helpers of the CBXD processing tests: a simulated Si series and its detected streaks."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crystalscope.config import parse_config
from crystalscope.image.streaks import find_streaks
from crystalscope.simulate.cbxd import CbxdSimulation
from crystalscope.simulate.cbxd_config import CbxdConfig


def si_streaks(n_frames: int, step_deg: float) -> tuple[CbxdSimulation, pd.DataFrame, np.ndarray]:
    """A Si series (on-axis lens, NA 0.02, stills ``step_deg`` apart), the streaks found
    in every frame (``frame`` column added) and each frame's middle angle (deg)."""
    cfg = parse_config({
        "lens": {"kind": "on_axis", "na_x": 0.02, "na_y": 0.02, "photons_per_frame": 1e9},
        "sample": {"orientation_deg": (10.0, 20.0, 5.0), "d_min": 0.9},
        "detector": {"shape": (256, 256), "pixel_mm": 0.3, "distance_mm": 40.0,
                     "hot_fraction": 0.0, "dead_fraction": 0.0},
        "scan": {"n_frames": n_frames, "step_deg": step_deg, "substeps": 1}, "seed": 3,
    }, CbxdConfig)  # fmt: skip
    sim = CbxdSimulation.build(cfg)
    rows = []
    for j in range(n_frames):
        frame, _ = sim.frame(j)
        found = find_streaks(frame.astype(float) - cfg.detector.background, 5.0, min_pixels=4)
        found.insert(0, "frame", j)
        rows.append(found)
    omega = np.array([sim.omega_deg(j) + step_deg / 2 for j in range(n_frames)])
    return sim, pd.concat(rows, ignore_index=True), omega
