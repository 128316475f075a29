"""Scattering vectors of found peaks: the input of cell determination and indexing.

Peaks are found on raw frames (:mod:`crystalscope.image.peakfinder8`) in raw-array,
pixel-centre coordinates.  Here they become scattering vectors
``q = (r / |r| - z) / lambda`` in the lab frame (1/A, ``|q| = 1/d``; NeXus/McStas axes,
``docs/conventions.md``) through the detector model, which carries the elliptical
distortion, and each frame's lateral detector shift (the per-frame pattern centre found
in pre-processing, stored as ``shift_x_mm``, ``shift_y_mm`` in the shots table).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.model.detector import Detector

__all__ = ["peak_vectors", "split_by_frame"]

Q_COLUMNS = ("qx", "qy", "qz")


def _shifts(peaks: pd.DataFrame, shots: pd.DataFrame | None) -> np.ndarray | None:
    """Per-peak ``(dx, dy)`` in mm from the shots table (zero where not measured)."""
    if shots is None:
        return None
    for name in ("frame", "shift_x_mm", "shift_y_mm"):
        if name not in shots.columns:
            raise DataError(f"shots table has no column {name!r}", field=name)
    table = shots.set_index("frame")[["shift_x_mm", "shift_y_mm"]]
    if not table.index.is_unique:
        raise DataError("shots table has repeated frame identifiers", field="frame")
    missing = ~peaks["frame"].isin(table.index)
    if missing.any():
        first = peaks["frame"][missing].iloc[0]
        raise DataError(f"peak frame {first!r} is not in the shots table", field="frame")
    shift = table.loc[peaks["frame"]].to_numpy(dtype=float)
    return np.where(np.isfinite(shift), shift, 0.0)


def peak_vectors(
    peaks: pd.DataFrame,
    detector: Detector,
    *,
    shots: pd.DataFrame | None = None,
    wavelength: float | None = None,
) -> pd.DataFrame:
    """Scattering vectors of peaks in the lab frame.

    Parameters
    ----------
    peaks : DataFrame
        Columns ``frame``, ``fs``, ``ss`` (raw-array pixels, pixel-centre origin), e.g.
        :meth:`crystalscope.dataset.Dataset.peaks`; an optional ``panel`` column is used
        as given, otherwise the panel is looked up from the raw position.
    detector : Detector
        Geometry with a resolved camera length, including its elliptical distortion.
    shots : DataFrame, optional
        Per-frame ``frame``, ``shift_x_mm``, ``shift_y_mm`` (NaN counts as 0); without
        it the nominal geometry is used for every frame.
    wavelength : float, optional
        Angstrom; default the detector's.

    Returns
    -------
    DataFrame
        A copy of ``peaks`` with ``panel`` and ``qx, qy, qz`` (1/A) added; peaks that
        fall on no panel are dropped.

    Raises
    ------
    DataError
        For missing columns, unknown frames or a geometry without wavelength.
    """
    for name in ("frame", "fs", "ss"):
        if name not in peaks.columns:
            raise DataError(f"peak table has no column {name!r}", field=name)
    out = peaks.reset_index(drop=True).copy()
    panel = out["panel"].to_numpy() if "panel" in out.columns else None
    hits = detector.raw_to_panel(out["fs"].to_numpy(float), out["ss"].to_numpy(float), panel)
    keep = hits.panel >= 0
    out = out[keep].reset_index(drop=True)
    shift = _shifts(out, shots)
    q = detector.pixel_to_q(
        hits.panel[keep], hits.fs[keep], hits.ss[keep], wavelength=wavelength, shift_mm=shift
    )
    out["panel"] = hits.panel[keep].astype(np.int64)
    for i, name in enumerate(Q_COLUMNS):
        out[name] = q[:, i]
    return out


def split_by_frame(vectors: pd.DataFrame) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(frames, q)``: the frame identifiers and each frame's ``(n, 3)`` q vectors."""
    if len(vectors) == 0:
        return np.zeros(0, np.int64), []
    order = np.argsort(vectors["frame"].to_numpy(), kind="stable")
    table = vectors.iloc[order]
    frames, start = np.unique(table["frame"].to_numpy(), return_index=True)
    q = table[list(Q_COLUMNS)].to_numpy(float)
    return frames, np.split(q, start[1:])
