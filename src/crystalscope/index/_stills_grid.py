"""Cell lists of lattice directions per length shell, for the seed search of still indexing.

The seed search (:func:`~crystalscope.index._stills_kernels.seed_rotations`) asks, for
each trial rotation and each observed vector ``c``, which lattice direction of ``c``'s
length shell lies closest to the rotated observed direction, within an angle.  A shell
holds tens to hundreds of directions; scanning them all for each of the ~10^4 trial
rotations of a frame was most of the search's time.

:func:`shell_grids` sorts each shell's unit vectors into a cubic grid over ``[-1, 1]^3``
whose cell edge ``g_c`` is at least the largest chord ``2 sin(theta_c / 2)`` any query on
that shell uses (``theta_c``: the widest angle).  All directions within angle ``theta``
of a target ``t`` lie within chord ``2 sin(theta/2) <= g_c`` of it, so in the at most
2 x 2 x 2 cells that the box ``t +- chord`` touches.  :func:`best_in_grid` scans those
cells only and returns exactly what a scan of the whole shell returns: the direction of
largest cosine above the threshold, the lowest index among equal cosines.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["best_in_grid", "shell_grids"]

#: Most cells along one axis (the grid of a shell has at most this cubed).
MAX_CELLS_PER_AXIS = 48
#: Margin added to the query chord: directions and targets are unit to ~1e-16 only.
_CHORD_MARGIN = 1e-9


@numba.njit(cache=True, nogil=True)
def _cell_index(x: float, n: int) -> int:
    """Cell along one axis of ``n`` equal cells over ``[-1, 1]`` (clipped)."""
    i = int((x + 1.0) * 0.5 * n)
    return min(max(i, 0), n - 1)


@numba.njit(cache=True, nogil=True)
def shell_grids(
    lat_unit: np.ndarray, shell_lo: np.ndarray, shell_hi: np.ndarray, max_angle: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cell lists of the shells ``shell_lo[c]:shell_hi[c]`` of ``lat_unit`` (unit rows).

    ``max_angle[c]`` (radians) is the widest angle any query on shell ``c`` uses.

    Returns
    -------
    n_axis : (m,) int
        Cells per axis of each shell's grid (its edge is ``2 / n_axis``).
    cell_off : (m + 1,) int
        Offsets of each shell's cell heads in ``heads``.
    heads : int
        For cell ``k`` of shell ``c``: its members are
        ``members[heads[cell_off[c] + k] : heads[cell_off[c] + k + 1]]``.
    members : int
        Lattice indices, grouped by shell and, within a shell, by cell.
    """
    m = shell_lo.shape[0]
    n_axis = np.empty(m, np.int64)
    cell_off = np.zeros(m + 1, np.int64)
    for c in range(m):
        chord = 2.0 * math.sin(min(max_angle[c], math.pi) / 2.0) + _CHORD_MARGIN
        n_axis[c] = max(1, min(MAX_CELLS_PER_AXIS, int(2.0 / chord)))
        cell_off[c + 1] = cell_off[c] + n_axis[c] ** 3 + 1
    heads = np.zeros(cell_off[m], np.int64)
    members = np.empty(max(1, int(np.sum(shell_hi - shell_lo))), np.int64)
    base = 0
    for c in range(m):
        n, off = n_axis[c], cell_off[c]
        lo, hi = shell_lo[c], shell_hi[c]
        cells = np.empty(hi - lo, np.int64)
        for j in range(lo, hi):
            ix = _cell_index(lat_unit[j, 0], n)
            iy = _cell_index(lat_unit[j, 1], n)
            iz = _cell_index(lat_unit[j, 2], n)
            cells[j - lo] = (ix * n + iy) * n + iz
            heads[off + cells[j - lo] + 1] += 1
        heads[off] = base
        for k in range(n**3):  # counts -> start positions (cumulative)
            heads[off + k + 1] += heads[off + k]
        fill = heads[off : off + n**3].copy()
        for j in range(lo, hi):  # ascending j within each cell
            k = cells[j - lo]
            members[fill[k]] = j
            fill[k] += 1
        base += hi - lo
    return n_axis, cell_off, heads, members


@numba.njit(cache=True, nogil=True)
def best_in_grid(
    rot: np.ndarray,
    lat_unit: np.ndarray,
    grids: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    c: int,
    target: np.ndarray,
    cos_min: float,
) -> tuple[int, float]:
    """Index of the direction of shell ``c`` closest to ``target`` after ``rot`` and the
    cosine of the angle, or ``(-1, cos_min)`` when none is within ``arccos(cos_min)``
    (the angle must not exceed the shell's ``max_angle`` of :func:`shell_grids`)."""
    n_axis, cell_off, heads, members = grids
    # rot^T target: compare in the crystal frame (one rotation instead of one per vector)
    t0 = rot[0, 0] * target[0] + rot[1, 0] * target[1] + rot[2, 0] * target[2]
    t1 = rot[0, 1] * target[0] + rot[1, 1] * target[1] + rot[2, 1] * target[2]
    t2 = rot[0, 2] * target[0] + rot[1, 2] * target[1] + rot[2, 2] * target[2]
    chord = math.sqrt(max(0.0, 2.0 - 2.0 * cos_min)) + _CHORD_MARGIN
    n, off = n_axis[c], cell_off[c]
    best = -1
    best_cos = cos_min
    for ix in range(_cell_index(t0 - chord, n), _cell_index(t0 + chord, n) + 1):
        for iy in range(_cell_index(t1 - chord, n), _cell_index(t1 + chord, n) + 1):
            for iz in range(_cell_index(t2 - chord, n), _cell_index(t2 + chord, n) + 1):
                k = off + (ix * n + iy) * n + iz
                for p in range(heads[k], heads[k + 1]):
                    j = members[p]
                    cos = lat_unit[j, 0] * t0 + lat_unit[j, 1] * t1 + lat_unit[j, 2] * t2
                    if cos > best_cos or (cos == best_cos and 0 <= j < best):
                        best_cos = cos
                        best = j
    return best, best_cos
