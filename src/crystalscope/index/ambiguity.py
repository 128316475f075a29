"""Indexing ambiguity: bring every crystal of a serial data set into one setting.

When the lattice has higher symmetry than the point group (merohedry: P 63 in a
hexagonal lattice, P 4, P 3, P 2 3 ...), a still can be indexed equally well in
``|L| / |G|`` settings related by reindexing operators ``K`` (``h' = K h``): the
cosets ``G K`` of the point group ``G`` (Laue group, Friedel's law assumed) in the
lattice holohedry ``L`` (proper rotations, hkl space).  Indexing alone cannot tell them
apart; the intensities can.  :func:`resolve_ambiguity` does it as CrystFEL's
``ambigator`` (Brehm & Diederichs 2014, Acta Cryst. D70, 101; White et al. 2016,
Acta Cryst. D72, 697), generalised from one operator to the group of settings:

1. Intensities are put on a common footing: divided by the mean intensity of their
   resolution shell (the Wilson fall-off otherwise correlates every setting with every
   other), symmetry-equivalent observations of one crystal averaged.
2. Each crystal is paired with about ``n_partners`` random others among those that
   share at least ``min_common`` reflection classes with it (found through an inverted
   index, so sparse data sets cost little).  For each pair and each operator ``K_k``
   the Pearson correlation ``c_k(i, j) = CC(I_i^{K_k}, I_j)`` over the classes they
   share is computed once (numba, threads).
3. Starting from a random assignment ``a``, every crystal in turn takes the operator
   with the highest summed correlation with its partners in their current settings,

   .. math::

       a_i \\leftarrow \\arg\\max_p \\sum_j c_{r(a_j, p)}(i, j), \\qquad
       G K_{r(a_j, p)} = G K_{a_j}^{-1} K_p,

   and passes are repeated until no crystal changes (at most ``n_iterations``).  The
   correlation of ``I_i^{K_p}`` with ``I_j^{K_r}`` equals that of ``I_i^{K_r^{-1} K_p}``
   with ``I_j`` because ``G`` is normal in ``L``, so no correlation is recomputed.
4. The solution is unique up to one global operator; the most common assignment is
   made the identity.
5. Confidence: the pairs are split into two random halves, each solved alone; if the
   halves agree on the crystals no better than halfway between chance and perfect, the
   data do not determine the settings and every crystal is flagged.  Otherwise each
   crystal gets the probability ``p_wrong`` of being in the runner-up setting.

Per crystal the result reports the chosen operator, the mean correlation with the
partners under every operator (``cc_<k>``; for a two-fold ambiguity the histogram of
``cc_0 - cc_1`` is ambigator's f - g plot, bimodal before reindexing), the margin
``delta_cc`` over the runner-up, a paired t statistic, ``p_wrong`` and a confidence
flag.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import ConfigError, DataError
from crystalscope.index import _ambig_data as _data
from crystalscope.index import _ambig_pairs as _pairs
from crystalscope.index import _ambig_solve as _solve
from crystalscope.index._ambig_ops import (
    QuotientGroup,
    closure,
    coset_representatives,
    hkl_triplet,
    lattice_rotations,
    op_matrix,
    point_group_rotations,
    quotient_group,
)
from crystalscope.model.crystal import SpaceGroupLike, make_cell, resolve_space_group

__all__ = [
    "INTENSITY_COLUMNS",
    "UB_COLUMNS",
    "AmbiguityResult",
    "ambiguity_operators",
    "resolve_ambiguity",
]

#: Columns :func:`resolve_ambiguity` needs (``sigma`` may be present; it is not used).
INTENSITY_COLUMNS = _data.REQUIRED_COLUMNS
#: Orientation-matrix columns of a crystals table: ``UB`` column by column, 1/A.
UB_COLUMNS = tuple(f"{v}star_{x}" for v in "abc" for x in "xyz")
_CELL_COLUMNS = ("a", "b", "c", "alpha", "beta", "gamma")


def _as_space_group(space_group: SpaceGroupLike) -> gemmi.SpaceGroup:
    try:
        return resolve_space_group(space_group)
    except DataError as exc:
        raise ConfigError(exc.message, field="space_group") from None


def _as_cell(cell: gemmi.UnitCell | Sequence[float]) -> gemmi.UnitCell:
    params = cell.parameters if isinstance(cell, gemmi.UnitCell) else cell
    try:
        return make_cell(*params)
    except (DataError, TypeError) as exc:
        raise ConfigError(f"invalid cell {params!r}: {exc}", field="cell") from None


def ambiguity_operators(
    cell: gemmi.UnitCell | Sequence[float],
    space_group: SpaceGroupLike,
    *,
    max_obliquity_deg: float = 1.0,
) -> list[gemmi.Op]:
    """Reindexing operators that indexing cannot tell apart, identity first.

    The lattice holohedry ``L`` of ``cell`` (:func:`gemmi.find_lattice_symmetry`, with
    the space group's centring and ``max_obliquity_deg`` of tolerance, so that
    pseudo-merohedry within that angle counts) is split into cosets ``G K`` of the Laue
    group ``G`` of ``space_group``; one simple representative per coset is returned as
    a gemmi hkl operator (``gemmi.Op("k,h,-l")``, ``h' = K h``).  P 63: ``h,k,l`` and
    ``k,h,-l``; P 43 21 2: ``h,k,l`` only; P 3: four settings.

    Parameters
    ----------
    cell : gemmi.UnitCell or sequence of 6 floats
        Unit cell (A, degrees) in the setting of the indexing.
    space_group : gemmi.SpaceGroup or str or int
        Space group of the crystals (its Laue group is the symmetry assumed).
    max_obliquity_deg : float
        Tolerance of the lattice-symmetry search, degrees.

    Raises
    ------
    ConfigError
        Unknown space group, invalid cell or a cell incompatible with the space group.
    """
    sg = _as_space_group(space_group)
    uc = _as_cell(cell)
    group, lattice = _groups(uc, sg, max_obliquity_deg)
    return [gemmi.Op(hkl_triplet(k)) for k in coset_representatives(group, lattice)]


def _groups(
    cell: gemmi.UnitCell, sg: gemmi.SpaceGroup, max_obliquity_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    value = max_obliquity_deg
    if not (isinstance(value, int | float) and math.isfinite(value) and 0 <= value <= 10):
        raise ConfigError(
            f"must be 0-10 degrees, got {max_obliquity_deg!r}", field="max_obliquity_deg"
        )
    group = point_group_rotations(sg)
    lattice = lattice_rotations(cell, sg, max_obliquity_deg)
    known = {tuple(m.ravel()) for m in lattice}
    if any(tuple(g.ravel()) not in known for g in group):
        raise ConfigError(
            f"cell {tuple(round(x, 3) for x in cell.parameters)} does not have the lattice "
            f"symmetry of {sg.xhm()}",
            field="cell",
        )
    return group, lattice


@dataclass(frozen=True, eq=False)
class AmbiguityResult:
    """Chosen reindexing operator of every crystal, with the figures behind the choice.

    Attributes
    ----------
    ops : list of str
        Reindexing operators as hkl triplets (``h' = K h``), ``"h,k,l"`` first.
    crystals : pandas.DataFrame
        One row per crystal: ``frame``, ``crystal``, ``operator`` (index into
        :attr:`ops`), ``reindex`` (its triplet), ``cc_0 ... cc_<n-1>`` (mean correlation
        with the partners, in their final settings, of this crystal reindexed by each
        operator), ``delta_cc`` (mean difference of the correlations under the chosen
        and the runner-up operator over the partners valid for both), ``significance``
        (its paired t statistic; optimistic, the assignment was optimised on the same
        correlations), ``p_wrong`` (probability that the runner-up is right),
        ``n_partners`` (partners with a valid correlation), ``n_reflections`` (after
        merging equivalents), ``confident``.
    fraction_changed : tuple of float
        Fraction of crystals whose operator changed in each pass.
    n_iterations : int
        Passes made.
    converged : bool
        Whether the last pass changed nothing.
    notes : tuple of str
        What the user should know (no ambiguity, crystals without partners ...).
    space_group : str
        Extended Hermann-Mauguin symbol of the space group used.
    split_agreement : float
        Fraction of crystals on which solutions from two random halves of the partner
        pairs agree (chance: ``1 / len(ops)``); NaN when not measured.
    """

    ops: list[str]
    crystals: pd.DataFrame
    fraction_changed: tuple[float, ...] = ()
    n_iterations: int = 0
    converged: bool = True
    notes: tuple[str, ...] = ()
    space_group: str = ""
    split_agreement: float = math.nan
    matrices: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        mats = np.array([op_matrix(op, field="ops") for op in self.ops], dtype=np.int64)
        if not len(mats) or not np.array_equal(mats[0], np.eye(3, dtype=np.int64)):
            raise ConfigError("the first operator must be the identity h,k,l", field="ops")
        missing = [c for c in ("frame", "crystal", "operator") if c not in self.crystals]
        if missing:
            raise DataError(f"crystals table lacks column {missing[0]!r}", field=missing[0])
        op = self.crystals["operator"].to_numpy()
        if len(op) and (op.min() < 0 or op.max() >= len(mats)):
            raise DataError("operator index out of range", field="operator")
        object.__setattr__(self, "matrices", mats)

    @property
    def operator(self) -> np.ndarray:
        """Index of the chosen operator per crystal (rows of :attr:`crystals`)."""
        return self.crystals["operator"].to_numpy(np.int64)

    @property
    def correlation(self) -> np.ndarray:
        """``(n_crystals, n_ops)`` mean correlation with the partners under each operator."""
        cols = [f"cc_{k}" for k in range(len(self.ops))]
        if not all(c in self.crystals for c in cols):
            return np.full((len(self.crystals), len(self.ops)), np.nan)
        return self.crystals[cols].to_numpy(float)

    @property
    def delta_cc(self) -> np.ndarray:
        """Margin of the chosen operator over the runner-up per crystal (histogram it)."""
        if "delta_cc" not in self.crystals:
            return np.full(len(self.crystals), np.nan)
        return self.crystals["delta_cc"].to_numpy(float)

    @property
    def confident(self) -> np.ndarray:
        """Whether each crystal's choice is significant (see :func:`resolve_ambiguity`)."""
        if "confident" not in self.crystals:
            return np.ones(len(self.crystals), dtype=bool)
        return self.crystals["confident"].to_numpy(bool)

    def summary(self) -> str:
        """A few lines: operators, how many crystals each, convergence, confidence."""
        n = len(self.crystals)
        counts = np.bincount(self.operator, minlength=len(self.ops)) if n else np.zeros(0, int)
        used = ", ".join(f"{op}: {c}" for op, c in zip(self.ops, counts, strict=False))
        lines = [
            f"indexing ambiguity ({self.space_group}): {n} crystals, "
            f"{len(self.ops)} setting(s); reindexed with {used}"
        ]
        if self.n_iterations:
            changes = ", ".join(f"{100 * f:.1f}%" for f in self.fraction_changed)
            state = "converged" if self.converged else "NOT converged"
            lines.append(f"{self.n_iterations} passes ({state}); changed per pass: {changes}")
            delta = self.delta_cc[np.isfinite(self.delta_cc)]
            median = f"{np.median(delta):.3f}" if len(delta) else "n/a"
            split = self.split_agreement
            agree = f"{100 * split:.1f}%" if math.isfinite(split) else "n/a"
            lines.append(
                f"confident: {int(self.confident.sum())}/{n}; median delta CC {median}; "
                f"split-half agreement {agree}"
            )
        lines.extend(self.notes)
        return "\n".join(lines)

    def _per_row_operator(self, table: pd.DataFrame, name: str) -> np.ndarray:
        """Operator index for each row of ``table`` matched on (frame, crystal); 0 if absent."""
        for col in ("frame", "crystal"):
            if col not in table:
                raise DataError(f"{name} table lacks column {col!r}", field=col)
        index = pd.MultiIndex.from_arrays(
            [self.crystals["frame"].to_numpy(np.int64), self.crystals["crystal"].to_numpy(np.int64)]
        )
        try:
            rows = pd.MultiIndex.from_arrays(
                [table["frame"].to_numpy(np.int64), table["crystal"].to_numpy(np.int64)]
            )
        except (TypeError, ValueError):
            raise DataError(f"{name} frame/crystal must be integers", field="frame") from None
        where = index.get_indexer(rows)
        out = np.zeros(len(table), dtype=np.int64)
        found = where >= 0
        out[found] = self.operator[where[found]]
        return out

    def reindex_intensities(self, intensities: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``intensities`` with ``h, k, l`` of each crystal replaced by ``K h``.

        Rows of crystals not in :attr:`crystals` are left as they are.
        """
        for col in ("h", "k", "l"):
            if col not in intensities:
                raise DataError(f"intensity table lacks column {col!r}", field=col)
        op = self._per_row_operator(intensities, "intensity")
        hkl = intensities[["h", "k", "l"]].to_numpy(np.int64)
        new = np.einsum("nij,nj->ni", self.matrices[op], hkl)
        out = intensities.copy()
        for c, col in enumerate(("h", "k", "l")):
            out[col] = new[:, c].astype(intensities[col].dtype)
        return out

    def reindex_crystals(self, crystals: pd.DataFrame) -> pd.DataFrame:
        """A copy of a crystals table with ``UB`` (``astar_x ... cstar_z``) reindexed.

        A crystal reindexed by ``K`` (``h' = K h``) predicts the same scattering vectors
        with ``UB' = UB K^-1``: ``q = UB h = UB K^-1 K h = UB' h'``.  Cell columns
        (``a ... gamma``), where present, are recomputed from ``UB'`` for reindexed rows
        (the operators swap equal edges, so they change only by rounding, or, with
        pseudo-merohedry, by the small metric difference).  Rows of crystals not in
        :attr:`crystals` are left as they are.

        Raises
        ------
        DataError
            If a UB column, ``frame`` or ``crystal`` is missing.
        """
        for col in UB_COLUMNS:
            if col not in crystals:
                raise DataError(f"crystals table lacks column {col!r}", field=col)
        op = self._per_row_operator(crystals, "crystals")
        ub = crystals[list(UB_COLUMNS)].to_numpy(float).reshape(-1, 3, 3).transpose(0, 2, 1)
        inverse = np.rint(np.linalg.inv(self.matrices.astype(float))).astype(np.int64)
        new = ub @ inverse[op]
        out = crystals.copy()
        flat = new.transpose(0, 2, 1).reshape(-1, 9)
        for c, col in enumerate(UB_COLUMNS):
            out[col] = flat[:, c]
        changed = op != 0
        if changed.any() and all(c in crystals for c in _CELL_COLUMNS):
            out.loc[changed, list(_CELL_COLUMNS)] = _cells_from_ub(new[changed])
        return out


def _cells_from_ub(ub: np.ndarray) -> np.ndarray:
    """Cell parameters ``(n, 6)`` (A, degrees) of orientation matrices ``(n, 3, 3)``."""
    real = np.linalg.inv(ub)  # rows: a, b, c in the lab frame
    metric = real @ real.transpose(0, 2, 1)
    lengths = np.sqrt(np.einsum("nii->ni", metric))

    def angle(i: int, j: int) -> np.ndarray:
        cos = metric[:, i, j] / (lengths[:, i] * lengths[:, j])
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))

    return np.column_stack([lengths, angle(1, 2), angle(0, 2), angle(0, 1)])


def _quotient(
    cell: gemmi.UnitCell,
    sg: gemmi.SpaceGroup,
    operators: Sequence[gemmi.Op | str] | None,
    max_obliquity_deg: float,
) -> QuotientGroup:
    """The settings to choose from: automatic (lattice symmetry) or from ``operators``."""
    group, lattice = _groups(cell, sg, max_obliquity_deg)
    if operators is None:
        return quotient_group(group, lattice)
    if isinstance(operators, str | gemmi.Op):
        operators = [operators]
    given = np.array([op_matrix(op) for op in operators], dtype=np.int64).reshape(-1, 3, 3)
    b = np.array(cell.frac.mat, dtype=float).T
    metric = b.T @ b  # reciprocal metric tensor G*
    tolerance = 1e-3 + 2.0 * math.radians(max_obliquity_deg)
    for m in given:
        deviation = np.abs(m.T @ metric @ m - metric).max() / np.abs(metric).max()
        if deviation > tolerance:
            raise ConfigError(
                f"operator {hkl_triplet(m)} is not a symmetry of the lattice of cell "
                f"{tuple(round(x, 3) for x in cell.parameters)} (metric changes by "
                f"{100 * deviation:.1f}%)",
                field="operators",
            )
    return quotient_group(group, closure(np.concatenate([group, given])))


@dataclass(frozen=True)
class _Options:
    """The numeric options of :func:`resolve_ambiguity`."""

    n_iterations: int
    n_partners: int
    min_common: int
    min_partners: int
    max_error: float
    d_min: float | None
    d_max: float | None
    n_shells: int
    n_starts: int
    n_threads: int | None
    seed: int

    def check(self) -> None:
        """ConfigError naming the first invalid option."""
        for name, low in (
            ("n_iterations", 1), ("n_partners", 1), ("min_common", 3), ("min_partners", 0),
            ("n_shells", 1), ("n_starts", 1), ("n_threads", 1), ("seed", 0),
        ):  # fmt: skip
            value = getattr(self, name)
            if name == "n_threads" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                raise ConfigError(f"must be an integer >= {low}, got {value!r}", field=name)
        if not (isinstance(self.max_error, int | float) and 0.0 <= self.max_error <= 1.0):
            raise ConfigError(
                f"must be a probability 0-1, got {self.max_error!r}", field="max_error"
            )
        for name in ("d_min", "d_max"):
            limit = getattr(self, name)
            ok = (
                isinstance(limit, int | float)
                and limit > 0
                and (name == "d_max" or limit < math.inf)
            )
            if limit is not None and not ok:
                raise ConfigError(f"must be a positive resolution in A, got {limit!r}", field=name)


def resolve_ambiguity(
    intensities: pd.DataFrame,
    space_group: SpaceGroupLike,
    cell: gemmi.UnitCell | Sequence[float],
    *,
    n_iterations: int = 6,
    n_partners: int = 500,
    min_common: int = 4,
    min_partners: int = 10,
    max_error: float = 0.01,
    d_min: float | None = None,
    d_max: float | None = None,
    n_shells: int = 20,
    operators: Sequence[gemmi.Op | str] | None = None,
    max_obliquity_deg: float = 1.0,
    n_starts: int = 1,
    n_threads: int | None = None,
    seed: int = 0,
) -> AmbiguityResult:
    """Choose for every crystal the reindexing operator that makes the data consistent.

    Method: module docstring and ``docs/algorithms/ambiguity.md``.
    Parameters
    ----------
    intensities : pandas.DataFrame
        Unmerged: ``frame``, ``crystal`` (together they identify a crystal), ``h``,
        ``k``, ``l`` (as indexed), ``intensity`` (any linear scale per crystal, partials).
    space_group : gemmi.SpaceGroup or str or int
        Space group of the crystals; its Laue group is the symmetry assumed.
    cell : gemmi.UnitCell or sequence of 6 floats
        Cell of the indexing (A, degrees): lattice symmetry and resolution.
    n_iterations : int
        Maximum passes over all crystals (stops when none changes).
    n_partners : int
        Partners per crystal, random among those with a valid correlation (all when
        there are fewer); cost is linear in it (ambigator's ``--ncorr``).
    min_common : int
        Reflection classes two crystals must share for a correlation (>= 3; 4 as
        ambigator: many noisy correlations beat few good ones).
    min_partners, max_error : int, float
        A ``confident`` crystal has at least ``min_partners`` valid partners and
        ``p_wrong <= max_error``.
    d_min, d_max : float, optional
        Resolution limits in A (ambigator's ``--highres``/``--lowres``).
    n_shells : int
        Resolution shells (equal counts) of the intensity normalisation.
    operators : sequence of gemmi.Op or str, optional
        Operators to resolve instead of all the lattice allows (ambigator's
        ``--operator``); with the point group they must generate a lattice group.
    max_obliquity_deg : float
        Lattice-symmetry tolerance, degrees (see :func:`ambiguity_operators`).
    n_starts, n_threads, seed : int
        Random starts (the highest total correlation wins); threads of the correlation
        kernel (default: the CPUs this process may use); seed of partners, start and
        visiting order (results are reproducible).

    Returns
    -------
    AmbiguityResult
        Identity for every crystal, with a note, when the lattice allows no ambiguity.

    Raises
    ------
    DataError
        Empty or malformed table, fewer than two crystals with data, or no two crystals
        sharing ``min_common`` reflections.
    ConfigError
        Invalid parameters, space group, cell or operators.
    """
    opts = _Options(
        n_iterations, n_partners, min_common, min_partners, max_error, d_min, d_max, n_shells,
        n_starts, n_threads, seed,
    )  # fmt: skip
    opts.check()
    sg, uc = _as_space_group(space_group), _as_cell(cell)
    table = _data.check_table(intensities)
    return _resolve(table, sg, uc, _quotient(uc, sg, operators, max_obliquity_deg), opts)


def _resolve(
    table: dict[str, np.ndarray],
    sg: gemmi.SpaceGroup,
    cell: gemmi.UnitCell,
    quotient: QuotientGroup,
    opts: _Options,
) -> AmbiguityResult:
    """:func:`resolve_ambiguity` after the checks."""
    ops = [hkl_triplet(k) for k in quotient.reps]
    pairs, index = _data.crystal_index(table["frame"], table["crystal"])
    base = pd.DataFrame({"frame": pairs[:, 0], "crystal": pairs[:, 1]})
    if len(ops) == 1:
        return _no_ambiguity(base, ops, sg)
    obs = _data.prepare(
        table, index, len(base), cell, sg, quotient.reps, d_min=opts.d_min, d_max=opts.d_max,
        n_shells=opts.n_shells,
    )  # fmt: skip
    rng = np.random.default_rng(opts.seed)
    graph = _pairs.correlate(obs, quotient, opts.n_partners, opts.min_common, rng, opts.n_threads)
    solution = _solve.optimise(graph, quotient, opts.n_iterations, opts.n_starts, rng)
    agreement = _solve.split_agreement(graph, quotient, max(2 * opts.n_iterations, 20), rng)
    crystals = _solve.figures(
        base, obs, graph, quotient, solution.assign, min_partners=opts.min_partners,
        max_error=opts.max_error, trusted=_solve.resolved(agreement, len(ops)),
    )  # fmt: skip
    notes = obs.notes + _solve.notes(
        crystals, graph, solution, agreement, len(ops), opts.min_common
    )
    return AmbiguityResult(
        ops, crystals, tuple(solution.history), len(solution.history), solution.converged,
        tuple(notes), sg.xhm(), agreement,
    )  # fmt: skip


def _no_ambiguity(base: pd.DataFrame, ops: list[str], sg: gemmi.SpaceGroup) -> AmbiguityResult:
    note = (
        f"the lattice has no symmetry beyond the point group of {sg.xhm()}: "
        "no indexing ambiguity, every crystal keeps its indexing"
    )
    crystals = base.assign(operator=0, reindex=ops[0], confident=True)
    return AmbiguityResult(ops, crystals, notes=(note,), space_group=sg.xhm())
