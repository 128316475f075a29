"""Global orientation search of one still for a known cell (TakeTwo-like).

Seed vectors are the shortest observed scattering vectors.  Every pair of them is
matched to pairs of lattice vectors of the same lengths and the same angle, each match
is extended to the other seed vectors and scored by how many of them it explains
(:func:`~crystalscope.index._stills_kernels.seed_rotations`).  The best distinct
rotations are re-fitted to all peaks
(:func:`~crystalscope.index._stills_kernels.quick_refine`) and returned, best first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from crystalscope.index._stills_kernels import distinct_rotations, quick_refine, seed_rotations
from crystalscope.index._stills_setup import cell_b_matrix, lattice_table

__all__ = ["Candidate", "SearchOptions", "distinct", "search_orientations", "tilt_scan"]

_TABLE_STEP = 0.02  # 1/A; lattice tables are cached for lengths rounded up to this


@dataclass(frozen=True)
class SearchOptions:
    """Tolerances and sizes of the search (:class:`~crystalscope.index.stills.IndexingParams`)."""

    tolerance_px: float
    shift_uncertainty_px: float
    profile_radius: float
    n_seed_vectors: int
    min_angle_deg: float
    max_seeds: int
    n_refine: int
    distinct_deg: float
    seed_excitation: float = 0.2
    collinear_deg: float = 3.0
    n_pair_vectors: int = 6
    max_shell: int = 800


@dataclass(frozen=True)
class Candidate:
    """A rotation (crystal Cartesian to lab), the in-plane offset ``(c_x, c_y)`` (1/A) of
    the observed vectors it implies (beam-centre error), its seed score, and the peaks it
    indexes after a quick re-fit (with their summed squared excitation error)."""

    rot: np.ndarray
    offset: np.ndarray
    seed_score: float
    n_indexed: int
    s2: float


def _seed_vectors(
    q: np.ndarray, tol: np.ndarray, n_seed: int, min_angle_deg: float, max_length: float
) -> np.ndarray:
    """Indices of the shortest vectors longer than four times their own tolerance and
    at most ``max_length``, skipping vectors (anti)parallel within ``min_angle_deg`` to
    one already taken (a systematic row would otherwise fill the list with unusable
    pairs)."""
    length = np.linalg.norm(q, axis=1)
    order = np.argsort(length, kind="stable")
    order = order[(length[order] > 4.0 * tol[order]) & (length[order] <= max_length)]
    unit = q / np.maximum(length, 1e-300)[:, None]
    cos_max = np.cos(np.radians(min_angle_deg))
    taken: list[int] = []
    for i in order:
        if taken and np.max(np.abs(unit[taken] @ unit[i])) > cos_max:
            continue
        taken.append(int(i))
        if len(taken) == n_seed:
            break
    return np.array(taken, dtype=np.int64)


def _max_seed_length(parameters: tuple[float, ...], tol: float, max_shell: int) -> float:
    """Length (1/A) up to which a shell ``|L| +- tol`` holds about ``max_shell`` lattice
    vectors: ``4 pi L^2 2 tol / V* = max_shell`` with ``V*`` the reciprocal cell volume."""
    v_star = abs(float(np.linalg.det(cell_b_matrix(parameters))))
    return float(np.sqrt(max_shell * v_star / (8.0 * np.pi * tol)))


def distinct(
    rot: np.ndarray, kept: list[np.ndarray], rotations: np.ndarray, tol_deg: float
) -> bool:
    """True when ``rot`` differs by more than ``tol_deg`` from every rotation in ``kept``
    modulo the lattice rotations (``R' = R S`` for ``S`` in ``rotations``)."""
    if not kept:
        return True
    cos_tol = np.cos(np.radians(tol_deg))
    for other in kept:
        rel = other.T @ rot  # crystal frame: rot = other @ rel
        traces = np.einsum("kij,ij->k", rotations, rel)  # tr(S^T rel)
        if np.max((traces - 1.0) / 2.0) >= cos_tol:
            return False
    return True


def search_orientations(
    q: np.ndarray,
    px_q: np.ndarray,
    wavelength: float,
    parameters: tuple[float, ...],
    hall: str,
    opts: SearchOptions,
) -> list[Candidate]:
    """Candidate orientations of a lattice for one frame's vectors ``q`` (1/A), best first.

    Parameters
    ----------
    q : (n, 3)
        Observed scattering vectors (lab frame, 1/A).
    px_q : (n,)
        Size of a pixel in q at each peak (1/A).
    wavelength : float
        Angstrom.
    parameters : tuple
        Cell ``(a, b, c, alpha, beta, gamma)`` (A, degrees).
    hall : str
        Hall symbol of the space group (centring and holohedry).
    opts : SearchOptions
        Tolerances and sizes.
    """
    tol_len = np.hypot(opts.tolerance_px, opts.shift_uncertainty_px) * px_q
    reach = _max_seed_length(parameters, float(np.median(tol_len)), opts.max_shell)
    seeds = _seed_vectors(q, tol_len, opts.n_seed_vectors, opts.collinear_deg, reach)
    if len(seeds) < 3:
        return []
    obs = np.ascontiguousarray(q[seeds])
    length = np.linalg.norm(obs, axis=1)
    tol_ang = (tol_len[seeds] + opts.seed_excitation * opts.profile_radius) / length
    reach = float(length.max() + tol_len[seeds].max())
    table = lattice_table(parameters, hall, math.ceil(reach / _TABLE_STEP) * _TABLE_STEP)
    lo = np.searchsorted(table.lengths, length - tol_len[seeds])
    hi = np.searchsorted(table.lengths, length + tol_len[seeds], side="right")
    rots, scores, n = seed_rotations(
        obs, tol_ang, lo, hi, table.vectors, table.unique,
        np.radians(opts.min_angle_deg), 3, opts.max_seeds, opts.n_pair_vectors,
    )  # fmt: skip
    if n == 0:
        return []
    order = np.argsort(-scores[:n], kind="stable")[: 8 * opts.n_refine]
    cos_tol = float(np.cos(np.radians(opts.distinct_deg)))
    kept, _ = distinct_rotations(rots, order, table.rotations, cos_tol, opts.n_refine)
    tol_t = opts.tolerance_px * px_q
    allow = opts.shift_uncertainty_px * float(np.median(px_q))
    q_all = np.ascontiguousarray(q)
    ang = float(np.median(tol_ang))
    out = []
    for i in kept:
        fitted, offset, count, s2 = quick_refine(
            rots[i], table.b_mat, q_all, wavelength, tol_t, opts.profile_radius, ang, allow, 8, 0.7
        )
        out.append(Candidate(fitted, offset, float(scores[i]), int(count), float(s2)))
    out.sort(key=lambda c: (-c.n_indexed, c.s2))
    if not out:
        return out
    rots = np.array([c.rot for c in out])
    keep, _ = distinct_rotations(rots, np.arange(len(out)), table.rotations, cos_tol, len(out))
    return [out[i] for i in keep]


def tilt_scan(
    rot: np.ndarray,
    q: np.ndarray,
    px_q: np.ndarray,
    wavelength: float,
    b_mat: np.ndarray,
    tol_s: float,
    opts: SearchOptions,
    step_deg: float = 2.0,
    n_steps: int = 2,
) -> list[Candidate]:
    """Orientations near ``rot`` tilted about the lab x and y axes, re-fitted.

    On a flat Ewald sphere the peak positions hardly fix the tilt of the lattice; near a
    zone axis a lattice tilted by a few degrees can explain most peaks with other
    indices.  The starts ``R_y(b) R_x(a) rot`` for ``a, b`` in ``step_deg * (-n_steps ..
    n_steps)`` (the centre excluded) are each re-fitted by
    :func:`~crystalscope.index._stills_kernels.quick_refine` with the excitation
    tolerance ``tol_s``; the results are returned best first (most peaks, then smallest
    summed squared excitation errors).
    """
    tol_t = opts.tolerance_px * px_q
    allow = 0.5 * float(np.median(px_q))
    q_all = np.ascontiguousarray(q)
    ang = float(np.radians(0.5 * step_deg))
    out = []
    steps = np.radians(step_deg) * np.arange(-n_steps, n_steps + 1)
    for a in steps:
        for b in steps:
            if a == 0.0 and b == 0.0:
                continue
            start = _axis_rotation(1, b) @ _axis_rotation(0, a) @ rot
            fitted, offset, count, s2 = quick_refine(
                start, b_mat, q_all, wavelength, tol_t, tol_s, ang, allow, 5, 0.7
            )
            out.append(Candidate(fitted, offset, 0.0, int(count), float(s2)))
    out.sort(key=lambda c: (-c.n_indexed, c.s2))
    return out


def _axis_rotation(axis: int, angle: float) -> np.ndarray:
    """Right-handed rotation by ``angle`` radians about lab axis 0 (x) or 1 (y)."""
    c, s = np.cos(angle), np.sin(angle)
    if axis == 0:
        return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
