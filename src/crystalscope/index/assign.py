"""Miller indices of found peaks from indexing solutions.

A peak with scattering vector ``q`` belongs to crystal ``UB`` when the nearest
reciprocal-lattice point ``h = rint(UB^-1 q)`` lies within ``max_distance`` (1/A) of
``q`` in the plane perpendicular to the beam; the component along the beam is the
excitation error's direction for a flat Ewald sphere (electrons) and is left to the
indexer's profile-radius test.  A peak claimed by two crystals of one frame goes to the
nearer one.  The result, unmerged peak intensities with indices, is what the
ambiguity resolution (:mod:`crystalscope.index.ambiguity`) and quick-look merging use;
proper integration is :mod:`crystalscope.integrate`'s job.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.index.peaks import Q_COLUMNS

__all__ = ["STAR_COLUMNS", "assign_peaks", "ub_matrices"]

STAR_COLUMNS = tuple(f"{v}star_{x}" for v in "abc" for x in "xyz")


def ub_matrices(crystals: pd.DataFrame) -> np.ndarray:
    """``(n, 3, 3)`` UB matrices (columns ``a*, b*, c*``, 1/A) of a crystals table."""
    missing = [c for c in STAR_COLUMNS if c not in crystals.columns]
    if missing:
        raise DataError(f"crystals table has no column {missing[0]!r}", field=missing[0])
    star = crystals[list(STAR_COLUMNS)].to_numpy(float).reshape(-1, 3, 3)
    return np.transpose(star, (0, 2, 1))


def assign_peaks(
    vectors: pd.DataFrame, crystals: pd.DataFrame, *, max_distance: float = 0.004
) -> pd.DataFrame:
    """Peaks with the Miller indices of the crystal that explains them.

    Parameters
    ----------
    vectors : DataFrame
        Peaks with ``frame``, ``qx, qy, qz`` (:func:`~crystalscope.index.peaks.peak_vectors`)
        and any other columns (e.g. ``intensity``), which are kept.
    crystals : DataFrame
        ``frame``, ``crystal`` and ``astar_x ... cstar_z`` per crystal.
    max_distance : float
        Largest distance between ``q`` and its lattice point in the plane perpendicular
        to the beam, 1/A.

    Returns
    -------
    DataFrame
        The assigned peaks with ``crystal``, ``h, k, l`` and ``distance`` (1/A) added.
    """
    if not max_distance > 0:
        raise DataError(f"max_distance must be positive, got {max_distance}", field="max_distance")
    ub = ub_matrices(crystals)
    frame_of = crystals["frame"].to_numpy()
    by_frame = vectors.groupby("frame", sort=False).indices
    q_all = vectors[list(Q_COLUMNS)].to_numpy(float)
    parts = []
    for i in range(len(crystals)):
        rows = by_frame.get(frame_of[i])
        if rows is None:
            continue
        q = q_all[rows]
        hkl = np.rint(np.linalg.solve(ub[i], q.T).T)
        d = q - hkl @ ub[i].T
        dist = np.hypot(d[:, 0], d[:, 1])
        keep = (dist <= max_distance) & np.any(hkl != 0, axis=1)
        part = vectors.iloc[rows[keep]].copy()
        part["crystal"] = int(crystals["crystal"].iat[i])
        part[["h", "k", "l"]] = hkl[keep].astype(np.int64)
        part["distance"] = dist[keep]
        part["_row"] = rows[keep]
        parts.append(part)
    if not parts:
        out = vectors.iloc[:0].copy()
        for name in ("crystal", "h", "k", "l"):
            out[name] = pd.Series(dtype=np.int64)
        out["distance"] = pd.Series(dtype=float)
        return out
    table = pd.concat(parts, ignore_index=True)
    table = table.sort_values(["_row", "distance"], kind="stable")
    table = table.drop_duplicates("_row").drop(columns="_row")
    return table.sort_values(["frame", "crystal"], kind="stable").reset_index(drop=True)
