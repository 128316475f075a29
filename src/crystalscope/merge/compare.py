"""Comparison of two merged reflection lists, as CrystFEL's ``compare_hkl``.

:func:`compare_sets` pairs the reflections of two lists up to symmetry (any asymmetric
unit convention), scales the second to the first with ``G exp(2 B s^2)`` fitted to
``ln(I_a / I_b)`` (``s = 1/(2d)``) and reports, per shell of equal volume in ``(1/d)^3``
and overall:

* ``cc`` (Pearson), ``cc_star = sqrt(2 cc / (1 + cc))``;
* ``r_split = sqrt(2) sum|I_a - I_b| / sum(I_a + I_b)`` (%);
* ``r1_i = sum|I_a - I_b| / sum I_a`` (%);
* ``r1_f = sum|sqrt I_a - sqrt I_b| / sum sqrt I_a`` (%), over the pairs with both
  intensities >= 0 (``compare_hkl --ignore-negs``) or with negatives set to zero
  (``--zero-negs``).

The shells span the accepted pairs' resolution range unless ``d_min``/``d_max`` fix it,
as ``compare_hkl`` does.  See ``docs/algorithms/merging-statistics.md``.
"""

from __future__ import annotations

import math
from typing import Literal

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import ConfigError
from crystalscope.merge.fom import (
    SelectedReflections,
    cc_half,
    cc_star,
    common_pairs,
    make_edges,
    r_split,
    resolution_limits,
    select_reflections,
    shell_index,
    shell_range,
    wilson_scale,
)
from crystalscope.model.crystal import SpaceGroupLike, resolve_space_group

__all__ = ["COMPARE_COLUMNS", "compare_sets", "r1_f", "r1_i"]

#: Columns of the table :func:`compare_sets` returns.
COMPARE_COLUMNS = [
    "d_max", "d_min", "n_common", "cc", "cc_star", "r_split", "r1_i", "r1_f", "scale",
    "b_factor",
]  # fmt: skip


def r1_i(i1: np.ndarray, i2: np.ndarray) -> float:
    """``R1(I) = sum|I1 - I2| / sum I1``, in percent (NaN when ``sum I1 = 0``)."""
    den = float(np.sum(i1))
    return 100.0 * float(np.sum(np.abs(i1 - i2))) / den if len(i1) and den != 0 else math.nan


def r1_f(i1: np.ndarray, i2: np.ndarray) -> float:
    """``R1(F) = sum|sqrt I1 - sqrt I2| / sum sqrt I1``, in percent (intensities >= 0)."""
    f1, f2 = np.sqrt(i1), np.sqrt(i2)
    den = float(np.sum(f1))
    return 100.0 * float(np.sum(np.abs(f1 - f2))) / den if len(i1) and den != 0 else math.nan


def compare_sets(
    a: pd.DataFrame,
    b: pd.DataFrame,
    cell: gemmi.UnitCell,
    space_group: SpaceGroupLike,
    *,
    n_shells: int = 10,
    d_min: float | None = None,
    d_max: float | None = None,
    scale: bool = True,
    negatives: Literal["ignore", "zero"] = "ignore",
    anomalous: bool = False,
) -> pd.DataFrame:
    """Figures of merit of list ``b`` against list ``a`` per shell and overall.

    Parameters
    ----------
    a, b : pandas.DataFrame
        Merged reflections ``h, k, l, I, sigma`` (one per unique reflection).
    cell : gemmi.UnitCell
        Unit cell (``d`` is computed from it).
    space_group : gemmi.SpaceGroup or str or int
        Space group; its Laue group (point group with ``anomalous``) pairs reflections.
    n_shells : int
        Shells of equal volume in ``(1/d)^3``.
    d_min, d_max : float, optional
        Resolution range, A; pairs outside it are left out.
    scale : bool
        Scale ``b`` to ``a`` (False: ``compare_hkl -u``).
    negatives : {"ignore", "zero"}
        How ``r1_f`` treats negative intensities (the other figures use every pair).
    anomalous : bool
        Friedel mates are separate reflections.

    Returns
    -------
    pandas.DataFrame
        Index ``"1" ... "n", "overall"``; columns :data:`COMPARE_COLUMNS`: ``d_max,
        d_min`` (A), ``n_common``, ``cc``, ``cc_star``, ``r_split``, ``r1_i``, ``r1_f``
        (%), and the ``scale`` and relative ``b_factor`` (A^2) applied to ``b``
        (``I_b * scale * exp(2 b_factor s^2)``; the same in every row).
        ``attrs["notes"]`` lists what was discarded.

    Raises
    ------
    DataError
        If a table lacks columns, lists a reflection twice up to symmetry, or no
        reflection is common to both.
    ConfigError
        If the options are invalid.
    """
    if negatives not in ("ignore", "zero"):
        raise ConfigError(f"negatives must be 'ignore' or 'zero', got {negatives!r}",
                          field="negatives")  # fmt: skip
    sg = resolve_space_group(space_group)
    limits = resolution_limits(d_min, d_max)
    sa = select_reflections(a, cell, sg, limits, anomalous, "first list")
    sb = select_reflections(b, cell, sg, limits, anomalous, "second list")
    ia, ib = common_pairs(sa, sb)
    i1, i2, r = sa.intensity[ia], sb.intensity[ib], sa.r[ia]
    r_min, r_max = shell_range(r, limits, "common reflections")
    edges = make_edges(r_min, r_max, n_shells)
    g, b_rel = wilson_scale(i1, i2, 1.0 / r) if scale else (1.0, 0.0)
    i2 = i2 * g * np.exp(2.0 * b_rel * (r / 2.0) ** 2)
    n = len(edges) - 1
    bins = shell_index(r, edges)
    groups = [bins == j for j in range(n)] + [np.ones(len(r), dtype=bool)]
    if negatives == "zero":
        f1, f2, fok = np.maximum(i1, 0.0), np.maximum(i2, 0.0), np.ones(len(r), dtype=bool)
    else:
        f1, f2, fok = i1, i2, (i1 >= 0) & (i2 >= 0)
    cc = np.array([cc_half(i1[m], i2[m]) for m in groups])
    with np.errstate(divide="ignore"):
        d_hi = 1.0 / np.append(edges[:-1], r_min)
    table = pd.DataFrame(
        {
            "d_max": d_hi,
            "d_min": 1.0 / np.append(edges[1:], r_max),
            "n_common": [int(m.sum()) for m in groups],
            "cc": cc,
            "cc_star": [cc_star(c) for c in cc],
            "r_split": [r_split(i1[m], i2[m]) for m in groups],
            "r1_i": [r1_i(i1[m], i2[m]) for m in groups],
            "r1_f": [r1_f(f1[m & fok], f2[m & fok]) for m in groups],
            "scale": g,
            "b_factor": b_rel,
        },
        index=pd.Index([str(j + 1) for j in range(n)] + ["overall"], name="shell"),
    )
    table.attrs["notes"] = _notes(sa, sb, len(r), int((~fok).sum()), negatives)
    return table


def _notes(
    sa: SelectedReflections, sb: SelectedReflections, n_common: int, n_neg: int, negatives: str
) -> list[str]:
    notes = []
    for name, sel in (("first", sa), ("second", sb)):
        invalid, outside = sel.dropped_invalid, sel.dropped_range
        if invalid:
            notes.append(f"{invalid} reflections of the {name} list with non-finite I or "
                         "sigma, or sigma < 0, discarded")  # fmt: skip
        if outside:
            notes.append(f"{outside} reflections of the {name} list outside the range")
    notes.append(f"{n_common} reflections in common")
    if negatives == "ignore" and n_neg:
        notes.append(f"{n_neg} pairs with a negative intensity left out of R1(F)")
    return notes
