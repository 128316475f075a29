"""Detector-plane coordinates of raw-frame pixels, and per-frame radius maps.

Per-frame kernels (:mod:`crystalscope.image`) work on the raw frame array
``frame[ss, fs]`` and see the detector geometry only through two coordinate maps ``x``
and ``y``: the position of every pixel centre in the detector plane, in pixels of panel
0 along panel 0's fast-scan and slow-scan directions, with the origin at panel 0's first
pixel centre (NaN for raw pixels that belong to no panel).  For a single-panel detector,
or for modules laid out in the raw array as they sit on the detector (LAMBDA, the
Timepix quad), ``x`` is the ``fs`` index and ``y`` the ``ss`` index.  Pattern centres
``(cx, cy)`` are given in the same units, which for panel 0 are its pixel-centre
``(fs, ss)`` coordinates (extended beyond the panel).

Multi-panel detectors whose panels are tilted out of the plane are flattened by
projecting each pixel's lab position onto panel 0's plane along the lab ``z`` axis
(exact for coplanar panels, which is every electron detector; the error for a tilted
panel at 2-theta below 5 degrees is negligible for centre finding and radial statistics).
"""

from __future__ import annotations

import numba
import numpy as np

from crystalscope.errors import DataError
from crystalscope.model.detector import Detector

__all__ = [
    "beam_in_plane",
    "lateral_detector",
    "panel_jacobians",
    "plane_coordinates",
    "plane_to_lab_shift",
    "radius_map",
]


def lateral_detector(detector: Detector) -> Detector:
    """``detector`` with values still to be read from files set to placeholders.

    Lateral (x, y) positions of pixels do not depend on the camera length or the
    wavelength, which a geometry may read per file; this makes the geometry usable for
    detector-plane coordinates before any file is read (per-file detector shifts are
    taken as 0: per-frame centres are found from the data anyway).  Never use it for q
    or 2-theta.
    """
    refs = detector.metadata_refs()
    if not refs:
        return detector
    values = {
        ref.path: 0.0 if field.startswith("detector_shift") else 1000.0
        for field, ref in refs.items()
    }
    return detector.resolve(values)


def _panel0_axes(detector: Detector) -> tuple[np.ndarray, np.ndarray]:
    """Panel 0's (fs, ss) lab x-y axes in mm per pixel (2x2 columns), its first pixel's x-y."""
    p = detector.panels[0]
    fs = np.asarray(p.fs, dtype=float)[:2]
    ss = np.asarray(p.ss, dtype=float)[:2]
    basis = np.column_stack([fs, ss]) * p.pixel_size_mm
    if abs(np.linalg.det(basis)) < 1e-12:
        raise DataError(
            f"panel {p.name} lies edge-on to the beam; detector-plane coordinates are undefined",
            field=f"{p.name}/fs",
        )
    origin = np.asarray(lateral_detector(detector).pixel_to_lab(0, 0.0, 0.0), dtype=float)[:2]
    return basis, origin


def plane_coordinates(
    detector: Detector, shape: tuple[int, ...] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Maps ``x``, ``y`` (float32, raw-frame shape) of pixel centres in panel-0 pixels.

    Parameters
    ----------
    detector : Detector
        The geometry.
    shape : tuple of int, optional
        Raw frame shape (default the geometry's :attr:`Detector.raw_shape`).

    Returns
    -------
    x, y : ndarray of float32
        Positions along panel 0's fast-scan and slow-scan axes, pixel-centre origin at
        panel 0's first pixel; NaN where a raw pixel belongs to no panel.
    """
    detector = lateral_detector(detector)
    lab = detector.lab_map(shape=shape)
    basis, origin = _panel0_axes(detector)
    rel = lab[..., :2] - origin
    uv = np.linalg.solve(basis, rel.reshape(-1, 2).T).T.reshape(rel.shape)
    return uv[..., 0].astype(np.float32), uv[..., 1].astype(np.float32)


def plane_to_lab_shift(detector: Detector, cx: float, cy: float) -> tuple[float, float]:
    """Lateral detector shift ``(dx, dy)`` in mm that puts the beam at plane point ``(cx, cy)``.

    The geometry puts the direct beam at the lab origin; a pattern centred on ``(cx, cy)``
    instead corresponds to the detector translated by ``-(lab position of (cx, cy))``,
    which is the per-shot shift that :meth:`Detector.pixel_to_lab` takes as ``shift_mm``.
    """
    basis, origin = _panel0_axes(detector)
    lab = origin + basis @ np.array([cx, cy], dtype=float)
    return float(-lab[0]), float(-lab[1])


def beam_in_plane(detector: Detector) -> tuple[float, float]:
    """Where the geometry puts the direct beam (lab x = y = 0), in plane coordinates."""
    basis, origin = _panel0_axes(detector)
    uv = np.linalg.solve(basis, -origin)
    return float(uv[0]), float(uv[1])


def panel_jacobians(detector: Detector) -> np.ndarray:
    """``d(x, y)/d(fs, ss)`` of every panel, shape ``(n_panels, 2, 2)``."""
    basis, _ = _panel0_axes(detector)
    inv = np.linalg.inv(basis)
    jac = [inv @ (np.column_stack([p.fs[:2], p.ss[:2]]) * p.pixel_size_mm) for p in detector.panels]
    return np.asarray(jac, dtype=float)


@numba.njit(cache=True, nogil=True)
def _radius(x: np.ndarray, y: np.ndarray, cx: float, cy: float, out: np.ndarray) -> None:
    xf = x.ravel()
    yf = y.ravel()
    of = out.ravel()
    for i in range(xf.size):
        dx = xf[i] - cx
        dy = yf[i] - cy
        of[i] = np.sqrt(dx * dx + dy * dy)


def radius_map(x: np.ndarray, y: np.ndarray, centre: tuple[float, float]) -> np.ndarray:
    """Distance of each pixel from ``centre`` in pixels: ``hypot(x - cx, y - cy)`` (float32).

    NaN where ``x``/``y`` are NaN (gaps).
    """
    if x.shape != y.shape:
        raise DataError(f"x and y maps differ in shape: {x.shape} and {y.shape}", field="x")
    xs = np.ascontiguousarray(x, dtype=np.float32)
    ys = np.ascontiguousarray(y, dtype=np.float32)
    out = np.empty(xs.shape, dtype=np.float32)
    _radius(xs, ys, float(centre[0]), float(centre[1]), out)
    return out
