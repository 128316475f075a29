"""Integrate one frame: predict the spots of every crystal, sum them, estimate partiality.

:func:`integrate_frame` is the per-frame step of still integration.  For every crystal
of the frame (a row of the crystals table written by ``crystalscope serial index``) it
predicts the reflections within ``prediction_factor * R`` of the Ewald sphere
(:func:`~crystalscope.integrate.predict.predict_spots`, with the crystal's ``UB``,
profile radius ``R`` and the frame's refined detector shift), integrates all predicted
spots of all crystals together (:mod:`crystalscope.integrate.summation`: the peak disks
of every crystal are kept out of every annulus, shared peak pixels set
``FLAG_OVERLAP``) and adds the partiality estimate
``p(s, R)`` of :func:`crystalscope.integrate.partiality.partiality`.  The result is an
observation table (:data:`~crystalscope.integrate.observations.OBSERVATION_COLUMNS`).

A frame without crystals, or without a single finite pixel, gives an empty table.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import gemmi
import numba
import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.integrate.observations import (
    FLAG_NEAR_BEAM,
    empty_observations,
    make_observations,
)
from crystalscope.integrate.partiality import partiality
from crystalscope.integrate.predict import PREDICTION_COLUMNS, predict_arrays
from crystalscope.integrate.summation import IntegrationParams, integrate_arrays
from crystalscope.model.crystal import resolve_space_group
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.model.projection import project_rays

__all__ = ["CRYSTAL_COLUMNS", "crystal_ub", "integrate_frame"]

#: Columns :func:`integrate_frame` needs in the crystals table.
CRYSTAL_COLUMNS: tuple[str, ...] = (
    "frame",
    "crystal",
    *(f"{v}star_{x}" for v in "abc" for x in "xyz"),
    "profile_radius",
)
_SHIFT_COLUMNS = ("det_shift_x_mm", "det_shift_y_mm")
_CACHE_SIZE = 4
_maps: OrderedDict[tuple[int, tuple[int, ...]], tuple[Detector, np.ndarray]] = OrderedDict()
_lock = threading.Lock()


@numba.njit(cache=True, nogil=True)
def _any_finite(frame: np.ndarray) -> bool:
    """Whether ``frame`` has a finite pixel (stops at the first)."""
    flat = frame.ravel()
    for i in range(flat.size):
        if math.isfinite(flat[i]):
            return True
    return False


def _panel_map(detector: Detector, shape: tuple[int, ...]) -> np.ndarray:
    """``detector.panel_map(shape=shape)`` as int64, cached (detectors are immutable)."""
    key = (id(detector), shape)
    with _lock:
        hit = _maps.get(key)
        if hit is not None and hit[0] is detector:
            _maps.move_to_end(key)
            return hit[1]
    pmap = np.ascontiguousarray(detector.panel_map(shape=shape), dtype=np.int64)
    pmap.flags.writeable = False
    with _lock:
        _maps[key] = (detector, pmap)
        while len(_maps) > _CACHE_SIZE:
            _maps.popitem(last=False)
    return pmap


def crystal_ub(row: pd.Series) -> np.ndarray:
    """``UB`` (columns ``a*, b*, c*``, 1/A) of one crystals-table row."""
    star = [float(row[f"{v}star_{x}"]) for v in "abc" for x in "xyz"]
    return np.array(star).reshape(3, 3).T


def _check_crystals(crystals: pd.DataFrame) -> None:
    if not isinstance(crystals, pd.DataFrame):
        raise DataError(
            "crystals must be a DataFrame (rows of the crystals table)", field="crystals"
        )
    missing = [c for c in CRYSTAL_COLUMNS if c not in crystals.columns]
    if missing:
        raise DataError(f"crystals table has no column {missing[0]!r}", field=missing[0])
    has_id = "crystal_id" in crystals.columns
    ids = crystals["crystal_id"] if has_id else pd.Series(crystals.index)
    for name, values in (("frame", crystals["frame"]), ("crystal", crystals["crystal"]),
                         ("crystal_id", ids)):  # fmt: skip
        number = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        if not np.all(np.isfinite(number) & (number == np.round(number))):
            where = f"column {name!r}" if name != "crystal_id" or has_id else "row index"
            raise DataError(f"crystals table {where} must hold integers", field=name)


def _beam_distance(
    pred: dict[str, np.ndarray],
    detector: Detector,
    shift: tuple[float, float],
    distortion: EllipticalDistortion | None,
) -> np.ndarray:
    """Raw-array distance (px) of each predicted spot from the direct beam (inf where the
    beam misses the panels).  Raw-array distances are physical on the single- and
    coplanar multi-module cameras of electron diffraction."""
    panel, fs, ss = project_rays(np.array([[0.0, 0.0, 1.0]]), detector, shift, distortion)
    if panel[0] < 0:
        return np.full(len(pred["h"]), np.inf)
    beam_fs, beam_ss = detector.panel_to_raw(int(panel[0]), float(fs[0]), float(ss[0]))
    return np.hypot(pred["fs"] - beam_fs, pred["ss"] - beam_ss)


def _predict_all(
    crystals: pd.DataFrame,
    wavelength: float,
    detector: Detector,
    params: IntegrationParams,
    d_min: float,
    d_max: float,
    distortion: EllipticalDistortion | None,
    space_group: gemmi.SpaceGroup | None,
) -> dict[str, np.ndarray]:
    """Predictions of every crystal, concatenated, with per-row crystal columns."""
    has_shift = all(c in crystals.columns for c in _SHIFT_COLUMNS)
    has_id = "crystal_id" in crystals.columns
    ids = crystals["crystal_id"].to_numpy() if has_id else crystals.index.to_numpy()
    parts: list[dict[str, np.ndarray]] = []
    for n, (_, row) in enumerate(crystals.iterrows()):
        shift = (0.0, 0.0)
        if has_shift:
            shift = (float(row[_SHIFT_COLUMNS[0]]), float(row[_SHIFT_COLUMNS[1]]))
        pred = predict_arrays(
            crystal_ub(row), wavelength, detector, profile_radius=float(row["profile_radius"]),
            d_min=d_min, d_max=d_max, shift_mm=shift, distortion=distortion,
            prediction_factor=params.prediction_factor, space_group=space_group,
        )  # fmt: skip
        m = len(pred["h"])
        pred["beam_distance"] = _beam_distance(pred, detector, shift, distortion)
        pred["frame"] = np.full(m, row["frame"], dtype=np.int64)
        pred["crystal"] = np.full(m, row["crystal"], dtype=np.int64)
        pred["crystal_id"] = np.full(m, ids[n], dtype=np.int64)
        pred["profile_radius"] = np.full(m, float(row["profile_radius"]))
        parts.append(pred)
    keys = [*PREDICTION_COLUMNS, "frame", "crystal", "crystal_id", "profile_radius"]
    keys.append("beam_distance")
    return {c: np.concatenate([p[c] for p in parts]) for c in keys}


def integrate_frame(
    frame: np.ndarray,
    crystals: pd.DataFrame,
    wavelength: float,
    detector: Detector,
    params: IntegrationParams,
    *,
    d_min: float,
    d_max: float = np.inf,
    mask: np.ndarray | None = None,
    distortion: EllipticalDistortion | None = None,
    space_group: gemmi.SpaceGroup | str | None = None,
) -> pd.DataFrame:
    """Predict and integrate the reflections of every crystal in one frame.

    Parameters
    ----------
    frame : numpy.ndarray
        The raw frame (ADU), of the detector's ``raw_shape``.
    crystals : pandas.DataFrame
        This frame's rows of the crystals table: ``frame, crystal``, ``astar_x ...
        cstar_z`` (UB columns, 1/A), ``profile_radius`` (1/A), optionally
        ``det_shift_x_mm, det_shift_y_mm`` (the frame's lateral detector shift, mm;
        default 0) and ``crystal_id`` (default: the row index).
    wavelength : float
        A.
    detector : Detector
        Geometry with a resolved camera length.
    params : IntegrationParams
        Integration radii, background model, partiality model, prediction factor, ...
    d_min, d_max : float
        Resolution range of the prediction, A.
    mask : numpy.ndarray of bool, optional
        True for bad pixels (e.g. ``detector.bad_pixel_mask(frame.shape)``); non-finite
        pixels are always treated as bad.
    distortion : EllipticalDistortion, optional
        Elliptical distortion of the patterns about the beam centre (default:
        ``detector.distortion``; the same one in both places is applied once).
    space_group : gemmi.SpaceGroup or str, optional
        Lattice-centring absences of this group are not predicted.

    Returns
    -------
    pandas.DataFrame
        Observation table, all :data:`OBSERVATION_COLUMNS`, crystals in table order and
        reflections sorted by ``h, k, l`` within a crystal; empty (typed) for a frame
        without crystals or without a finite pixel.

    Raises
    ------
    DataError
        Wrong frame shape or type, missing crystals-table columns, invalid crystal
        parameters (UB, profile radius, shift), or a mask of the wrong shape.
    """
    _check_crystals(crystals)
    data = np.asarray(frame)
    if data.ndim != 2 or data.shape != tuple(detector.raw_shape):
        raise DataError(
            f"frame has shape {data.shape}, the detector's raw frame {detector.raw_shape}",
            field="frame",
        )
    if data.dtype.kind not in "fiub":
        raise DataError(f"frame must be numeric, got dtype {data.dtype}", field="frame")
    if len(crystals) == 0 or not _any_finite(np.ascontiguousarray(data)):
        return empty_observations()
    sg = resolve_space_group(space_group) if space_group is not None else None
    pred = _predict_all(crystals, float(wavelength), detector, params, d_min, d_max, distortion, sg)
    if len(pred["h"]) == 0:
        return empty_observations()
    pmap = _panel_map(detector, data.shape)
    spots = integrate_arrays(data, pred["fs"], pred["ss"], params, mask=mask, panel_map=pmap)
    part = partiality(pred["excitation_error"], pred["profile_radius"], params.partiality)
    near = pred.pop("beam_distance") < params.min_beam_distance_px
    spots["flags"] = spots["flags"] | np.where(near, FLAG_NEAR_BEAM, 0).astype(spots["flags"].dtype)
    return make_observations({**pred, **spots, "partiality": part})
