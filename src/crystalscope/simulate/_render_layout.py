"""Where the renderer draws: uniform pixel grids ("blocks") and how they fold into raw frames.

A *block* is a uniform grid of pixels with an affine map to the lab ``(x, y)`` plane.
Two layouts exist:

* **grid**: all panels are coplanar, perpendicular to the beam, share pixel size and
  fs/ss directions, sit on one integer pixel grid and form a rectangular tiling
  (columns x rows of panels, each column with one raw fs range, each row with one raw
  ss range, in the same order in the lab and in the raw array).  The pattern is drawn
  once on the physical grid spanning all panels and folded into the raw frame with one
  index map per axis.  Between two neighbouring columns (rows) with a physical gap of
  ``g_v`` pixels and a raw gap of ``g_r`` pixels:

  - ``g_v <= 4`` and ``g_r == 0`` (Timepix quad cross) or ``g_r == g_v`` with gaps on
    (LAMBDA): hybrid-pixel *wide edge pixels*; the gap is split between the two edge
    pixels (the lower one takes the middle pixel of an odd gap), each collecting its
    whole physical area;
  - ``g_r == g_v`` with gaps off: a gapless detector, each physical pixel of the gap is
    its own raw pixel;
  - otherwise a dead gap: what falls there is lost.

* **panels**: any other detector; every panel is its own block, placed into its raw
  slice, and what falls between panels is lost.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

from crystalscope.model.detector import Detector

__all__ = ["MAX_WIDE_GAP_PX", "Block", "Layout", "layout"]

MAX_WIDE_GAP_PX = 4
"""Widest chip gap (in pixels) that wide edge pixels bridge (two 3x-wide pixels)."""

_TOL_MM = 1e-9
_TOL_PX = 1e-6


@dataclass(frozen=True)
class Block:
    """A uniform pixel grid: lab ``xy`` (mm) of pixel ``(i, j)`` is ``origin + j fs + i ss``.

    ``raw_index`` places the block in the raw frame (panel layout) or is None (grid
    layout, folded with ``Layout.fold_*``).
    """

    shape: tuple[int, int]
    origin: np.ndarray
    fs: np.ndarray
    ss: np.ndarray
    raw_index: tuple[int | slice, ...] | None


@dataclass(frozen=True)
class Layout:
    """Rendering layout of a detector (see the module documentation).

    Attributes
    ----------
    raw_shape : tuple of int
        Shape of one raw frame.
    pixel_mm : float
        Panel 0's pixel size: the unit of the radial-profile widths.
    frame : ndarray (2, 2)
        Columns: lab ``xy`` step (in units of ``pixel_mm``) of panel 0 along fs and ss.
    blocks : tuple of Block
    panel_block : ndarray (n_panels,)
        Block of each panel.
    panel_offset : ndarray (n_panels, 2)
        Block coordinates of a spot are raw ``(fs, ss)`` minus this offset.
    fold : dict, grid layout only
        ``{gaps: (ss_map, fs_map)}``: raw row/column of every block row/column (-1: lost).
    in_panel : ndarray of bool
        Raw pixels that belong to a panel.
    """

    raw_shape: tuple[int, ...]
    pixel_mm: float
    frame: np.ndarray
    blocks: tuple[Block, ...]
    panel_block: np.ndarray
    panel_offset: np.ndarray
    fold: dict[bool, tuple[np.ndarray, np.ndarray]] | None
    in_panel: np.ndarray

    def is_identity_fold(self, gaps: bool) -> bool:
        """True when folding is a plain copy (single panel grid of the raw shape)."""
        if self.fold is None:
            return False
        ss_map, fs_map = self.fold[gaps]
        return (
            len(self.raw_shape) == 2
            and self.raw_shape == (len(ss_map), len(fs_map))
            and bool(np.all(ss_map == np.arange(len(ss_map))))
            and bool(np.all(fs_map == np.arange(len(fs_map))))
        )


def _steps(det: Detector, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lab centre of panel ``i``'s first pixel and its fs/ss steps, mm (3-vectors)."""
    o = det.pixel_to_lab(i, 0.0, 0.0)
    return o, det.pixel_to_lab(i, 1.0, 0.0) - o, det.pixel_to_lab(i, 0.0, 1.0) - o


@functools.lru_cache(maxsize=16)
def layout(det: Detector) -> Layout:
    """The rendering layout of ``det`` (cached per detector; detectors are hashable)."""
    raw_shape = det.raw_shape
    p0 = det.panels[0].pixel_size_mm
    _, f0, s0 = _steps(det, 0)
    frame = np.array([[f0[0], s0[0]], [f0[1], s0[1]]]) / p0
    in_panel = det.panel_map() >= 0
    grid = _grid_layout(det, raw_shape)
    if grid is not None:
        block, offsets, fold = grid
        return Layout(raw_shape, p0, frame, (block,), np.zeros(len(det.panels), int),
                      offsets, fold, in_panel)  # fmt: skip
    blocks = []
    for i, p in enumerate(det.panels):
        o, f, s = _steps(det, i)
        blocks.append(Block((p.n_ss, p.n_fs), o[:2], f[:2], s[:2], det.raw_slices(i)))
    offsets = np.array([[p.min_fs, p.min_ss] for p in det.panels], dtype=float)
    return Layout(raw_shape, p0, frame, tuple(blocks), np.arange(len(det.panels)),
                  offsets, None, in_panel)  # fmt: skip


def _grid_layout(
    det: Detector, raw_shape: tuple[int, ...]
) -> tuple[Block, np.ndarray, dict[bool, tuple[np.ndarray, np.ndarray]]] | None:
    """Block, spot offsets and fold maps of a tiled coplanar detector, or None."""
    if len(raw_shape) != 2:
        return None
    o0, f0, s0 = _steps(det, 0)
    if abs(f0[2]) > _TOL_MM or abs(s0[2]) > _TOL_MM:
        return None
    basis = np.array([[f0[0], s0[0]], [f0[1], s0[1]]])
    pos = np.empty((len(det.panels), 2))
    for i, p in enumerate(det.panels):
        o, f, s = _steps(det, i)
        if p.pixel_size_mm != det.panels[0].pixel_size_mm or not (
            np.allclose(f, f0, rtol=0, atol=_TOL_MM) and np.allclose(s, s0, rtol=0, atol=_TOL_MM)
        ):
            return None
        if abs(o[2] - o0[2]) > _TOL_MM:
            return None
        pos[i] = np.linalg.solve(basis, (o - o0)[:2])
    if not np.allclose(pos, np.round(pos), rtol=0, atol=_TOL_PX):
        return None
    pos = np.round(pos).astype(np.int64)
    pos -= pos.min(axis=0)
    fs_axis = _axis([(int(pos[i, 0]), p.n_fs, p.min_fs) for i, p in enumerate(det.panels)])
    ss_axis = _axis([(int(pos[i, 1]), p.n_ss, p.min_ss) for i, p in enumerate(det.panels)])
    if fs_axis is None or ss_axis is None:
        return None
    cells = {(int(pos[i, 0]), int(pos[i, 1])) for i in range(len(det.panels))}
    if len(cells) != len(det.panels) or len(cells) != len(fs_axis) * len(ss_axis):
        return None
    if not _fits(fs_axis, raw_shape[1]) or not _fits(ss_axis, raw_shape[0]):
        return None
    fold = {g: (_fold_map(ss_axis, g), _fold_map(fs_axis, g)) for g in (True, False)}
    shape = (ss_axis[-1][0] + ss_axis[-1][1], fs_axis[-1][0] + fs_axis[-1][1])
    origin = o0[:2] - basis @ pos[0].astype(float)
    block = Block(shape, origin, f0[:2].copy(), s0[:2].copy(), None)
    offsets = np.array(
        [[p.min_fs - pos[i, 0], p.min_ss - pos[i, 1]] for i, p in enumerate(det.panels)],
        dtype=float,
    )
    return block, offsets, fold


Axis = list[tuple[int, int, int]]


def _axis(items: list[tuple[int, int, int]]) -> Axis | None:
    """Columns (or rows) ``(grid start, length, raw start)`` sorted, or None if not a tiling."""
    cols: dict[int, tuple[int, int]] = {}
    for start, n, raw in items:
        if cols.setdefault(start, (n, raw)) != (n, raw):
            return None
    axis = sorted((start, n, raw) for start, (n, raw) in cols.items())
    for (s1, n1, r1), (s2, _n2, r2) in itertools.pairwise(axis):
        if s2 < s1 + n1 or r2 < r1 + n1:
            return None
    return axis


def _fits(axis: Axis, raw_len: int) -> bool:
    return all(raw + n <= raw_len for _, n, raw in axis)


def _fold_map(axis: Axis, gaps: bool) -> np.ndarray:
    """Raw index of every grid index along one axis (-1: falls into a dead gap)."""
    length = axis[-1][0] + axis[-1][1]
    out = np.full(length, -1, dtype=np.int64)
    for start, n, raw in axis:
        out[start : start + n] = raw + np.arange(n)
    for (s1, n1, r1), (s2, _n2, r2) in itertools.pairwise(axis):
        g_v, g_r = s2 - (s1 + n1), r2 - (r1 + n1)
        if g_v == 0:
            continue
        if g_r == g_v and not gaps:
            out[s1 + n1 : s2] = r1 + n1 + np.arange(g_v)
        elif g_v <= MAX_WIDE_GAP_PX and g_r in (0, g_v):
            lower = (g_v + 1) // 2
            out[s1 + n1 : s1 + n1 + lower] = r1 + n1 - 1
            out[s1 + n1 + lower : s2] = r2
    return out
