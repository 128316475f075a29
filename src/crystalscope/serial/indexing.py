"""SerialED indexing: cell refinement, orientation search, ambiguity, per-crystal table.

The input is the output of ``crystalscope serial preprocess``: a Dataset with per-frame
centres (as lateral detector shifts ``shift_x_mm``, ``shift_y_mm``), CXI peak lists and
the data set's elliptical distortion, and the ``detector.geom`` beside it.  Steps:

1. scattering vectors of the hits' peaks (:func:`crystalscope.index.peaks.peak_vectors`);
2. optionally the cell refined against the virtual powder pattern and pair-distance
   histogram of all peaks (:mod:`crystalscope.index.cell_refine`);
3. orientation indexing of every frame with enough peaks, up to ``max_lattices``
   crystals each (:mod:`crystalscope.index.stills`), through dask;
4. Miller indices of the peaks (:mod:`crystalscope.index.assign`) and, for space groups
   with a merohedral indexing ambiguity, a consistent setting across the data set from
   the peak intensities (:mod:`crystalscope.index.ambiguity`).

The result is the per-crystal table of the Dataset (CrystFEL stream column names:
``astar_x ... cstar_z`` in 1/A in the lab frame, cell, residual, detector shift).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import pandas as pd

from crystalscope.config import BeamConfig, relative_to_config
from crystalscope.dataset import Dataset
from crystalscope.errors import ConfigError, CrystalscopeError, DataError
from crystalscope.index.ambiguity import AmbiguityResult, ambiguity_operators, resolve_ambiguity
from crystalscope.index.assign import assign_peaks
from crystalscope.index.cell_refine import CellRefinement, refine_cell
from crystalscope.index.compare import BRAVAIS_SPACE_GROUPS, lattice_space_group
from crystalscope.index.compare import bravais_symbol as lattice_bravais
from crystalscope.index.peaks import peak_vectors
from crystalscope.index.powder import RadialHistograms, radial_histograms
from crystalscope.index.stills import IndexingParams, index_peaks
from crystalscope.io.crystfel_cell import UnitCellFile, read_cell
from crystalscope.io.crystfel_geom import read_geom
from crystalscope.model.crystal import crystfel_lattice, resolve_space_group
from crystalscope.model.detector import Detector
from crystalscope.serial.index_config import CellConfig, IndexConfig
from crystalscope.serial.preprocess import load_preprocessed_detector

__all__ = [
    "IndexingInput",
    "IndexingResult",
    "bravais_symbol",
    "cell_file",
    "hit_frames",
    "hit_vectors",
    "index_serial",
    "lattice_description",
    "open_indexing_input",
    "residual_histogram",
    "starting_cell",
    "with_lattice_columns",
]

_CRYSTFEL_SYSTEM = {
    "triclinic": "a", "monoclinic": "m", "orthorhombic": "o", "tetragonal": "t",
    "rhombohedral": "h", "hexagonal": "h", "cubic": "c",
}  # fmt: skip


@dataclass
class IndexingInput:
    """A pre-processed data set ready for indexing."""

    dataset: Dataset
    detector: Detector
    wavelength: float
    path: Path


@dataclass
class IndexingResult:
    """Everything :func:`index_serial` found.

    Attributes
    ----------
    dataset : Dataset
        The input with the per-crystal table set.
    detector : Detector
        Geometry used (with the data set's elliptical distortion).
    cell : gemmi.UnitCell
        Cell used for indexing (refined when asked).
    lattice : str
        Bravais lattice symbol, e.g. ``tP``.
    space_group : gemmi.SpaceGroup or None
        When configured.
    crystals : DataFrame
        One row per crystal (also ``dataset.crystals``).
    assigned : DataFrame
        Peaks with the crystal and Miller indices that explain them.
    vectors : DataFrame
        All peaks of the hits with their scattering vectors (``qx, qy, qz``, 1/A).
    histograms, refinement, ambiguity
        Intermediate results (None when the step did not run).
    """

    dataset: Dataset
    detector: Detector
    wavelength: float
    cell: gemmi.UnitCell
    lattice: str
    space_group: gemmi.SpaceGroup | None
    crystals: pd.DataFrame
    assigned: pd.DataFrame
    vectors: pd.DataFrame
    n_hits: int
    n_tried: int
    histograms: RadialHistograms | None = None
    refinement: CellRefinement | None = None
    ambiguity: AmbiguityResult | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def indexed_frames(self) -> np.ndarray:
        """Frame identifiers with at least one crystal."""
        return np.unique(self.crystals["frame"].to_numpy())

    def summary(self) -> str:
        """A few lines for the terminal."""
        n_idx = len(self.indexed_frames)
        rate = n_idx / self.n_tried if self.n_tried else 0.0
        multi = int((self.crystals.groupby("frame").size() > 1).sum()) if len(self.crystals) else 0
        c = self.cell
        lines = [
            f"cell ({self.lattice}): {c.a:.3f} {c.b:.3f} {c.c:.3f} A, "
            f"{c.alpha:.2f} {c.beta:.2f} {c.gamma:.2f} deg"
            + (" (refined)" if self.refinement is not None else ""),
            f"{self.n_hits} hits, {self.n_tried} with enough peaks, {n_idx} indexed "
            f"({100 * rate:.1f} %), {len(self.crystals)} crystals ({multi} frames with 2+)",
        ]
        if len(self.crystals):
            res = self.crystals["final_residual"].to_numpy(float)
            lines.append(
                f"median residual {np.nanmedian(res) * 1e3:.2f}e-3 1/A, median indexed peaks "
                f"{np.median(self.crystals['n_indexed']):.0f}"
            )
            lines += residual_histogram(res)
        if self.ambiguity is not None:
            lines.append(self.ambiguity.summary())
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"{self.seconds:.1f} s")
        return "\n".join(lines)


def residual_histogram(residuals: np.ndarray, n_bins: int = 8, width: int = 40) -> list[str]:
    """Text histogram of RMS residuals (1/A) for the terminal, one line per bin."""
    res = 1e3 * residuals[np.isfinite(residuals)]
    if res.size == 0:
        return []
    counts, edges = np.histogram(res, bins=n_bins)
    scale = width / max(int(counts.max()), 1)
    out = ["residuals (1e-3 1/A):"]
    for n, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        out.append(f"  {lo:6.3f}-{hi:6.3f} {'#' * round(float(n) * scale):<{width}} {n}")
    return out


def open_indexing_input(
    input_: Path | None,
    *,
    geometry: Path | None = None,
    beam: BeamConfig | None = None,
    base: Path | None = None,
) -> IndexingInput:
    """The pre-processed Dataset, its geometry (with ellipticity) and the wavelength.

    ``geometry`` defaults to the ``detector.geom`` beside the input; the wavelength is
    the beam's when given, else the geometry's.  Relative paths are taken from ``base``.
    """
    if input_ is None:
        raise ConfigError(
            "no input: give the preprocessed.h5 of `serial preprocess`", field="input"
        )
    path = relative_to_config(input_, base)
    if not path.is_file():
        raise CrystalscopeError("input file not found", path=path, field="input")
    geom = relative_to_config(geometry, base) if geometry else path.parent / "detector.geom"
    if not geom.is_file():
        raise CrystalscopeError(
            "no geometry: set `geometry` (the detector.geom written by serial preprocess)",
            path=geom, field="geometry",
        )  # fmt: skip
    ds = Dataset.open(path)
    detector = load_preprocessed_detector(ds, read_geom(geom))
    if beam is not None:
        resolved = beam.to_beam()
        assert resolved is not None
        wavelength = resolved.wavelength
    else:
        try:
            wavelength = detector.wavelength
        except DataError as exc:
            raise ConfigError(
                f"{exc.message}; give the beam (e.g. beam.voltage_kv: 200)", path=geom,
                field="beam",
            ) from exc  # fmt: skip
    return IndexingInput(ds, detector, wavelength, path)


def hit_frames(shots: pd.DataFrame) -> np.ndarray:
    """Frame identifiers of the hits (every frame when there is no ``hit`` column)."""
    frames = shots["frame"].to_numpy()
    return frames[shots["hit"].to_numpy(bool)] if "hit" in shots else frames


def hit_vectors(data: IndexingInput, client: Any = None) -> pd.DataFrame:
    """Scattering vectors of the peaks of the hits (all frames without a ``hit`` column).

    Raises
    ------
    DataError
        If the hits have no peaks.
    """
    shots = data.dataset.shots
    if "nPeaks" not in data.dataset:
        raise DataError(
            "no peak lists in this file: run `crystalscope serial preprocess` on it first",
            path=data.path, field="nPeaks",
        )  # fmt: skip
    peaks = data.dataset.peaks(client=client)
    peaks = peaks[peaks["frame"].isin(hit_frames(shots))].reset_index(drop=True)
    if peaks.empty:
        raise DataError("the data set has no peaks on its hits", path=data.path, field="peaks")
    return peak_vectors(peaks, data.detector, shots=shots, wavelength=data.wavelength)


def starting_cell(cfg: CellConfig, *, base: Path | None = None) -> tuple[gemmi.UnitCell, str]:
    """The configured cell and its Bravais lattice symbol (e.g. ``tP``)."""
    if cfg.file is not None:
        cell_file = read_cell(relative_to_config(cfg.file, base))
        cell = cell_file.cell
        lattice = cfg.lattice or cfg.space_group or _bravais_of_file(cell_file)
    else:
        assert cfg.parameters is not None
        cell = gemmi.UnitCell(*cfg.parameters)
        lattice = cfg.lattice or cfg.space_group or ""
    return cell, bravais_symbol(lattice)


def _bravais_of_file(cell_file: UnitCellFile) -> str:
    system = _CRYSTFEL_SYSTEM.get(cell_file.lattice_type)
    if system is None:
        raise ConfigError(f"unknown lattice_type {cell_file.lattice_type!r}", field="lattice_type")
    centring = cell_file.centering
    if cell_file.lattice_type == "rhombohedral" or centring == "H":  # R lattice, either axes
        centring = "R"
    return system + centring


def bravais_symbol(lattice: str) -> str:
    """Bravais symbol of a Bravais symbol or a space group (``P 43 21 2`` -> ``tP``)."""
    try:
        return lattice_bravais(lattice.strip())
    except CrystalscopeError as exc:
        raise ConfigError(
            f"{lattice!r} is neither a Bravais lattice ({', '.join(BRAVAIS_SPACE_GROUPS)}) nor a "
            "space group", field="cell.lattice",
        ) from exc  # fmt: skip


def _space_group(cfg: CellConfig) -> gemmi.SpaceGroup | None:
    name = cfg.space_group
    if name is None and cfg.lattice is not None and cfg.lattice.strip() not in BRAVAIS_SPACE_GROUPS:
        name = cfg.lattice
    return resolve_space_group(name) if name is not None else None


def _refine(
    vectors: pd.DataFrame, cell: gemmi.UnitCell, lattice: str, notes: list[str]
) -> tuple[RadialHistograms, CellRefinement | None]:
    hist = radial_histograms(vectors)
    try:
        return hist, refine_cell(hist, cell, lattice)
    except DataError as exc:
        notes.append(f"cell not refined ({exc.message}); the configured cell is used")
        return hist, None


def _ambiguity(
    assigned: pd.DataFrame,
    crystals: pd.DataFrame,
    cell: gemmi.UnitCell,
    sg: gemmi.SpaceGroup | None,
    cfg: IndexConfig,
    notes: list[str],
) -> tuple[pd.DataFrame, AmbiguityResult | None]:
    if sg is None or not cfg.ambiguity.resolve or len(crystals) < 2:
        return crystals, None
    if len(ambiguity_operators(cell, sg)) < 2:
        return crystals, None
    result = resolve_ambiguity(
        assigned, sg, cell, n_iterations=cfg.ambiguity.n_iterations, seed=cfg.ambiguity.seed
    )
    notes.append(f"indexing ambiguity resolved over {len(crystals)} crystals")
    return result.reindex_crystals(crystals), result


def index_serial(
    data: IndexingInput, cfg: IndexConfig, *, base: Path | None = None, client: Any = None
) -> IndexingResult:
    """Refine the cell, index every hit and resolve the ambiguity (module docstring).

    Raises
    ------
    DataError
        If the data set has no peaks or no frame has ``indexing.min_peaks`` peaks.
    ConfigError
        For an unusable cell or lattice.
    """
    t0 = time.perf_counter()
    notes: list[str] = []
    cell, lattice = starting_cell(cfg.cell, base=base)
    sg = _space_group(cfg.cell)
    vectors = hit_vectors(data, client)
    shots = data.dataset.shots
    n_hits = len(hit_frames(shots))
    peaks = vectors.drop(columns=["qx", "qy", "qz"])
    hist = refinement = None
    if cfg.cell.refine:
        hist, refinement = _refine(vectors, cell, lattice, notes)
        if refinement is not None:
            cell = refinement.cell
    ic = cfg.indexing
    params = IndexingParams(
        cell=cell, lattice=sg if sg is not None else lattice, profile_radius=ic.profile_radius,
        min_peaks=ic.min_peaks, max_lattices=ic.max_lattices, refine_cell=ic.refine_cell,
        d_min=ic.d_min,
    )  # fmt: skip
    crystals = index_peaks(
        peaks, data.detector, params, shots=shots, wavelength=data.wavelength, client=client,
        progress=cfg.compute.progress,
    )  # fmt: skip
    n_tried = int((peaks.groupby("frame").size() >= ic.min_peaks).sum())
    assigned = assign_peaks(vectors, crystals, max_distance=ic.assign_distance)
    crystals, ambiguity = _ambiguity(assigned, crystals, cell, sg, cfg, notes)
    if ambiguity is not None:
        assigned = assign_peaks(vectors, crystals, max_distance=ic.assign_distance)
    ds = data.dataset
    ds.crystals = crystals
    ds.meta["index"] = {
        "input": str(data.path), "wavelength": float(data.wavelength),
        "cell": list(cell.parameters), "lattice": lattice,
        "space_group": sg.xhm() if sg is not None else "",
    }  # fmt: skip
    return IndexingResult(
        ds, data.detector, data.wavelength, cell, lattice, sg, crystals, assigned, vectors, n_hits,
        n_tried, hist, refinement, ambiguity, time.perf_counter() - t0, notes,
    )  # fmt: skip


def lattice_description(lattice: str) -> tuple[str, str, str]:
    """CrystFEL's ``(lattice_type, centering, unique_axis)`` of a Bravais symbol (``hR``:
    hexagonal axes, centring ``H``) or a space group."""
    return crystfel_lattice(lattice_space_group(lattice))


def cell_file(cell: gemmi.UnitCell, lattice: str) -> UnitCellFile:
    """A CrystFEL unit cell file of ``cell`` (rounded to 1e-4 A and degrees) in the Bravais
    lattice ``lattice``."""
    rounded = gemmi.UnitCell(*(round(float(v), 4) for v in cell.parameters))
    return UnitCellFile.from_cell(rounded, *lattice_description(lattice))


def with_lattice_columns(crystals: pd.DataFrame, lattice: str) -> pd.DataFrame:
    """``lattice_type``, ``centering``, ``unique_axis`` (CrystFEL names) from a symbol."""
    out = crystals.copy()
    out["lattice_type"], out["centering"], out["unique_axis"] = lattice_description(lattice)
    return out
