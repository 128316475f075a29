"""Orientation indexing of still diffraction patterns for a known unit cell.

For every frame with enough peaks the orientation of up to ``max_lattices`` crystals of
a known cell is found by a global search that needs no zone axis (pairs of observed
scattering vectors matched to pairs of lattice vectors of equal length and angle, as in
TakeTwo, Ginn et al. 2016), refined by least squares (orientation, lateral detector
shift, optionally the cell, and the profile radius) and accepted only when the solution
is unambiguous.  The method, its equations and its measured accuracy are in
``docs/algorithms/indexing.md``.

Conventions (``docs/conventions.md``): ``UB`` has ``a*, b*, c*`` as columns in the lab
frame (1/A), ``q = UB h``; peaks are raw-array pixel-centre ``(fs, ss)`` positions; the
shift ``(dx, dy)`` in mm moves the detector laterally as in
:meth:`~crystalscope.model.detector.Detector.pixel_to_lab`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import gemmi
import numpy as np
import pandas as pd

from crystalscope.config import ComputeConfig
from crystalscope.errors import ConfigError, DataError
from crystalscope.index._stills_flat import bowl_twin, flat_sphere_fits, is_flat
from crystalscope.index._stills_judge import (
    choose_fit,
    distinct_fits,
    log_background,
    log_likelihood,
)
from crystalscope.index._stills_refine import (
    Fit,
    FitOptions,
    Model,
    cell_groups,
    indexed_mask,
    refine_lattice,
)
from crystalscope.index._stills_search import (
    SearchOptions,
    search_orientations,
)
from crystalscope.index._stills_setup import (
    FrameGeometry,
    frame_geometry,
    lattice_rotations,
)
from crystalscope.index.compare import LatticeLike, lattice_space_group
from crystalscope.model.crystal import crystfel_lattice, make_cell
from crystalscope.model.detector import Detector

__all__ = ["CRYSTAL_TABLE_COLUMNS", "IndexingParams", "Solution", "index_frame", "index_peaks"]

_N_REFINE = 4  # candidates refined by least squares per lattice
_N_PAIR = 6  # seed vectors paired with each other in the first search
_COMPLETE = 0.8  # a lattice indexing this fraction of the peaks ends the searches
_MAX_RMS_FRACTION = 0.5  # of tolerance_px: largest RMS residual of an accepted lattice
_UB_COLUMNS = [f"{v}star_{x}" for v in "abc" for x in "xyz"]


@dataclass(frozen=True)
class IndexingParams:
    """What to index and how.

    Attributes
    ----------
    cell : gemmi.UnitCell
        The known cell (A, degrees), in the setting of ``lattice``.
    lattice : str or int or gemmi.SpaceGroup
        Space group or Bravais symbol (``"tP"``); its centring limits the lattice vectors
        and its holohedry says which orientations are equivalent.
    profile_radius : float
        Starting (or, without ``refine_profile_radius``, fixed) largest excitation error
        of an indexed peak, 1/A.
    min_peaks : int
        Frames (and, for a second lattice, the peaks left over) with fewer usable peaks
        are not indexed; a lattice must index at least this many peaks.
    max_lattices : int
        Crystals sought per frame (1 or 2; more are allowed).
    refine_cell : bool
        Refine the cell parameters of the Bravais lattice per crystal (with a 1 % prior).
    refine_profile_radius : bool
        Replace the profile radius by ``3 sigma_s`` of the crystal's excitation errors.
    refine_shift : bool
        Refine the lateral detector shift (beam-centre error) per frame.
    d_min : float or None
        Ignore peaks at resolution better than this (A).
    tolerance_px : float
        Largest distance in pixels between an indexed peak and its predicted position.
    shift_uncertainty_px : float
        Expected error of the starting beam centre in pixels (widens the search).
    max_shift_px : float
        Solutions whose refined shift exceeds this many pixels are rejected.
    min_fraction : float
        Smallest fraction of the frame's usable peaks a first lattice must index.
    min_confidence : float
        Solutions with a lower :attr:`Solution.confidence` are rejected.
    n_seed_vectors : int
        Number of shortest observed vectors paired in the global search.
    """

    cell: gemmi.UnitCell
    lattice: LatticeLike
    profile_radius: float = 0.005
    min_peaks: int = 10
    max_lattices: int = 2
    refine_cell: bool = False
    refine_profile_radius: bool = True
    refine_shift: bool = True
    d_min: float | None = None
    tolerance_px: float = 1.0
    shift_uncertainty_px: float = 1.0
    max_shift_px: float = 10.0
    min_fraction: float = 0.25
    min_confidence: float = 0.2
    n_seed_vectors: int = 10
    _hall: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.cell, gemmi.UnitCell):
            raise ConfigError(
                f"cell must be a gemmi.UnitCell, got {type(self.cell).__name__}", field="cell"
            )
        try:
            make_cell(*self.cell.parameters)
        except DataError as exc:
            raise ConfigError(exc.message, field="cell") from None
        try:
            hall = lattice_space_group(self.lattice).hall
        except DataError as exc:
            raise ConfigError(exc.message, field="lattice") from None
        object.__setattr__(self, "_hall", hall)
        _check_positive(self, ("profile_radius", "tolerance_px", "max_shift_px"))
        _check_non_negative(self, ("shift_uncertainty_px", "min_fraction", "min_confidence"))
        for name, low in (("min_peaks", 3), ("max_lattices", 1), ("n_seed_vectors", 3)):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or value < low:
                raise ConfigError(f"must be an integer >= {low}, got {value!r}", field=name)
        d_min = self.d_min
        if d_min is not None and not (
            isinstance(d_min, int | float) and math.isfinite(d_min) and d_min > 0
        ):
            raise ConfigError(f"must be a positive number of A, got {self.d_min}", field="d_min")

    @property
    def space_group(self) -> gemmi.SpaceGroup:
        """The space group of :attr:`lattice` (a representative for Bravais symbols)."""
        return gemmi.find_spacegroup_by_ops(gemmi.symops_from_hall(self._hall))


def _check_positive(params: IndexingParams, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(params, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ConfigError(f"must be a positive number, got {value!r}", field=name)


def _check_non_negative(params: IndexingParams, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(params, name)
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"must be a number >= 0, got {value!r}", field=name)


@dataclass(frozen=True)
class Solution:
    """One crystal found on a frame.

    Attributes
    ----------
    UB : (3, 3)
        Orientation matrix, columns a*, b*, c* in the lab frame (1/A).
    n_indexed : int
        Peaks indexed by this crystal.
    rms_residual : float
        RMS distance of indexed peaks from their predicted positions on the Ewald
        sphere (1/A).
    confidence : float
        0..1; ``1 - exp(-evidence per indexed peak)`` for this lattice against the best
        distinct alternative explanation of the same peaks (log-likelihood ratio, see
        :mod:`crystalscope.index._stills_judge`); near 0 for ambiguous patterns.
    shift_mm : (float, float)
        Refined lateral detector shift ``(dx, dy)`` of the frame (mm, total).
    profile_radius : float
        Largest excitation error of an indexed peak (1/A).
    indexed : (n,) bool
        Per input peak.
    hkl : (n, 3) int
        Miller indices per input peak (zeros where not indexed).
    cell : tuple
        The crystal's cell ``(a, b, c, alpha, beta, gamma)`` (refined or the given one).
    rms_excitation : float
        RMS excitation error of indexed peaks (1/A).
    """

    UB: np.ndarray
    n_indexed: int
    rms_residual: float
    confidence: float
    shift_mm: tuple[float, float]
    profile_radius: float
    indexed: np.ndarray
    hkl: np.ndarray
    cell: tuple[float, float, float, float, float, float]
    rms_excitation: float


def _search_options(params: IndexingParams) -> SearchOptions:
    return SearchOptions(
        tolerance_px=params.tolerance_px,
        shift_uncertainty_px=params.shift_uncertainty_px,
        profile_radius=params.profile_radius,
        n_seed_vectors=params.n_seed_vectors,
        min_angle_deg=15.0,
        max_seeds=4096,
        n_refine=40,
        distinct_deg=2.0,
    )


def _fit_options(params: IndexingParams, px_mm: float) -> FitOptions:
    sg = params.space_group
    system = sg.crystal_system_str()
    axis = sg.monoclinic_unique_axis() if system == "monoclinic" else "b"
    return FitOptions(
        tolerance_px=params.tolerance_px,
        profile_radius=params.profile_radius,
        refine_shift=params.refine_shift,
        refine_cell=params.refine_cell,
        refine_profile_radius=params.refine_profile_radius,
        cell_groups=cell_groups(system, axis, sg.ext == "R"),
        max_shift_mm=params.max_shift_px * px_mm,
        min_indexed=params.min_peaks,
    )


@dataclass(frozen=True)
class _Pass:
    """One search of a lattice: the peaks' geometry at a starting shift ``offset`` (mm,
    relative to the frame's given shift), the beam-centre allowance in pixels and how
    many seed vectors (and of them, vectors paired) to use."""

    geom: FrameGeometry
    offset: np.ndarray
    shift_uncertainty_px: float
    n_seed_vectors: int
    n_pair_vectors: int


def _index_lattice(
    passes: list[_Pass], params: IndexingParams, opts: FitOptions, n_usable: int, first: bool
) -> tuple[Fit, float, np.ndarray] | None:
    """Search, refine and judge one lattice.  Returns the fit, its confidence and its
    pass offset, or None.

    Passes are tried in order until one gives an acceptable lattice that indexes at
    least :data:`_COMPLETE` of the peaks searched; otherwise the acceptable lattice
    with the highest log-likelihood (``_stills_judge``) over all passes is taken (a
    lattice leaving many peaks unexplained may be a partial solution that a later
    search improves on).
    """
    best: tuple[Fit, float, np.ndarray] | None = None
    best_ll = -np.inf
    for attempt in passes:
        found = _try_lattice(attempt, params, opts)
        if found is None:
            continue
        fit, confidence, ll = found
        if ll > best_ll:
            best, best_ll = (fit, confidence, attempt.offset), ll
        if fit.n_indexed >= _COMPLETE * len(attempt.geom.px_q):
            break
    if best is None or (first and best[0].n_indexed < params.min_fraction * n_usable):
        return None
    return best


def _try_lattice(
    attempt: _Pass, params: IndexingParams, opts: FitOptions
) -> tuple[Fit, float, float] | None:
    """One search: the best acceptable lattice, its confidence and log-likelihood."""
    parameters = tuple(params.cell.parameters)
    geom = attempt.geom
    search = replace(
        _search_options(params),
        shift_uncertainty_px=attempt.shift_uncertainty_px,
        n_seed_vectors=attempt.n_seed_vectors,
        n_pair_vectors=attempt.n_pair_vectors,
    )
    cands = search_orientations(
        geom.q(np.zeros(2)), geom.px_q, geom.wavelength, parameters, params._hall, search
    )
    if not cands:
        return None
    cell0 = np.array(parameters, dtype=float)
    fits: list[Fit] = []
    for cand in cands[:_N_REFINE]:
        shift0 = geom.shift_for_offset(cand.offset)
        floor = max((f.n_indexed for f in fits), default=0) // 2
        fit = refine_lattice(cand.rot, cell0, geom, opts, shift0, floor)
        if fit is not None and not bowl_twin(fit):
            fits.append(fit)
    if not fits:
        return None
    sym = lattice_rotations(parameters, params._hall)
    q_max = float(np.max(np.linalg.norm(geom.q(np.zeros(2)), axis=1)))
    log_bg = log_background(q_max, params.profile_radius)
    if is_flat(geom):
        fits = flat_sphere_fits(fits, geom, cell0, params._hall, opts, search, log_bg)
    best, confidence = choose_fit(distinct_fits(fits, sym, 1.0), log_bg)
    if best.n_indexed < params.min_peaks or confidence < params.min_confidence:
        return None
    if best.rms_residual_px > _MAX_RMS_FRACTION * params.tolerance_px:
        return None  # residuals spread like chance coincidences over the tolerance disc
    return best, confidence, log_likelihood(best, log_bg)


def index_frame(
    peaks: pd.DataFrame,
    detector: Detector,
    params: IndexingParams,
    *,
    wavelength: float | None = None,
    shift_mm: tuple[float, float] = (0.0, 0.0),
) -> list[Solution]:
    """Find the orientations of up to ``params.max_lattices`` crystals on one still.

    Parameters
    ----------
    peaks : DataFrame
        Peaks of one frame: ``fs``, ``ss`` (raw-array pixels, pixel-centre origin) and
        optionally ``panel``.  Non-finite positions and peaks off the panels are ignored.
    detector : Detector
        Resolved geometry (with its elliptical distortion, if any).
    params : IndexingParams
        Cell, lattice and settings.
    wavelength : float, optional
        Angstrom; default the detector's.
    shift_mm : (float, float)
        Starting lateral detector shift (mm), e.g. from the frame's found centre.

    Returns
    -------
    list of Solution
        Accepted crystals, first found first; empty when the frame has too few peaks or
        no reliable solution.

    Raises
    ------
    DataError
        For a peak table without ``fs``/``ss`` or a geometry without wavelength.
    """
    for name in ("fs", "ss"):
        if name not in peaks.columns:
            raise DataError(f"peak table has no column {name!r}", field=name)
    lam = detector._wavelength(wavelength)
    n_in = len(peaks)
    if n_in < params.min_peaks:
        return []
    geom, usable = frame_geometry(peaks, detector, lam, shift_mm)
    rows = np.flatnonzero(usable)
    if params.d_min is not None and len(rows):
        keep = np.linalg.norm(geom.q(np.zeros(2)), axis=1) <= 1.0 / params.d_min
        geom, rows = geom.subset(keep), rows[keep]
    opts = _fit_options(params, detector.panels[0].pixel_size_mm)
    base = np.array(shift_mm, dtype=float)
    return [
        _solution(f.fit, f.confidence, rows[f.rows], n_in, base + f.offset)
        for f in _find_lattices(geom, params, opts)
    ]


@dataclass(frozen=True)
class _Found:
    """An accepted lattice: its fit on the peaks ``rows`` (mask over the frame's usable
    peaks) of a pass that started ``offset`` mm from the frame's shift."""

    fit: Fit
    confidence: float
    offset: np.ndarray
    rows: np.ndarray

    def model(self) -> Model:
        """The fitted model with its shift relative to the frame's start."""
        return replace(self.fit.model, shift=self.offset + self.fit.model.shift)


def _find_lattices(geom: FrameGeometry, params: IndexingParams, opts: FitOptions) -> list[_Found]:
    """Index lattices one after the other on the peaks earlier ones left over.

    When a later lattice also explains at least half of the peaks of an earlier one, the
    earlier one was a partial (wrong) solution: it is dropped and the later lattice is
    refined again on both peak sets (once per frame).
    """
    found: list[_Found] = []
    free = np.ones(len(geom.px_q), dtype=bool)
    start: np.ndarray | None = None
    merged = False
    while len(found) < params.max_lattices and free.sum() >= params.min_peaks:
        result = _index_lattice(
            _passes(geom.subset(free), params, start), params, opts, len(free), not found
        )
        if result is None:
            break
        fit, confidence, offset = result
        rows = np.zeros(len(free), dtype=bool)
        rows[np.flatnonzero(free)[fit.indexed]] = True
        new = _Found(fit, confidence, offset, rows)
        spurious = [f for f in found if _explains(new, f, geom, opts)]
        if spurious and not merged:
            merged = True
            new = _merge(new, spurious, geom, params, opts) or new
            found = [f for f in found if all(f is not g for g in spurious)]
        found.append(new)
        free &= ~new.rows
        for f in found:
            free &= ~f.rows
        if start is None and params.refine_shift:  # later lattices start from this centre
            start = new.offset + new.fit.model.shift
    return found


def _explains(new: _Found, old: _Found, geom: FrameGeometry, opts: FitOptions) -> bool:
    """Whether ``new`` indexes at least half of the peaks of ``old``."""
    mask = indexed_mask(new.model(), geom.subset(old.rows), opts)
    return bool(mask.sum() >= 0.5 * old.rows.sum())


def _merge(
    new: _Found, old: list[_Found], geom: FrameGeometry, params: IndexingParams, opts: FitOptions
) -> _Found | None:
    """``new`` refined again on its own peaks plus those of the lattices in ``old``."""
    rows = new.rows.copy()
    for f in old:
        rows |= f.rows
    model = new.model()
    cell0 = np.array(params.cell.parameters, dtype=float)
    fit = refine_lattice(model.rot, cell0, geom.subset(rows), opts, model.shift)
    if fit is None:
        return None
    out = np.zeros(len(rows), dtype=bool)
    out[np.flatnonzero(rows)[fit.indexed]] = True
    return _Found(fit, new.confidence, np.zeros(2), out)


def _passes(geom: FrameGeometry, params: IndexingParams, start: np.ndarray | None) -> list[_Pass]:
    """Searches to try, until one gives an acceptable lattice.

    1. From the given centre (for a second crystal: the first crystal's refined centre)
       with the configured allowance and seeds.
    2. With twice the seed vectors and 10 of them paired (several lattices, or many
       false peaks, leave fewer seeds of each lattice).
    3. From the given centre with a 2.5 times wider beam-centre allowance.
    """
    zero = np.zeros(2)
    unc, n_seed = params.shift_uncertainty_px, params.n_seed_vectors
    n_pair = min(n_seed, _N_PAIR)
    moved, offset = (geom, zero) if start is None else (geom.moved(start), start)
    return [
        _Pass(moved, offset, unc, n_seed, n_pair),
        _Pass(moved, offset, unc, 2 * n_seed, max(n_pair, 10)),
        _Pass(geom, zero, 2.5 * unc, n_seed, n_pair),
    ]


def _solution(
    fit: Fit, confidence: float, taken: np.ndarray, n_in: int, base: np.ndarray
) -> Solution:
    """The solution of ``fit``, whose indexed peaks are the input rows ``taken``
    (ascending, in the order of ``fit.indexed``); ``base`` is the total starting shift."""
    indexed = np.zeros(n_in, dtype=bool)
    indexed[taken] = True
    hkl = np.zeros((n_in, 3), dtype=np.int64)
    hkl[taken] = fit.hkl[fit.indexed]
    shift = base + fit.model.shift
    cell = tuple(float(v) for v in fit.model.cell)
    return Solution(
        UB=fit.model.ub,
        n_indexed=fit.n_indexed,
        rms_residual=fit.rms_residual,
        confidence=float(confidence),
        shift_mm=(float(shift[0]), float(shift[1])),
        profile_radius=float(fit.model.profile_radius),
        indexed=indexed,
        hkl=hkl,
        cell=cell,  # type: ignore[arg-type]
        rms_excitation=fit.rms_excitation,
    )


#: Columns of :func:`index_peaks` (CrystFEL stream names where they exist, UB in 1/A).
CRYSTAL_TABLE_COLUMNS: tuple[str, ...] = (
    "frame", "crystal", "a", "b", "c", "alpha", "beta", "gamma", *_UB_COLUMNS,
    "lattice_type", "centering", "unique_axis", "profile_radius", "final_residual",
    "det_shift_x_mm", "det_shift_y_mm", "n_indexed", "n_peaks", "confidence",
)  # fmt: skip

_FRAMES_PER_TASK = 16  # frames indexed per dask task (amortises scheduling)


def _frame_starts(frames: np.ndarray, shots: pd.DataFrame | None) -> np.ndarray:
    """Starting shift ``(dx, dy)`` (mm) per frame from the shots table (0 where NaN)."""
    if shots is None:
        return np.zeros((len(frames), 2))
    for name in ("frame", "shift_x_mm", "shift_y_mm"):
        if name not in shots.columns:
            raise DataError(f"shots table has no column {name!r}", field=name)
    table = shots.set_index("frame")[["shift_x_mm", "shift_y_mm"]]
    if not table.index.is_unique:
        raise DataError("shots table has repeated frame identifiers", field="frame")
    missing = ~np.isin(frames, table.index.to_numpy())
    if missing.any():
        raise DataError(
            f"peak frame {frames[missing][0]!r} is not in the shots table", field="frame"
        )
    shift = table.loc[frames].to_numpy(dtype=float)
    return np.where(np.isfinite(shift), shift, 0.0)


def _index_block(
    blocks: list[tuple[Any, pd.DataFrame, np.ndarray]],
    detector: Detector,
    params: IndexingParams,
    wavelength: float,
) -> list[dict[str, Any]]:
    """Index a block of frames; one row (dict) per crystal."""
    lattice_type, centering, unique_axis = crystfel_lattice(params.space_group)
    rows = []
    for frame, peaks, start in blocks:
        shift = (float(start[0]), float(start[1]))
        try:
            solutions = index_frame(peaks, detector, params, wavelength=wavelength, shift_mm=shift)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            # one frame's numerical failure must not stop a run of millions of frames
            warnings.warn(f"frame {frame}: indexing failed ({exc}); left unindexed", stacklevel=1)
            continue
        for number, sol in enumerate(solutions):
            row: dict[str, Any] = {"frame": frame, "crystal": number}
            cell = gemmi.UnitCell(*_cell_of(sol.UB))
            row.update(zip(("a", "b", "c", "alpha", "beta", "gamma"), cell.parameters, strict=True))
            row.update({name: float(sol.UB[k % 3, k // 3]) for k, name in enumerate(_UB_COLUMNS)})
            row.update(
                lattice_type=lattice_type, centering=centering, unique_axis=unique_axis,
                profile_radius=sol.profile_radius, final_residual=sol.rms_residual,
                det_shift_x_mm=sol.shift_mm[0], det_shift_y_mm=sol.shift_mm[1],
                n_indexed=sol.n_indexed, n_peaks=len(peaks), confidence=sol.confidence,
            )  # fmt: skip
            rows.append(row)
    return rows


def _cell_of(ub: np.ndarray) -> tuple[float, ...]:
    """Cell parameters (A, degrees) of ``UB`` from its real-space metric."""
    real = np.linalg.inv(ub)  # rows a, b, c (lab frame, A)
    g = real @ real.T
    lengths = np.sqrt(np.diag(g))
    angles = [
        math.degrees(math.acos(float(np.clip(g[i, j] / (lengths[i] * lengths[j]), -1, 1))))
        for i, j in ((1, 2), (0, 2), (0, 1))
    ]
    return (*(float(v) for v in lengths), *angles)


def index_peaks(
    peaks: pd.DataFrame,
    detector: Detector,
    params: IndexingParams,
    *,
    shots: pd.DataFrame | None = None,
    wavelength: float | None = None,
    client: Any = None,
    progress: bool = False,
    compute_config: ComputeConfig | None = None,
) -> pd.DataFrame:
    """Index every frame of a peak table through dask (local threads or a cluster).

    Parameters
    ----------
    peaks : DataFrame
        Columns ``frame``, ``fs``, ``ss`` (raw-array pixel-centre), optionally ``panel``.
    detector : Detector
        Resolved geometry.
    params : IndexingParams
        Cell, lattice and settings.
    shots : DataFrame, optional
        Per-frame ``frame``, ``shift_x_mm``, ``shift_y_mm`` (the found pattern centres,
        NaN counts as 0): each frame's starting shift.
    wavelength : float, optional
        Angstrom; default the detector's.
    client : distributed.Client, optional
        Run on this cluster instead of local threads.
    progress : bool
        Show a progress bar (on a terminal).
    compute_config : ComputeConfig, optional
        Scheduler and number of workers (:class:`crystalscope.config.ComputeConfig`);
        default local threads on all cores.  ``progress`` overrides its ``progress``.

    Returns
    -------
    DataFrame
        One row per crystal, columns :data:`CRYSTAL_TABLE_COLUMNS`: ``frame``,
        ``crystal`` (0, 1 within the frame), cell (A, degrees, from ``UB``),
        ``astar_x`` ... ``cstar_z`` (1/A, lab frame; column ``j`` of ``UB`` is
        ``a*``, ``b*``, ``c*``), CrystFEL's ``lattice_type``, ``centering``,
        ``unique_axis``, ``profile_radius`` and ``final_residual`` (RMS residual, 1/A),
        ``det_shift_x_mm``, ``det_shift_y_mm`` (total shift), ``n_indexed``, ``n_peaks``
        and ``confidence``.

    Raises
    ------
    DataError
        Missing columns, frames missing from ``shots``, or no wavelength.
    """
    for name in ("frame", "fs", "ss"):
        if name not in peaks.columns:
            raise DataError(f"peak table has no column {name!r}", field=name)
    lam = detector._wavelength(wavelength)
    frames = np.unique(peaks["frame"].to_numpy())
    starts = _frame_starts(frames, shots)
    groups = dict(tuple(peaks.groupby("frame", sort=True)))
    work = [
        (frame, groups[frame], start)
        for frame, start in zip(frames, starts, strict=True)
        if len(groups[frame]) >= params.min_peaks
    ]
    config = (compute_config or ComputeConfig()).model_copy(update={"progress": progress})
    rows = _compute(work, (detector, params), lam, client, config)
    table = pd.DataFrame(rows, columns=list(CRYSTAL_TABLE_COLUMNS))
    for name in ("crystal", "n_indexed", "n_peaks"):
        table[name] = table[name].astype(np.int64)
    return table


def _compute(
    work: list[tuple[Any, pd.DataFrame, np.ndarray]],
    shared: tuple[Detector, IndexingParams],
    wavelength: float,
    client: Any,
    config: ComputeConfig,
) -> list[dict[str, Any]]:
    """Index ``work`` (frame, peaks, start) in dask tasks of :data:`_FRAMES_PER_TASK`."""
    import dask

    from crystalscope.parallel import compute

    blocks = [work[i : i + _FRAMES_PER_TASK] for i in range(0, len(work), _FRAMES_PER_TASK)]
    if client is not None:
        held: Any = client.scatter(shared, broadcast=True)
    else:
        held = dask.delayed(shared, pure=True)
    tasks = [dask.delayed(_run_block, pure=True)(block, held, wavelength) for block in blocks]
    outputs = compute(*tasks, config=config, client=client, description="indexing")
    return [row for out in outputs for row in out]


def _run_block(
    block: list[tuple[Any, pd.DataFrame, np.ndarray]],
    shared: tuple[Detector, IndexingParams],
    wavelength: float,
) -> list[dict[str, Any]]:
    return _index_block(block, shared[0], shared[1], wavelength)
