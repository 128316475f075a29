"""Peak lists straight from the forward model: what an ideal peak finder would report.

For developing and testing cell determination and indexing without rendering frames
and running a peak finder: every reflection that the still simulator
(:class:`~crystalscope.simulate.serial.SerialSimulation`) excites and places on a panel
is observed with Poisson-distributed counts, kept when those reach ``min_counts``, and
reported at its true detector position plus a Gaussian centroid error of
``position_sigma_px`` pixels per axis.  False peaks (noise, hot pixels, ice rings) can
be added at random positions with ``false_per_frame`` (a Poisson mean per frame).

The truth (``crystal``, the crystal's number within its frame as in the simulation's
crystals table, and ``h``, ``k``, ``l``; -1 and 0 for false peaks)
travels with each peak, so that indexing results can be scored per peak.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from crystalscope.errors import ConfigError
from crystalscope.simulate.serial import SerialSimulation

__all__ = ["ideal_peaks"]

PEAK_COLUMNS = ("frame", "fs", "ss", "intensity", "panel", "crystal", "h", "k", "l")


def _check(min_counts: float, position_sigma_px: float, false_per_frame: float) -> None:
    for name, value in (
        ("min_counts", min_counts),
        ("position_sigma_px", position_sigma_px),
        ("false_per_frame", false_per_frame),
    ):
        if not (np.isfinite(value) and value >= 0):
            raise ConfigError(f"must be a finite number >= 0, got {value!r}", field=name)


def _false_peaks(
    sim: SerialSimulation, frame: int, mean: float, rng: np.random.Generator
) -> pd.DataFrame:
    n = rng.poisson(mean)
    shape = sim.detector.raw_shape
    fs = rng.uniform(-0.5, shape[-1] - 0.5, n)
    ss = rng.uniform(-0.5, shape[-2] - 0.5, n)
    panel = sim.detector.raw_to_panel(fs, ss).panel
    keep = panel >= 0
    return pd.DataFrame(
        {
            "frame": frame, "fs": fs[keep], "ss": ss[keep],
            "intensity": rng.exponential(50.0, int(keep.sum())), "panel": panel[keep],
            "crystal": -1, "h": 0, "k": 0, "l": 0,
        }
    )  # fmt: skip


def ideal_peaks(
    sim: SerialSimulation,
    frames: Sequence[int] | None = None,
    *,
    min_counts: float = 20.0,
    position_sigma_px: float = 0.2,
    false_per_frame: float = 0.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Peaks of simulated stills as an ideal peak finder would report them.

    Parameters
    ----------
    sim : SerialSimulation
        The simulated data set (geometry, crystals, per-frame shifts, distortion).
    frames : sequence of int, optional
        Frame indices; default all.
    min_counts : float
        A reflection is reported when its Poisson-sampled counts reach this.
    position_sigma_px : float
        Standard deviation of the reported centroid per axis, pixels.
    false_per_frame : float
        Mean number of false peaks per frame at uniformly random positions.
    seed : int
        Seed of the sampling (independent of the simulation's own seed).

    Returns
    -------
    DataFrame
        Columns ``frame, fs, ss`` (raw-array, pixel-centre), ``intensity`` (counts),
        ``panel``, and the truth ``crystal, h, k, l``, ordered by frame.

    Raises
    ------
    ConfigError
        For a negative or non-finite parameter.
    """
    _check(min_counts, position_sigma_px, false_per_frame)
    frames = range(len(sim.shots)) if frames is None else frames
    tables = []
    for frame in frames:
        rng = np.random.default_rng([seed, int(frame)])
        refl = sim.reflections(int(frame))
        if len(refl):
            counts = rng.poisson(refl["counts"].to_numpy(float))
            keep = counts >= max(min_counts, 1)
            sel = refl[keep]
            n = len(sel)
            tables.append(
                pd.DataFrame(
                    {
                        "frame": int(frame),
                        "fs": sel["fs"].to_numpy(float) + rng.normal(0, position_sigma_px, n),
                        "ss": sel["ss"].to_numpy(float) + rng.normal(0, position_sigma_px, n),
                        "intensity": counts[keep].astype(float),
                        "panel": sel["panel"].to_numpy(np.int64),
                        "crystal": sel["crystal"].to_numpy(np.int64),
                        "h": sel["h"].to_numpy(np.int64),
                        "k": sel["k"].to_numpy(np.int64),
                        "l": sel["l"].to_numpy(np.int64),
                    }
                )
            )
        if false_per_frame > 0:
            tables.append(_false_peaks(sim, int(frame), false_per_frame, rng))
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in PEAK_COLUMNS})
    return pd.concat(tables, ignore_index=True)
