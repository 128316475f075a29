"""Where rays from the sample land on the detector: fast ray casting onto all panels.

:func:`project_rays` maps scattered-ray directions to panel pixel positions with a
frame's lateral detector shift and elliptical distortion; spot prediction
(:mod:`crystalscope.integrate`) and the simulators (:mod:`crystalscope.simulate`) share
it.  The casting has the same semantics as
:meth:`crystalscope.model.detector.Detector.lab_to_pixel` (a ray ``t d``, ``t > 0``,
hits panel ``i`` where its corner-convention coordinates satisfy ``0 <= u < n_fs`` and
``0 <= v < n_ss``; where panels overlap the nearest wins, the first in file order on
ties), but evaluated for all panels at once as ``(rays, panels)`` arrays instead of one
panel at a time, which matters for detectors of many panels (a 64-panel CSPAD: ~30x
faster for a still's few hundred rays).

The panel planes come from the detector's public :meth:`pixel_to_lab`, so camera
length, ``coffset`` and the detector shift are the model's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import DataError
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion

__all__ = ["Planes", "cast", "check_shift_mm", "panel_planes", "plane_hit", "project_rays"]

_CACHE_SIZE = 8
_CHUNK_ELEMENTS = 1_000_000  # rays x panels evaluated at once


class Planes(NamedTuple):
    """Per-panel lab geometry in mm (rows follow ``Detector.panels``)."""

    origin: np.ndarray  # (P, 3) corner-convention (0, 0) of each panel, unshifted
    fs_vec: np.ndarray  # (P, 3) one pixel along fs
    ss_vec: np.ndarray  # (P, 3) one pixel along ss
    normal: np.ndarray  # (P, 3) fs_vec x ss_vec
    n_fs: np.ndarray  # (P,)
    n_ss: np.ndarray  # (P,)


_cache: OrderedDict[int, tuple[Detector, Planes]] = OrderedDict()
_lock = threading.Lock()


def panel_planes(detector: Detector) -> Planes:
    """The :class:`Planes` of ``detector`` without its elliptical distortion (cached;
    detectors are immutable)."""
    key = id(detector)
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is detector:
            _cache.move_to_end(key)
            return hit[1]
    plain = detector if detector.distortion is None else replace(detector, distortion=None)
    idx = np.arange(len(plain.panels))
    n_fs = np.array([p.n_fs for p in plain.panels], dtype=float)
    n_ss = np.array([p.n_ss for p in plain.panels], dtype=float)
    origin = plain.pixel_to_lab(idx, -0.5, -0.5)
    fs_vec = (plain.pixel_to_lab(idx, n_fs - 0.5, -0.5) - origin) / n_fs[:, None]
    ss_vec = (plain.pixel_to_lab(idx, -0.5, n_ss - 0.5) - origin) / n_ss[:, None]
    planes = Planes(origin, fs_vec, ss_vec, np.cross(fs_vec, ss_vec), n_fs, n_ss)
    with _lock:
        _cache[key] = (detector, planes)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return planes


def _coords(
    planes: Planes, sel: slice | np.ndarray, dirs: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``t, u, v`` (corner convention) of rays ``t dirs`` on the planes ``sel``: (N, P')."""
    origin = planes.origin[sel] + np.array([shift[0], shift[1], 0.0])
    a, b, n = planes.fs_vec[sel], planes.ss_vec[sel], planes.normal[sel]
    aa = np.einsum("pj,pj->p", a, a)
    ab = np.einsum("pj,pj->p", a, b)
    bb = np.einsum("pj,pj->p", b, b)
    det = aa * bb - ab * ab
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.einsum("pj,pj->p", origin, n) / (dirs @ n.T)
        xa = t * (dirs @ a.T) - np.einsum("pj,pj->p", origin, a)
        xb = t * (dirs @ b.T) - np.einsum("pj,pj->p", origin, b)
        u = (bb * xa - ab * xb) / det
        v = (aa * xb - ab * xa) / det
    return t, u, v


def plane_hit(
    planes: Planes, panel: int, dirs: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Panel-relative pixel-centre ``fs, ss`` where rays cross ``panel``'s (extended) plane.

    Returns ``fs, ss`` and whether each ray crosses the plane downstream (``t > 0``);
    ``fs, ss`` are NaN where it does not.
    """
    t, u, v = _coords(planes, slice(panel, panel + 1), dirs, shift)
    ok = (np.isfinite(t) & (t > 0))[:, 0]
    fs = np.where(ok, u[:, 0] - 0.5, np.nan)
    ss = np.where(ok, v[:, 0] - 0.5, np.nan)
    return fs, ss, ok


def cast(
    planes: Planes, dirs: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Panel (-1: none) and panel-relative pixel-centre ``fs, ss`` (NaN: none) of rays."""
    n = len(dirs)
    panel = np.full(n, -1, dtype=np.intp)
    fs = np.full(n, np.nan)
    ss = np.full(n, np.nan)
    step = max(1, _CHUNK_ELEMENTS // max(1, len(planes.n_fs)))
    for start in range(0, n, step):
        stop = min(n, start + step)
        t, u, v = _coords(planes, slice(None), dirs[start:stop], shift)
        hit = (t > 0) & (u >= 0) & (u < planes.n_fs) & (v >= 0) & (v < planes.n_ss)
        best = np.argmin(np.where(hit, t, np.inf), axis=1)
        rows = np.arange(stop - start)
        found = hit[rows, best]
        panel[start:stop] = np.where(found, best, -1)
        fs[start:stop] = np.where(found, u[rows, best] - 0.5, np.nan)
        ss[start:stop] = np.where(found, v[rows, best] - 0.5, np.nan)
    return panel, fs, ss


def check_shift_mm(shift_mm: ArrayLike) -> np.ndarray:
    try:
        shift = np.asarray(shift_mm, dtype=float)
    except (TypeError, ValueError):
        raise DataError(
            f"shift_mm must be two numbers, got {shift_mm!r}", field="shift_mm"
        ) from None
    if shift.shape != (2,) or not np.all(np.isfinite(shift)):
        raise DataError(
            f"shift_mm must be two finite numbers (mm), got {shift_mm!r}", field="shift_mm"
        )
    return shift


def project_rays(
    dirs: ArrayLike,
    detector: Detector,
    shift_mm: ArrayLike = (0.0, 0.0),
    distortion: EllipticalDistortion | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where rays from the sample land, with the frame's shift and distortion.

    Parameters
    ----------
    dirs : array_like, shape (N, 3)
        Ray directions in the lab frame (any length), e.g. ``lambda (q + k0)``.
    detector : Detector
        Geometry with a resolved camera length.
    shift_mm : (dx, dy)
        Lateral detector translation in mm.
    distortion : EllipticalDistortion, optional
        Applied in the plane of panel 0, in its pixel-centre ``(fs, ss)`` coordinates,
        about the point where the direct beam crosses that plane.  Default: the
        detector's own distortion (``Detector.distortion``); giving a different one
        than the detector carries is an error.

    Returns
    -------
    panel, fs, ss : numpy.ndarray
        Panel index (-1 where no panel is hit) and **panel-relative** pixel-centre
        positions (``Detector.panel_to_raw`` gives raw positions).
    """
    rays = np.asarray(dirs, dtype=float).reshape(-1, 3)
    own = detector.distortion
    if distortion is None:
        distortion = own
    elif own is not None and not np.allclose(
        own.distortion_matrix, distortion.distortion_matrix, rtol=0, atol=1e-12
    ):
        raise DataError(
            "the detector carries a different elliptical distortion than the one given",
            field="distortion",
        )
    return _project(rays, detector, check_shift_mm(shift_mm), distortion)


def _project(
    dirs: np.ndarray,
    detector: Detector,
    shift: np.ndarray,
    distortion: EllipticalDistortion | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`project_rays` without argument checks (``shift`` a float (2,) array)."""
    planes = panel_planes(detector)
    if distortion is None or distortion.ratio == 1.0:
        return cast(planes, dirs, shift)
    fs, ss, ok = plane_hit(planes, 0, dirs, shift)
    c_fs, c_ss, _ = plane_hit(planes, 0, np.array([[0.0, 0.0, 1.0]]), shift)
    fs_d, ss_d = distortion.apply(fs[ok], ss[ok], (float(c_fs[0]), float(c_ss[0])))
    panel = np.full(len(dirs), -1, dtype=np.intp)
    out_fs = np.full(len(dirs), np.nan)
    out_ss = np.full(len(dirs), np.nan)
    r = planes.origin[0] + (fs_d + 0.5)[:, None] * planes.fs_vec[0]
    r += (ss_d + 0.5)[:, None] * planes.ss_vec[0]
    r[:, :2] += shift
    panel[ok], out_fs[ok], out_ss[ok] = cast(planes, r, shift)
    return panel, out_fs, out_ss
