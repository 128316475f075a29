"""Bad-pixel masks of a raw frame from a detector's geometry, as CrystFEL builds them.

:func:`bad_pixel_mask` marks, in a raw-frame boolean array (True = ignore):

* every pixel that no panel covers (gaps in the raw data);
* whole panels with ``no_index``;
* pixels with non-finite values and those caught by ``flag_lessthan``,
  ``flag_morethan`` (strict) and ``flag_equal`` (``rint(value) == flag``), when the
  frame's ``data`` are given;
* ``mask_edge_pixels`` pixels along the panel edges;
* pixels marked by bad-pixel mask arrays (``maskN_data`` with ``goodbits``/``badbits``),
  when the arrays are given;
* bad regions: fs/ss regions (inclusive raw indices, on the named panel or on every
  panel covering them) and x/y regions.  An x/y region holds pixel ``(fs, ss)`` of a
  panel when ``min_x < x < max_x`` and ``min_y < y < max_y`` with
  ``x = corner_x + fs * fs_x + ss * ss_x`` (and ``y`` likewise), i.e. CrystFEL's test on
  the pixel's outer corner, in pixel units of the panel, after a resolved
  ``detector_shift``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import DataError
from crystalscope.model.detector_geometry import raw_box
from crystalscope.model.panel import BadRegion, Panel

if TYPE_CHECKING:
    from crystalscope.model.detector import Detector

__all__ = ["bad_pixel_mask"]


def bad_pixel_mask(
    detector: Detector,
    shape: tuple[int, ...] | None = None,
    *,
    data: ArrayLike | None = None,
    masks: Mapping[int, ArrayLike] | None = None,
) -> np.ndarray:
    """Boolean mask of a raw frame, True for pixels to ignore (see the module doc).

    Parameters
    ----------
    detector : Detector
        The geometry.
    shape : tuple of int, optional
        Shape of the raw frame; defaults to ``detector.raw_shape``.  It may be larger.
    data : array_like, optional
        The frame's pixel values, for ``flag_*`` thresholds and non-finite pixels.
    masks : mapping of int to array_like, optional
        Mask arrays by mask number (``mask`` is number 0), each of ``shape``.  Without
        it, mask bits are not applied; with it, every mask a panel uses must be there.

    Raises
    ------
    DataError
        If ``shape`` cannot hold the detector, an array has the wrong shape, or a mask
        a panel needs is missing from ``masks``.
    """
    shape = detector.frame_shape(shape)
    values = None if data is None else _frame_array(data, shape, "data")
    bits = (
        None
        if masks is None
        else {k: _frame_array(v, shape, f"mask{k}_data") for k, v in masks.items()}
    )
    covered = np.zeros(shape, dtype=bool)
    bad = np.zeros(shape, dtype=bool)
    for i, p in enumerate(detector.panels):
        index = detector.raw_slices(i)
        covered[index] = True
        panel_bits = None if bits is None else {k: a[index] for k, a in bits.items()}
        bad[index] |= _panel_bad(p, None if values is None else values[index], panel_bits)
    bad |= ~covered
    for region in detector.bad_regions:
        _mark_region(detector, region, bad)
    return bad


def _frame_array(a: ArrayLike, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.shape != shape:
        raise DataError(f"array has shape {arr.shape}, expected {shape}", field=name)
    return arr


def _panel_bad(
    p: Panel, values: np.ndarray | None, bits: Mapping[int, np.ndarray] | None
) -> np.ndarray:
    """Bad pixels of one panel, shape ``(n_ss, n_fs)``."""
    bad = np.zeros(p.shape, dtype=bool)
    if p.no_index:
        bad[:] = True
        return bad
    if values is not None:
        v = values.astype(float, copy=False)
        bad |= ~np.isfinite(v)
        with np.errstate(invalid="ignore"):
            for kind, threshold in p.flags:
                if kind == "lessthan":
                    bad |= v < threshold
                elif kind == "morethan":
                    bad |= v > threshold
                else:
                    bad |= np.rint(v) == threshold
    e = min(p.mask_edge_pixels, max(p.n_fs, p.n_ss))
    if e > 0:
        bad[:e, :] = bad[-e:, :] = bad[:, :e] = bad[:, -e:] = True
    if bits is not None:
        for spec in p.masks:
            if spec.data is None:
                continue
            if spec.index not in bits:
                raise DataError(
                    f"panel {p.name} uses mask {spec.index} ({spec.data}) but no such array "
                    "was given",
                    field=f"mask{spec.index}_data",
                )
            bad |= spec.bad_pixels(bits[spec.index])
    return bad


def _mark_region(det: Detector, r: BadRegion, bad: np.ndarray) -> None:
    if not r.is_lab:
        assert r.min_fs is not None and r.max_fs is not None
        assert r.min_ss is not None and r.max_ss is not None
        targets = det.panels if r.panel is None else (det.panel(r.panel),)
        for p in targets:
            fs0, fs1 = max(r.min_fs, p.min_fs), min(r.max_fs, p.max_fs)
            ss0, ss1 = max(r.min_ss, p.min_ss), min(r.max_ss, p.max_ss)
            if fs0 <= fs1 and ss0 <= ss1:
                bad[raw_box(p, fs0, fs1, ss0, ss1)] = True
        return
    shift = [
        v if isinstance(v, int | float) else 0.0
        for v in (det.detector_shift_x, det.detector_shift_y)
    ]
    for p in det.panels:
        ss, fs = np.mgrid[0 : p.n_ss, 0 : p.n_fs]
        x = p.corner_x + shift[0] / p.pixel_size_mm + fs * p.fs[0] + ss * p.ss[0]
        y = p.corner_y + shift[1] / p.pixel_size_mm + fs * p.fs[1] + ss * p.ss[1]
        inside = (x > r.min_x) & (x < r.max_x) & (y > r.min_y) & (y < r.max_y)
        if inside.any():
            view = bad[raw_box(p, p.min_fs, p.max_fs, p.min_ss, p.max_ss)]
            view |= inside
