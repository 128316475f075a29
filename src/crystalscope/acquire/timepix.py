"""Timepix quad: raw 512 x 512 frames to the physical 516 x 516 pixel grid and back.

A Timepix quad (e.g. ASI Cheetah/QTPX-262k) has four 256 x 256 chips on one sensor.  The
pixels along the chip boundaries (raw rows and columns 255 and 256) are three times wider
(165 um instead of 55 um), so that the sensor has no dead area: physically the quad is
516 x 516 pixels of 55 um, read out as a 512 x 512 raw frame.  Processing programs (XDS,
DIALS, REDp) need a uniform pixel grid, so the raw frame is *expanded* to 516 x 516
(seed 001, section 5.3; Nederlof et al. 2013), as Instamatic does:

* chip pixels are copied to their physical place (chip ``(r, c)`` starts at raw
  ``256 r, 256 c`` and at expanded ``260 r, 260 c``);
* a wide edge pixel becomes a strip of three normal pixels, each receiving the raw value
  divided by ``factor`` (3 by default: counts are conserved; Instamatic's camera code
  uses a measured factor instead, which then also corrects the wide pixels' higher
  per-area sensitivity);
* the four pixels where the wide rows and columns cross become 3 x 3 blocks, divided by
  ``factor**2``.

Along either axis the raw index ``k`` maps to expanded indices (``W = 3``)::

    k <= 254        ->  k
    k == 255        ->  255, 256, 257        (raw 255 covers 255 .. 257)
    k == 256        ->  258, 259, 260        (raw 256 covers 258 .. 260)
    k >= 257        ->  k + 4

The cross of spread pixels (expanded rows and columns 255 .. 260) carries interpolated
values: :func:`cross_mask` marks it and :func:`cross_rectangles` gives it as untrusted
rectangles for XDS (``UNTRUSTED_RECTANGLE``), DIALS and NeXus (``pixel_mask``).

Positions (pixel-centre convention, docs/conventions.md) map piecewise linearly: raw
pixel ``k`` spans ``k - 0.5 .. k + 0.5`` and lands on the physical span of its expanded
pixels, so :func:`raw_to_expanded` of ``255.0`` (the wide pixel's centre) is ``256.0``
and :func:`expanded_to_raw` inverts it exactly.  Use them to carry peak positions found
in one layout to the other.

With ``integer=True`` :func:`expand_quad` keeps integer counts: the value ``T`` that
a strip of ``n`` pixels receives in total (``n c / factor**k``, rounded; ``T = c`` for
``factor = 3``) is split as evenly as integers allow, the first ``T mod n`` pixels of
the strip (in row-major order) getting one count more than the others.  The total is
conserved exactly for ``factor = 3``.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import DataError

__all__ = [
    "CHIP_PX",
    "CROSS_FIRST",
    "CROSS_LAST",
    "DEFAULT_FACTOR",
    "EXPANDED_SHAPE",
    "RAW_SHAPE",
    "WIDE_PX",
    "compress_quad",
    "cross_mask",
    "cross_rectangles",
    "expand_quad",
    "expanded_to_raw",
    "raw_cross_mask",
    "raw_to_expanded",
]

CHIP_PX = 256
"""Pixels per chip along each axis."""
WIDE_PX = 3
"""Width of a chip-edge pixel in normal pixels (165 um / 55 um)."""
DEFAULT_FACTOR = 3.0
"""Default divisor for the counts of a wide pixel (conserves counts)."""
RAW_SHAPE = (2 * CHIP_PX, 2 * CHIP_PX)
"""Raw frame shape ``(ss, fs)`` of the quad."""
_GAP = 2 * (WIDE_PX - 1)
EXPANDED_SHAPE = (RAW_SHAPE[0] + _GAP, RAW_SHAPE[1] + _GAP)
"""Expanded frame shape: 516 x 516."""
CROSS_FIRST = CHIP_PX - 1
"""First expanded row/column of the cross (255)."""
CROSS_LAST = CHIP_PX - 1 + 2 * WIDE_PX - 1
"""Last expanded row/column of the cross (260)."""


@lru_cache(maxsize=1)
def _axis_map() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per expanded index along one axis: raw index, rank in its strip, strip width."""
    n = EXPANDED_SHAPE[0]
    raw = np.empty(n, dtype=np.int64)
    rank = np.zeros(n, dtype=np.int64)
    width = np.ones(n, dtype=np.int64)
    raw[:CROSS_FIRST] = np.arange(CROSS_FIRST)
    for j, k in enumerate((CHIP_PX - 1, CHIP_PX)):
        start = CROSS_FIRST + j * WIDE_PX
        raw[start : start + WIDE_PX] = k
        rank[start : start + WIDE_PX] = np.arange(WIDE_PX)
        width[start : start + WIDE_PX] = WIDE_PX
    raw[CROSS_LAST + 1 :] = np.arange(CHIP_PX + 1, RAW_SHAPE[0])
    for a in (raw, rank, width):
        a.setflags(write=False)
    return raw, rank, width


def _check_shape(data: np.ndarray, shape: tuple[int, int], what: str) -> None:
    if data.ndim < 2 or tuple(data.shape[-2:]) != shape:
        raise DataError(
            f"{what} must have shape (..., {shape[0]}, {shape[1]}), got {data.shape}",
            field="data",
        )


def _check_factor(factor: float) -> float:
    value = float(factor)
    if not (np.isfinite(value) and value > 0):
        raise DataError(f"wide-pixel factor must be positive, got {factor}", field="factor")
    return value


def expand_quad(
    raw: ArrayLike, factor: float = DEFAULT_FACTOR, *, integer: bool = False
) -> np.ndarray:
    """Expand raw 512 x 512 quad frames to the physical 516 x 516 grid.

    Parameters
    ----------
    raw : array_like, shape (..., 512, 512)
        One frame or a stack, counts.
    factor : float
        Divisor for a wide pixel's counts (per wide axis); 3 conserves counts.
    integer : bool
        Return integer counts (int64), split as described in the module docstring;
        otherwise float64 (float32 input stays float32).

    Returns
    -------
    numpy.ndarray, shape (..., 516, 516)

    Raises
    ------
    DataError
        For a wrong shape or a non-positive factor.
    """
    data = np.asarray(raw)
    _check_shape(data, RAW_SHAPE, "raw Timepix quad frames")
    f = _check_factor(factor)
    idx, rank, width = _axis_map()
    src = data[..., idx[:, None], idx[None, :]]
    n_wide = (width[:, None] > 1).astype(np.int64) + (width[None, :] > 1)
    if not integer:
        dtype = np.float32 if data.dtype == np.float32 else np.float64
        return np.asarray(src / f**n_wide, dtype=dtype)
    n = width[:, None] * width[None, :]
    order = rank[:, None] * width[None, :] + rank[None, :]
    total = np.rint(src.astype(np.float64) * (n / f**n_wide)).astype(np.int64)
    base, rest = np.divmod(total, n)
    return np.asarray(base + (order < rest), dtype=np.int64)


def compress_quad(expanded: ArrayLike, factor: float = DEFAULT_FACTOR) -> np.ndarray:
    """Inverse of :func:`expand_quad`: 516 x 516 frames back to raw 512 x 512 (float64).

    A raw wide pixel is the sum of its strip times ``factor**k / n`` (``k`` wide axes,
    ``n`` pixels in the strip); for ``factor = 3`` simply the strip's sum.
    """
    data = np.asarray(expanded, dtype=np.float64)
    _check_shape(data, EXPANDED_SHAPE, "expanded Timepix quad frames")
    f = _check_factor(factor)
    idx, _, width = _axis_map()
    starts = np.flatnonzero(np.diff(idx, prepend=-1))
    summed = np.add.reduceat(np.add.reduceat(data, starts, axis=-2), starts, axis=-1)
    w = width[starts].astype(np.float64)
    scale = np.where(w > 1, f / w, 1.0)
    return np.asarray(summed * scale[:, None] * scale[None, :], dtype=np.float64)


def cross_mask(shape: tuple[int, int] = EXPANDED_SHAPE) -> np.ndarray:
    """Boolean mask (True = spread cross pixel) of an expanded frame, expanded rows and
    columns 255 .. 260."""
    if tuple(shape) != EXPANDED_SHAPE:
        raise DataError(
            f"the quad cross is defined for {EXPANDED_SHAPE} frames, not {shape}", field="shape"
        )
    mask = np.zeros(EXPANDED_SHAPE, dtype=bool)
    mask[CROSS_FIRST : CROSS_LAST + 1, :] = True
    mask[:, CROSS_FIRST : CROSS_LAST + 1] = True
    return mask


def raw_cross_mask() -> np.ndarray:
    """Boolean mask (True = wide pixel) of a raw 512 x 512 frame: rows/columns 255, 256."""
    mask = np.zeros(RAW_SHAPE, dtype=bool)
    mask[CHIP_PX - 1 : CHIP_PX + 1, :] = True
    mask[:, CHIP_PX - 1 : CHIP_PX + 1] = True
    return mask


def cross_rectangles() -> tuple[tuple[int, int, int, int], ...]:
    """The cross as untrusted rectangles ``(fs_min, fs_max, ss_min, ss_max)``, 0-based and
    inclusive, in the expanded frame: a full-height band of columns and a full-width band
    of rows."""
    last = EXPANDED_SHAPE[0] - 1
    return (
        (CROSS_FIRST, CROSS_LAST, 0, last),
        (0, last, CROSS_FIRST, CROSS_LAST),
    )


def _raw_to_expanded_1d(u: np.ndarray) -> np.ndarray:
    lo = CHIP_PX - 1.5  # 254.5: start of the first wide raw pixel
    mid = lo + 1.0  # 255.5: boundary between the two wide raw pixels
    hi = mid + 1.0  # 256.5: end of the second wide raw pixel
    out = np.where(u <= lo, u, u + _GAP)
    first = (u > lo) & (u <= mid)
    second = (u > mid) & (u < hi)
    out = np.where(first, lo + WIDE_PX * (u - lo), out)
    return np.where(second, lo + WIDE_PX + WIDE_PX * (u - mid), out)


def _expanded_to_raw_1d(x: np.ndarray) -> np.ndarray:
    lo = CHIP_PX - 1.5
    hi = lo + 2 * WIDE_PX  # 260.5: end of the cross in the expanded frame
    out = np.where(x <= lo, x, x - _GAP)
    inside = (x > lo) & (x < hi)
    return np.where(inside, lo + (x - lo) / WIDE_PX, out)


def raw_to_expanded(fs: ArrayLike, ss: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre position(s) in the raw 512 x 512 frame -> expanded 516 x 516 frame."""
    return (
        _raw_to_expanded_1d(np.asarray(fs, dtype=float)),
        _raw_to_expanded_1d(np.asarray(ss, dtype=float)),
    )


def expanded_to_raw(fs: ArrayLike, ss: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre position(s) in the expanded 516 x 516 frame -> raw 512 x 512 frame."""
    return (
        _expanded_to_raw_1d(np.asarray(fs, dtype=float)),
        _expanded_to_raw_1d(np.asarray(ss, dtype=float)),
    )
