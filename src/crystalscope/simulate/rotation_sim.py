"""A rotation series as one object: stage drift through the aperture, frames, defocus.

:class:`RotationSimulation` fixes everything for a series (beam, detector, structure
factors, orientation at ``phi = 0``, frame angles, aperture scales, every Ewald crossing
and its partial counts per frame; :mod:`crystalscope.simulate.rotation` has the
equations of crossings and rocking curves) and renders any frame independently, with a
random stream that depends only on the seed and the frame index.

Random streams: ``default_rng([seed, 0])`` draws the orientation (when
``orientation_u`` is not given), ``[seed, 1]`` the detector's pixel defects,
``[seed, 2, frame]`` a frame's counting noise and ``[seed, 3]`` the beam-centre jitter.

**Aperture.**  The crystal is a grain whose projection along the beam is a disc of
diameter ``lateral_size_a``; its centre sits at ``r0`` off the rotation axis (which passes
through the beam) and moves as ``r(phi) = R(e, phi) r0``.  Only the part inside the
selected area (a disc centred on the beam, diameter ``min(aperture, beam)``) contributes.
The overlap of two discs of radii ``r1, r2`` at distance ``d`` is

.. math::

    A = r_1^2 \\arccos\\frac{d^2 + r_1^2 - r_2^2}{2 d r_1}
      + r_2^2 \\arccos\\frac{d^2 + r_2^2 - r_1^2}{2 d r_2}
      - \\tfrac12 \\sqrt{(-d + r_1 + r_2)(d + r_1 - r_2)(d - r_1 + r_2)(d + r_1 + r_2)}

(``pi min(r1, r2)^2`` when one disc holds the other, 0 when they are apart).  A frame's
``aperture_scale`` is the overlap fraction of the crystal's disc averaged over the
frame's exposure (Gauss-Legendre quadrature); the electrons on the crystal in that frame
are ``dose * pi (D/2)^2 * aperture_scale``.

**Electrons.**  The crystal receives ``n_x = dose * pi (D/2)^2 * aperture_scale``
electrons (photons) per frame, spread evenly over the exposure, ``n_rad = dose pi (D/2)^2
/ osc_rad`` per radian at full overlap; the incident beam through the selected area is
``N_inc = dose * pi r_sel^2``, the inelastic background ``n_x (1 - exp(-t / mfp))`` and
the zero-order beam ``N_inc`` less the Bragg and inelastic counts (as in the stills).

**Spots** sit where the diffracted ray of the crossing, ``lambda q(phi0) + z``, meets the
detector (:func:`~crystalscope.model.projection.project_rays`, with the frame's
detector shift and the elliptical lens distortion of ``beam_effects.ellipticity``), on
every frame that records part of the rocking curve.

**Defocused frames** show the crystal instead of its diffraction pattern: the part of the
crystal's disc inside the selected area, at its projected position (lab ``x, y`` mapped
onto panel 0's pixel directions about the beam centre), magnified so that the selected
area spans :data:`DEFOCUS_FILL` of the smaller frame dimension, with
``dose * (A per pixel)^2`` expected counts per covered pixel (so the image holds the
electrons on the crystal), blurred by a Gaussian of :data:`DEFOCUS_BLUR_PX` pixels and
passed through the detector effects of the diffraction frames (flat field, noise, dead
time, gain, hot and dead pixels, saturation, gaps; it is drawn on the raw pixel grid,
without the folding of wide pixels).  The crystal's position is that at the middle of
the exposure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy.ndimage import gaussian_filter

from crystalscope.errors import ConfigError
from crystalscope.model.beam import Beam
from crystalscope.model.crystal import Crystal
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.orientation import random_rotation, rotation_matrix
from crystalscope.model.projection import project_rays
from crystalscope.simulate._render_layout import layout
from crystalscope.simulate.config import RotationConfig
from crystalscope.simulate.kinematics import centre_px, reflection_scale
from crystalscope.simulate.presets import simulation_beam, simulation_detector
from crystalscope.simulate.render import (
    DetectorState,
    apply_response,
    make_detector_state,
    render_frame,
)
from crystalscope.simulate.rotation import (
    RotationScan,
    check_orientation,
    crossing_table,
    frame_partials,
    rotate,
    unit_axis,
)
from crystalscope.simulate.structure_factors import StructureFactors, load_structure_factors

__all__ = [
    "DEFOCUS_BLUR_PX",
    "DEFOCUS_FILL",
    "RotationSimulation",
    "aperture_scales",
    "crystal_position_a",
    "disc_overlap_area",
    "offset_basis",
    "selected_radius_a",
]

#: The selected area spans this fraction of the smaller frame dimension in defocused images.
DEFOCUS_FILL = 0.8
#: Gaussian blur (sigma, pixels) of defocused images.
DEFOCUS_BLUR_PX = 2.0
_SUPERSAMPLE = 4  # sub-pixel samples per axis when drawing the crystal's disc
_GAUSS_NODES = 16  # Gauss-Legendre points per frame for the aperture average


# ---------------------------------------------------------------------- aperture


def disc_overlap_area(d: ArrayLike, r1: float, r2: float) -> np.ndarray:
    """Area of the intersection of two discs of radii ``r1, r2`` at distance ``d``.

    Any length unit; the result is in that unit squared (module docstring).
    """
    dist = np.abs(np.asarray(d, dtype=float))
    small, large = min(r1, r2), max(r1, r2)
    out = np.where(dist <= large - small, math.pi * small**2, 0.0)
    part = (dist > large - small) & (dist < r1 + r2)
    if np.any(part):
        dd = dist[part]
        a1 = np.clip((dd**2 + r1**2 - r2**2) / (2.0 * dd * r1), -1.0, 1.0)
        a2 = np.clip((dd**2 + r2**2 - r1**2) / (2.0 * dd * r2), -1.0, 1.0)
        prod = (-dd + r1 + r2) * (dd + r1 - r2) * (dd - r1 + r2) * (dd + r1 + r2)
        out[part] = (
            r1**2 * np.arccos(a1) + r2**2 * np.arccos(a2) - 0.5 * np.sqrt(np.maximum(prod, 0.0))
        )
    return np.asarray(out, dtype=float)


def offset_basis(axis: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors ``(u, w)`` spanning the plane perpendicular to the axis.

    ``w`` is the beam direction ``z`` made perpendicular to the axis and ``u = w x e``
    (for the axis along ``x``: ``u = y``, ``w = z``).  For an axis along the beam,
    ``u = x`` and ``w = y``.
    """
    e = unit_axis(axis)
    w = np.array([0.0, 0.0, 1.0]) - e[2] * e
    if np.linalg.norm(w) < 1e-9:
        u = np.array([1.0, 0.0, 0.0]) - e[0] * e
        u /= np.linalg.norm(u)
        return u, np.cross(e, u)
    w /= np.linalg.norm(w)
    return np.cross(w, e), w


def crystal_position_a(offset_a: ArrayLike, axis: ArrayLike, phi_deg: ArrayLike) -> np.ndarray:
    """Lab position (A, shape (..., 3)) of the crystal centre at angles ``phi_deg``.

    ``offset_a = (o_u, o_w)`` are the crystal's coordinates along :func:`offset_basis`
    at ``phi = 0``; the rotation axis passes through the beam at the origin.
    """
    e = unit_axis(axis)
    u, w = offset_basis(e)
    o = np.asarray(offset_a, dtype=float)
    r0 = o[0] * u + o[1] * w
    return rotate(r0, e, np.radians(np.asarray(phi_deg, dtype=float)))


def selected_radius_a(config: RotationConfig) -> float:
    """Radius (A) of the area that contributes: the aperture and the beam, smaller one."""
    diameter = config.beam_effects.beam_diameter_a
    if config.aperture_diameter_a is not None:
        diameter = min(diameter, config.aperture_diameter_a)
    return 0.5 * diameter


def aperture_scales(config: RotationConfig, scan: RotationScan) -> np.ndarray:
    """Per-frame overlap fraction of the crystal disc with the selected area.

    The fraction ``A(d(phi)) / (pi r_c^2)`` (``d`` the distance of the crystal centre
    from the beam axis, projected along the beam) averaged over each exposure by
    Gauss-Legendre quadrature.
    """
    nodes, weights = np.polynomial.legendre.leggauss(_GAUSS_NODES)
    half = 0.5 * (scan.phi_end_deg - scan.phi_start_deg)
    mid = 0.5 * (scan.phi_end_deg + scan.phi_start_deg)
    phi = mid[:, None] + half[:, None] * nodes[None, :]
    pos = crystal_position_a(config.crystal_offset_a, scan.axis, phi)
    rc = 0.5 * config.crystal.lateral_size_a
    frac = disc_overlap_area(np.hypot(pos[..., 0], pos[..., 1]), rc, selected_radius_a(config))
    return np.asarray(frac @ weights / 2.0 / (math.pi * rc**2), dtype=float)


# ---------------------------------------------------------------------- simulation


def _orientation(config: RotationConfig) -> np.ndarray:
    if config.crystal.orientations is not None:
        raise ConfigError(
            "a rotation series has one crystal: give its orientation as orientation_u",
            field="crystal.orientations",
        )
    given = check_orientation(config.orientation_u)
    return given if given is not None else random_rotation(np.random.default_rng([config.seed, 0]))


def _frames_table(config: RotationConfig, scan: RotationScan, pixel_mm: float) -> pd.DataFrame:
    """Per-frame table: angles, defocus, aperture scale, electrons on the crystal, shift."""
    frames = scan.table()
    frames["aperture_scale"] = aperture_scales(config, scan)
    crystal_area = math.pi * (0.5 * config.crystal.lateral_size_a) ** 2
    dose = config.beam_effects.dose_e_per_a2
    frames["n_on_crystal"] = dose * crystal_area * frames["aperture_scale"]
    jitter = np.random.default_rng([config.seed, 3]).normal(
        0.0, config.beam_effects.centre_jitter_px, size=(scan.n_frames, 2)
    )
    frames["shift_x_mm"] = jitter[:, 0] * pixel_mm
    frames["shift_y_mm"] = jitter[:, 1] * pixel_mm
    return frames


@dataclass
class RotationSimulation:
    """Everything fixed for a rotation series; :meth:`frame` renders one frame.

    Attributes
    ----------
    config : RotationConfig
        The configuration.
    beam, detector, sf, state
        Beam, detector geometry, structure factors (P1) and the detector's fixed pixel
        defects.
    crystal : Crystal
        The crystal at ``phi = 0``; at angle ``phi`` it is ``crystal.rotated(axis, phi)``.
    scan : RotationScan
        Frame angles and defocused frames.
    frames : DataFrame
        One row per frame (:func:`_frames_table` plus the true beam centre).
    crossings : DataFrame
        Every Ewald crossing reaching the series (:func:`~.rotation.crossing_table`)
        with ``d, F2, full_counts, recorded_fraction, recorded_counts``.
    partials : DataFrame
        One row per crossing per frame with counts, sorted by frame, with the detector
        position (``panel`` -1 and NaN ``fs, ss`` when it misses the panels).
    """

    config: RotationConfig
    beam: Beam
    detector: Detector
    sf: StructureFactors
    state: DetectorState
    crystal: Crystal
    scan: RotationScan
    frames: pd.DataFrame
    crossings: pd.DataFrame
    partials: pd.DataFrame

    @classmethod
    def build(cls, config: RotationConfig) -> RotationSimulation:
        """Resolve beam, detector, structure factors, orientation, crossings and partials."""
        beam = simulation_beam(config.beam)
        detector = simulation_detector(config.detector, beam)
        if config.defocus_every and len(detector.raw_shape) != 2:
            raise ConfigError(
                f"defocused frames need a detector with 2-D raw frames, not {detector.raw_shape}",
                field="defocus_every",
            )
        sf = load_structure_factors(config.source, beam.radiation)
        crystal = Crystal(sf.cell, sf.space_group, _orientation(config))
        scan = RotationScan.from_config(config)
        frames = _frames_table(config, scan, detector.panels[0].pixel_size_mm)
        state = make_detector_state(
            detector, config.detector_effects, np.random.default_rng([config.seed, 1])
        )
        sim = cls(config, beam, detector, sf, state, crystal, scan, frames,
                  pd.DataFrame(), pd.DataFrame())  # fmt: skip
        sim._predict()
        return sim

    # ------------------------------------------------------------------ prediction

    @property
    def n_per_radian(self) -> float:
        """Electrons (photons) on the whole crystal per radian of exposed rotation."""
        cfg = self.config
        area = math.pi * (0.5 * cfg.crystal.lateral_size_a) ** 2
        return cfg.beam_effects.dose_e_per_a2 * area / math.radians(cfg.oscillation_deg)

    @property
    def n_incident(self) -> float:
        """Electrons (photons) per frame through the selected area."""
        return (
            self.config.beam_effects.dose_e_per_a2 * math.pi * selected_radius_a(self.config) ** 2
        )

    @cached_property
    def distortion(self) -> EllipticalDistortion | None:
        """The lens distortion, or None."""
        fx = self.config.beam_effects
        if fx.ellipticity == 0:
            return None
        return EllipticalDistortion(1.0 + fx.ellipticity, fx.ellipticity_angle_deg)

    def _predict(self) -> None:
        cfg, table = self.config, self.sf.table
        hkl = table[["h", "k", "l"]].to_numpy()
        xings = crossing_table(hkl, self.crystal.UB, self.scan, self.beam.wavelength,
                               self.beam.radiation, cfg.crystal, cfg.beam_effects)  # fmt: skip
        ref = xings["ref"].to_numpy()
        xings["d"] = table["d"].to_numpy()[ref]
        xings["F2"] = table["F2"].to_numpy()[ref]
        scale = reflection_scale(self.beam, self.sf, cfg.crystal)
        full = self.n_per_radian * scale * xings["F2"] * xings["polarisation"] * xings["lorentz"]
        xings["full_counts"] = full / cfg.crystal.thickness_a
        scales = self.frames["aperture_scale"].to_numpy()
        parts = frame_partials(xings, self.scan, cfg.crystal.thickness_a, cfg.crystal.profile,
                               xings["full_counts"].to_numpy(), scales)  # fmt: skip
        xings["recorded_fraction"] = np.bincount(
            parts["crossing"], weights=parts["fraction"], minlength=len(xings)
        )
        xings["recorded_counts"] = np.bincount(
            parts["crossing"], weights=parts["counts"], minlength=len(xings)
        )
        self.crossings = xings
        self.partials = self._locate(parts)

    def _locate(self, parts: pd.DataFrame) -> pd.DataFrame:
        """Add reflection columns and detector positions (per frame: shift) to partials."""
        x = self.crossings
        idx = parts["crossing"].to_numpy()
        for name in ("h", "k", "l", "phi0_deg", "d", "F2", "full_counts", "lorentz"):
            parts[name] = x[name].to_numpy()[idx]
        parts = parts.sort_values(["frame", "crossing"], kind="stable").reset_index(drop=True)
        q = x[["qx", "qy", "qz"]].to_numpy()[parts["crossing"].to_numpy()]
        dirs = q * self.beam.wavelength
        dirs[:, 2] += 1.0
        panel = np.full(len(parts), -1, dtype=np.int32)
        fs = np.full(len(parts), np.nan)
        ss = np.full(len(parts), np.nan)
        bounds = np.searchsorted(parts["frame"].to_numpy(), np.arange(self.scan.n_frames + 1))
        for j in range(self.scan.n_frames):
            lo, hi = bounds[j], bounds[j + 1]
            if hi > lo:
                p, f, s = project_rays(dirs[lo:hi], self.detector, self._shift(j), self.distortion)
                on = p >= 0
                f_raw, s_raw = self.detector.panel_to_raw(p[on], f[on], s[on])
                panel[lo:hi][on] = p[on]
                fs[lo:hi][on], ss[lo:hi][on] = f_raw, s_raw
        parts["panel"], parts["fs"], parts["ss"] = panel, fs, ss
        return parts

    def _shift(self, frame: int) -> np.ndarray:
        row = self.frames.iloc[frame]
        return np.array([float(row["shift_x_mm"]), float(row["shift_y_mm"])])

    def true_centres(self) -> np.ndarray:
        """Beam centre (fs, ss) of every frame, raw pixel-centre coordinates of panel 0."""
        return np.array(
            [centre_px(self.detector, self.beam, self._shift(j)) for j in range(len(self.frames))]
        )

    def crystal_at(self, phi_deg: float) -> Crystal:
        """The crystal turned to goniometer angle ``phi_deg``."""
        return self.crystal.with_orientation(
            rotation_matrix(self.scan.axis, phi_deg) @ self.crystal.U
        )

    # ------------------------------------------------------------------ frames

    def spots(self, frame: int) -> pd.DataFrame:
        """Partial reflections recorded on ``frame`` (all, including off-detector ones)."""
        lo, hi = np.searchsorted(self.partials["frame"].to_numpy(), [frame, frame + 1])
        return self.partials.iloc[lo:hi]

    def inelastic_counts(self, frame: int) -> float:
        """Inelastically scattered electrons in a diffraction frame (0 when off)."""
        fx = self.config.beam_effects
        if not fx.inelastic:
            return 0.0
        n_x = float(self.frames["n_on_crystal"].iat[frame])
        return n_x * (1.0 - math.exp(-self.config.crystal.thickness_a / fx.inelastic_mfp_a))

    def frame(self, frame: int, *, expected_only: bool = False) -> np.ndarray:
        """Render ``frame`` (its random stream depends only on the seed and the index)."""
        rng = np.random.default_rng([self.config.seed, 2, frame])
        if bool(self.frames["defocused"].iat[frame]):
            return self._defocused_frame(frame, rng, expected_only)
        spots = self.spots(frame)
        bragg = float(spots["counts"].sum())
        inelastic = self.inelastic_counts(frame)
        zero = 0.0
        if self.config.beam_effects.zero_order:
            zero = max(self.n_incident - bragg - inelastic, 0.0)
        on = spots[spots["panel"] >= 0][["panel", "fs", "ss", "counts"]]
        return render_frame(
            on, self.detector, self.config.beam_effects, self.config.detector_effects,
            self.state, shift_mm=tuple(self._shift(frame)), zero_order_counts=zero,
            inelastic_counts=inelastic, distortion=self.distortion, rng=rng,
            expected_only=expected_only,
        )  # fmt: skip

    def _defocused_frame(
        self, frame: int, rng: np.random.Generator, expected_only: bool
    ) -> np.ndarray:
        image = self.defocused_image(frame)
        det_fx = self.config.detector_effects
        if det_fx.gaps:
            image[~layout(self.detector).in_panel] = 0.0
        if expected_only:
            return image.astype(np.float32)
        return apply_response(image, det_fx, self.state, rng)

    def defocused_image(self, frame: int) -> np.ndarray:
        """Expected counts of the defocused image of ``frame`` (raw frame shape, float64).

        See the module docstring; the crystal's position is taken at the middle of the
        frame's exposure.
        """
        shape = self.detector.raw_shape
        r_sel = selected_radius_a(self.config)
        px_per_a = DEFOCUS_FILL * min(shape) / (2.0 * r_sel)
        row = self.frames.iloc[frame]
        mid = 0.5 * (float(row["phi_start_deg"]) + float(row["phi_end_deg"]))
        pos = crystal_position_a(self.config.crystal_offset_a, self.scan.axis, mid)
        centre = np.array(centre_px(self.detector, self.beam, self._shift(frame)))
        to_px = self._lab_to_pixel_matrix()  # (fs, ss) pixel offset per A of (x, y)
        c_px = centre + to_px @ pos[:2] * px_per_a
        r_c = 0.5 * self.config.crystal.lateral_size_a
        coverage = _disc_coverage(shape, c_px, centre, r_c * px_per_a, r_sel * px_per_a)
        dose = self.config.beam_effects.dose_e_per_a2
        image = coverage * dose / px_per_a**2
        return np.asarray(gaussian_filter(image, DEFOCUS_BLUR_PX, mode="constant"), dtype=float)

    def _lab_to_pixel_matrix(self) -> np.ndarray:
        """2x2 map of lab (x, y) directions to panel-0 (fs, ss) directions (unit scale)."""
        o = self.detector.pixel_to_lab(0, 0.0, 0.0)
        a = self.detector.pixel_to_lab(0, 1.0, 0.0) - o
        b = self.detector.pixel_to_lab(0, 0.0, 1.0) - o
        m = np.column_stack([a[:2], b[:2]])  # (x, y) per unit (fs, ss)
        inv = np.linalg.inv(m)
        return np.asarray(inv / np.sqrt(abs(np.linalg.det(inv))), dtype=float)


def _disc_coverage(
    shape: tuple[int, ...], centre: np.ndarray, sel_centre: np.ndarray, r_c: float, r_s: float
) -> np.ndarray:
    """Fraction of each pixel inside both discs (radii in pixels), by supersampling."""
    out = np.zeros(shape, dtype=float)
    size = np.array([shape[-1], shape[-2]])  # (n_fs, n_ss)
    lo = np.maximum(np.floor(centre - r_c).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(centre + r_c).astype(int) + 1, size - 1)
    if np.any(hi < lo):
        return out
    n = _SUPERSAMPLE
    sub = (np.arange(n) + 0.5) / n - 0.5
    fs = (np.arange(lo[0], hi[0] + 1)[:, None] + sub[None, :]).ravel()
    ss = (np.arange(lo[1], hi[1] + 1)[:, None] + sub[None, :]).ravel()
    inside = ((fs[None, :] - centre[0]) ** 2 + (ss[:, None] - centre[1]) ** 2 <= r_c**2) & (
        (fs[None, :] - sel_centre[0]) ** 2 + (ss[:, None] - sel_centre[1]) ** 2 <= r_s**2
    )
    box = inside.reshape(hi[1] - lo[1] + 1, n, hi[0] - lo[0] + 1, n).mean(axis=(1, 3))
    out[lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = box
    return out
