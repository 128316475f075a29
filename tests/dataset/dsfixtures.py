"""Test helpers: a small but complete dataset (frames, peaks, every column type, metadata)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crystalscope.dataset import Dataset

N_FRAMES = 6
SHAPE = (24, 32)


def make_frames(seed: int = 0, n: int = N_FRAMES) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.poisson(5.0, size=(n, *SHAPE)).astype(np.uint16)


def make_dataset(seed: int = 0) -> Dataset:
    frames = make_frames(seed)
    shots = pd.DataFrame(
        {
            "sample": ["lyso", "lyso", "lyso", "thau", "thau", "lyso"],
            "crystal_id": [0, 0, 0, 1, 1, 2],
            "dose": [0.5, 0.5, 0.5, 1.0, 2.0, 4.0],
            "hit": [True, False, True, True, False, True],
            "note": ["λ=0.025 Å", "", "Ärger", "x", "日本", "ok"],
            "time": pd.to_datetime(["2024-01-01 10:00:00"] * 3 + ["2024-01-02 11:30:00"] * 3),
        }
    )
    crystals = pd.DataFrame(
        {
            "frame": [0, 2, 3, 3],
            "crystal": [0, 0, 0, 1],
            "a": [79.1, 79.2, 58.0, 58.1],
            "indexer": ["xgandalf", "xgandalf", "mosflm", "mosflm"],
        }
    )
    meta = {
        "instrument": {
            "source": {"voltage_kv": 200.0, "probe": "electron"},
            "detector": {"distance_mm": 530.5, "pixel_size_um": [55.0, 55.0], "n_panels": 1},
        },
        "sample": {"name": "lysozyme", "chemical_formula": "C613H959N193O185S10"},
    }
    ds = Dataset.from_arrays(frames, shots, crystals, meta)
    peaks = pd.DataFrame(
        {
            "frame": [0, 0, 0, 2, 3, 5, 5],
            "fs": [1.0, 10.25, 20.5, 3.0, 4.0, 30.75, 0.0],
            "ss": [2.0, 11.5, 23.0, 3.5, 4.5, 0.0, 12.0],
            "intensity": [100.0, 50.0, 75.0, 10.0, 20.0, 300.0, 5.0],
        }
    )
    ds.add_peaks(peaks)
    return ds
