"""Bragg-streak detection: thresholded connected regions and their shape (seed 000, 5.2.2).

A convergent beam turns every reflection into a streak, an elongated image of the lens
pupil cut by the crystal.  :func:`find_streaks` finds them as in the seed's Methods:
pixels above ``threshold`` form a binary image; pixels joined at shared edges *or
corners* (8-connectivity) form one region; every region is described by

* ``n_pixels``, the summed ``intensity`` (counts above zero) and the bounding box;
* the intensity-weighted centroid ``fs, ss`` (pixel-centre coordinates);
* from the weighted second moments ``m_ff, m_ss, m_fs`` (covariance of the pixel
  positions), the principal axes: ``orientation_deg`` of the long axis (from ``+fs``
  towards ``+ss``, in ``(-90, 90]``), ``length`` and ``width`` as ``sqrt(12 lambda)``
  of the two eigenvalues (the full length of a uniform bar with that variance), and
  the ``aspect`` ratio length / width;

and regions with at least ``min_pixels`` (and at most ``max_pixels``) pixels are kept as
streaks.  Masked pixels never belong to a region.

All region statistics come from one pass of :func:`numpy.bincount` over the labelled
pixels (no Python loop over regions), so a 2048 x 2048 frame with thousands of regions
takes tens of milliseconds; ``benchmarks/bench_streaks.py`` compares it with
scikit-image's ``regionprops`` on the same frames.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import ndimage

from crystalscope.errors import DataError

__all__ = ["STREAK_COLUMNS", "find_streaks", "label_regions", "region_table"]

#: Columns of :func:`find_streaks` and :func:`region_table`.
STREAK_COLUMNS = (
    "label", "n_pixels", "intensity", "fs", "ss", "length", "width", "orientation_deg",
    "aspect", "fs_min", "fs_max", "ss_min", "ss_max",
)  # fmt: skip

_EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity: edges and corners


def label_regions(
    frame: ArrayLike, threshold: float, mask: ArrayLike | None = None
) -> tuple[np.ndarray, int]:
    """Labels (0: background) of the 8-connected regions of ``frame > threshold`` outside
    ``mask`` (True: bad pixel), and their number."""
    data = np.asarray(frame)
    if data.ndim != 2:
        raise DataError(f"a frame must be 2-D, got shape {data.shape}", field="frame")
    above = data > threshold
    if mask is not None:
        bad = np.asarray(mask, dtype=bool)
        if bad.shape != data.shape:
            raise DataError(f"mask shape {bad.shape} differs from the frame's {data.shape}",
                            field="mask")  # fmt: skip
        above &= ~bad
    labels, n = ndimage.label(above, structure=_EIGHT)
    return labels, int(n)


def region_table(frame: ArrayLike, labels: np.ndarray, n: int) -> pd.DataFrame:
    """Properties of the regions ``1 .. n`` of ``labels`` (module docstring), weighted by
    the values of ``frame`` (negative values count as zero weight)."""
    data = np.asarray(frame, dtype=np.float64)
    flat = labels.ravel()
    on = np.flatnonzero(flat)
    lab = flat[on]
    ss, fs = np.divmod(on, data.shape[1])
    w = np.clip(data.ravel()[on], 0.0, None)
    k = n + 1

    def total(values: np.ndarray | None) -> np.ndarray:
        return np.bincount(lab, weights=values, minlength=k)[1:]

    count = total(None)
    wsum = total(w)
    # unweighted moments where a region has no positive weight (all at threshold)
    use = np.where(wsum[lab - 1] > 0, w, 1.0)
    norm = total(use)
    mf, ms = total(use * fs) / norm, total(use * ss) / norm
    df, ds = fs - mf[lab - 1], ss - ms[lab - 1]
    cff, css, cfs = (
        total(use * df * df) / norm,
        total(use * ds * ds) / norm,
        total(use * df * ds) / norm,
    )
    half = 0.5 * (cff + css)
    root = np.sqrt(0.25 * (cff - css) ** 2 + cfs**2)
    big, small = half + root, np.clip(half - root, 0.0, None)
    # a single pixel has zero variance; count each pixel as a unit square (1/12 per axis)
    length = np.sqrt(12.0 * (big + 1.0 / 12.0))
    width = np.sqrt(12.0 * (small + 1.0 / 12.0))
    angle = 0.5 * np.degrees(np.arctan2(2.0 * cfs, cff - css))
    angle = np.where(angle <= -90.0, angle + 180.0, angle)
    boxes = ndimage.find_objects(labels, max_label=n)
    bbox = np.array([(b[1].start, b[1].stop - 1, b[0].start, b[0].stop - 1) for b in boxes],
                    dtype=np.int64).reshape(-1, 4)  # fmt: skip
    return pd.DataFrame({
        "label": np.arange(1, k, dtype=np.int64), "n_pixels": count.astype(np.int64),
        "intensity": wsum, "fs": mf, "ss": ms, "length": length, "width": width,
        "orientation_deg": angle, "aspect": length / width, "fs_min": bbox[:, 0],
        "fs_max": bbox[:, 1], "ss_min": bbox[:, 2], "ss_max": bbox[:, 3],
    })  # fmt: skip


def find_streaks(
    frame: ArrayLike,
    threshold: float,
    *,
    min_pixels: int = 10,
    max_pixels: int | None = None,
    mask: ArrayLike | None = None,
) -> pd.DataFrame:
    """Bragg streaks of one (background-subtracted) frame (module docstring).

    Parameters
    ----------
    frame : 2-D array
        Counts, ``(ss, fs)``.
    threshold : float
        Pixels strictly above it are candidates.
    min_pixels, max_pixels : int
        Size range of the regions kept.
    mask : 2-D bool array, optional
        True for pixels to ignore (dead, hot, saturated, gaps).

    Returns
    -------
    pandas.DataFrame
        One row per streak, columns :data:`STREAK_COLUMNS`, sorted by intensity
        (strongest first).

    Raises
    ------
    DataError
        For a frame that is not 2-D or a mask of another shape.
    """
    if min_pixels < 1:
        raise DataError(f"must be at least 1, got {min_pixels}", field="min_pixels")
    labels, n = label_regions(frame, threshold, mask)
    table = region_table(frame, labels, n)
    keep = table["n_pixels"] >= min_pixels
    if max_pixels is not None:
        keep &= table["n_pixels"] <= max_pixels
    out = table[keep].sort_values("intensity", ascending=False, kind="stable")
    return out.reset_index(drop=True)
