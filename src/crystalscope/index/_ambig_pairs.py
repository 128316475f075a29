"""Partner pairs and their correlations for :mod:`crystalscope.index.ambiguity`.

Every pair of crystals that shares at least ``min_common`` reflection classes is a
candidate partner pair.  All of them are found through an inverted index (reflection
class -> observations), whose cost is the number of shared observations rather than
``n_crystals^2 x n_observations``; so sparse data sets (X-ray stills with tens of
reflections each) find their few valid partners as cheaply as dense ones.  When there
are more valid pairs than ``n_partners`` per crystal needs, every pair is looked at
only with one probability ``q`` (the fraction of valid pairs is estimated first from a
pilot sample of crystals), decided by a hash before anything is summed: the kept pairs
are a uniform random sample of the valid ones, as ambigator's ``--ncorr`` takes random
valid partners, and the cost drops by ``q``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from crystalscope.errors import DataError
from crystalscope.index import _ambig_kernels as kernels
from crystalscope.index._ambig_data import Observations
from crystalscope.index._ambig_ops import QuotientGroup

__all__ = ["PairGraph", "correlate"]

_PILOT_ROWS = 200  # crystals of the pilot that estimates the fraction of valid pairs
_TASKS_PER_THREAD = 8  # work units per thread (load balance)
_BUFFER_ROWS = 16  # output buffer of the correlation kernel, in worst-case rows


@dataclass
class PairGraph:
    """Valid pairs, and both directions of each as CSR by crystal (for the sweeps).

    ``cc[p, k]`` is the correlation of crystal ``first[p]`` reindexed by ``K_k`` with
    ``second[p]`` as indexed.  The directed edge ``e`` of crystal ``i`` (edges
    ``start[i]:start[i + 1]``) leads to ``other[e]``; ``edge_cc[e, k]`` is the
    correlation of ``i`` reindexed by ``K_k`` with ``other[e]`` as indexed, i.e.
    ``cc[p, inverse[k]]`` when ``i`` is the pair's second crystal.
    """

    first: np.ndarray
    second: np.ndarray
    cc: np.ndarray
    keep: float
    inverse: np.ndarray
    start: np.ndarray
    other: np.ndarray
    edge_cc: np.ndarray

    @classmethod
    def build(
        cls,
        first: np.ndarray,
        second: np.ndarray,
        cc: np.ndarray,
        n: int,
        keep: float,
        inverse: np.ndarray,
    ) -> PairGraph:
        """The graph of ``n`` crystals with these pairs (``inverse``: coset inverses)."""
        src = np.concatenate([first, second])
        other = np.concatenate([second, first])
        order, start = kernels.counting_order(src, n)
        edge_cc = np.concatenate([cc, cc[:, inverse]]).astype(np.float32)[order]
        return cls(first, second, cc, keep, inverse, start, other[order], edge_cc)

    def subset(self, mask: np.ndarray) -> PairGraph:
        """The graph of the pairs selected by ``mask``."""
        n = len(self.start) - 1
        first, second, cc = self.first[mask], self.second[mask], self.cc[mask]
        return PairGraph.build(first, second, cc, n, self.keep, self.inverse)

    def kernel_args(
        self, quotient: QuotientGroup
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Leading arguments of the sweep and figure kernels."""
        return self.start, self.other, self.edge_cc, quotient.relative

    @property
    def active(self) -> np.ndarray:
        """Crystals with at least one valid partner."""
        return np.flatnonzero(np.diff(self.start) > 0)


def _threads(n_threads: int | None) -> int:
    if n_threads is None:
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return os.cpu_count() or 1
    return max(1, int(n_threads))


def _inverted_index(obs: Observations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations as indexed, per reflection class, crystals ascending (CSR)."""
    owner = np.repeat(np.arange(len(obs.offsets) - 1, dtype=np.int32), obs.n_reflections)
    order, start = kernels.counting_order(obs.keys[0].astype(np.int64), obs.n_vocab)
    return start, owner[order], obs.values[order]


def _pairs_of(
    rows: np.ndarray,
    obs: Observations,
    index: tuple[np.ndarray, np.ndarray, np.ndarray],
    min_common: int,
    keep: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valid pairs ``(i, j > i)`` of ``rows``: the kernel, called until all rows are done.

    The kernel writes into buffers and stops before a row that might not fit (a row
    yields at most ``n_crystals`` pairs); the buffers hold ``_BUFFER_ROWS`` such rows.
    """
    n, n_ops = len(obs.offsets) - 1, obs.keys.shape[0]
    capacity = max(_BUFFER_ROWS * n, 1 << 16)
    parts = []
    done = 0
    while done < len(rows):
        first = np.empty(capacity, dtype=np.int64)
        second = np.empty(capacity, dtype=np.int64)
        cc = np.empty((capacity, n_ops))
        count, m = kernels.pair_correlations(
            rows[done:], obs.offsets, obs.keys, obs.values, *index, min_common, keep, seed,
            first, second, cc,
        )  # fmt: skip
        parts.append((first[:m].copy(), second[:m].copy(), cc[:m].copy()))
        done += count
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, n_ops))
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )


def _work_chunks(rows: np.ndarray, n_tasks: int) -> list[np.ndarray]:
    """Split ascending ``rows`` into tasks of about equal work (pairs ``j > i``)."""
    work = np.cumsum(len(rows) - np.arange(len(rows), dtype=float))
    cuts = np.searchsorted(work, work[-1] * np.arange(1, n_tasks) / n_tasks)
    return [part for part in np.split(rows, np.unique(cuts)) if len(part)]


def correlate(
    obs: Observations,
    quotient: QuotientGroup,
    n_partners: int,
    min_common: int,
    rng: np.random.Generator,
    n_threads: int | None,
) -> PairGraph:
    """All valid pairs (thinned to about ``n_partners`` per crystal) and the graph.

    Raises
    ------
    DataError
        Fewer than two crystals with ``min_common`` reflections, or no valid pair.
    """
    rows = np.flatnonzero(obs.n_reflections >= min_common)
    if len(rows) < 2:
        raise DataError(
            f"fewer than two crystals have {min_common} or more reflections: nothing to correlate",
            field="intensity",
        )
    index = _inverted_index(obs)
    inverse = quotient.inverse
    seed = int(rng.integers(0, 2**62))

    def run(part: np.ndarray, keep: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return _pairs_of(part, obs, index, min_common, keep, seed)

    keep = _keep_probability(rows, n_partners, lambda part: len(run(part, 1.0)[0]), rng)
    with ThreadPoolExecutor(_threads(n_threads)) as pool:
        parts = list(
            pool.map(
                lambda part: run(part, keep),
                _work_chunks(rows, _TASKS_PER_THREAD * _threads(n_threads)),
            )
        )
    first = np.concatenate([p[0] for p in parts])
    second = np.concatenate([p[1] for p in parts])
    cc = np.concatenate([p[2] for p in parts]).reshape(-1, obs.keys.shape[0])
    if not len(first):
        raise DataError(
            f"no two crystals share {min_common} or more reflections: the data set is too "
            "small or too sparse to resolve the ambiguity (more crystals, a lower "
            "min_common or a wider resolution range may help)",
            field="intensity",
        )
    return PairGraph.build(first, second, cc, len(obs.offsets) - 1, keep, inverse)


def _keep_probability(
    rows: np.ndarray,
    n_partners: int,
    count_valid: Callable[[np.ndarray], int],
    rng: np.random.Generator,
) -> float:
    """Probability to keep a valid pair so that crystals get about ``n_partners``.

    A pilot over up to ``_PILOT_ROWS`` random crystals counts their valid pairs with
    later crystals, which estimates the fraction ``f`` of valid pairs; with ``m``
    crystals there are about ``f m (m - 1) / 2`` and ``m n_partners / 2`` are wanted.
    """
    m = len(rows)
    if m - 1 <= n_partners:
        return 1.0
    pilot = np.sort(rng.choice(rows, size=min(_PILOT_ROWS, m), replace=False))
    later = m - 1 - np.searchsorted(rows, pilot)
    candidates = float(later.sum())
    valid = float(count_valid(pilot)) if candidates else 0.0
    if valid == 0:
        return 1.0
    expected = valid / candidates * m * (m - 1) / 2
    return float(min(1.0, m * n_partners / 2 / expected))
