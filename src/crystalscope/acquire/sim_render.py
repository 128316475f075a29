"""Image formation of the simulated microscope: what reaches the camera in an exposure.

:func:`render_exposure` turns an :class:`ExposureState` (the microscope's state over
``[t0, t1]``: stage trajectory, beam shift and tilt, mode, lens values, dose rate) into
the expected counts on every raw camera pixel (float64).  The camera
(:mod:`~crystalscope.acquire.sim_camera`) adds the detector response.

Selected area
-------------
In diffraction mode the recorded electrons come from the selected area: a disc of
radius ``r_sel = min(sa_aperture_radius_um, beam_radius_um)`` centred on the beam shift
(the simulator moves the aperture image with the beam, which is how beam-shift tracking
keeps a drifting crystal selected).  A crystal contributes with the part of its
projected outline inside the disc (:func:`~.sim_sample.polygon_disc_area`), averaged
over the exposure with Gauss-Legendre nodes in time (the stage moves at constant speed
between breakpoints, so the exposure is split at every start or stop of an axis).  The
electrons on crystal ``i`` are ``n_i = D * A_i`` (``D`` the dose in e/A^2, ``A_i`` the
area inside, A^2); the incident beam through the selected area is
``N_inc = D pi r_sel^2`` times the fraction of the disc over a grid hole.

Focused diffraction
-------------------
Each crystal's Bragg counts over the angle range of each piece of the exposure come from
:class:`~crystalscope.simulate.rotation_window.WindowCrossings` (kinematic structure
factors, Ewald crossings, Lorentz factors and rocking curves of the rotation simulator),
its inelastic background is ``n_i (1 - exp(-t_i / mfp))``, and the zero-order beam
carries the rest, ``N_inc - sum(Bragg + inelastic)``.  Spots, zero-order Lorentzian and
inelastic halo are drawn with :func:`~crystalscope.simulate.render.render_expected`
(pixel-integrated profiles, PSF, Timepix wide cross pixels folded), with the lens
distortion (``ellipticity``) and a pattern shift of ``-L * tilt`` for a beam tilt
(first order: the tilt moves the pattern, its change of the excitation errors, below
0.1 deg for a few mrad, is left out).

Defocused diffraction
---------------------
With the diffraction focus ``Delta`` lens units away from the focused value every beam
becomes a shadow image of the selected area, magnified in proportion to ``Delta``:
``nm_per_px = defocus_nm_per_px * defocus_offset / |Delta|`` (the calibration).  The
direct beam gives the bright-field disc (radius ``r_sel / nm_per_px`` pixels, centred on
the pattern centre, blurred by the focused zero-order profile) in which crystal ``i``
appears at ``(r_i - c_sel) / nm_per_px`` (``r_i`` its projected outline, ``c_sel`` the
selected-area centre, lab ``x`` along ``fs``, lab ``y`` along ``ss``) darkened by the
fraction of its electrons scattered away (Bragg + inelastic over ``n_i``).  The
scattered electrons keep their direction, so the crystal's focused pattern without the
zero-order beam (Bragg spots and inelastic halo) is convolved with its footprint: each
spot becomes a dark-field image of the crystal around its focused position.  A lens
still settling after a focus change therefore blurs the pattern until ``Delta`` shrinks
below half a pixel of shadow-image radius.  The crystal's position is taken at the
middle of the exposure; defocused images are drawn on the raw pixel grid (no folding of
wide pixels).

Images (``lowmag``, ``mag1``)
-----------------------------
A bright-field image of the specimen around the optical axis: camera pixel ``(fs, ss)``
sees lab ``((fs - cx) p, (ss - cy) p)`` with ``p = pixel size / magnification`` and
``(cx, cy)`` the middle of the frame; the grid bars block, the film transmits
``film_transmission`` and a crystal of thickness ``t`` transmits ``exp(-t / mfp)``
(``image_contrast_mfp_um``, amplitude and mass-thickness contrast of an objective
aperture).  Illumination is even (beam shift does not matter), the dose is
``image_dose_rate_e_per_a2_s``; blurred by the camera's PSF.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.ndimage import gaussian_filter
from scipy.signal import fftconvolve

from crystalscope.acquire.config import CalibrationConfig, SimulatedMicroscopeConfig
from crystalscope.acquire.interfaces import FunctionMode, StagePosition
from crystalscope.acquire.sim_sample import (
    Sample,
    SimCrystal,
    polygon_coverage,
    polygon_disc_area,
    specimen_to_lab,
)
from crystalscope.model.beam import Beam
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.simulate.config import BeamEffects, DetectorEffects
from crystalscope.simulate.kinematics import centre_px
from crystalscope.simulate.render import render_expected
from crystalscope.simulate.rotation_window import WindowCrossings, locate_spots

__all__ = [
    "A2_PER_UM2",
    "CameraGeometry",
    "CrystalExposure",
    "ExposureState",
    "SimScene",
    "StageSegment",
    "render_exposure",
]

#: Square Angstrom per square micrometre.
A2_PER_UM2 = 1e8
_FOCUSED_PX = 0.5  # shadow-image radius (px) below which the pattern counts as focused
_NODE_DEG = 0.5  # one time node per this much rotation, at most _MAX_NODES
_MAX_NODES = 16


@dataclass(frozen=True)
class StageSegment:
    """Part of an exposure during which every stage axis moves at constant speed."""

    t0_s: float
    t1_s: float
    start: StagePosition
    end: StagePosition

    def at(self, fraction: float) -> StagePosition:
        """Position a ``fraction`` (0..1) of the way through the segment."""
        a, b = self.start.as_dict(), self.end.as_dict()
        return StagePosition(**{k: a[k] + fraction * (b[k] - a[k]) for k in a})


@dataclass(frozen=True)
class ExposureState:
    """The microscope during an exposure ``[t0_s, t1_s]`` (units as in the interfaces).

    ``dose_rate_e_per_a2_s`` is 0 while the beam is blanked or the screen is down;
    ``defocus_offset`` is the effective diffraction focus minus the focused value at the
    middle of the exposure (lens units).
    """

    t0_s: float
    t1_s: float
    mode: FunctionMode
    segments: tuple[StageSegment, ...]
    beam_shift_nm: tuple[float, float]
    beam_tilt_mrad: tuple[float, float]
    camera_length_mm: float
    magnification: float
    defocus_offset: float
    dose_rate_e_per_a2_s: float

    @property
    def middle(self) -> StagePosition:
        """Stage position at the middle of the exposure."""
        tm = 0.5 * (self.t0_s + self.t1_s)
        for seg in self.segments:
            if seg.t0_s <= tm <= seg.t1_s:
                span = seg.t1_s - seg.t0_s
                return seg.at((tm - seg.t0_s) / span if span > 0 else 0.0)
        return self.segments[-1].end

    @property
    def selected_centre_um(self) -> np.ndarray:
        """Centre of the selected area in the lab ``xy`` plane, um."""
        return np.asarray(self.beam_shift_nm, dtype=float) / 1000.0


@dataclass(frozen=True)
class CameraGeometry:
    """What the renderer needs from the camera (unbinned pixels)."""

    shape: tuple[int, int]
    pixel_size_mm: float
    detector: Callable[[float], Detector]
    det_fx: DetectorEffects


@dataclass(frozen=True)
class CrystalExposure:
    """One crystal during one exposure: electrons received and Bragg partials."""

    crystal: SimCrystal
    electrons: float
    mean_fraction: float
    spots: pd.DataFrame

    @property
    def bragg(self) -> float:
        """Bragg counts (all reflections, also those off the detector)."""
        return float(self.spots["counts"].sum()) if len(self.spots) else 0.0


@dataclass
class SimScene:
    """Sample plus microscope physics; caches each crystal's Ewald crossings."""

    sample: Sample
    physics: SimulatedMicroscopeConfig
    calibration: CalibrationConfig
    beam: Beam
    alpha_range_deg: tuple[float, float]
    _crossings: dict[tuple[int, float], WindowCrossings] = field(default_factory=dict)

    @property
    def beam_fx(self) -> BeamEffects:
        """Beam effects for the renderer (zero order, inelastic halo, distortion)."""
        p = self.physics
        return BeamEffects(
            divergence_mrad=p.divergence_mrad,
            zero_order=True,
            zero_order_width_px=p.zero_order_width_px,
            inelastic=p.inelastic,
            inelastic_mfp_a=p.inelastic_mfp_a,
            inelastic_width_px=p.inelastic_width_px,
            ellipticity=p.ellipticity,
            ellipticity_angle_deg=p.ellipticity_angle_deg,
        )

    @property
    def distortion(self) -> EllipticalDistortion | None:
        """Elliptical lens distortion of the pattern, or None."""
        p = self.physics
        if p.ellipticity == 0:
            return None
        return EllipticalDistortion(1.0 + p.ellipticity, p.ellipticity_angle_deg)

    @property
    def selected_radius_um(self) -> float:
        """Radius of the area that diffracts: aperture or beam, the smaller."""
        return min(self.physics.sa_aperture_radius_um, self.physics.beam_radius_um)

    def crossings(self, index: int, beta_deg: float) -> WindowCrossings:
        """Ewald crossings of crystal ``index`` on a holder at ``beta_deg`` (cached)."""
        key = (index, round(float(beta_deg), 6))
        if key not in self._crossings:
            crystal = self.sample.crystals[index]
            u0 = _beta_matrix(beta_deg) @ crystal.U
            lo, hi = self.alpha_range_deg
            self._crossings[key] = WindowCrossings.build(
                self.sample.structure_factors(self.beam.radiation),
                u0,
                (1.0, 0.0, 0.0),
                self.beam,
                self.sample.crystal_config(index),
                self.beam_fx,
                (lo - 5.0, hi + 5.0),
            )
        return self._crossings[key]

    def exposures(self, state: ExposureState) -> list[CrystalExposure]:
        """Electrons and Bragg partials of every crystal touching the selected area."""
        out = []
        for crystal in self._candidates(state):
            parts, electrons, weighted = [], 0.0, 0.0
            for seg in state.segments:
                n_e, frac = self._segment_electrons(crystal, seg, state)
                electrons += n_e
                weighted += frac * (seg.t1_s - seg.t0_s)
                if n_e > 0:
                    window = self.crossings(crystal.index, seg.start.beta_deg)
                    p = window.partials(seg.start.alpha_deg, seg.end.alpha_deg, n_e)
                    parts.append(p)
            span = max(state.t1_s - state.t0_s, 1e-300)
            spots = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
            if electrons > 0:
                out.append(CrystalExposure(crystal, electrons, weighted / span, spots))
        return out

    def _candidates(self, state: ExposureState) -> list[SimCrystal]:
        centre, r_sel = state.selected_centre_um, self.selected_radius_um
        keep = []
        for crystal in self.sample.crystals:
            reach = float(np.max(np.linalg.norm(crystal.prism_um - crystal.centre_um, axis=1)))
            for pos in (state.segments[0].start, state.segments[-1].end, state.middle):
                c = crystal.lab_centre_um(pos)[:2]
                if np.hypot(*(c - centre)) < r_sel + reach:
                    keep.append(crystal)
                    break
        return keep

    def _segment_electrons(
        self, crystal: SimCrystal, seg: StageSegment, state: ExposureState
    ) -> tuple[float, float]:
        """Electrons on the crystal inside the selected area, and the mean fraction inside."""
        dt = seg.t1_s - seg.t0_s
        if dt <= 0 or state.dose_rate_e_per_a2_s <= 0:
            return 0.0, 0.0
        turn = abs(seg.end.alpha_deg - seg.start.alpha_deg)
        n = min(_MAX_NODES, 1 + math.ceil(turn / _NODE_DEG))
        x, w = np.polynomial.legendre.leggauss(n)
        inside = total = 0.0
        for xi, wi in zip(0.5 * (x + 1.0), 0.5 * w, strict=True):
            poly = crystal.projection_um(seg.at(float(xi)))
            area = polygon_disc_area(poly, state.selected_centre_um, self.selected_radius_um)
            inside += wi * area
            total += wi * _area(poly)
        dose = state.dose_rate_e_per_a2_s * dt
        return dose * inside * A2_PER_UM2, inside / total if total > 0 else 0.0


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _beta_matrix(beta_deg: float) -> np.ndarray:
    b = math.radians(beta_deg)
    return np.array(
        [[math.cos(b), 0.0, math.sin(b)], [0.0, 1.0, 0.0], [-math.sin(b), 0.0, math.cos(b)]]
    )


# ---------------------------------------------------------------------- rendering


def render_exposure(scene: SimScene, state: ExposureState, geometry: CameraGeometry) -> np.ndarray:
    """Expected counts per raw camera pixel (float64, unbinned) of an exposure."""
    if state.dose_rate_e_per_a2_s <= 0 or state.t1_s <= state.t0_s:
        return np.zeros(geometry.shape)
    if state.mode is FunctionMode.DIFF:
        return _diffraction(scene, state, geometry)
    return _image(scene, state, geometry)


def _pattern_shift_mm(state: ExposureState) -> np.ndarray:
    tilt = np.asarray(state.beam_tilt_mrad, dtype=float) * 1e-3
    return -state.camera_length_mm * np.tan(tilt)


def _incident(scene: SimScene, state: ExposureState) -> float:
    r = scene.selected_radius_um
    open_frac = scene.sample.grid_open_fraction(state.selected_centre_um, r, state.middle)
    dose = state.dose_rate_e_per_a2_s * (state.t1_s - state.t0_s)
    return dose * math.pi * r**2 * A2_PER_UM2 * open_frac


def _inelastic(scene: SimScene, exp: CrystalExposure) -> float:
    if not scene.physics.inelastic:
        return 0.0
    t_a = exp.crystal.thickness_um * 1e4
    return exp.electrons * (1.0 - math.exp(-t_a / scene.physics.inelastic_mfp_a))


def _spot_image(
    scene: SimScene,
    spots: pd.DataFrame,
    detector: Detector,
    geometry: CameraGeometry,
    shift: np.ndarray,
    zero: float = 0.0,
    inelastic: float = 0.0,
) -> np.ndarray:
    located = locate_spots(spots, detector, scene.beam.wavelength, shift, scene.distortion)
    on = located[located["panel"] >= 0][["panel", "fs", "ss", "counts"]]
    return render_expected(
        on,
        detector,
        scene.beam_fx,
        geometry.det_fx,
        shift_mm=shift,
        zero_order_counts=zero,
        inelastic_counts=inelastic,
        distortion=scene.distortion,
    )


def _diffraction(scene: SimScene, state: ExposureState, geometry: CameraGeometry) -> np.ndarray:
    detector = geometry.detector(state.camera_length_mm)
    shift = _pattern_shift_mm(state)
    exposures = scene.exposures(state)
    n_inc = _incident(scene, state)
    inelastic = sum(_inelastic(scene, e) for e in exposures)
    cal = scene.calibration
    nm_per_px = math.inf
    if state.defocus_offset != 0:
        nm_per_px = cal.defocus_nm_per_px * abs(cal.defocus_offset / state.defocus_offset)
    if scene.selected_radius_um * 1000.0 / nm_per_px < _FOCUSED_PX:
        spots = [e.spots for e in exposures if len(e.spots)]
        table = pd.concat(spots, ignore_index=True) if spots else _no_spots()
        bragg = sum(e.bragg for e in exposures)
        zero = max(n_inc - bragg - inelastic, 0.0)
        return _spot_image(scene, table, detector, geometry, shift, zero, inelastic)
    return _defocused(scene, state, geometry, detector, shift, exposures, n_inc, nm_per_px)


def _no_spots() -> pd.DataFrame:
    return pd.DataFrame({c: np.zeros(0) for c in ("qx", "qy", "qz", "counts")})


def _defocused(
    scene: SimScene,
    state: ExposureState,
    geometry: CameraGeometry,
    detector: Detector,
    shift: np.ndarray,
    exposures: list[CrystalExposure],
    n_inc: float,
    nm_per_px: float,
) -> np.ndarray:
    """Shadow image of the selected area (bright field) plus dark-field discs."""
    shape = geometry.shape
    px_per_um = 1000.0 / nm_per_px
    centre = np.array(centre_px(detector, scene.beam, shift))
    sel_c, r_sel = state.selected_centre_um, scene.selected_radius_um
    disc = _disc_polygon(sel_c, r_sel)
    to_px = lambda poly: (poly - sel_c) * px_per_um + centre  # noqa: E731
    cover = polygon_coverage(to_px(disc), shape)
    mid = state.middle
    if scene.sample.grid_open_fraction(sel_c, r_sel, mid) < 1.0:
        cover *= _grid_mask(scene, shape, centre, sel_c, px_per_um, mid)
    level = n_inc / max(float(cover.sum()), 1e-300)
    bright = level * cover
    dark = np.zeros(shape)
    for exp in exposures:
        scattered = min((exp.bragg + _inelastic(scene, exp)) / exp.electrons, 1.0)
        crystal = polygon_coverage(to_px(exp.crystal.projection_um(mid)), shape)
        bright *= 1.0 - scattered * crystal
        footprint = crystal * cover
        if footprint.sum() > 0:
            spots = exp.spots if len(exp.spots) else _no_spots()
            scattered_image = _spot_image(
                scene, spots, detector, geometry, shift, 0.0, _inelastic(scene, exp)
            )
            dark += _convolve(scattered_image, footprint, centre)
    image = fftconvolve(bright, _zero_order_kernel(scene.physics.zero_order_width_px), "same")
    return np.asarray(np.clip(image, 0.0, None) + dark, dtype=float)


def _zero_order_kernel(width_px: float, sub: int = 5) -> np.ndarray:
    """The focused zero-order profile (2-D Cauchy of half width ``width_px``) on a pixel
    grid centred on the middle pixel, sub-sampled ``sub x sub`` per pixel, sum 1."""
    half = min(math.ceil(20.0 * width_px) + 1, 64)
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    grid = (np.arange(-half, half + 1)[:, None] + offsets[None, :]).ravel()
    r2 = grid[:, None] ** 2 + grid[None, :] ** 2
    fine = width_px / (r2 + width_px**2) ** 1.5
    n = 2 * half + 1
    kernel = fine.reshape(n, sub, n, sub).sum(axis=(1, 3))
    return np.asarray(kernel / kernel.sum(), dtype=float)


def _disc_polygon(centre: np.ndarray, radius: float, n: int = 256) -> np.ndarray:
    t = 2.0 * math.pi * np.arange(n) / n
    k = math.sqrt((2.0 * math.pi / n) / math.sin(2.0 * math.pi / n))
    return np.column_stack([np.cos(t), np.sin(t)]) * radius * k + centre


def _grid_mask(
    scene: SimScene,
    shape: tuple[int, int],
    centre: np.ndarray,
    sel_c: np.ndarray,
    px_per_um: float,
    position: StagePosition,
) -> np.ndarray:
    ii, jj = np.indices(shape)
    lab = np.stack([(jj - centre[0]), (ii - centre[1])], axis=-1) / px_per_um + sel_c
    return np.asarray(scene.sample.grid_transmission(lab, position) > 0, dtype=float)


def _convolve(spots: np.ndarray, footprint: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Spread each spot into the crystal's footprint (its offset from the pattern centre)."""
    rows, cols = np.nonzero(footprint)
    if rows.size == 0:
        return np.zeros_like(spots)
    cj, ci = round(float(centre[0])), round(float(centre[1]))
    half = int(max(np.abs(rows - ci).max(), np.abs(cols - cj).max())) + 1
    kernel = np.zeros((2 * half + 1, 2 * half + 1))
    kernel[rows - ci + half, cols - cj + half] = footprint[rows, cols]
    kernel /= kernel.sum()
    return np.clip(fftconvolve(spots, kernel, mode="same"), 0.0, None)


def _image(scene: SimScene, state: ExposureState, geometry: CameraGeometry) -> np.ndarray:
    """Bright-field image of the specimen (module docstring)."""
    ny, nx = geometry.shape
    um_per_px = geometry.pixel_size_mm * 1000.0 / state.magnification
    cx, cy = 0.5 * (nx - 1), 0.5 * (ny - 1)
    pos = state.middle
    ii, jj = np.indices((ny, nx))
    lab = np.stack([(jj - cx) * um_per_px, (ii - cy) * um_per_px], axis=-1)
    trans = scene.sample.grid_transmission(lab, pos)
    half = np.array([cx + 1.0, cy + 1.0]) * um_per_px
    for crystal in scene.sample.crystals:
        c = specimen_to_lab(crystal.centre_um, pos)[:2]
        reach = crystal.thickness_um + float(np.max(np.abs(crystal.outline_um)))
        if np.any(np.abs(c) > half + reach):
            continue
        poly = crystal.projection_um(pos) / um_per_px + np.array([cx, cy])
        absorb = 1.0 - math.exp(-crystal.thickness_um / scene.physics.image_contrast_mfp_um)
        trans = trans * (1.0 - absorb * polygon_coverage(poly, (ny, nx)))
    dose = state.dose_rate_e_per_a2_s * (state.t1_s - state.t0_s)
    image = dose * (um_per_px**2 * A2_PER_UM2) * trans
    psf = geometry.det_fx.psf_sigma_px
    return np.asarray(gaussian_filter(image, psf) if psf > 0 else image, dtype=float)
