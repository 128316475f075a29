"""Diffraction of one crystal over an arbitrary rotation window.

:class:`~crystalscope.simulate.rotation_sim.RotationSimulation` fixes the frame angles of
a whole series in advance.  A live (simulated) microscope instead exposes whenever the
camera is asked, while the goniometer turns at whatever speed it was given, so the
angle range of an exposure, ``[phi_a, phi_b]``, is known only when it happens.
:class:`WindowCrossings` keeps what does not depend on the exposure (every Ewald
crossing of the crystal over an angle range, from
:func:`~crystalscope.simulate.rotation.crossing_table`) and returns the partial counts of
any window with :func:`~crystalscope.simulate.rotation.frame_partials`: the same
kinematic structure factors, Lorentz factors and rocking curves as the rotation
simulator, so a series of windows reproduces a series from
:class:`~crystalscope.simulate.rotation_sim.RotationSimulation`.

Counts.  ``n_e`` electrons reach the crystal during the window, spread evenly over its
angle range (``n_rad = n_e / |phi_b - phi_a|`` per radian); a crossing collects
``n_rad c |F|^2 P L / t`` times the fraction of its rocking curve inside the window
(:mod:`~crystalscope.simulate.rotation`).  A window narrower than
:data:`MIN_WINDOW_DEG` (a stationary crystal) is widened symmetrically to it, which
turns the rocking-curve integral into the still-crystal intensity ``n_e c |F|^2 P p(s)``
of :mod:`~crystalscope.simulate.kinematics` (to first order in the width).

Spots land where the diffracted ray ``lambda q(phi0) + z`` of the crossing meets the
detector (:func:`~crystalscope.model.projection.project_rays`), as in the rotation
simulator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from crystalscope.errors import DataError
from crystalscope.model.beam import Beam
from crystalscope.model.crystal import Crystal
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.projection import project_rays
from crystalscope.simulate.config import BeamEffects, CrystalConfig
from crystalscope.simulate.kinematics import reflection_scale
from crystalscope.simulate.rotation import RotationScan, crossing_table, frame_partials, unit_axis
from crystalscope.simulate.structure_factors import StructureFactors

__all__ = ["MIN_WINDOW_DEG", "WindowCrossings", "locate_spots"]

#: Narrowest window (degrees); stationary exposures are widened to it.
MIN_WINDOW_DEG = 1e-3


@dataclass(frozen=True)
class WindowCrossings:
    """Ewald crossings of one crystal over ``[lo_deg, hi_deg]``, ready for any window.

    Attributes
    ----------
    axis : numpy.ndarray, shape (3,)
        Unit rotation axis, lab frame.
    lo_deg, hi_deg : float
        Angle range the table covers.
    wavelength : float
        Wavelength, A.
    crystal_cfg : CrystalConfig
        Thickness and profile of the crystal.
    crossings : pandas.DataFrame
        :func:`~crystalscope.simulate.rotation.crossing_table` plus ``d``, ``F2`` and
        ``unit_counts`` (``c |F|^2 P L / t``: counts of the whole rocking curve per
        electron per radian).
    """

    axis: np.ndarray
    lo_deg: float
    hi_deg: float
    wavelength: float
    crystal_cfg: CrystalConfig
    crossings: pd.DataFrame

    @classmethod
    def build(
        cls,
        sf: StructureFactors,
        U: ArrayLike,
        axis: ArrayLike,
        beam: Beam,
        crystal_cfg: CrystalConfig,
        beam_fx: BeamEffects,
        range_deg: tuple[float, float] = (-180.0, 180.0),
    ) -> WindowCrossings:
        """Crossings of the crystal with orientation ``U`` at ``phi = 0``.

        Parameters
        ----------
        sf : StructureFactors
            Structure factors (P1 table) and cell.
        U : array_like, shape (3, 3)
            Orientation at ``phi = 0`` (crystal Cartesian to lab).
        axis : array_like, shape (3,)
            Rotation axis in the lab frame (right-handed).
        beam : Beam
            Wavelength and radiation.
        crystal_cfg : CrystalConfig
            Thickness, profile and mosaicity.
        beam_fx : BeamEffects
            Divergence (the only beam effect the crossings depend on).
        range_deg : (lo, hi)
            Angles the windows will lie in.
        """
        lo, hi = (float(v) for v in range_deg)
        if not hi > lo:
            raise DataError(
                f"angle range must be (lo, hi) with lo < hi, got {range_deg}", field="range_deg"
            )
        e = unit_axis(axis)
        crystal = Crystal(sf.cell, sf.space_group, U)
        scan = RotationScan(e, np.array([lo]), np.array([hi]), np.array([False]))
        hkl = sf.table[["h", "k", "l"]].to_numpy()
        x = crossing_table(
            hkl, crystal.UB, scan, beam.wavelength, beam.radiation, crystal_cfg, beam_fx
        )
        ref = x["ref"].to_numpy()
        x["d"] = sf.table["d"].to_numpy()[ref]
        x["F2"] = sf.table["F2"].to_numpy()[ref]
        scale = reflection_scale(beam, sf, crystal_cfg)
        x["unit_counts"] = (
            scale * x["F2"] * x["polarisation"] * x["lorentz"] / crystal_cfg.thickness_a
        )
        return cls(e, lo, hi, beam.wavelength, crystal_cfg, x)

    def partials(self, phi_a_deg: float, phi_b_deg: float, n_electrons: float) -> pd.DataFrame:
        """Counts of every crossing recorded while the crystal turns from ``phi_a`` to ``phi_b``.

        Parameters
        ----------
        phi_a_deg, phi_b_deg : float
            Angles at the start and end of the exposure (either order), degrees.
        n_electrons : float
            Electrons reaching the crystal during the exposure.

        Returns
        -------
        pandas.DataFrame
            One row per crossing with counts > 0: ``crossing`` (row of
            :attr:`crossings`), ``h, k, l, phi0_deg, d, qx, qy, qz`` (1/A, at the
            crossing), ``fraction`` (of the whole rocking curve) and ``counts``.

        Raises
        ------
        DataError
            If the window leaves the range of the table or ``n_electrons`` < 0.
        """
        a, b = sorted((float(phi_a_deg), float(phi_b_deg)))
        if b - a < MIN_WINDOW_DEG:
            mid = 0.5 * (a + b)
            a, b = mid - 0.5 * MIN_WINDOW_DEG, mid + 0.5 * MIN_WINDOW_DEG
        if a < self.lo_deg or b > self.hi_deg:
            raise DataError(
                f"window {a:.3f}..{b:.3f} deg outside the table's {self.lo_deg}..{self.hi_deg}",
                field="phi_deg",
            )
        if not (math.isfinite(n_electrons) and n_electrons >= 0):
            raise DataError(f"electrons must be >= 0, got {n_electrons}", field="n_electrons")
        scan = RotationScan(self.axis, np.array([a]), np.array([b]), np.array([False]))
        n_rad = n_electrons / math.radians(b - a)
        x = self.crossings
        full = n_rad * x["unit_counts"].to_numpy()
        cfg = self.crystal_cfg
        parts = frame_partials(x, scan, cfg.thickness_a, cfg.profile, full, np.ones(1))
        idx = parts["crossing"].to_numpy()
        for name in ("h", "k", "l", "phi0_deg", "d", "qx", "qy", "qz"):
            parts[name] = x[name].to_numpy()[idx]
        return parts.drop(columns="frame")


def locate_spots(
    partials: pd.DataFrame,
    detector: Detector,
    wavelength: float,
    shift_mm: ArrayLike = (0.0, 0.0),
    distortion: EllipticalDistortion | None = None,
) -> pd.DataFrame:
    """Add ``panel`` (-1: off the detector) and raw ``fs, ss`` to a partials table.

    The diffracted ray of each crossing, ``lambda q + z``, is cast onto the detector with
    the frame's lateral ``shift_mm`` and elliptical ``distortion``.
    """
    out = partials.copy()
    q = out[["qx", "qy", "qz"]].to_numpy(dtype=float)
    dirs = q * float(wavelength)
    dirs[:, 2] += 1.0
    panel = np.full(len(out), -1, dtype=np.int32)
    fs = np.full(len(out), np.nan)
    ss = np.full(len(out), np.nan)
    if len(out):
        p, f, s = project_rays(dirs, detector, shift_mm, distortion)
        on = p >= 0
        if np.any(on):
            f_raw, s_raw = detector.panel_to_raw(p[on], f[on], s[on])
            panel[on], fs[on], ss[on] = p[on], f_raw, s_raw
    out["panel"], out["fs"], out["ss"] = panel, fs, ss
    return out
