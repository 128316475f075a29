"""Unit cell without a prior: reduced cell and Bravais lattice from many still patterns.

An electron still is, to a very good approximation, a plane section through the
reciprocal-lattice origin in an unknown orientation, and so cannot give a 3-D cell on
its own.  But the difference ``q_j - q_i`` of two peaks of one pattern is a
reciprocal-lattice vector, and lengths of and angles between such vectors do not depend
on the pattern's orientation.  :func:`find_cell` combines these invariants over the data
set (see ``docs/algorithms/cell-finding.md`` for the equations):

1. **Lines.**  The first maximum of the within-pattern pair-distance function gives the
   shortest lattice vector ``l1``.  Per pattern, differences up to ``6 l1`` that agree
   within ``0.3 l1`` are merged into distinct vectors (averaging repeats); the
   histogram of their lengths shows the lattice-vector lengths as sharp lines on a
   smooth background, and the width ``sigma`` of the first line sets the tolerance
   ``delta = 3 sigma``.
2. **Zones.**  Two distinct short vectors of one pattern span a 2-D lattice (a zone);
   its Gauss-reduced metric ``(|u|^2, |w|^2, u.w)`` is invariant, and zones seen in
   several patterns are kept.
3. **Cells.**  Two zones sharing a vector length give a 3-D basis up to the dihedral
   angle between them, found by a scan scored on the line histogram.  Every candidate
   metric is scored by the line signal its lattice-vector lengths collect (observed
   minus background counts within ``+-delta`` of each predicted length, each length
   bin counted once) times the fraction of zones it explains: lattices with missing
   vectors lose signal, denser (super) lattices collect background.  The best one is
   Niggli-reduced (gemmi): the search cell.
4. **Bravais lattice.**  Le Page's twofold-axis obliquities on the search cell give the
   Bravais lattices within 5 degrees; each is refined by least squares against all
   distinct vector lengths with its metric constraints.  Those within
   ``max_deviation_deg`` whose misfit is close to the lowest are accepted and ranked
   by symmetry; de Wolff's ``M20`` on the observed lines is reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import ConfigError, DataError
from crystalscope.index._cellfind_bravais import BRAVAIS, BravaisMatch, bravais_matches
from crystalscope.index._cellfind_kernels import (
    MAX_CLUSTERS,
    distinct_vectors,
    pair_counts,
    score_metrics,
)
from crystalscope.index._cellfind_lines import (
    LengthHistogram,
    find_lines,
    length_histogram,
    line_width,
    shortest_line,
)
from crystalscope.index._cellfind_refine import (
    cell_of_metric,
    de_wolff,
    family_basis,
    fit_metric,
    indexed_fraction,
    lattice_vectors,
    niggli_metric,
    zone_fraction,
)
from crystalscope.index._cellfind_zones import (
    cluster_zones,
    combine_zones,
    zone_events,
)

__all__ = ["CellSearch", "LatticeCandidate", "find_cell"]

_Q_COLUMNS = ("qx", "qy", "qz")
_CLUSTER_FRACTION = 0.3  # differences within 0.3 l1 are one lattice vector
_VECTOR_RANGE = 6.0  # distinct vectors up to 6 l1
_SCORE_RANGE = 4.0  # candidate cells scored on lengths up to 4 l1
_ZONE_RANGE = 3.0  # zone vectors up to 3 l1
_N_SCORED = 120  # candidates kept after the fast score
_N_REFINED = 12  # distinct reduced cells refined
_TIE = 0.01  # relative score difference treated as a tie (then the smaller cell wins)
_LISTED_DEVIATION = 5.0  # Bravais lattices up to this Le Page deviation are listed
_MISFIT_MARGIN = 1.0  # an accepted lattice's misfit is at most this above the lowest ...
_EXPLAINS = 0.8  # ... of the cells with at least this fraction of the best line score,
_ZONE_RATIO = 0.85  # ... or it explains this fraction of the best's zone sightings
_ZONE_CHECK = 2.0  # zones are checked within this many sigma
_MISFIT_CAP = 9.0  # (3 sigma)^2: vectors further from any line count this much


@dataclass(frozen=True)
class LatticeCandidate:
    """One Bravais lattice compatible with the data.

    Attributes
    ----------
    bravais : str
        Bravais symbol (``aP mP mC oP oC oI oF tP tI hP hR cP cI cF``).
    cell : gemmi.UnitCell
        Conventional cell refined with the lattice's metric constraints (A, degrees).
    reduced : gemmi.UnitCell
        Niggli-reduced primitive cell of ``cell``.
    deviation_deg : float
        Le Page deviation of the measured reduced cell from this lattice's symmetry:
        the largest obliquity of its twofold axes, degrees.
    figure_of_merit : float
        de Wolff's ``M_N`` of ``cell`` on the first ``N <= 20`` observed lines.
    indexed_fraction : float
        Fraction of distinct difference vectors (up to the scoring length) whose length
        matches a lattice vector of ``cell`` within the tolerance.
    rms_residual : float
        RMS difference (1/A) between the matched vector lengths and the lattice's.
    line_score : float
        Line signal the cell collects (observed minus background vectors within the
        tolerance of its lattice-vector lengths), relative to the best candidate.
    misfit : float
        Mean over the distinct vectors (up to the scoring length) of
        ``min((d / sigma)^2, 9)``, ``d`` the distance of the vector's length to the
        nearest lattice-vector length of ``cell``.
    zones_explained : float
        Fraction of zone sightings (pairs of vectors seen together in a pattern,
        weighted by the number of patterns) that ``cell`` explains within ``2 sigma``.
    accepted : bool
        Deviation within the search's tolerance, and the lattice fits the data about
        as well as the best candidate (see :func:`find_cell`).
    transform : numpy.ndarray, shape (3, 3)
        Columns: the conventional axes in the basis of the search's reduced cell.
    """

    bravais: str
    cell: gemmi.UnitCell
    reduced: gemmi.UnitCell
    deviation_deg: float
    figure_of_merit: float
    indexed_fraction: float = math.nan
    rms_residual: float = math.nan
    line_score: float = math.nan
    misfit: float = math.nan
    zones_explained: float = math.nan
    accepted: bool = False
    transform: np.ndarray = field(default_factory=lambda: np.eye(3, dtype=np.int64), repr=False)

    @property
    def crystal_family(self) -> str:
        """triclinic, monoclinic, orthorhombic, tetragonal, rhombohedral, hexagonal or cubic."""
        return BRAVAIS[self.bravais][0]


@dataclass(frozen=True)
class CellSearch:
    """Result of :func:`find_cell`.

    Attributes
    ----------
    reduced : gemmi.UnitCell
        Niggli-reduced cell of the first-ranked lattice, refined with its metric
        constraints (A, degrees).
    candidates : tuple of LatticeCandidate
        Bravais lattices, best first: those within ``max_deviation_deg`` by decreasing
        symmetry, then the others by deviation.
    n_frames_used : int
        Patterns with at least ``min_peaks`` peaks.
    search_cell : gemmi.UnitCell
        Reduced cell as found by the search, before any refinement; the Le Page
        deviations are measured on it.
    n_vectors : int
        Distinct within-pattern difference vectors.
    n_zones : int
        Zones (2-D lattices) seen in at least two patterns.
    shortest_line, sigma : float
        Length of the shortest lattice vector and width of its line (1/A).
    lines : numpy.ndarray
        Observed line positions (1/A) up to the scoring length.
    alternatives : tuple of (gemmi.UnitCell, float)
        Other reduced cells considered and their rating relative to the best.
    max_deviation_deg : float
        Le Page tolerance used for ranking.
    elapsed_s : float
        Wall time of the search, seconds.
    """

    reduced: gemmi.UnitCell
    candidates: tuple[LatticeCandidate, ...]
    n_frames_used: int
    search_cell: gemmi.UnitCell | None = None
    n_vectors: int = 0
    n_zones: int = 0
    shortest_line: float = math.nan
    sigma: float = math.nan
    lines: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    alternatives: tuple[tuple[gemmi.UnitCell, float], ...] = ()
    max_deviation_deg: float = 3.0
    elapsed_s: float = math.nan

    @property
    def best(self) -> LatticeCandidate:
        """The first-ranked Bravais lattice candidate."""
        return self.candidates[0]

    def table(self) -> pd.DataFrame:
        """Candidates as a table: rank, bravais, a, b, c (A), alpha, beta, gamma (degrees),
        volume (A^3), deviation_deg, score (relative line signal), misfit, zones
        (fraction explained), M20, indexed (fraction), rms (1/A), accepted."""
        rows = []
        for rank, cand in enumerate(self.candidates, start=1):
            a, b, c, alpha, beta, gamma = cand.cell.parameters
            rows.append(
                {
                    "rank": rank, "bravais": cand.bravais,
                    "a": a, "b": b, "c": c, "alpha": alpha, "beta": beta, "gamma": gamma,
                    "volume": cand.cell.volume, "deviation_deg": cand.deviation_deg,
                    "score": cand.line_score, "misfit": cand.misfit,
                    "zones": cand.zones_explained,
                    "M20": cand.figure_of_merit,
                    "indexed": cand.indexed_fraction, "rms": cand.rms_residual,
                    "accepted": cand.accepted,
                }
            )  # fmt: skip
        return pd.DataFrame(rows)

    def summary(self) -> str:
        """Printable report: data used, reduced cell, and the table of candidates."""
        r = self.reduced
        lines = [
            f"Cell search: {self.n_frames_used} patterns, {self.n_vectors} distinct "
            f"difference vectors, {self.n_zones} zones, {len(self.lines)} lines, "
            f"{self.elapsed_s:.1f} s",
            f"shortest lattice vector {self.shortest_line:.5f} 1/A "
            f"({1.0 / self.shortest_line:.2f} A), line width {self.sigma:.2e} 1/A",
            f"reduced cell ({self.best.bravais}): {r.a:.3f} {r.b:.3f} {r.c:.3f} A  "
            f"{r.alpha:.2f} {r.beta:.2f} {r.gamma:.2f} deg  V = {r.volume:.1f} A^3",
            f"Bravais lattices: highest symmetry first among the accepted (Le Page deviation "
            f"<= {self.max_deviation_deg:g} deg; misfit <= lowest + 1 or zones >= 0.85 best)",
            f"{'#':>2} {'lattice':<7} {'a':>8} {'b':>8} {'c':>8} {'alpha':>7} {'beta':>7} "
            f"{'gamma':>7} {'volume':>10} {'dev/deg':>7} {'score':>6} {'misfit':>6} "
            f"{'zones':>6} {'M20':>6} {'indexed':>7}",
        ]
        for _, row in self.table().iterrows():
            lines.append(
                f"{row['rank']:>2} {row.bravais:<7} {row.a:8.3f} {row.b:8.3f} {row.c:8.3f} "
                f"{row.alpha:7.2f} {row.beta:7.2f} {row.gamma:7.2f} {row.volume:10.1f} "
                f"{row.deviation_deg:7.2f} {row.score:6.3f} {row.misfit:6.2f} {row.zones:6.2f} "
                f"{row.M20:6.1f} "
                f"{100 * row.indexed:6.1f}%{'' if row.accepted else '  rejected'}"
            )
        return "\n".join(lines)


def _check_parameters(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigError(f"must be a positive number, got {value!r}", field=name)


def _check_counts(**values: int) -> None:
    for name, value in values.items():
        if not (isinstance(value, int | np.integer) and value >= 2):
            raise ConfigError(f"must be an integer >= 2, got {value!r}", field=name)


def _prepare(
    vectors: pd.DataFrame, min_peaks: int, max_peaks: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peaks of every usable pattern, each pattern contiguous and sorted along qx.

    Rows with non-finite q are dropped; patterns with fewer than ``min_peaks`` peaks are
    skipped; of a pattern with more than ``max_peaks``, the ``max_peaks`` with the
    highest ``intensity`` (the first ones without that column) are used.
    """
    if not isinstance(vectors, pd.DataFrame):
        raise DataError(f"vectors must be a DataFrame, got {type(vectors).__name__}")
    for name in ("frame", *_Q_COLUMNS):
        if name not in vectors.columns:
            raise DataError(f"peak vectors have no column {name!r}", field=name)
    q = vectors[list(_Q_COLUMNS)].to_numpy(dtype=float)
    frame = vectors["frame"].to_numpy()
    good = np.all(np.isfinite(q), axis=1)
    q, frame = q[good], frame[good]
    if len(q) == 0:
        return np.zeros((0, 3)), np.zeros(0, np.int64), np.zeros(0, np.int64)
    if "intensity" in vectors.columns:
        strength = -np.nan_to_num(vectors["intensity"].to_numpy(dtype=float)[good], nan=-np.inf)
    else:
        strength = np.arange(len(q), dtype=float)
    order = np.lexsort((strength, frame))  # strongest first within each pattern
    q, frame = q[order], frame[order]
    first = np.searchsorted(frame, frame, side="left")
    keep = np.arange(len(frame)) - first < max_peaks
    q, frame = q[keep], frame[keep]
    order = np.lexsort((q[:, 0], frame))
    q, frame = q[order], frame[order]
    count = np.unique(frame, return_counts=True)[1]
    keep = np.repeat(count >= min_peaks, count)  # rows of patterns with enough peaks
    q = np.ascontiguousarray(q[keep])
    count = count[count >= min_peaks]
    stop = np.cumsum(count)
    return q, (stop - count).astype(np.int64), stop.astype(np.int64)


@dataclass(frozen=True)
class _Data:
    """What the search measures from the peaks before proposing cells."""

    vectors: np.ndarray  # distinct difference vectors (m, 3), 1/A
    counts: np.ndarray  # times each was seen in its pattern
    pattern: np.ndarray  # pattern of each
    lengths: np.ndarray  # |vectors|
    hist: LengthHistogram
    shortest: float  # l1, 1/A
    sigma: float  # line width, 1/A
    score_length: float  # cells are scored on lengths up to this, 1/A
    lines: np.ndarray  # observed line positions up to score_length


def _measure(
    q: np.ndarray, start: np.ndarray, stop: np.ndarray, max_cell_a: float, max_length: float | None
) -> _Data:
    """Shortest line, distinct vectors, line width and the length histogram."""
    shortest = shortest_line(q, start, stop, 1.0 / max_cell_a)
    if not math.isfinite(shortest):
        raise DataError(
            "no lattice-vector length stands out among the within-pattern peak distances: "
            "too few peaks per pattern, or no common crystal form",
            field="qx",
        )
    top = _VECTOR_RANGE * shortest if max_length is None else max(max_length, 1.5 * shortest)
    capacity = np.minimum(pair_counts(q, start, stop, top), MAX_CLUSTERS)
    offset = np.concatenate([[0], np.cumsum(capacity)]).astype(np.int64)
    vectors, counts, pattern = distinct_vectors(
        q, start, stop, top, _CLUSTER_FRACTION * shortest, offset
    )
    used = counts > 0
    vectors, counts, pattern = vectors[used], counts[used], pattern[used]
    lengths = np.linalg.norm(vectors, axis=1)
    shortest, sigma = line_width(lengths, shortest)
    hist = length_histogram(lengths, 3.0 * sigma, top)
    score_length = min(_SCORE_RANGE * shortest, top)
    lines = find_lines(hist, lengths)
    return _Data(
        vectors, counts, pattern, lengths, hist, shortest, sigma, score_length,
        lines[lines <= score_length],
    )  # fmt: skip


def _propose(data: _Data, max_zones: int, n_psi: int) -> tuple[np.ndarray, np.ndarray]:
    """Candidate reciprocal metrics from pairs of zones, and the zones (seen twice or more)."""
    events = zone_events(data.vectors, data.counts, data.pattern, _ZONE_RANGE * data.shortest)
    zones = cluster_zones(events, data.hist.delta, max_zones)
    zones = zones[zones[:, 3] >= 2] if len(zones) else zones
    if len(zones) == 0:
        raise DataError(
            "no zone (pair of lattice vectors) is seen in two patterns: too few peaks per "
            "pattern or too few patterns to assemble a 3-D cell",
            field="frame",
        )
    metrics = combine_zones(
        zones, data.hist.window, data.hist.bin_width, data.score_length, data.hist.delta, n_psi
    )
    return metrics, zones


def _score(data: _Data, gstar: np.ndarray) -> np.ndarray:
    h = data.hist
    return score_metrics(
        np.ascontiguousarray(gstar.reshape(-1, 3, 3)), h.excess, h.bin_width, h.delta,
        data.score_length,
    )  # fmt: skip


def _same_lattice(g1: np.ndarray, g2: np.ndarray) -> bool:
    """Reduced metrics of (nearly) the same lattice: equal volume and edge lengths."""
    v1, v2 = math.sqrt(np.linalg.det(g1)), math.sqrt(np.linalg.det(g2))
    e1, e2 = np.sort(np.sqrt(np.diag(g1))), np.sort(np.sqrt(np.diag(g2)))
    return abs(v1 - v2) < 0.03 * v1 and bool(np.all(np.abs(e1 - e2) < 0.02 * e1))


def _rate(data: _Data, zones: np.ndarray, gstar: np.ndarray, score: float | None = None) -> float:
    """Line score times the fraction of zone sightings the metric explains."""
    if score is None:
        score = float(_score(data, gstar)[0])
    return score * zone_fraction(gstar, zones, data.hist.delta)


def _reduced_candidates(data: _Data, zones: np.ndarray, metrics: np.ndarray) -> list[np.ndarray]:
    """Distinct Niggli-reduced real metrics of the best-rated candidates, best first."""
    scores = _score(data, metrics)
    top = [k for k in np.argsort(-scores, kind="stable")[:_N_SCORED] if np.isfinite(scores[k])]
    rating = [_rate(data, zones, metrics[k], float(scores[k])) for k in top]
    out: list[np.ndarray] = []
    for i in np.argsort(-np.array(rating), kind="stable"):
        k = top[i]
        if np.linalg.det(metrics[k]) <= 0:
            continue
        reduced = niggli_metric(np.linalg.inv(metrics[k]))
        if reduced is None or any(_same_lattice(reduced, g) for g in out):
            continue
        out.append(reduced)
        if len(out) == _N_REFINED:
            break
    return out


def _select(
    data: _Data, zones: np.ndarray, metrics: np.ndarray
) -> tuple[np.ndarray, list[tuple[np.ndarray, float]]]:
    """Reduced real metric of the best-rated lattice, and the others with relative rating.

    The highest rating (line score times explained zone fraction) wins; ratings within
    1 % count as a tie, won by the smaller cell (a superlattice of the true reciprocal
    lattice rates almost as well).
    """
    rated = [
        (g, _rate(data, zones, np.linalg.inv(g))) for g in _reduced_candidates(data, zones, metrics)
    ]
    if not rated or max(s for _, s in rated) <= 0:
        raise DataError("no candidate cell explains the difference-vector lengths", field="qx")
    top = max(s for _, s in rated)
    tied = [(g, s) for g, s in rated if s >= top - _TIE * abs(top)]
    best = min(tied, key=lambda gs: np.linalg.det(gs[0]))[0]
    return best, [(g, s / top) for g, s in rated if g is not best]


def _stage_plans(data: _Data) -> tuple[tuple[tuple[float, float], ...], ...]:
    """Refinement schedules ``((longest vector, width factor), ...)`` tried per lattice.

    Both grow the range from ``2.5 l1`` to the end of the histogram; the second starts
    with a three times wider assignment window, which finds the lines from a rougher
    start but in dense patterns can merge neighbouring lines.  The refined cell with
    the higher line score is kept.
    """
    top, l1 = data.hist.max_length, data.shortest
    lengths = (*(min(f * l1, top) for f in (2.5, 3.5, 4.5)), top)
    return (
        tuple((length, 1.0) for length in lengths),
        tuple(zip(lengths, (3.0, 2.0, 1.0, 1.0), strict=True)),
    )


def _misfit(data: _Data, gstar: np.ndarray) -> float:
    """Mean truncated squared distance (in sigma) of vector lengths to the lattice's."""
    x = data.lengths[data.lengths <= data.score_length]
    _, calc = lattice_vectors(gstar, data.score_length + data.hist.delta)
    if len(x) == 0 or len(calc) < 2:
        return math.nan
    pos = np.clip(np.searchsorted(calc, x), 1, len(calc) - 1)
    distance = np.minimum(np.abs(x - calc[pos - 1]), np.abs(x - calc[pos]))
    return float(np.mean(np.minimum((distance / data.sigma) ** 2, _MISFIT_CAP)))


def _lattice_candidate(
    data: _Data, zones: np.ndarray, reduced: np.ndarray, match: BravaisMatch
) -> LatticeCandidate | None:
    """One Bravais lattice refined with its metric constraints, with figures of merit."""
    family = BRAVAIS[match.bravais][0]
    t = match.transform.astype(float)
    basis = np.einsum("ij,kjl,ml->kim", t, family_basis(family), t)  # G*_red = T G*_conv T^T
    fits = []
    for plan in _stage_plans(data):
        gstar, _, rms, _ = fit_metric(np.linalg.inv(reduced), basis, data.lengths, data.sigma, plan)
        if np.all(np.linalg.eigvalsh(gstar) > 0):
            fits.append((float(_score(data, gstar)[0]), rms, gstar))
    if not fits:
        return None
    score, rms, gstar = max(fits, key=lambda f: f[0])
    t_inv = np.linalg.inv(t)
    cell = cell_of_metric(np.linalg.inv(t_inv @ gstar @ t_inv.T))
    niggli = niggli_metric(np.linalg.inv(gstar))
    reduced_cell = cell_of_metric(niggli) if niggli is not None else None
    if cell is None or reduced_cell is None:
        return None
    m20, _ = de_wolff(gstar, data.lines)
    fraction = indexed_fraction(gstar, data.lengths, data.hist.delta, data.score_length)
    return LatticeCandidate(
        bravais=match.bravais,
        cell=cell,
        reduced=reduced_cell,
        deviation_deg=match.deviation_deg,
        figure_of_merit=m20,
        indexed_fraction=fraction,
        rms_residual=rms,
        line_score=score,
        misfit=_misfit(data, gstar),
        zones_explained=zone_fraction(gstar, zones, _ZONE_CHECK * data.sigma),
        transform=match.transform.copy(),
    )


def _rank(candidates: list[LatticeCandidate], tolerance: float) -> tuple[LatticeCandidate, ...]:
    """Best first: accepted lattices by decreasing symmetry, then the others by misfit.

    A lattice is accepted when its Le Page deviation is within ``tolerance`` and it
    fits the data about as well as the best candidate by either of two tests:

    * its misfit is at most 1 above the lowest misfit among the cells that explain the
      lines (line score at least 0.8 of the best; a fit that drifted into a wrong,
      denser lattice can match random vectors without explaining the lines);
    * it explains at least 85 % as many zone sightings (within 2 sigma) as the best.

    A symmetry the crystal does not have moves lengths and angles away from the observed
    ones: the pseudo-orthorhombic C cell of the monoclinic test crystal (2.1 degrees off)
    failed both tests in every data set.  Fits of *lower* symmetry than the crystal's
    split lines that coincide by symmetry and absorb noise or direction-dependent
    errors, which can lower their misfit by more than 1 (X-ray stills); the zone test
    is not fooled by that.
    """
    top = max(c.line_score for c in candidates)
    explaining = [
        c.misfit for c in candidates if math.isfinite(c.misfit) and c.line_score >= _EXPLAINS * top
    ]
    least = min(explaining) if explaining else math.nan
    zones = max(
        (c.zones_explained for c in candidates if math.isfinite(c.zones_explained)), default=0.0
    )

    def accepted(c: LatticeCandidate) -> bool:
        fits = c.misfit <= least + _MISFIT_MARGIN or c.zones_explained >= _ZONE_RATIO * zones
        return c.deviation_deg <= tolerance and bool(fits)

    def key(c: LatticeCandidate) -> tuple[int, float, float, float]:
        if accepted(c):
            return (0, -BRAVAIS[c.bravais][2], round(c.deviation_deg, 2), c.cell.volume)
        misfit = c.misfit if math.isfinite(c.misfit) else math.inf
        return (1, misfit, round(c.deviation_deg, 2), c.cell.volume)

    ranked = sorted(candidates, key=key)
    return tuple(replace(c, line_score=c.line_score / top, accepted=accepted(c)) for c in ranked)


def find_cell(
    vectors: pd.DataFrame,
    *,
    max_cell_a: float = 250.0,
    min_peaks: int = 3,
    max_peaks: int = 2000,
    min_frames: int = 20,
    max_length: float | None = None,
    max_deviation_deg: float = 3.0,
    max_zones: int = 60,
    n_psi: int = 180,
) -> CellSearch:
    """Reduced cell and ranked Bravais lattices from the peaks of many patterns.

    Parameters
    ----------
    vectors : DataFrame
        Peak scattering vectors with columns ``frame``, ``qx``, ``qy``, ``qz`` (1/A, lab
        frame), e.g. from :func:`crystalscope.index.peaks.peak_vectors`; all patterns of
        one crystal form.  Rows with non-finite ``q`` are ignored.
    max_cell_a : float
        Longest cell edge considered (A); lattice vectors shorter than ``1/max_cell_a``
        are not looked for.
    min_peaks : int
        Patterns with fewer peaks are not used.
    max_peaks : int
        Of a pattern with more peaks, only the ``max_peaks`` with the highest
        ``intensity`` (if that column exists, else the first) are used.
    min_frames : int
        Fewest usable patterns accepted.
    max_length : float, optional
        Longest difference vector used (1/A); default 6 times the shortest lattice
        vector.  Raise it for cells with very different edge lengths.
    max_deviation_deg : float
        Le Page tolerance (degrees): lattices within it that keep 95 % of the best line
        score are accepted and ranked by symmetry; the others follow by line score
        (lattices up to 5 degrees are listed).
    max_zones : int
        Most frequently seen zones that are combined into cells.
    n_psi : int
        Steps of the dihedral-angle scan over 0-180 degrees.

    Returns
    -------
    CellSearch
        Reduced cell, ranked :class:`LatticeCandidate` s, figures of merit;
        ``print(result.summary())`` shows the table.

    Raises
    ------
    DataError
        Missing columns, too few usable patterns, or no consistent lattice found.
    ConfigError
        Non-positive parameters.
    """
    t0 = time.perf_counter()
    _check_parameters(max_cell_a=max_cell_a, max_deviation_deg=max_deviation_deg)
    if max_length is not None:
        _check_parameters(max_length=max_length)
    _check_counts(
        min_peaks=min_peaks, max_peaks=max_peaks, min_frames=min_frames,
        max_zones=max_zones, n_psi=n_psi,
    )  # fmt: skip
    q, start, stop = _prepare(vectors, max(int(min_peaks), 2), int(max_peaks))
    if len(start) < min_frames:
        raise DataError(
            f"{len(start)} patterns have at least {min_peaks} peaks; cell finding needs "
            f"at least {min_frames}",
            field="frame",
        )
    data = _measure(q, start, stop, float(max_cell_a), max_length)
    result = _search(data, int(max_zones), int(n_psi), float(max_deviation_deg))
    return replace(result, n_frames_used=len(start), elapsed_s=time.perf_counter() - t0)


def _search(data: _Data, max_zones: int, n_psi: int, tolerance: float) -> CellSearch:
    """Zones, candidate cells, the search cell, and its ranked Bravais lattices."""
    metrics, zones = _propose(data, max_zones, n_psi)
    reduced, others = _select(data, zones, metrics)
    matches = bravais_matches(reduced, max_deviation_deg=max(_LISTED_DEVIATION, tolerance))
    found = [_lattice_candidate(data, zones, reduced, m) for m in matches]
    candidates = _rank([c for c in found if c is not None], tolerance)
    if not candidates:
        raise DataError("the best cell could not be refined against the vector lengths", field="qx")
    return CellSearch(
        reduced=candidates[0].reduced,
        candidates=candidates,
        n_frames_used=0,
        search_cell=cell_of_metric(reduced),
        n_vectors=len(data.vectors),
        n_zones=len(zones),
        shortest_line=data.shortest,
        sigma=data.sigma,
        lines=data.lines,
        alternatives=tuple((c, s) for g, s in others if (c := cell_of_metric(g)) is not None),
        max_deviation_deg=tolerance,
    )
