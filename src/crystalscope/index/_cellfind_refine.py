"""Metric tensors, Niggli reduction, least-squares refinement and figures of merit.

Cells are handled as metric tensors: the real-space ``G`` (A^2, ``G_ij = a_i . a_j``) and
the reciprocal ``G* = G^-1`` (1/A^2), for which the squared length of the lattice vector
with indices ``h`` is ``|q(h)|^2 = h^T G* h``.  A lattice with constraints (a Bravais
lattice in its conventional setting) is a linear family ``G* = sum_k p_k N_k`` of
symmetric matrices ``N_k``, so fitting observed difference-vector lengths ``x`` with
assigned indices is linear least squares in ``p`` and one offset ``kappa``:

.. math::

    \\min_{p, \\kappa} \\sum_i w_i \\Big( x_i^2 - \\sum_k p_k\\, h_i^T N_k h_i
    + \\kappa \\Big)^2, \\qquad w_i = (2 x_i \\sigma)^{-2}.

``kappa`` (1/A^2) absorbs the foreshortening of differences measured on the Ewald
sphere: each peak is observed on the sphere although its reciprocal-lattice point lies
off it by its excitation error ``s``, so a difference lacks ``s_j - s_i`` along the beam
and ``|d|^2 = |g|^2 - (s_j - s_i)^2``, on average the same for every vector.
"""

from __future__ import annotations

import math

import gemmi
import numpy as np

_MAX_BOX = 400_000  # index triples enumerated per metric at most


def metric_of_cell(cell: gemmi.UnitCell) -> np.ndarray:
    """Real-space metric tensor ``G`` (A^2) of a cell."""
    orth = np.array(cell.orth.mat, dtype=float)
    return orth.T @ orth


def cell_of_metric(metric: np.ndarray) -> gemmi.UnitCell | None:
    """Cell of a real-space metric tensor, or None when it is not positive definite."""
    g = 0.5 * (metric + metric.T)
    if not np.all(np.isfinite(g)) or np.any(np.linalg.eigvalsh(g) <= 0):
        return None
    a, b, c = np.sqrt(np.diag(g))
    cosines = (g[1, 2] / (b * c), g[0, 2] / (a * c), g[0, 1] / (a * b))
    angles = [math.degrees(math.acos(max(-1.0, min(1.0, x)))) for x in cosines]
    return gemmi.UnitCell(a, b, c, *angles)


def niggli_metric(metric: np.ndarray) -> np.ndarray | None:
    """Real-space metric of the Niggli-reduced cell of the same lattice (gemmi).

    None when the metric is not positive definite or the reduction does not converge.
    (gemmi's ``is_niggli`` is not used as a check: it rejects some exact boundary cells,
    e.g. hexagonal with ``gamma = 120`` degrees, through rounding of equal lengths.)
    """
    cell = cell_of_metric(metric)
    if cell is None:
        return None
    scale = max(cell.a, cell.b, cell.c) ** 2
    gv = gemmi.GruberVector(cell, "P")
    limit = 500
    if gv.niggli_reduce(epsilon=1e-9 * scale, iteration_limit=limit) >= limit:
        return None
    reduced = metric_of_cell(gv.get_cell())
    if not abs(np.linalg.det(reduced) / np.linalg.det(metric) - 1.0) < 1e-6:
        return None
    return reduced


def lattice_vectors(gstar: np.ndarray, max_length: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (one of each ``+-h``) and lengths (1/A) of lattice vectors up to ``max_length``.

    Sorted by length; empty when the metric is not positive definite or the index box
    would exceed 400 000 triples.
    """
    empty = np.zeros((0, 3), np.int64), np.zeros(0)
    if np.any(np.linalg.eigvalsh(gstar) <= 0):
        return empty
    real = np.linalg.inv(gstar)
    hmax = (max_length * np.sqrt(np.diag(real))).astype(np.int64) + 1
    if np.prod(2 * hmax + 1) > _MAX_BOX:
        return empty
    axes = [np.arange(-m, m + 1) for m in hmax]
    hkl = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    first = np.where(hkl[:, 0] != 0, hkl[:, 0], np.where(hkl[:, 1] != 0, hkl[:, 1], hkl[:, 2]))
    hkl = hkl[first > 0]
    q2 = np.einsum("ni,ij,nj->n", hkl, gstar, hkl)
    keep = q2 <= max_length * max_length
    hkl, lengths = hkl[keep], np.sqrt(q2[keep])
    order = np.argsort(lengths, kind="stable")
    return hkl[order], lengths[order]


def _soft_outer(
    hkl: np.ndarray, calc: np.ndarray, x: np.ndarray, sigma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Likelihood-weighted mean of ``h h^T`` over the lattice vectors within ``3 sigma``.

    ``calc`` sorted.  Returns which lengths ``x`` have any, and the ``(n, 3, 3)`` means.
    """
    lo = np.searchsorted(calc, x - 3.0 * sigma)
    hi = np.searchsorted(calc, x + 3.0 * sigma)
    outer = np.zeros((len(x), 3, 3))
    total = np.zeros(len(x))
    products = np.einsum("ni,nj->nij", hkl, hkl).astype(float)
    for k in range(int((hi - lo).max(initial=0))):
        j = lo + k
        has = j < hi
        jj = np.where(has, j, 0)
        w = np.where(has, np.exp(-0.5 * ((x - calc[jj]) / sigma) ** 2), 0.0)
        outer += w[:, None, None] * products[jj]
        total += w
    used = total > 0
    outer[used] /= total[used, None, None]
    return used, outer


def _compress(lengths: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Means and counts of ``lengths`` in bins of ``width`` (fewer rows, same sums)."""
    idx = np.floor(lengths / width).astype(np.int64)
    keys, inverse, counts = np.unique(idx, return_inverse=True, return_counts=True)
    means = np.bincount(inverse, weights=lengths) / counts
    del keys
    return means, counts.astype(float)


def _length_rows(
    gstar: np.ndarray, basis: np.ndarray, lengths: np.ndarray, counts: np.ndarray,
    sigma: float, max_length: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Weighted design rows and targets of the lengths within ``3 sigma`` of a line.

    Each length is matched to all predicted lengths within ``3 sigma``, weighted by their
    Gaussian likelihood (soft assignment): a hard nearest-line assignment would split
    lines that coincide by symmetry, as the lower half of the observations would go to
    one and the upper half to the other.  ``counts``: observations per length (weight).
    Returns rows, targets, the lengths used and their row weights.
    """
    hkl, calc = lattice_vectors(gstar, max_length + 3.0 * sigma)
    inside = lengths <= max_length
    x, n = lengths[inside], counts[inside]
    if len(calc) == 0 or len(x) == 0:
        return np.zeros((0, len(basis))), np.zeros(0), np.zeros(0), np.zeros(0)
    used, outer = _soft_outer(hkl, calc, x, sigma)
    x, n = x[used], n[used]
    design = np.einsum("nij,kij->nk", outer[used], basis)
    w = np.sqrt(n) / (2.0 * x * sigma)
    return design * w[:, None], x * x * w, x, w


def _solve(design: np.ndarray, target: np.ndarray, p0: np.ndarray) -> np.ndarray:
    """Least squares with a weak pull towards ``p0`` (fixes directions the data leave open)."""
    damping = 1e-3 * np.linalg.norm(design, 2)
    a = np.concatenate([design, damping * np.eye(len(p0))])
    b = np.concatenate([target, damping * p0])
    return np.asarray(np.linalg.lstsq(a, b, rcond=None)[0])


def fit_metric(
    gstar: np.ndarray,
    basis: np.ndarray,
    lengths: np.ndarray,
    sigma: float,
    stages: tuple[tuple[float, float], ...],
    *,
    iterations: int = 3,
) -> tuple[np.ndarray, int, float, float]:
    """Least-squares ``G* = sum_k p_k basis[k]`` fitted to distinct vector lengths.

    Parameters
    ----------
    gstar : (3, 3) starting reciprocal metric (1/A^2), projected onto the family first.
    basis : (m, 3, 3) symmetric matrices spanning the allowed metrics.
    lengths : observed distinct vector lengths (1/A); each is matched to the lattice
        vectors within ``3 sigma`` of the current metric (soft assignment).
    sigma : their standard deviation (1/A).
    stages : ``(longest vector (1/A), width factor)`` of each stage: short vectors first,
        where the assignment is unambiguous even from a rough start, and with the
        assignment width ``sigma`` widened by the factor, so that a start a few sigma
        off still finds its lines; the last stages should use factor 1.
    iterations : assignment/fit cycles per stage.

    Returns
    -------
    gstar, n_used, rms, kappa
        Refined metric, number of lengths used, RMS length residual (1/A), and the
        fitted foreshortening offset ``kappa`` (1/A^2).
    """
    flat = basis.reshape(len(basis), 9).T
    p = np.linalg.lstsq(flat, gstar.reshape(9), rcond=None)[0]
    current = np.tensordot(p, basis, axes=1)
    used, rms, kappa = 0, math.nan, 0.0
    values, counts = _compress(lengths, sigma / 4.0)
    for max_length, factor in stages:
        width = sigma * factor
        for _ in range(iterations):
            design, target, x, w = _length_rows(current, basis, values, counts, width, max_length)
            if len(x) < len(basis) + 3:
                break
            design = np.column_stack([design, -w])
            solution = _solve(design, target, np.append(p, kappa))
            trial = np.tensordot(solution[:-1], basis, axes=1)
            if np.any(np.linalg.eigvalsh(trial) <= 0):
                return current, used, rms, kappa
            p, kappa, current = solution[:-1], float(solution[-1]), trial
            calc = np.sqrt(np.maximum(design @ solution / w, 0.0))
            n = (w * 2.0 * x * width) ** 2
            used = round(float(n.sum()))
            rms = float(np.sqrt(np.sum(n * (x - calc) ** 2) / n.sum()))
    return current, used, rms, kappa


def _symmetric_unit(i: int, j: int) -> np.ndarray:
    m = np.zeros((3, 3))
    m[i, j] = m[j, i] = 1.0
    return m


#: Reciprocal metrics of the triclinic family: the six independent entries.
TRICLINIC_BASIS = np.array(
    [_symmetric_unit(i, j) for i, j in ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))]
)


def family_basis(family: str) -> np.ndarray:
    """Matrices spanning the reciprocal metrics of a crystal family, conventional setting.

    Monoclinic with unique axis ``b``; hexagonal and rhombohedral (hexagonal axes) with
    ``a* = b*`` and ``gamma* = 60`` degrees.
    """
    d = [_symmetric_unit(i, i) for i in range(3)]
    bases = {
        "triclinic": TRICLINIC_BASIS,
        "monoclinic": np.array([*d, _symmetric_unit(0, 2)]),
        "orthorhombic": np.array(d),
        "tetragonal": np.array([d[0] + d[1], d[2]]),
        "hexagonal": np.array([d[0] + d[1] + 0.5 * _symmetric_unit(0, 1), d[2]]),
        "cubic": np.array([d[0] + d[1] + d[2]]),
    }
    bases["rhombohedral"] = bases["hexagonal"]
    return bases[family]


def de_wolff(gstar: np.ndarray, lines: np.ndarray, n: int = 20) -> tuple[float, int]:
    """de Wolff's figure of merit ``M_N`` of a metric for the first ``N <= n`` lines.

    .. math::  M_N = Q_N / (2 \\bar\\varepsilon N_{calc}),

    with ``Q = |q|^2`` (1/A^2), ``Q_N`` the ``N``-th observed line, ``epsilon`` the mean
    absolute difference between observed and nearest calculated ``Q`` and ``N_calc``
    the number of distinct calculated ``Q`` up to ``Q_N``.  NaN for fewer than 3 lines.
    """
    lines = np.sort(lines)[:n]
    if len(lines) < 3:
        return math.nan, len(lines)
    q_obs = lines**2
    _, calc = lattice_vectors(gstar, float(lines[-1]) * 1.0005)
    q_calc = np.unique(np.round(calc**2, 12))
    q_calc = q_calc[q_calc <= q_obs[-1] * 1.001]
    if len(q_calc) == 0:
        return 0.0, len(lines)
    eps = np.min(np.abs(q_obs[:, None] - q_calc[None, :]), axis=1).mean()
    return float(q_obs[-1] / (2.0 * max(eps, 1e-12) * len(q_calc))), len(lines)


def indexed_fraction(
    gstar: np.ndarray, lengths: np.ndarray, tolerance: float, max_length: float
) -> float:
    """Fraction of lengths up to ``max_length`` within ``tolerance`` of a lattice vector."""
    x = lengths[lengths <= max_length]
    _, calc = lattice_vectors(gstar, max_length + tolerance)
    if len(x) == 0 or len(calc) == 0:
        return math.nan if len(x) == 0 else 0.0
    pos = np.clip(np.searchsorted(calc, x), 1, len(calc) - 1)
    nearest = np.minimum(np.abs(x - calc[pos - 1]), np.abs(x - calc[pos]))
    if len(calc) == 1:
        nearest = np.abs(x - calc[0])
    return float(np.mean(nearest <= tolerance))


def zone_fraction(gstar: np.ndarray, zones: np.ndarray, delta: float) -> float:
    """Fraction of zone sightings (weighted by patterns) that a metric explains.

    A zone ``(q1, q2, r, n_patterns)`` is explained by lattice vectors ``h1 != h2`` with
    lengths within ``delta`` of ``sqrt(q1)``, ``sqrt(q2)`` and ``|h1^T G* h2|`` within
    ``delta (sqrt(q1) + sqrt(q2))`` of ``r``.
    """
    if len(zones) == 0:
        return math.nan
    hkl, lengths = lattice_vectors(gstar, float(np.sqrt(zones[:, :2].max())) + delta)
    if len(lengths) == 0:
        return 0.0
    dots = np.abs(hkl @ gstar @ hkl.T)
    explained = np.zeros(len(zones), bool)
    for z, (q1, q2, r, _) in enumerate(zones):
        l1, l2 = math.sqrt(q1), math.sqrt(q2)
        a = np.flatnonzero(np.abs(lengths - l1) <= delta)
        b = np.flatnonzero(np.abs(lengths - l2) <= delta)
        if len(a) and len(b):
            block = np.abs(dots[np.ix_(a, b)] - abs(r)) <= delta * (l1 + l2)
            block &= a[:, None] != b[None, :]
            explained[z] = bool(block.any())
    return float(zones[explained, 3].sum() / zones[:, 3].sum())
