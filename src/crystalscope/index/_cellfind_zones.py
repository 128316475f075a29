"""Zones (2-D lattice planes) seen in single patterns, and 3-D cells assembled from them.

A pattern of an electron still is (almost) a plane section through the reciprocal-
lattice origin, so two distinct short difference vectors ``u``, ``w`` of one pattern span
a 2-D lattice of reciprocal-lattice vectors, a *zone*.  Its Lagrange-Gauss reduced
basis gives three rotation-invariant numbers ``(|u|^2, |w|^2, u . w)`` that are the same
in every pattern showing that zone, whatever its orientation.  Zones are counted over
the data set by the number of patterns showing them.

Two zones that share a vector ``g`` (equal length) determine a 3-D lattice up to the
dihedral angle ``psi`` between their planes: with ``u`` in the first and ``w`` in the
second zone, at angles ``phi_u``, ``phi_w`` to ``g``,

.. math::

    u \\cdot w = |u| |w| (\\cos\\phi_u \\cos\\phi_w + \\sin\\phi_u \\sin\\phi_w \\cos\\psi),

and the reciprocal metric of the basis ``(g, u, w)`` is complete.  ``psi`` is scanned
over ``(0, 180)`` degrees and scored by how much line signal the lattice vectors
``h_g g + h_u u + h_w w`` with ``h_u, h_w != 0`` (the ones that depend on ``psi``)
collect in the length histogram.
"""

from __future__ import annotations

import math

import numpy as np

from crystalscope.index import _cellfind_kernels as kernels

#: distinct vectors per pattern that enter zone pairs (most frequent, then shortest)
MAX_VECTORS_PER_PATTERN = 16
_MIN_SIN = 0.3  # pairs of vectors closer than ~17 degrees to parallel make no zone


def zone_events(
    vectors: np.ndarray, counts: np.ndarray, pattern: np.ndarray, max_length: float
) -> np.ndarray:
    """Reduced zones ``(q1, q2, r, pattern)`` (1/A^2) of pairs of distinct vectors.

    Per pattern only the ``MAX_VECTORS_PER_PATTERN`` most often repeated vectors no
    longer than ``max_length`` are paired (in dense patterns the true lattice vectors
    repeat, differences involving false peaks do not).
    """
    lengths = np.linalg.norm(vectors, axis=1)
    keep = lengths <= max_length
    vec, cnt, pat, lengths = vectors[keep], counts[keep], pattern[keep], lengths[keep]
    order = np.lexsort((lengths, -cnt, pat))
    vec, pat = vec[order], pat[order]
    first = np.searchsorted(pat, pat, side="left")
    keep = np.arange(len(pat)) - first < MAX_VECTORS_PER_PATTERN
    return kernels.zone_events(np.ascontiguousarray(vec[keep]), pat[keep], _MIN_SIN)


def cluster_zones(events: np.ndarray, delta: float, max_zones: int) -> np.ndarray:
    """Zones seen in the most patterns: rows ``(q1, q2, r, n_patterns)``, most seen first.

    Events are binned on a grid in ``(|u|, |w|, angle * sqrt(|u| |w|))`` with cells of
    ``delta`` (1/A); a zone is a cell whose number of distinct patterns, summed over its
    3x3x3 neighbourhood, is a local maximum (greedy non-maximum suppression).  Its
    metric is the mean over the events of that neighbourhood.
    """
    if len(events) == 0:
        return np.zeros((0, 4))
    l1, l2 = np.sqrt(events[:, 0]), np.sqrt(events[:, 1])
    angle = np.arccos(np.clip(events[:, 2] / (l1 * l2), -1.0, 1.0))
    cells = np.floor(np.column_stack([l1, l2, angle * np.sqrt(l1 * l2)]) / delta).astype(np.int64)
    cells -= cells.min(axis=0)
    span = cells.max(axis=0) + 3
    key = ((cells[:, 0] + 1) * span[1] + cells[:, 1] + 1) * span[2] + cells[:, 2] + 1
    pattern_key = np.unique(np.column_stack([key, events[:, 3].astype(np.int64)]), axis=0)
    ukeys, n_pat = np.unique(pattern_key[:, 0], return_counts=True)
    offsets = np.array(
        [
            (i * span[1] + j) * span[2] + k
            for i in (-1, 0, 1)
            for j in (-1, 0, 1)
            for k in (-1, 0, 1)
        ]
    )
    neigh = ukeys[:, None] + offsets[None, :]
    pos = np.clip(np.searchsorted(ukeys, neigh), 0, len(ukeys) - 1)
    present = ukeys[pos] == neigh
    smooth = np.where(present, n_pat[pos], 0).sum(axis=1)
    taken = np.zeros(len(ukeys), bool)
    order = np.argsort(key, kind="stable")
    sorted_keys = key[order]
    zones = []
    for c in np.argsort(-smooth, kind="stable"):
        if taken[c]:
            continue
        members = pos[c][present[c] & ~taken[pos[c]]]
        taken[members] = True
        lo = np.searchsorted(sorted_keys, ukeys[members], side="left")
        hi = np.searchsorted(sorted_keys, ukeys[members], side="right")
        rows = order[np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)])]
        zones.append((*_zone_mean(events[rows]), float(len(np.unique(events[rows, 3])))))
        if len(zones) == max_zones:
            break
    out = np.array(zones)
    return out[np.argsort(-out[:, 3], kind="stable")]


def folded_mean(y: np.ndarray) -> float:
    """Mean ``mu >= 0`` of a normal variable from samples of its absolute value.

    The moments of the folded normal distribution,
    ``E|X| = s sqrt(2/pi) exp(-mu^2 / 2 s^2) + mu (1 - 2 Phi(-mu / s))`` and
    ``E X^2 = mu^2 + s^2``, are matched to the sample moments (bisection in ``mu``).
    Averaging ``|X|`` instead would bias a mean near 0 upwards by up to ``0.8 s``.
    """
    m1, m2 = float(np.mean(y)), float(np.mean(y * y))
    if len(y) < 3 or m2 <= 0:
        return m1
    lo, hi = 0.0, math.sqrt(m2)

    def excess(mu: float) -> float:
        s = math.sqrt(max(m2 - mu * mu, 1e-300))
        t = mu / s
        folded = s * math.sqrt(2 / math.pi) * math.exp(-0.5 * t * t) + mu * math.erf(
            t / math.sqrt(2)
        )
        return folded - m1

    if excess(lo) >= 0:
        return 0.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) < 0 else (lo, mid)
    return 0.5 * (lo + hi)


def _zone_mean(events: np.ndarray) -> tuple[float, float, float]:
    """Mean zone metric ``(q1, q2, r)`` of events, free of the reduction's folding bias.

    Each event's reduced basis is sorted (``q1 <= q2``) and signed (``r >= 0``), so for a
    zone with two (nearly) equal lengths or a right angle the plain means are biased
    apart from equality and from 90 degrees; ``q2 - q1`` and ``r`` are therefore
    averaged as folded normal variables.
    """
    total = float(np.mean(events[:, 0] + events[:, 1]))
    diff = folded_mean(events[:, 1] - events[:, 0])
    return 0.5 * (total - diff), 0.5 * (total + diff), folded_mean(events[:, 2])


def _zone_metrics(zones: np.ndarray) -> np.ndarray:
    """Dot products ``(n, 3, 3)`` of each reduced zone's vectors ``u1, u2, u2 - u1``."""
    q1, q2, r = zones[:, 0], zones[:, 1], zones[:, 2]
    m = np.empty((len(zones), 3, 3))
    m[:, 0, 0], m[:, 1, 1], m[:, 2, 2] = q1, q2, q1 + q2 - 2.0 * r
    m[:, 0, 1] = m[:, 1, 0] = r
    m[:, 0, 2] = m[:, 2, 0] = r - q1
    m[:, 1, 2] = m[:, 2, 1] = q2 - r
    return m


def combine_zones(
    zones: np.ndarray, window: np.ndarray, bin_width: float, max_length: float,
    delta: float, n_psi: int,
) -> np.ndarray:  # fmt: skip
    """Candidate reciprocal metrics (basis ``g, u, w``) from pairs of zones sharing ``g``.

    Every pair of zone vectors (three per zone: ``u1, u2, u2 - u1``) of equal length
    within ``delta`` is taken as one vector ``g``; ``u`` is the next vector of the first
    zone, ``w`` of the second, and ``u . w`` comes from the dihedral scan
    (:func:`crystalscope.index._cellfind_kernels.best_dihedrals`).
    """
    m = _zone_metrics(zones)
    lengths = np.sqrt(np.einsum("zii->zi", m)).reshape(-1)  # flat index 3 * zone + vector
    f1, f2 = np.triu_indices(len(lengths), 1)
    keep = np.abs(lengths[f1] - lengths[f2]) <= delta
    f1, f2 = f1[keep], f2[keep]
    za, i = np.divmod(f1, 3)
    zb, j = np.divmod(f2, 3)
    iu, jw = (i + 1) % 3, (j + 1) % 3
    out = np.zeros((len(f1), 3, 3))
    out[:, 0, 0] = 0.5 * (m[za, i, i] + m[zb, j, j])
    out[:, 1, 1] = m[za, iu, iu]
    out[:, 2, 2] = m[zb, jw, jw]
    out[:, 0, 1] = out[:, 1, 0] = m[za, i, iu]
    out[:, 0, 2] = out[:, 2, 0] = m[zb, j, jw]
    signal = kernels.best_dihedrals(
        out, window, bin_width, max_length, dihedral_coefficients(), n_psi
    )
    return out[np.isfinite(signal)]


def dihedral_coefficients(max_index: int = 2) -> np.ndarray:
    """Index triples ``(h_g, h_u, h_w)`` with ``h_u > 0``, ``h_w != 0`` (one of each +- pair)."""
    r = range(-max_index, max_index + 1)
    rows = [(a, b, c) for a in r for b in range(1, max_index + 1) for c in r if c != 0]
    return np.array(rows, dtype=float)
