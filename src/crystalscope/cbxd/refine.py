"""Refinement of lattice, orientation and geometry from CBXD streaks (seed 000, 5.2.4).

Model
-----
Each indexed streak ``(h, k, l)`` seen in frame ``j`` has the scattering vector
``G = R_omega_j U B h`` in the lab frame (``R_omega`` about the goniometer axis at the
frame's middle angle).  Its observed outgoing wave vector ``k_out,obs`` points from the
crystal's rotation centre to the streak centroid on the detector (pixel ``(fs, ss)``,
detector plane ``z = l_D - Delta-f``, optical axis at ``(centre_fs, centre_ss)``) with
``|k| = 1/lambda``.  The calculated ``k_out,calc`` is the point of the Kossel circle of
``G`` (Eqs. 1-3, :func:`crystalscope.cbxd.geometry.kossel_circle`) closest to
``k_out,obs``, restricted to the arc whose deficiency line ``k_in = k_out - G`` lies inside
the lens pupil (angles measured from the possibly tilted chief ray).  The target is
Eq. 12:

    F = (1/N) sum_i | k_out,obs,i - k_out,calc,i |

minimised over the parameters :data:`PARAMETERS`: the cell ``a, b, c, alpha, beta,
gamma`` (A, deg), a small rotation ``rot_x, rot_y, rot_z`` (deg, a rotation vector
applied to the starting ``U``), the detector and crystal distances from focus
(``distance_mm``, ``defocus_mm``), the chief-ray position on the detector
(``centre_fs``, ``centre_ss``, pixels) and tilt (``tilt_x``, ``tilt_y``, rad) and the
wavelength (A).  As in the seed, a global search by
:func:`scipy.optimize.differential_evolution` within bounds around the start is followed
by a gradient-based local fit (:func:`scipy.optimize.least_squares`, trust-region
reflective, on the components of ``k_out,obs - k_out,calc`` with a ``soft_l1`` loss that
behaves like Eq. 12's absolute deviations for outliers).

Degeneracies: only ``l_D - Delta-f`` enters the directions (the crystal's lateral
displacement ``Delta-f tan phi`` of the diffracting column, a few um, is neglected here
against the pixel), and ``lambda`` with the cell scale leaves every angle unchanged, so
``defocus_mm`` and ``wavelength`` are fixed by default.  Residuals are reported in
pixels as the distance between the observed centroid and the detector hit of
``k_out,calc`` from the rotation centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.optimize import differential_evolution, least_squares
from scipy.spatial.transform import Rotation

from crystalscope.cbxd.geometry import kossel_circle, rotation_matrix
from crystalscope.cbxd.index import CbxdGeometry, cell_parameters, streak_k_out, ub_from_cell
from crystalscope.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_BOUNDS",
    "DEFAULT_REFINE",
    "PARAMETERS",
    "Prediction",
    "RefineResult",
    "eq12_target",
    "predict_streaks",
    "refine_streaks",
]

#: Refinable parameters, in the order of the parameter vector.
PARAMETERS = (
    "a", "b", "c", "alpha", "beta", "gamma", "rot_x", "rot_y", "rot_z", "distance_mm",
    "defocus_mm", "centre_fs", "centre_ss", "tilt_x", "tilt_y", "wavelength",
)  # fmt: skip
#: Parameters refined unless told otherwise (see the module docstring on degeneracies).
DEFAULT_REFINE = (*PARAMETERS[:10], "centre_fs", "centre_ss", "tilt_x", "tilt_y")
#: Half-widths of the search box around the start: ``("rel", f)`` a fraction of the
#: start value, ``("abs", d)`` in the parameter's unit.
DEFAULT_BOUNDS: dict[str, tuple[str, float]] = {
    "a": ("rel", 0.03), "b": ("rel", 0.03), "c": ("rel", 0.03), "alpha": ("abs", 1.5),
    "beta": ("abs", 1.5), "gamma": ("abs", 1.5), "rot_x": ("abs", 2.0), "rot_y": ("abs", 2.0),
    "rot_z": ("abs", 2.0), "distance_mm": ("rel", 0.04), "defocus_mm": ("rel", 0.04),
    "centre_fs": ("abs", 4.0), "centre_ss": ("abs", 4.0), "tilt_x": ("abs", 2e-3),
    "tilt_y": ("abs", 2e-3), "wavelength": ("rel", 0.005),
}  # fmt: skip
_WINDOW = 65  # chi samples of the pupil-restricted search
_BISECT = 24  # bisection steps to the pupil edge (smooth residuals for the local fit)


@dataclass(frozen=True)
class Prediction:
    """Observed and calculated outgoing wave vectors of streaks (1/A), the lab ``G``
    (1/A), predicted pixels and whether the calculated ``k_in`` is inside the pupil."""

    g: np.ndarray
    k_obs: np.ndarray
    k_calc: np.ndarray
    fs: np.ndarray
    ss: np.ndarray
    in_pupil: np.ndarray

    @property
    def distance(self) -> np.ndarray:
        """``|k_out,obs - k_out,calc|`` per streak (1/A)."""
        return np.linalg.norm(self.k_obs - self.k_calc, axis=-1)


def _frame_rotations(geom: CbxdGeometry, omega_deg: np.ndarray, frames: np.ndarray) -> np.ndarray:
    rots = np.stack([rotation_matrix(geom.axis, np.radians(w)) for w in omega_deg])
    return rots[frames]


def predict_streaks(
    ub: np.ndarray, geom: CbxdGeometry, hkl: ArrayLike, frames: ArrayLike,
    omega_deg: ArrayLike, fs: ArrayLike, ss: ArrayLike, rotations: np.ndarray | None = None,
    edge_steps: int = _BISECT,
) -> Prediction:  # fmt: skip
    """``k_out,calc`` of each streak: the point of its Kossel circle nearest to the
    observed ``k_out`` with the deficiency line inside the pupil (module docstring).

    Parameters
    ----------
    ub : (3, 3) array
        1/A, crystal at ``omega = 0``.
    geom : CbxdGeometry
    hkl : (n, 3) int array
    frames : (n,) int array
        Frame of each streak; ``omega_deg[frame]`` its goniometer angle (deg).
    omega_deg : array
    fs, ss : (n,) arrays
        Observed centroids (pixels).
    rotations : (n, 3, 3) array, optional
        ``R_omega`` of each streak, if already computed.
    edge_steps : int
        Bisection steps locating the pupil edge (0: nearest of 65 samples of the arc).
    """
    rots = rotations
    if rots is None:
        rots = _frame_rotations(geom, np.asarray(omega_deg, float), np.asarray(frames, int))
    g = np.einsum("nij,jk,nk->ni", rots, ub, np.asarray(hkl, float))
    k_obs = streak_k_out(geom, fs, ss)
    circle = kossel_circle(g, geom.wavelength)
    v = k_obs - g / 2
    chi = np.arctan2(np.sum(v * circle.b, -1), np.sum(v * circle.a, -1))
    inside = geom.pupil.contains(*geom.pupil_angles(circle.k_in(chi)))
    out = np.nonzero(~inside & np.isfinite(chi))[0]
    if len(out):
        chi[out], found = _nearest_in_pupil(circle, geom, k_obs, chi, out, edge_steps)
        inside[out] = found
    k_calc = circle.k_out(chi)
    origin = np.broadcast_to(np.asarray(geom.centre_mm, float), k_calc.shape)
    fs_c, ss_c = geom.lab_to_pixel(origin, k_calc)
    return Prediction(g, k_obs, k_calc, fs_c, ss_c, inside)


def _nearest_in_pupil(
    circle: object, geom: CbxdGeometry, k_obs: np.ndarray, chi: np.ndarray, rows: np.ndarray,
    steps: int,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For streaks whose nearest circle point is outside the pupil: the nearest point of
    the arc inside it, i.e. the pupil edge next to the nearest inside sample, found by
    bisection (or the unrestricted point where no sample is inside)."""
    c = kossel_circle(circle.g[rows], geom.wavelength)  # type: ignore[attr-defined]
    width = 3 * geom.pupil.max_angle / np.maximum(np.cos(c.theta), 0.1)
    t = np.linspace(-1.0, 1.0, _WINDOW)
    cand = chi[rows, None] + width[:, None] * t  # (m, window)
    k_out = (
        c.g[:, None] / 2
        + np.cos(cand)[..., None] * c.a[:, None]
        + (np.sin(cand)[..., None] * c.b[:, None])
    )
    ok = geom.pupil.contains(*geom.pupil_angles(k_out - c.g[:, None]))
    dist = np.linalg.norm(k_out - k_obs[rows, None], axis=-1)
    best = np.argmin(np.where(ok, dist, np.inf), axis=1)
    found = np.asarray(ok.any(axis=1))
    inner = cand[np.arange(len(rows)), best]
    outer = inner + np.sign(chi[rows] - inner) * width * (t[1] - t[0])
    for _ in range(steps):  # the pupil edge between the inside sample and chi0's side
        mid = 0.5 * (inner + outer)
        inside = geom.pupil.contains(*geom.pupil_angles(c.k_in(mid)))
        inner, outer = np.where(inside, mid, inner), np.where(inside, outer, mid)
    return np.where(found, inner, chi[rows]), found


def eq12_target(pred: Prediction) -> float:
    """Eq. 12: the mean ``|k_out,obs - k_out,calc|`` (1/A)."""
    return float(np.mean(pred.distance))


@dataclass(frozen=True)
class RefineResult:
    """Outcome of :func:`refine_streaks`.

    Attributes
    ----------
    ub : (3, 3) array
        Refined ``UB`` (1/A).
    geom : CbxdGeometry
        Refined geometry.
    values : dict
        Refined value of every parameter in :data:`PARAMETERS`.
    target_start, target_global, target_final : float
        Eq. 12 (1/A) at the start, after differential evolution, at the end.
    rms_px_start, rms_px : float
        RMS pixel distance of predicted to observed streaks at the start and the end.
    residuals_px : (n,) array
        Final pixel distances.
    """

    ub: np.ndarray
    geom: CbxdGeometry
    values: dict[str, float]
    target_start: float
    target_global: float
    target_final: float
    rms_px_start: float
    rms_px: float
    residuals_px: np.ndarray


class _Model:
    """Parameter vector <-> (UB, geometry) and the residuals of the observations."""

    def __init__(self, ub: np.ndarray, geom: CbxdGeometry, obs: pd.DataFrame,
                 omega_deg: np.ndarray, free: Sequence[str]) -> None:  # fmt: skip
        cell = cell_parameters(ub)
        self.u0 = ub @ np.linalg.inv(ub_from_cell(cell))
        self.geom0 = geom
        values = [*cell, 0.0, 0.0, 0.0, geom.distance_mm, geom.defocus_mm, geom.centre_fs,
                  geom.centre_ss, geom.tilt_x, geom.tilt_y, geom.wavelength]  # fmt: skip
        self.start = dict(zip(PARAMETERS, values, strict=True))
        self.free = list(free)
        self.hkl = obs[["h", "k", "l"]].to_numpy(dtype=float)
        self.frames = obs["frame"].to_numpy(dtype=int)
        self.fs = obs["fs"].to_numpy(dtype=float)
        self.ss = obs["ss"].to_numpy(dtype=float)
        self.omega = omega_deg
        self.rots = _frame_rotations(geom, omega_deg, self.frames)

    def values(self, x: np.ndarray) -> dict[str, float]:
        vals = dict(self.start)
        vals.update(zip(self.free, (float(v) for v in x), strict=True))
        return vals

    def build(self, x: np.ndarray) -> tuple[np.ndarray, CbxdGeometry]:
        v = self.values(x)
        rot = Rotation.from_rotvec(np.radians([v["rot_x"], v["rot_y"], v["rot_z"]])).as_matrix()
        ub = rot @ self.u0 @ ub_from_cell([v[n] for n in PARAMETERS[:6]])
        geom = replace(self.geom0, distance_mm=v["distance_mm"], defocus_mm=v["defocus_mm"],
                       centre_fs=v["centre_fs"], centre_ss=v["centre_ss"], tilt_x=v["tilt_x"],
                       tilt_y=v["tilt_y"], wavelength=v["wavelength"])  # fmt: skip
        return ub, geom

    def predict(self, x: np.ndarray, edge_steps: int = _BISECT) -> Prediction:
        ub, geom = self.build(x)
        return predict_streaks(ub, geom, self.hkl, self.frames, self.omega, self.fs, self.ss,
                               self.rots, edge_steps)  # fmt: skip

    def target(self, x: np.ndarray, edge_steps: int = _BISECT) -> float:
        try:
            value = eq12_target(self.predict(x, edge_steps))
        except ConfigError:  # an impossible cell inside the box
            return 1e3
        return value if np.isfinite(value) else 1e3

    def residuals(self, x: np.ndarray) -> np.ndarray:
        p = self.predict(x)
        r = (p.k_obs - p.k_calc).ravel() * self.geom0.wavelength
        return np.nan_to_num(r, nan=1.0)

    def pixel_residuals(self, x: np.ndarray) -> np.ndarray:
        p = self.predict(x)
        return np.hypot(p.fs - self.fs, p.ss - self.ss)

    def bounds(self, widths: dict[str, tuple[str, float]]) -> list[tuple[float, float]]:
        out = []
        for name in self.free:
            kind, w = widths[name]
            half = abs(self.start[name]) * w if kind == "rel" else w
            out.append((self.start[name] - half, self.start[name] + half))
        return out


def refine_streaks(
    ub: np.ndarray, geom: CbxdGeometry, streaks: pd.DataFrame, omega_deg: ArrayLike, *,
    refine: Sequence[str] = DEFAULT_REFINE, bounds: dict[str, tuple[str, float]] | None = None,
    maxiter: int = 10, popsize: int = 5, seed: int = 0,
) -> RefineResult:  # fmt: skip
    """Minimise Eq. 12 over lattice, orientation and geometry (module docstring).

    Parameters
    ----------
    ub : (3, 3) array
        Starting ``UB`` (1/A), e.g. from :func:`crystalscope.cbxd.index.index_streaks`.
    geom : CbxdGeometry
        Starting geometry.
    streaks : DataFrame
        Indexed streaks: ``frame``, ``fs``, ``ss``, ``h``, ``k``, ``l``.
    omega_deg : array
        Goniometer angle (deg) of each frame's middle.
    refine : sequence of str
        Names from :data:`PARAMETERS` to refine (the others stay at the start).
    bounds : dict, optional
        Overrides of :data:`DEFAULT_BOUNDS`.
    maxiter, popsize, seed : int
        Differential-evolution settings.

    Raises
    ------
    ConfigError
        Unknown parameter names.
    DataError
        Fewer streaks than free parameters, or missing columns.
    """
    unknown = [n for n in refine if n not in PARAMETERS]
    if unknown:
        raise ConfigError(f"unknown parameters {unknown}; choose from {PARAMETERS}",
                          field="refine")  # fmt: skip
    for col in ("frame", "fs", "ss", "h", "k", "l"):
        if col not in streaks.columns:
            raise DataError("streak table lacks a column", field=col)
    if 3 * len(streaks) <= len(refine):
        raise DataError(f"{len(streaks)} streaks for {len(refine)} parameters", field="streaks")
    widths = {**DEFAULT_BOUNDS, **(bounds or {})}
    model = _Model(ub, geom, streaks, np.asarray(omega_deg, float), refine)
    x0 = np.array([model.start[n] for n in model.free])
    box = model.bounds(widths)
    de = differential_evolution(model.target, box, args=(0,), maxiter=maxiter, popsize=popsize,
                                seed=seed, polish=False, init="sobol", x0=x0)  # fmt: skip
    lo, hi = np.array(box).T
    pixel_angle = geom.pixel_mm / (geom.distance_mm - geom.defocus_mm)  # 1 px, rad
    starts = [np.clip(de.x, lo, hi), x0]  # the start too: DE's few generations may be rough
    fits = [least_squares(model.residuals, s, bounds=(lo, hi), loss="soft_l1",
                          f_scale=pixel_angle, x_scale=(hi - lo) / 2, max_nfev=200).x
            for s in starts]  # fmt: skip
    x = min([*fits, de.x], key=model.target)
    ub_f, geom_f = model.build(x)
    res_px = model.pixel_residuals(x)
    return RefineResult(
        ub_f, geom_f, model.values(x), model.target(x0), float(de.fun), model.target(x),
        float(np.sqrt(np.mean(model.pixel_residuals(x0) ** 2))),
        float(np.sqrt(np.mean(res_px**2))), res_px,
    )  # fmt: skip
