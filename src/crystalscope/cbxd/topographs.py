"""Distortion-free CBXD rotation topographs (seed 000, section 3.1, Eq. 7, Methods 5.2.5).

Model
-----
For a crystal of known orientation ``R_omega U B`` every reflection ``h`` has a Kossel
circle (Eqs. 1-3) whose deficiency line ``k_in(chi)`` crosses the lens pupil; a sample of
that line at ``(phi_x, phi_y)`` leaves the crystal where the ray from the focus crosses
``z = 0`` and reaches the detector along ``k_out = k_in + G`` (see ``docs/cbxd.md``).
:func:`predict_streaks` samples those lines finely and deposits each sample bilinearly on
the detector with the geometric weight ``P L cos(theta_B) d(chi)`` of Eq. 5 (everything
but ``c |F|^2 |A|^2 P_S``); per reflection and pixel it keeps that weight and the
weight-averaged incident-ray angles.  This gives

* the streak masks of a frame (predicted streak pixels, grown by a pixel) used to
  re-estimate the background from the nearest 50 frames (:func:`windowed_background`,
  Methods 5.2.5);
* the map of each background-corrected streak pixel to ``(phi_x, phi_y)``.

Summing the mapped counts of a reflection over the frames of a rotation series on a
regular ``(phi_x, phi_y)`` grid, divided by the bin's solid angle, gives Eq. 7,

    I_hkl(k_in(phi_x, phi_y)) = c P L W |F_hkl|^2 |A(phi_x, phi_y)|^2 P_S(phi_x, phi_y; omega),

with ``c`` of Eq. 5 divided by the rotation per frame ``Delta-omega`` (rad), because the
deficiency line sweeps across the pupil as the crystal turns: along a line
``cos(theta_B) d(chi)`` is the arc length in ``(phi_x, phi_y)``, and a turn ``d(omega)``
moves the line by ``cos(xi) d(omega)`` across itself, so the lines of successive frames
are ``W = 1/cos(xi)`` times denser (``xi``: the in-plane angle of ``G`` against the
direction normal to the rotation axis; :func:`xi_angle`).  Dividing by the smoothed
aperture function ``|A|^2`` (:func:`smoothed_aperture`) gives the undistorted topograph,
a magnified projection of the crystal along ``k_in`` (a "stacked projection", 3.1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from crystalscope.cbxd.geometry import (
    Detector,
    LensPupil,
    angles_to_direction,
    crystal_position,
    direction_to_angles,
    kossel_circle,
    rotation_matrix,
)
from crystalscope.cbxd.intensity import lorentz_factor, polarisation_factor
from crystalscope.cbxd.shapes import VoxelShape, project_rays
from crystalscope.errors import ConfigError, DataError

__all__ = [
    "CbxdGeometry",
    "FrameStack",
    "StreakPixels",
    "Topograph",
    "TopographGrid",
    "accumulate_topographs",
    "predict_frame",
    "predict_streaks",
    "projection_on_grid",
    "smoothed_aperture",
    "streak_mask",
    "topograph_table",
    "windowed_background",
    "xi_angle",
]

_COARSE = 3600  # coarse azimuths that find the arcs inside the pupil


class FrameStack(Protocol):
    """Frames (or masks) read one at a time by index: a 3-D array, a list of images or
    any object with ``len`` and integer indexing (e.g. a lazily reading dataset)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int, /) -> Any: ...


@dataclass(frozen=True)
class CbxdGeometry:
    """Known experiment geometry and crystal orientation (from refinement or the truth).

    Attributes
    ----------
    wavelength : float
        A.
    pupil : LensPupil
        Lens pupil (rad).
    detector : Detector
        Detector (``l_D`` from the focus, mm).
    defocus_mm : float
        ``Delta-f``: crystal downstream of focus (mm).
    ub : ndarray (3, 3)
        ``U B`` at ``omega = 0`` (columns ``a*, b*, c*`` in the lab frame, 1/A).
    hkl : ndarray (n, 3)
        Reflections to predict.
    axis : tuple
        Rotation axis (lab).
    """

    wavelength: float
    pupil: LensPupil
    detector: Detector
    defocus_mm: float
    ub: np.ndarray
    hkl: np.ndarray
    axis: tuple[float, float, float] = (0.0, 1.0, 0.0)

    @classmethod
    def from_simulation(cls, sim: Any) -> CbxdGeometry:
        """Geometry of a :class:`crystalscope.simulate.cbxd.CbxdSimulation` (the truth)."""
        cfg = sim.config
        axis = tuple(float(v) for v in cfg.scan.axis)
        return cls(
            float(sim.wavelength), sim.pupil, sim.detector, float(cfg.sample.defocus_mm),
            np.asarray(sim.ub, dtype=float), np.asarray(sim.hkl), axis,  # type: ignore[arg-type]
        )  # fmt: skip

    def g_lab(self, omega_deg: float) -> np.ndarray:
        """Scattering vectors ``G = R_omega U B h`` (n, 3), 1/A."""
        rot = rotation_matrix(self.axis, np.radians(omega_deg))
        return (rot @ self.ub @ np.asarray(self.hkl, float).T).T


@dataclass(frozen=True)
class StreakPixels:
    """Predicted streak pixels of one frame (sparse, one row per reflection and pixel).

    Attributes
    ----------
    refl : ndarray (m,) int
        Index into ``CbxdGeometry.hkl``.
    pixel : ndarray (m,) int
        Flat detector index ``ss * n_fs + fs``.
    weight : ndarray (m,)
        Geometric weight ``sum P L cos(theta_B) d(chi)`` deposited in the pixel (rad):
        the expected counts are ``c |F|^2 |A|^2 P_S`` times this (Eq. 5).
    phi_x, phi_y : ndarray (m,)
        Weight-averaged incident-ray angles of the pixel (rad).
    """

    refl: np.ndarray
    pixel: np.ndarray
    weight: np.ndarray
    phi_x: np.ndarray
    phi_y: np.ndarray


def _line_samples(
    geom: CbxdGeometry, g: np.ndarray, samples_per_pixel: float
) -> dict[str, np.ndarray]:
    """Fine samples ``chi`` of all deficiency lines inside the pupil, with their ``k``."""
    circle = kossel_circle(g, geom.wavelength)
    dc = 2 * np.pi / _COARSE
    ok = np.isfinite(circle.radius) & (
        circle.max_cos_to_axis() >= np.cos(min(geom.pupil.max_angle + dc, np.pi))
    )
    idx = np.nonzero(ok)[0]
    circle = kossel_circle(g[idx], geom.wavelength)
    chi_c = (np.arange(_COARSE) + 0.5) * dc
    px, py = direction_to_angles(circle.k_in(chi_c[:, None]))
    r_i, c_i = np.nonzero(geom.pupil.contains(px, py, margin=dc).T)
    det = geom.detector
    n_fine = np.ceil(
        dc * det.distance_mm * np.cos(circle.theta[r_i]) * samples_per_pixel / det.pixel_mm
    ).astype(int)
    n_fine = np.maximum(n_fine, 1)
    rep = np.repeat(np.arange(len(r_i)), n_fine)
    pos = np.arange(len(rep)) - (np.cumsum(n_fine) - n_fine)[rep]
    dchi = dc / n_fine[rep]
    chi = chi_c[c_i[rep]] - dc / 2 + (pos + 0.5) * dchi
    kc = kossel_circle(circle.g[r_i[rep]], geom.wavelength)
    k_out = kc.k_out(chi)
    k_in = k_out - kc.g
    phx, phy = direction_to_angles(k_in)
    inside = geom.pupil.contains(phx, phy)
    return {"refl": idx[r_i[rep]][inside], "dchi": dchi[inside], "k_in": k_in[inside],
            "k_out": k_out[inside], "phi_x": phx[inside], "phi_y": phy[inside],
            "theta": kc.theta[inside]}  # fmt: skip


def predict_streaks(
    geom: CbxdGeometry, omega_deg: float, *, samples_per_pixel: float = 3.0
) -> dict[str, np.ndarray]:
    """Samples of the Bragg streaks of the still crystal at ``omega_deg``.

    Returns a dict of arrays: ``refl``, ``fs``, ``ss`` (detector pixels), ``phi_x``,
    ``phi_y`` (rad), ``weight = P L cos(theta_B) d(chi)`` (rad; Eq. 5 without
    ``c |F|^2 |A|^2 P_S``) and ``theta`` (rad).
    """
    s = _line_samples(geom, geom.g_lab(omega_deg), samples_per_pixel)
    start = crystal_position(s["phi_x"], s["phi_y"], geom.defocus_mm)
    fs, ss = geom.detector.to_pixels(geom.detector.hit(start, s["k_out"], geom.defocus_mm))
    pol = polarisation_factor(s["k_out"]) if len(s["refl"]) else np.zeros(0)
    weight = pol * lorentz_factor(s["theta"]) * np.cos(s["theta"]) * s["dchi"]
    return {"refl": s["refl"], "fs": fs, "ss": ss, "phi_x": s["phi_x"], "phi_y": s["phi_y"],
            "weight": weight, "theta": s["theta"]}  # fmt: skip


def _bilinear(fs: np.ndarray, ss: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Sample index, flat pixel and weight of the four bilinear neighbours of each point."""
    ok = np.nonzero(np.isfinite(fs) & np.isfinite(ss))[0]
    f, s = fs[ok], ss[ok]
    f0, s0 = np.floor(f).astype(np.int64), np.floor(s).astype(np.int64)
    tf, ts = f - f0, s - s0
    out_i, out_p, out_w = [], [], []
    for df, ds, wt in ((0, 0, (1 - tf) * (1 - ts)), (1, 0, tf * (1 - ts)),
                       (0, 1, (1 - tf) * ts), (1, 1, tf * ts)):  # fmt: skip
        fi, si = f0 + df, s0 + ds
        m = (fi >= 0) & (fi < shape[1]) & (si >= 0) & (si < shape[0]) & (wt > 0)
        out_i.append(ok[m])
        out_p.append(si[m] * shape[1] + fi[m])
        out_w.append(wt[m])
    return np.concatenate(out_i), np.concatenate(out_p), np.concatenate(out_w)


def predict_frame(
    geom: CbxdGeometry,
    omega_deg: float,
    step_deg: float = 0.0,
    *,
    substeps: int = 1,
    samples_per_pixel: float = 3.0,
) -> StreakPixels:
    """Predicted streak pixels of a frame exposed over ``[omega, omega + step)``.

    The streaks of ``substeps`` still orientations (at the centres of equal sub-intervals)
    are deposited bilinearly with the weight of :func:`predict_streaks` (divided by
    ``substeps``), then summed per reflection and pixel with weight-averaged angles.
    """
    if substeps < 1:
        raise ConfigError("substeps must be at least 1", field="substeps")
    shape = geom.detector.shape
    parts: list[tuple[np.ndarray, ...]] = []
    for k in range(substeps):
        om = omega_deg + (k + 0.5) / substeps * step_deg
        p = predict_streaks(geom, om, samples_per_pixel=samples_per_pixel)
        i, pix, wt = _bilinear(p["fs"], p["ss"], shape)
        w = p["weight"][i] * wt / substeps
        parts.append((p["refl"][i], pix, w, w * p["phi_x"][i], w * p["phi_y"][i]))
    refl, pix, w, wx, wy = (np.concatenate([q[j] for q in parts]) for j in range(5))
    key = refl.astype(np.int64) * (shape[0] * shape[1]) + pix
    uniq, inv = np.unique(key, return_inverse=True)
    sw = np.bincount(inv, w, len(uniq))
    good = sw > 0
    safe = np.where(good, sw, 1.0)
    return StreakPixels(
        (uniq // (shape[0] * shape[1]))[good], (uniq % (shape[0] * shape[1]))[good],
        sw[good], (np.bincount(inv, wx, len(uniq)) / safe)[good],
        (np.bincount(inv, wy, len(uniq)) / safe)[good],
    )  # fmt: skip


def streak_mask(pixels: StreakPixels, shape: tuple[int, int], grow: int = 1) -> np.ndarray:
    """Boolean detector mask of the predicted streak pixels, grown by ``grow`` pixels
    (a square neighbourhood; Methods 5.2.5: the mask that excludes all Bragg streaks
    from the background).  Works on the sparse pixel list: cost grows with the number of
    streak pixels, not with the detector size."""
    ny, nx = shape
    ss, fs = np.divmod(np.unique(pixels.pixel), nx)
    mask = np.zeros(shape, dtype=bool)
    for ds in range(-grow, grow + 1):
        for df in range(-grow, grow + 1):
            s, f = ss + ds, fs + df
            ok = (s >= 0) & (s < ny) & (f >= 0) & (f < nx)
            mask[s[ok], f[ok]] = True
    return mask


def windowed_background(
    frames: FrameStack,
    masks: FrameStack,
    *,
    window: int = 50,
    bad: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Background of each frame from the ``window`` frames nearest in rotation angle.

    Methods 5.2.5: each pixel's background is the average of its unmasked values (streak
    masks ``masks[j]`` and ``bad`` pixels excluded) over the ``window`` frames closest to
    frame ``j`` (the frame itself included; at the ends of the series the window is
    shifted inwards).  Running sums keep the cost at two frame reads per frame; yields one
    ``float64`` image per frame (NaN where no unmasked value exists).
    """
    n = len(frames)
    if window < 1:
        raise ConfigError("background window must be at least 1 frame", field="window")
    w = min(window, n)
    total: np.ndarray | None = None
    count: np.ndarray | None = None
    lo = hi = 0  # frames [lo, hi) are in the running sums

    def term(j: int) -> tuple[np.ndarray, np.ndarray]:
        ok = ~np.asarray(masks[j], dtype=bool)
        if bad is not None:
            ok &= ~bad
        v = np.array(frames[j], dtype=np.float64)
        v[~ok] = 0.0
        return v, ok

    for j in range(n):
        start = min(max(j - (w - 1) // 2, 0), n - w)
        while hi < start + w:
            v, ok = term(hi)
            if total is None or count is None:
                total, count = v, ok.astype(np.int32)
            else:
                total += v
                count += ok
            hi += 1
        while lo < start:
            v, ok = term(lo)
            total -= v  # type: ignore[operator]
            count -= ok  # type: ignore[operator]
            lo += 1
        assert total is not None and count is not None
        with np.errstate(invalid="ignore", divide="ignore"):
            yield np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class TopographGrid:
    """Regular grid of incident-ray angles ``(phi_x, phi_y)`` (rad, bin centres).

    ``phi_x[0] + i * step`` along axis 1 (columns) and ``phi_y[0] + j * step`` along
    axis 0 (rows) of a topograph image.
    """

    x0: float
    y0: float
    step: float
    shape: tuple[int, int]

    @classmethod
    def covering(cls, pupil: LensPupil, step: float, pad: int = 2) -> TopographGrid:
        """Grid over the pupil with ``pad`` empty bins each side; ``step`` in rad."""
        if not step > 0:
            raise ConfigError("topograph grid step must be positive", field="step")
        nx = int(np.ceil((pupil.phi_x[1] - pupil.phi_x[0]) / step)) + 2 * pad
        ny = int(np.ceil((pupil.phi_y[1] - pupil.phi_y[0]) / step)) + 2 * pad
        return cls(pupil.phi_x[0] - (pad - 0.5) * step, pupil.phi_y[0] - (pad - 0.5) * step,
                   float(step), (ny, nx))  # fmt: skip

    def centres(self) -> tuple[np.ndarray, np.ndarray]:
        """``(phi_x, phi_y)`` of every bin, each of ``shape``."""
        ny, nx = self.shape
        return np.meshgrid(self.x0 + np.arange(nx) * self.step,
                           self.y0 + np.arange(ny) * self.step)  # fmt: skip

    def deposit(self, phi_x: np.ndarray, phi_y: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Bilinear deposition of ``values`` at angles ``(phi_x, phi_y)`` onto the grid."""
        ny, nx = self.shape
        i, pix, wt = _bilinear((phi_x - self.x0) / self.step, (phi_y - self.y0) / self.step,
                               (ny, nx))  # fmt: skip
        out = np.bincount(pix, values[i] * wt, ny * nx)
        return out.reshape(ny, nx)


def smoothed_aperture(pupil: LensPupil, grid: TopographGrid, sigma_bins: float = 1.0) -> np.ndarray:
    """``|A(phi_x, phi_y)|^2`` on the grid, smoothed by a Gaussian of ``sigma_bins`` bins
    (Methods 5.2.5: smoothing absorbs inaccuracies of the mapping to ``k_in``)."""
    from scipy.ndimage import gaussian_filter

    a = pupil.aperture(*grid.centres())
    return gaussian_filter(a, sigma_bins, mode="constant") if sigma_bins > 0 else a


def xi_angle(g: ArrayLike, axis: ArrayLike = (0.0, 1.0, 0.0)) -> np.ndarray:
    """In-plane orientation ``xi`` (rad) of each ``G`` (n, 3): the angle between its
    transverse part ``(G_x, G_y)`` and the transverse direction normal to the rotation
    axis; ``xi = pi/2`` when ``G`` lies along the axis (section 3.1, ``W = 1/cos xi``)."""
    gv = np.atleast_2d(np.asarray(g, dtype=float))
    a = np.asarray(axis, dtype=float)[:2]
    if not np.linalg.norm(a) > 0:
        raise ConfigError("rotation axis is along the beam: xi undefined", field="axis")
    a = a / np.linalg.norm(a)
    gt = gv[:, :2]
    along = np.abs(gt @ a)
    across = np.abs(gt[:, 0] * a[1] - gt[:, 1] * a[0])
    return np.arctan2(along, across)


@dataclass
class Topograph:
    """Rotation topograph of one reflection on a :class:`TopographGrid`.

    ``counts`` is Eq. 7 (photons per steradian of incident-ray angle, including ``W`` and
    ``|A|^2``), ``image`` the same divided by the smoothed ``|A|^2`` (NaN outside the
    pupil), ``hits`` the number of streak pixels mapped into each bin.
    """

    hkl: tuple[int, int, int]
    grid: TopographGrid
    counts: np.ndarray
    hits: np.ndarray
    omega_sum: float = 0.0
    weight_sum: float = 0.0
    image: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    xi: float = float("nan")

    @property
    def omega_mean_deg(self) -> float:
        """Count-weighted mean rotation angle of the streaks that formed it."""
        return self.omega_sum / self.weight_sum if self.weight_sum > 0 else float("nan")

    @property
    def sampling_factor(self) -> float:
        """``W = 1/cos(xi)`` (section 3.1)."""
        return float(1.0 / np.cos(self.xi))


def _unique_pixels(pixels: StreakPixels) -> np.ndarray:
    """Rows of pixels claimed by a single reflection (overlapping streaks are dropped)."""
    counts = np.bincount(pixels.pixel)
    return counts[pixels.pixel] == 1


class _MaskSequence:
    """Streak masks of the frames, made when the background window asks for them."""

    def __init__(self, preds: list[StreakPixels], shape: tuple[int, int]) -> None:
        self.preds, self.shape = preds, shape

    def __len__(self) -> int:
        return len(self.preds)

    def __getitem__(self, j: int) -> np.ndarray:
        return streak_mask(self.preds[j], self.shape)


def accumulate_topographs(
    geom: CbxdGeometry,
    frames: FrameStack,
    omegas_deg: ArrayLike,
    step_deg: float,
    grid: TopographGrid,
    *,
    substeps: int = 1,
    window: int = 50,
    bad: np.ndarray | None = None,
    min_counts: float = 0.0,
    sigma_bins: float = 1.0,
) -> dict[tuple[int, int, int], Topograph]:
    """Undistorted rotation topographs of all reflections in a rotation series (Eq. 7).

    For each frame ``j`` (exposed over ``[omegas[j], omegas[j] + step)``): predict the
    streak pixels (:func:`predict_frame`), subtract the background of the nearest
    ``window`` frames (:func:`windowed_background`), map every streak pixel claimed by one
    reflection to its ``(phi_x, phi_y)`` and deposit its counts on ``grid``.  Finally each
    topograph is divided by the bin solid angle ``step^2`` (Eq. 7) and by the smoothed
    aperture (bins with ``|A|^2 < 0.5``: NaN).  Reflections with fewer than
    ``min_counts`` photons in total are dropped.
    """
    om = np.asarray(omegas_deg, dtype=float)
    if len(om) != len(frames):
        raise DataError(f"{len(om)} angles for {len(frames)} frames", field="omega_deg")
    shape = geom.detector.shape
    preds = [predict_frame(geom, float(o), step_deg, substeps=substeps) for o in om]
    masks = _MaskSequence(preds, shape)
    acc: dict[int, Topograph] = {}
    for j, bg in enumerate(windowed_background(frames, masks, window=window, bad=bad)):
        p = preds[j]
        img = (np.asarray(frames[j], dtype=np.float64) - np.nan_to_num(bg)).ravel()
        keep = _unique_pixels(p)
        if bad is not None:
            keep &= ~bad.ravel()[p.pixel]
        idx = np.nonzero(keep)[0]
        idx = idx[np.argsort(p.refl[idx], kind="stable")]
        refls, first = np.unique(p.refl[idx], return_index=True)
        for r, rows in zip(refls, np.split(idx, first[1:]), strict=True):
            v = img[p.pixel[rows]]
            t = acc.get(int(r))
            if t is None:
                h0, k0, l0 = (int(x) for x in geom.hkl[r])
                t = Topograph((h0, k0, l0), grid, np.zeros(grid.shape), np.zeros(grid.shape))
                acc[int(r)] = t
            t.counts += grid.deposit(p.phi_x[rows], p.phi_y[rows], v)
            t.hits += grid.deposit(p.phi_x[rows], p.phi_y[rows], np.ones(len(rows)))
            s = float(v.sum())
            t.omega_sum += s * (om[j] + step_deg / 2)
            t.weight_sum += s
    aperture = smoothed_aperture(geom.pupil, grid, sigma_bins)
    out: dict[tuple[int, int, int], Topograph] = {}
    for r, t in acc.items():
        if t.weight_sum < min_counts or t.weight_sum <= 0:
            continue
        t.counts /= grid.step**2
        t.image = np.where(aperture >= 0.5, t.counts / np.maximum(aperture, 1e-12), np.nan)
        t.xi = float(xi_angle(geom.g_lab(t.omega_mean_deg)[r], geom.axis)[0])
        out[t.hkl] = t
    return out


def topograph_table(topographs: dict[tuple[int, int, int], Topograph]) -> pd.DataFrame:
    """One row per topograph: ``h, k, l``, total counts, mean ``omega``, ``xi``, ``W``."""
    rows = [
        {"h": h[0], "k": h[1], "l": h[2], "counts": t.weight_sum,
         "omega_deg": t.omega_mean_deg, "xi_deg": np.degrees(t.xi), "W": t.sampling_factor}
        for h, t in topographs.items()
    ]  # fmt: skip
    return pd.DataFrame(rows)


def projection_on_grid(
    shape: VoxelShape,
    geom: CbxdGeometry,
    grid: TopographGrid,
    omega_deg: float,
    *,
    centre_mm: ArrayLike = (0.0, 0.0, 0.0),
    offset_mm: ArrayLike = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """``P_S(phi_x, phi_y; omega)`` (um, Eq. 6) on the topograph grid: the length of
    crystal along each ray from the focus, for the crystal turned to ``omega_deg`` about
    the rotation centre ``centre_mm`` (lab) and shifted by ``offset_mm`` (crystal frame).
    This is what an undistorted topograph reproduces, up to the scale of Eq. 7."""
    px, py = grid.centres()
    dirs = angles_to_direction(px.ravel(), py.ravel())
    origin = np.array([0.0, 0.0, -geom.defocus_mm]) - np.asarray(centre_mm, float)
    p = project_rays(shape, np.broadcast_to(origin, dirs.shape), dirs,
                     rotation=rotation_matrix(geom.axis, np.radians(omega_deg)),
                     offset_mm=offset_mm)  # fmt: skip
    return p.reshape(grid.shape) * 1e3
