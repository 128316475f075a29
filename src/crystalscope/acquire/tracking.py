"""Crystal tracking from defocused diffraction patterns (seed 001, section 5.1).

With the diffraction focus away from its focused value, the direct beam becomes a
shadow image of the selected area: a bright disc (the aperture, or the beam when it is
smaller) in which the crystal shows as a darker blob, because the electrons it scatters
leave the disc.  Instamatic records such an image every n-th frame and leaves the
re-centring to the operator; here the image is measured and the beam (or the stage)
is moved so that the crystal stays in the selected area while the goniometer turns.

Measurement (:func:`locate_crystal`)
------------------------------------
1. The image is smoothed (Gaussian, ``sigma_px``) and the disc is the largest connected
   region above half the bright level (the 95th percentile), holes filled; its centre
   ``c`` and radius ``R = sqrt(area / pi)`` (pixels).
2. Inside the disc shrunk by ``edge_px`` (the blurred rim is left out), the deficit
   ``level - image`` (``level``: the median of the disc) above ``min_contrast * level``
   and above four times the noise of the smoothed disc (the pixel noise, from the
   median absolute deviation of image minus smoothed image, over ``sqrt(4 pi sigma^2)``,
   the number of pixels a Gaussian of ``sigma_px`` averages) is the crystal: the
   connected region of largest summed deficit, at least ``min_blob_px`` pixels; its
   deficit-weighted centroid ``p`` is the crystal's position.
3. The offset of the crystal from the centre of the selected area in the specimen is
   ``(p - c) / R * r_sel`` (``r_sel``: the selected area's radius, nm).  Using the disc
   as the ruler makes the measurement independent of the magnification of the shadow
   image, which changes while the intermediate lens settles after the focus change.

Correction (:class:`Tracker`)
-----------------------------
The crystal's position in the specimen plane is ``X_k = s_k + d_k`` (``s_k``: the beam
shift when image ``k`` was taken, ``d_k``: the measured offset, both nm, lab x and y).
A crystal off the rotation axis moves smoothly (``r sin(phi)``), so the tracker
extrapolates linearly from the last two measurements to the middle of the coming
interval, ``X_k + v_k * lead_s`` with ``v_k = (X_k - X_{k-1}) / (t_k - t_{k-1})``,
and sets the beam shift there (or moves the stage by the opposite amount).  The
correction per step is limited to ``max_step_nm`` so that a bad measurement cannot throw
the beam off the crystal; failed measurements leave the beam where it is.

Lab ``x`` runs along the image's fast-scan axis and lab ``y`` along its slow-scan axis
(the calibrated beam shift is in the specimen plane; see docs/acquire.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from crystalscope.errors import DataError

__all__ = ["CrystalPosition", "Tracker", "TrackingStep", "locate_crystal"]


@dataclass(frozen=True)
class CrystalPosition:
    """What :func:`locate_crystal` found in one defocused image.

    Attributes
    ----------
    ok : bool
        Both the disc and a crystal were found.
    disc_px : (float, float)
        Centre of the bright disc ``(fs, ss)``, pixel-centre coordinates.
    disc_radius_px : float
        Radius of a disc of the same area, pixels.
    crystal_px : (float, float)
        Deficit-weighted centroid of the crystal ``(fs, ss)`` (NaN when not found).
    offset_nm : (float, float)
        Crystal minus disc centre in the specimen plane (lab x, y), nm (NaN when not
        found).
    contrast : float
        Largest deficit over the disc's level (0..1).
    reason : str
        Why the measurement failed ("" when ``ok``).
    """

    ok: bool
    disc_px: tuple[float, float] = (math.nan, math.nan)
    disc_radius_px: float = math.nan
    crystal_px: tuple[float, float] = (math.nan, math.nan)
    offset_nm: tuple[float, float] = (math.nan, math.nan)
    contrast: float = 0.0
    reason: str = ""


def _disc(smooth: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Mask of the largest bright region (holes filled) and its bright level."""
    level = float(np.percentile(smooth, 95))
    if not level > 0:
        return None
    labels, n = ndimage.label(smooth > 0.5 * level)
    if n == 0:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    mask = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    return np.asarray(mask, dtype=bool), level


def locate_crystal(
    image: ArrayLike,
    selected_radius_nm: float,
    *,
    sigma_px: float = 2.0,
    edge_px: float = 3.0,
    min_contrast: float = 0.05,
    min_disc_px: float = 5.0,
    min_blob_px: int = 12,
) -> CrystalPosition:
    """Find the selected area and the crystal in a defocused pattern (module docstring).

    Parameters
    ----------
    image : 2-D array
        Defocused image (counts), ``(ss, fs)``.
    selected_radius_nm : float
        Radius of the selected area (aperture or beam) in the specimen plane, nm.
    sigma_px : float
        Smoothing before segmentation, pixels.
    edge_px : float
        Rim of the disc left out of the crystal search, pixels.
    min_contrast : float
        Smallest deficit (fraction of the disc's level) that counts as crystal.
    min_disc_px : float
        Smallest disc radius accepted, pixels.
    min_blob_px : int
        Smallest crystal accepted, pixels.

    Raises
    ------
    DataError
        For an image that is not 2-D or not finite, or a non-positive radius.
    """
    data = np.asarray(image, dtype=float)
    if data.ndim != 2:
        raise DataError(f"a defocused image must be 2-D, got shape {data.shape}", field="image")
    if not np.all(np.isfinite(data)):
        raise DataError("the defocused image has non-finite pixels", field="image")
    if not selected_radius_nm > 0:
        raise DataError("must be positive", field="selected_radius_nm")
    smooth = ndimage.gaussian_filter(data, sigma_px)
    found = _disc(smooth)
    if found is None:
        return CrystalPosition(False, reason="no illuminated disc in the image")
    mask, _ = found
    ss, fs = np.nonzero(mask)
    radius = math.sqrt(mask.sum() / math.pi)
    centre = (float(fs.mean()), float(ss.mean()))
    if radius < min_disc_px:
        return CrystalPosition(False, centre, radius, reason="illuminated disc too small")
    inner = ndimage.binary_erosion(mask, iterations=max(1, round(edge_px)))
    inside = smooth[inner] if inner.any() else np.zeros(1)
    level = float(np.median(inside))
    residual = (data - smooth)[inner] if inner.any() else np.zeros(1)
    noise = 1.4826 * float(np.median(np.abs(residual))) / (2.0 * math.sqrt(math.pi) * sigma_px)
    deficit = np.where(inner, level - smooth, 0.0)
    contrast = float(deficit.max() / level) if level > 0 else 0.0
    labels, n = ndimage.label(deficit > max(min_contrast * level, 4.0 * noise))
    if level > 0 and n > 0:
        weight = np.bincount(labels.ravel(), weights=deficit.ravel())[1:]
        area = np.bincount(labels.ravel())[1:]
        weight[area < min_blob_px] = 0.0
    if level <= 0 or n == 0 or not weight.max() > 0:
        return CrystalPosition(False, centre, radius, contrast=contrast,
                               reason="no crystal in the illuminated disc")  # fmt: skip
    keep = labels == 1 + int(np.argmax(weight))
    w = deficit * keep
    bs, bf = np.nonzero(keep)
    crystal = (
        float(np.sum(w[bs, bf] * bf) / np.sum(w[bs, bf])),
        float(np.sum(w[bs, bf] * bs) / np.sum(w[bs, bf])),
    )
    scale = selected_radius_nm / radius
    offset = ((crystal[0] - centre[0]) * scale, (crystal[1] - centre[1]) * scale)
    return CrystalPosition(True, centre, radius, crystal, offset, contrast)


@dataclass(frozen=True)
class TrackingStep:
    """One measurement and the correction made from it (times in s, positions in nm)."""

    frame: int
    time_s: float
    alpha_deg: float
    position: CrystalPosition
    shift_before_nm: tuple[float, float]
    shift_after_nm: tuple[float, float]


@dataclass
class Tracker:
    """Keeps the crystal in the selected area (module docstring).

    Attributes
    ----------
    lead_s : float
        How far ahead of the measurement to aim (half the interval between defocused
        images, so the crystal is centred on average), seconds.
    max_step_nm : float
        Largest change of the beam shift per measurement, nm.
    predict : bool
        Extrapolate with the measured velocity (False: re-centre on the last position).
    steps : list of TrackingStep
        Every measurement, in order.
    """

    lead_s: float
    max_step_nm: float = 2000.0
    predict: bool = True
    steps: list[TrackingStep] = field(default_factory=list)

    def correction(
        self,
        frame: int,
        time_s: float,
        alpha_deg: float,
        position: CrystalPosition,
        shift_nm: tuple[float, float],
    ) -> tuple[float, float]:
        """The beam shift (nm) to set after ``position`` was measured at ``time_s`` with
        the beam shift ``shift_nm``; the step is recorded in :attr:`steps`."""
        before = (float(shift_nm[0]), float(shift_nm[1]))
        after = before
        if position.ok:
            here = np.add(before, position.offset_nm)
            target = here
            last = self._last_ok()
            if self.predict and last is not None and time_s > last.time_s:
                previous = np.add(last.shift_before_nm, last.position.offset_nm)
                velocity = (here - previous) / (time_s - last.time_s)
                target = here + velocity * self.lead_s
            step = target - np.asarray(before)
            norm = float(np.hypot(*step))
            if norm > self.max_step_nm:
                step *= self.max_step_nm / norm
            after = (before[0] + float(step[0]), before[1] + float(step[1]))
        self.steps.append(TrackingStep(frame, time_s, alpha_deg, position, before, after))
        return after

    def _last_ok(self) -> TrackingStep | None:
        for step in reversed(self.steps):
            if step.position.ok:
                return step
        return None
