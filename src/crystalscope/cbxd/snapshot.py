"""Self-consistent analysis of one still CBXD pattern (seed 000, section 2.3, Fig. 3).

Model
-----
With the orientation known, every pixel ``p`` of the Bragg streak of reflection ``r``
maps to an incident-ray direction ``(phi_x, phi_y)_p`` on the crystal
(:func:`crystalscope.cbxd.topographs.predict_frame`), and by Eq. 5 its counts are

    I_p = c |F_r|^2 |A|^2 P_S(phi_p) E_p,

``E_p`` being the geometric weight ``P L cos(theta_B) d(chi)`` deposited in the pixel.
Both the reflection strengths ``J_r = c |F_r|^2`` and the projection map ``P_S`` are
unknown; their product is what each streak measures.  The iteration of section 2.3:

1. start: every streak normalised to a mean of 1 per pixel, ``J_r = mean_p(y_p)`` with
   ``y_p = I_p / (E_p |A_p|^2)``;
2. map: ``M(phi) =`` the weighted average of ``y_p / J_r`` of all streak pixels mapped to
   ``phi`` (overlapping deficiency lines averaged; bilinear on a regular grid),
   normalised to a mean of 1 over the crystal (the overall scale is free);
3. update: slice ``m_p = M(phi_p)`` out of the map for each streak and re-estimate
   ``J_r = sum(w y m) / sum(w m^2)`` (least squares of the streak against its slice);
   go to 2.

The relative error of each reflection is the scatter of its pixels after normalising
by the current map, ``std(y_p / m_p) / J_r`` over pixels where the map is significant,
divided by ``sqrt(n)`` for the error of the mean.  Crossing deficiency lines are what
constrain the ratios of the ``J_r`` (three non-collinear lines forming a triangle fix
their ratios); streaks that cross no other keep their initial estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from crystalscope.cbxd.topographs import (
    CbxdGeometry,
    StreakPixels,
    TopographGrid,
    predict_frame,
)
from crystalscope.errors import ConfigError, DataError

__all__ = ["SnapshotResult", "SnapshotStreaks", "collect_streaks", "snapshot_analysis"]


@dataclass(frozen=True)
class SnapshotStreaks:
    """Streak pixels of one still used by :func:`snapshot_analysis`.

    ``refl`` (index into ``hkl``), ``phi_x``, ``phi_y`` (rad), ``y`` (counts divided by
    the geometric weight, Eq. 5: ``c |F|^2 P_S``), ``weight`` (the geometric weight, rad,
    used as the pixel's statistical weight).
    """

    hkl: np.ndarray
    refl: np.ndarray
    phi_x: np.ndarray
    phi_y: np.ndarray
    y: np.ndarray
    weight: np.ndarray


def collect_streaks(
    geom: CbxdGeometry,
    image: ArrayLike,
    omega_deg: float = 0.0,
    *,
    background: ArrayLike | float = 0.0,
    bad: np.ndarray | None = None,
    min_weight_fraction: float = 0.3,
    min_pixels: int = 5,
    min_snr: float = 5.0,
) -> SnapshotStreaks:
    """Map the streak pixels of a still ``image`` (counts) to incident-ray angles.

    Pixels claimed by more than one reflection, ``bad`` pixels and pixels whose geometric
    weight is below ``min_weight_fraction`` of their streak's largest (the ends and
    fringes of the bilinear deposit) are dropped; so are streaks left with fewer than
    ``min_pixels`` pixels or whose summed background-corrected counts are below
    ``min_snr`` times their Poisson noise (deficiency lines that miss the crystal).

    Raises
    ------
    DataError
        The image does not match the detector, or no streak is left.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.shape != tuple(geom.detector.shape):
        raise DataError(f"image shape {img.shape} != detector {geom.detector.shape}",
                        field="image")  # fmt: skip
    raw = img.ravel()
    img = (img - np.asarray(background, dtype=np.float64)).ravel()
    p: StreakPixels = predict_frame(geom, omega_deg)
    keep = np.bincount(p.pixel)[p.pixel] == 1
    if bad is not None:
        keep &= ~np.asarray(bad, bool).ravel()[p.pixel]
    top = np.zeros(len(geom.hkl))
    np.maximum.at(top, p.refl, p.weight)
    keep &= p.weight >= min_weight_fraction * top[p.refl]
    n = np.bincount(p.refl[keep], minlength=len(geom.hkl))
    keep &= n[p.refl] >= min_pixels
    signal = np.bincount(p.refl[keep], img[p.pixel[keep]], len(geom.hkl))
    noise = np.sqrt(np.bincount(p.refl[keep], np.maximum(raw[p.pixel[keep]], 1.0), len(geom.hkl)))
    keep &= signal[p.refl] >= min_snr * noise[p.refl]
    if not keep.any():
        raise DataError("no streak pixels to analyse in this still", field="image")
    return SnapshotStreaks(
        np.asarray(geom.hkl), p.refl[keep], p.phi_x[keep], p.phi_y[keep],
        img[p.pixel[keep]] / p.weight[keep], p.weight[keep],
    )  # fmt: skip


@dataclass
class SnapshotResult:
    """Outcome of :func:`snapshot_analysis`.

    Attributes
    ----------
    table : DataFrame
        Per reflection: ``h, k, l``, ``n_pixels``, ``intensity`` (``J = c |F|^2`` up to
        the common scale), ``rel_error`` (pixel scatter / ``J``), ``rel_error_mean``.
    projection : ndarray
        The map ``M(phi_x, phi_y)`` on ``grid`` (mean 1 where defined, NaN where no
        deficiency line crossed).
    history : ndarray (n_iter + 1, n_reflections)
        ``J`` after each iteration (row 0: the initial estimate).
    errors : ndarray (n_iter + 1, n_reflections)
        ``rel_error`` after each iteration.
    """

    table: pd.DataFrame
    projection: np.ndarray
    grid: TopographGrid
    history: np.ndarray
    errors: np.ndarray


def _project_map(
    grid: TopographGrid, s: SnapshotStreaks, ratio: np.ndarray, floor: float
) -> np.ndarray:
    """Weighted average of ``ratio`` per bin; bins with little weight are NaN."""
    num = grid.deposit(s.phi_x, s.phi_y, s.weight * ratio)
    den = grid.deposit(s.phi_x, s.phi_y, s.weight)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(den > floor * den.max(), num / den, np.nan)
    return m


def _slice(grid: TopographGrid, m: np.ndarray, phi_x: np.ndarray, phi_y: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of the map at the pixels' angles (NaN bins ignored)."""
    fx, fy = (phi_x - grid.x0) / grid.step, (phi_y - grid.y0) / grid.step
    x0, y0 = np.floor(fx).astype(int), np.floor(fy).astype(int)
    tx, ty = fx - x0, fy - y0
    ny, nx = grid.shape
    val = np.zeros(len(fx))
    wsum = np.zeros(len(fx))
    for dx, dy, w in ((0, 0, (1 - tx) * (1 - ty)), (1, 0, tx * (1 - ty)),
                      (0, 1, (1 - tx) * ty), (1, 1, tx * ty)):  # fmt: skip
        xi, yi = np.clip(x0 + dx, 0, nx - 1), np.clip(y0 + dy, 0, ny - 1)
        v = m[yi, xi]
        ok = np.isfinite(v)
        val += np.where(ok, v * w, 0.0)
        wsum += np.where(ok, w, 0.0)
    return np.where(wsum > 0, val / np.maximum(wsum, 1e-300), np.nan)


def _errors(
    s: SnapshotStreaks, m_p: np.ndarray, j: np.ndarray, n_refl: int, sig: float
) -> tuple[np.ndarray, np.ndarray]:
    """Relative pixel scatter of ``y / m`` per reflection and its count, where ``m`` is
    above ``sig`` (pixels on the crystal)."""
    ok = np.isfinite(m_p) & (m_p > sig)
    r = s.refl[ok]
    z = s.y[ok] / m_p[ok] / np.where(j[r] > 0, j[r], np.nan)
    n = np.bincount(r, minlength=n_refl).astype(float)
    z = np.nan_to_num(z)
    s1 = np.bincount(r, z, n_refl)
    s2 = np.bincount(r, z * z, n_refl)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / n
        var = np.maximum(s2 / n - mean**2, 0.0)
        return np.sqrt(var) / mean, n


def snapshot_analysis(
    streaks: SnapshotStreaks,
    grid: TopographGrid,
    *,
    n_iter: int = 10,
    map_floor: float = 0.05,
    crystal_level: float = 0.25,
) -> SnapshotResult:
    """Iterative self-consistent ``|F|^2`` and projection map from one still (2.3).

    Parameters
    ----------
    streaks : SnapshotStreaks
        From :func:`collect_streaks`.
    grid : TopographGrid
        Grid of incident-ray angles for the map (rad); a bin about one detector pixel's
        angular footprint (``pixel_mm / distance_mm``) suits.
    n_iter : int
        Iterations of map and intensity updates.
    map_floor : float
        Bins with less than this fraction of the largest deposited weight are NaN.
    crystal_level : float
        Pixels whose map value is below this (the map has mean 1 on the crystal) take no
        part in the update and the errors: they see no crystal.
    """
    if n_iter < 0:
        raise ConfigError("n_iter must be >= 0", field="n_iter")
    n_refl = len(streaks.hkl)
    w, y, refl = streaks.weight, streaks.y, streaks.refl
    j = np.bincount(refl, w * y, n_refl) / np.maximum(np.bincount(refl, w, n_refl), 1e-300)
    history, errors = [j.copy()], []
    m = np.full(grid.shape, np.nan)
    for it in range(n_iter + 1):
        ratio = y / np.where(j[refl] > 0, j[refl], np.nan)
        m = _project_map(grid, streaks, np.nan_to_num(ratio), map_floor)
        on = m > crystal_level * np.nanmax(m)
        m = m / np.nanmean(m[on])
        m_p = _slice(grid, m, streaks.phi_x, streaks.phi_y)
        errors.append(_errors(streaks, m_p, j, n_refl, crystal_level)[0])
        if it == n_iter:
            break
        ok = np.isfinite(m_p) & (m_p > crystal_level)
        num = np.bincount(refl[ok], (w * y * m_p)[ok], n_refl)
        den = np.bincount(refl[ok], (w * m_p * m_p)[ok], n_refl)
        j = np.where(den > 0, num / np.maximum(den, 1e-300), j)
        history.append(j.copy())
    rel, n = _errors(streaks, m_p, j, n_refl, crystal_level)
    seen = np.unique(refl)
    hkl = np.asarray(streaks.hkl)[seen].astype(int)
    table = pd.DataFrame({
        "h": hkl[:, 0], "k": hkl[:, 1], "l": hkl[:, 2], "refl": seen,
        "n_pixels": np.bincount(refl, minlength=n_refl)[seen], "intensity": j[seen],
        "rel_error": rel[seen], "rel_error_mean": rel[seen] / np.sqrt(np.maximum(n[seen], 1)),
    })  # fmt: skip
    return SnapshotResult(table, m, grid, np.array(history)[:, seen], np.array(errors)[:, seen])
