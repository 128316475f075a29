"""Assignment of reindexing operators and its figures of merit, for :mod:`.ambiguity`.

* :func:`optimise`: Gauss-Seidel sweeps from random starts (ambigator's iteration).
* :func:`split_agreement`: the partner pairs are split at random into two halves, each
  half is solved on its own, and the fraction of crystals on which the two solutions
  agree (after the best global operator) is returned.  Without a consistent signal the
  halves agree only by chance (``1 / n_ops``), however well each fits its own noise;
  so this data-set-level check is honest where per-crystal statistics of an optimised
  assignment are optimistic.
* :func:`figures`: per-crystal correlations, margin, t statistic and the probability
  that the crystal is in the wrong setting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crystalscope.index import _ambig_kernels as kernels
from crystalscope.index._ambig_data import Observations
from crystalscope.index._ambig_ops import QuotientGroup, hkl_triplet
from crystalscope.index._ambig_pairs import PairGraph

__all__ = ["Solution", "canonical", "figures", "optimise", "split_agreement"]

_MIN_SPLIT_CRYSTALS = 10  # crystals solved in both halves needed for the split check


@dataclass
class Solution:
    """An assignment (operator index per crystal) and how it was reached."""

    assign: np.ndarray
    history: list[float]
    converged: bool
    score: float


def _sweeps(
    graph: PairGraph, quotient: QuotientGroup, n_iterations: int, rng: np.random.Generator
) -> Solution:
    """Sweeps from a random start until no crystal changes (at most ``n_iterations``)."""
    active = graph.active
    assign = np.zeros(len(graph.start) - 1, dtype=np.int64)
    assign[active] = rng.integers(0, len(quotient.reps), len(active))
    history: list[float] = []
    converged = False
    for _ in range(n_iterations):
        order = rng.permutation(active)
        changed = kernels.sweep(order, *graph.kernel_args(quotient), assign)
        history.append(changed / max(len(active), 1))
        if changed == 0:
            converged = True
            break
    return Solution(assign, history, converged, math.nan)


def optimise(
    graph: PairGraph,
    quotient: QuotientGroup,
    n_iterations: int,
    n_starts: int,
    rng: np.random.Generator,
) -> Solution:
    """The best of ``n_starts`` runs by total correlation, made canonical."""
    best: Solution | None = None
    for _ in range(n_starts):
        run = _sweeps(graph, quotient, n_iterations, rng)
        if n_starts > 1:
            run.score = float(kernels.total_score(*graph.kernel_args(quotient), run.assign))
        if best is None or run.score > best.score:
            best = run
    assert best is not None
    best.assign = canonical(best.assign, graph.active, quotient)
    return best


def canonical(assign: np.ndarray, active: np.ndarray, quotient: QuotientGroup) -> np.ndarray:
    """Apply the global operator that makes the most common choice the identity.

    Crystals without partners (not in ``active``) get the identity.
    """
    out = np.zeros_like(assign)
    if len(active):
        mode = int(np.argmax(np.bincount(assign[active], minlength=len(quotient.reps))))
        out[active] = quotient.product[quotient.inverse[mode], assign[active]]
    return out


def split_agreement(
    graph: PairGraph, quotient: QuotientGroup, n_iterations: int, rng: np.random.Generator
) -> float:
    """Agreement of two solutions from disjoint random halves of the pairs.

    The fraction of crystals (solved in both halves) whose operators agree after the
    global operator ``X`` that maximises it: ``a_B = X a_A``.  NaN with fewer than
    ``_MIN_SPLIT_CRYSTALS`` such crystals.
    """
    half = rng.random(len(graph.first)) < 0.5
    runs = []
    for mask in (half, ~half):
        sub = graph.subset(mask)
        runs.append((_sweeps(sub, quotient, n_iterations, rng).assign, sub.active))
    both = np.intersect1d(runs[0][1], runs[1][1])
    if len(both) < _MIN_SPLIT_CRYSTALS:
        return math.nan
    a, b = runs[0][0][both], runs[1][0][both]
    return max(float(np.mean(quotient.product[x, a] == b)) for x in range(len(quotient.reps)))


def resolved(agreement: float, n_ops: int) -> bool:
    """Whether the split-half agreement shows a consistent signal.

    The agreement is rescaled so that chance (``1 / n_ops``) is 0 and perfect is 1, and
    must reach 0.5 (two-fold: 75 % agreement, i.e. each half right on >= 85 %).
    """
    chance = 1.0 / n_ops
    return bool(math.isfinite(agreement) and (agreement - chance) / (1 - chance) >= 0.5)


def figures(
    base: pd.DataFrame,
    obs: Observations,
    graph: PairGraph,
    quotient: QuotientGroup,
    assign: np.ndarray,
    *,
    min_partners: int,
    max_error: float,
    trusted: bool,
) -> pd.DataFrame:
    """The per-crystal table of :class:`~.ambiguity.AmbiguityResult`.

    ``cc_p`` is the mean correlation with the partners (in their final settings) of the
    crystal reindexed by ``K_p``.  Over the ``m`` partners valid for both the chosen and
    the runner-up operator, the differences ``d`` of their correlations have mean
    ``delta_cc`` and standard error ``se``; ``significance = delta_cc / se`` (t).
    ``p_wrong`` is the posterior probability that the runner-up is right (see
    :func:`_p_wrong`).

    ``confident``: ``trusted`` (the data set passed the split-half check), at least
    ``min_partners`` partners and ``p_wrong <= max_error``.
    """
    args = graph.kernel_args(quotient)
    total, count = kernels.mean_correlations(*args, assign)
    mean = np.full(total.shape, np.nan)
    np.divide(total, count, out=mean, where=count > 0)
    rows = np.arange(len(assign))
    others = mean.copy()
    others[rows, assign] = np.nan
    has_other = np.isfinite(others).any(axis=1)
    runner_up = np.where(has_other, np.argmax(np.nan_to_num(others, nan=-np.inf), axis=1), -1)
    delta, se = _paired(kernels.paired_differences(*args, assign, runner_up))
    p_wrong = _p_wrong(delta, se)
    partners = count[rows, assign]
    ops = np.array([hkl_triplet(k) for k in quotient.reps], dtype=object)
    out = base.assign(operator=assign, reindex=ops[assign])
    for k in range(len(ops)):
        out[f"cc_{k}"] = mean[:, k]
    out["delta_cc"] = delta
    with np.errstate(invalid="ignore", divide="ignore"):
        out["significance"] = delta / se
    out["p_wrong"] = p_wrong
    out["n_partners"] = partners
    out["n_reflections"] = obs.n_reflections
    out["confident"] = (
        trusted & (partners >= min_partners) & (np.nan_to_num(p_wrong, nan=1.0) <= max_error)
    )
    return out


def _p_wrong(delta: np.ndarray, se: np.ndarray, n_grid: int = 50) -> np.ndarray:
    """Posterior probability that a crystal is in its runner-up setting.

    In the right setting the mean difference ``d`` of a crystal averages ``+mu``, in the
    wrong one ``-mu``, with the standard error ``se`` measured for that crystal.  ``mu``
    differs between crystals (those whose reflections are nearly invariant under the
    operator hardly discriminate), so it is taken from an empirical prior: ``mu = 0``
    and the ``n_grid`` quantiles of the data set's positive ``delta_cc``, equally
    weighted:

    .. math::

        p_\\mathrm{wrong} = \\frac{\\sum_k N(d; -\\mu_k, se)}
                              {\\sum_k N(d; \\mu_k, se) + N(d; -\\mu_k, se)}.

    NaN where ``delta`` or ``se`` is.
    """
    finite = np.isfinite(delta) & np.isfinite(se)
    out = np.full(len(delta), np.nan)
    if not finite.any():
        return out
    positive = np.maximum(delta[finite], 0.0)
    mu = np.concatenate([[0.0], np.quantile(positive, np.linspace(0.0, 1.0, n_grid))])
    d, s = delta[finite, None], se[finite, None]
    right = -0.5 * ((d - mu) / s) ** 2
    wrong = -0.5 * ((d + mu) / s) ** 2
    log_wrong = np.logaddexp.reduce(wrong, axis=1)
    log_all = np.logaddexp(np.logaddexp.reduce(right, axis=1), log_wrong)
    out[finite] = np.exp(log_wrong - log_all)
    return out


def _paired(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of differences from (sum, sum of squares, count).

    NaN below three differences; a zero spread gives a tiny standard error.
    """
    total, squares, m = sums[:, 0], sums[:, 1], sums[:, 2]
    safe = np.maximum(m, 3.0)
    mean = total / safe
    var = np.maximum((squares - safe * mean**2) / (safe - 1.0), 1e-12)
    ok = m >= 3
    return np.where(ok, mean, np.nan), np.where(ok, np.sqrt(var / safe), np.nan)


def notes(
    crystals: pd.DataFrame,
    graph: PairGraph,
    solution: Solution,
    agreement: float,
    n_ops: int,
    min_common: int,
) -> list[str]:
    """What the user should know about a solution."""
    out = []
    n = len(crystals)
    lonely = n - len(graph.active)
    if lonely:
        out.append(
            f"{lonely} crystal(s) share fewer than {min_common} reflections with every "
            "partner: left as indexed and flagged not confident"
        )
    if not resolved(agreement, n_ops):
        if math.isnan(agreement):
            check = "too few crystals have partners to check the solution"
        else:
            check = (
                f"solutions from two halves of the partner pairs agree on "
                f"{100 * agreement:.0f}% of the crystals (chance: {100 / n_ops:.0f}%)"
            )
        out.append(
            f"LOW CONFIDENCE: {check}; the data do not determine the settings: more "
            "crystals, more reflections per crystal or a lower min_common are needed.  "
            "All crystals are flagged not confident."
        )
    else:
        unsure = int((~crystals["confident"]).sum())
        if unsure > n / 2:
            out.append(
                f"{unsure} of {n} crystals are not confidently assigned (median "
                f"{float(np.median(crystals['n_partners'])):.0f} partners)"
            )
    if not solution.converged:
        out.append("assignments still changed in the last pass: raise n_iterations")
    return out
