"""Figures of the HTML run report (:mod:`crystalscope.serial.report`), as data URIs.

Every figure is drawn with matplotlib's object interface on the Agg canvas (no pyplot
state, no display) and embedded in the page as a base64 PNG ``data:`` URI, so that the
report is one self-contained file.  Plots that other modules already draw (the virtual
powder pattern, the merging statistics with the Wilson plot, the per-crystal scales) are
reused from there.
"""

from __future__ import annotations

import base64
import io
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crystalscope.dataset import Dataset
from crystalscope.index.cell_refine import predicted_lines
from crystalscope.index.powder import RadialHistograms, plot_radial_histograms, radial_histograms
from crystalscope.io.crystfel_geom import read_geom
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.serial.ellipticity import draw_polar, polar_histogram
from crystalscope.serial.index_output import index_output_paths
from crystalscope.serial.indexing import IndexingInput, hit_vectors
from crystalscope.serial.preprocess import load_preprocessed_detector

__all__ = [
    "PolarPeaks",
    "figure_data_uri",
    "file_data_uri",
    "plot_ellipse_series",
    "plot_frames",
    "plot_polar",
    "plot_powder",
    "png_data_uri",
    "powder_histograms",
    "powder_range",
    "powder_vectors",
    "written_png_uri",
]

#: Resolution of the embedded figures (dots per inch).
DPI = 80
#: Pair lines that set the shown range of the powder pattern (as the cell refinement).
POWDER_LINES = 150


def png_data_uri(data: bytes) -> str:
    """``data:image/png;base64,...`` of PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_data_uri(fig: Figure, *, dpi: int = DPI) -> str:
    """A figure as a PNG data URI (drawn on an Agg canvas)."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return png_data_uri(buffer.getvalue())


def file_data_uri(path: str | Path) -> str:
    """A PNG file on disk as a data URI."""
    return png_data_uri(Path(path).read_bytes())


def written_png_uri(write: Callable[[Path], Any]) -> str:
    """The PNG that ``write(path)`` writes (into a temporary folder), as a data URI.

    For the plotting functions of other modules that only write files, e.g.
    :func:`crystalscope.merge.plots.plot_statistics`.
    """
    with tempfile.TemporaryDirectory(prefix="crystalscope-report-") as folder:
        path = Path(folder) / "figure.png"
        write(path)
        return file_data_uri(path)


def _separators(ax: Any, boundaries: Sequence[int]) -> None:
    """Thin vertical lines where the frames of the next input directory start."""
    for x in boundaries:
        ax.axvline(x - 0.5, color="0.75", lw=0.6, zorder=0)


def plot_frames(shots: pd.DataFrame, boundaries: Sequence[int] = ()) -> Figure:
    """Pattern centre (``centre_fs``, ``centre_ss``) and peaks per frame over the run.

    Parameters
    ----------
    shots : DataFrame
        Concatenated shots tables with ``position`` (running frame number over all
        directories), ``centre_fs``, ``centre_ss``, ``num_peaks`` and ``hit``.
    boundaries : sequence of int
        Positions where a further directory's frames begin (drawn as grey lines).

    Returns
    -------
    Figure
    """
    fig = Figure(figsize=(11, 7.5), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True)
    x = shots["position"].to_numpy()
    hit = shots["hit"].to_numpy(bool)
    for ax, column in zip(axes[:2], ("centre_fs", "centre_ss"), strict=True):
        values = shots[column].to_numpy(float)
        ax.plot(x[~hit], values[~hit], ".", ms=3, color="0.6", label="non-hit")
        ax.plot(x[hit], values[hit], ".", ms=3, color="tab:blue", label="hit")
        ax.set_ylabel(f"{column} (px)")
        ax.grid(alpha=0.3)
    axes[0].set_title("pattern centre per frame (panel 0 pixels, pixel-centre origin)")
    axes[0].legend(loc="upper right", fontsize=8)
    peaks = shots["num_peaks"].to_numpy(float)
    axes[2].plot(x[~hit], peaks[~hit], ".", ms=3, color="0.6", label="non-hit")
    axes[2].plot(x[hit], peaks[hit], ".", ms=3, color="tab:orange", label="hit")
    axes[2].set(xlabel="frame (running number over the run)", ylabel="peaks")
    axes[2].set_title("peaks per frame")
    axes[2].legend(loc="upper right", fontsize=8)
    axes[2].grid(alpha=0.3)
    for ax in axes:
        _separators(ax, boundaries)
    return fig


def powder_range(top: float, cell: gemmi.UnitCell | None, lattice: str | None) -> float:
    """The largest ``1/d`` shown: the :data:`POWDER_LINES`-th pair line of the cell (the
    cell refinement's default range), at most ``top``; ``top`` without a cell."""
    if cell is None:
        return top
    # lattice vectors within s: about 4/3 pi s^3 V; widen until enough distinct lengths
    s_max = (3.0 * POWDER_LINES / (4.0 * np.pi * cell.volume)) ** (1.0 / 3.0)
    while True:
        s_max = min(2.0 * s_max, top)
        lines = predicted_lines(cell, lattice or "aP", max_one_over_d=s_max, kind="pairs")
        s = lines["one_over_d"].to_numpy(float)
        if len(s) >= POWDER_LINES:
            return min(top, float(s[POWDER_LINES - 1]) * 1.02)
        if s_max >= top:
            return top


def powder_histograms(
    vectors: pd.DataFrame, cell: gemmi.UnitCell | None, lattice: str | None
) -> RadialHistograms:
    """Virtual powder pattern and pair-distance histogram of ``vectors`` over the range of
    :func:`powder_range` (pairs beyond it are never computed)."""
    q = vectors[["qx", "qy", "qz"]].to_numpy(float)
    s = np.linalg.norm(q[np.all(np.isfinite(q), axis=1)], axis=1)
    if s.size == 0:
        return radial_histograms(vectors)  # raises the DataError that names the problem
    return radial_histograms(vectors, max_one_over_d=powder_range(float(s.max()), cell, lattice))


def plot_powder(hist: RadialHistograms, cell: gemmi.UnitCell | None, lattice: str | None) -> Figure:
    """The virtual powder pattern and pair-distance histogram with the cell's lines
    (:func:`crystalscope.index.powder.plot_radial_histograms`)."""
    return plot_radial_histograms(hist, cell=cell, lattice=lattice or None)


@dataclass
class PolarPeaks:
    """Peak offsets of the hits from their pattern centres (pixels) in one pre-processed
    directory, with the elliptical distortion fitted there (None when not fitted)."""

    dx: np.ndarray
    dy: np.ndarray
    distortion: EllipticalDistortion | None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> PolarPeaks:
        """From a ``preprocessed.h5``: raw-pixel offsets, as the ellipticity plot of
        ``serial preprocess`` shows them, and the distortion in its metadata."""
        peaks = ds.peaks()
        shots = ds.shots.set_index("frame")
        sel = peaks[peaks["frame"].isin(shots.index[shots["hit"].to_numpy(bool)])]
        dx = sel["fs"].to_numpy(float) - shots.loc[sel["frame"], "centre_fs"].to_numpy(float)
        dy = sel["ss"].to_numpy(float) - shots.loc[sel["frame"], "centre_ss"].to_numpy(float)
        meta = ds.meta.get("preprocess", {})
        dist = None
        if "ellipse_ratio" in meta:
            dist = EllipticalDistortion(
                float(meta["ellipse_ratio"]), float(meta["ellipse_angle_deg"])
            )
        return cls(dx, dy, dist)


def powder_vectors(indexed: Sequence[tuple[Path, Dataset]]) -> pd.DataFrame:
    """Scattering vectors of the hits' peaks of ``(directory, indexed.h5)`` pairs of
    ``serial index`` outputs, with the geometry, ellipticity and wavelength indexing used;
    frame identifiers are made unique over the directories (pairs are counted per frame).

    Raises
    ------
    DataError
        If a directory's hits have no peaks.
    """
    parts, offset = [], 0
    for directory, ds in indexed:
        paths = index_output_paths(directory)
        detector = load_preprocessed_detector(ds, read_geom(paths["geometry"]))
        wavelength = float(ds.meta.get("index", {}).get("wavelength", math.nan))
        if not math.isfinite(wavelength):
            wavelength = detector.wavelength
        vectors = hit_vectors(IndexingInput(ds, detector, wavelength, paths["dataset"]))
        vectors["frame"] = vectors["frame"].to_numpy(np.int64) + offset
        offset = int(vectors["frame"].max()) + 1 if len(vectors) else offset
        parts.append(vectors)
    return pd.concat(parts, ignore_index=True)


def _shown_radii(parts: Sequence[PolarPeaks]) -> tuple[float, float]:
    """The inner third of the radii the fit uses (as the ellipticity plot of preprocess)."""
    r = np.concatenate([np.hypot(p.dx, p.dy) for p in parts])
    r = r[np.isfinite(r)]
    lo, hi = np.percentile(r, [0.5, 99.5])
    lo = max(float(lo), 2.0)
    return lo, lo + (float(hi) - lo) / 3.0


def plot_polar(parts: Sequence[PolarPeaks], *, n_r: int = 240, n_phi: int = 48) -> Figure:
    """Polar histograms of the hits' peaks before and after removing the fitted
    distortion (each directory's own), summed over directories.

    The rings of the virtual powder pattern wiggle as ``cos 2 phi`` with an elliptical
    distortion and are straight once it is removed (seed 004, Fig. 5).  White: the
    azimuthally integrated profile.
    """
    r_range = _shown_radii(parts)
    fig = Figure(figsize=(10, 6), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    n_peaks = sum(int(np.isfinite(p.dx).sum()) for p in parts)
    for ax, correct, title in (
        (axes[0], False, "before correction"),
        (axes[1], True, "after removing the fitted distortion"),
    ):
        total: np.ndarray | None = None
        for part in parts:
            dist = part.distortion if correct else None
            hist, r_edges, phi_edges = polar_histogram(
                part.dx, part.dy, distortion=dist, r_range_px=r_range, n_r=n_r, n_phi=n_phi
            )
            total = hist if total is None else total + hist
        assert total is not None
        draw_polar(ax, total, r_edges, phi_edges)
        ax.set_title(f"{title} ({n_peaks} peaks of hits)", fontsize=10)
    axes[1].set_xlabel("distance from the pattern centre (px)")
    return fig


def plot_ellipse_series(table: pd.DataFrame) -> Figure:
    """Fitted ellipticity (``ratio - 1``, %) and axis angle per pre-processed directory
    (on-line mode: one per input file, in order)."""
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    ax, ax2 = fig.subplots(1, 2)
    x = np.arange(len(table))
    ax.plot(x, 100.0 * (table["ratio"].to_numpy(float) - 1.0), "o-", ms=3)
    ax.set(xlabel="input directory", ylabel="ratio - 1 (%)", title="ellipticity")
    ax2.plot(x, table["angle_deg"].to_numpy(float), "o-", ms=3)
    ax2.set(xlabel="input directory", ylabel="angle (deg)", title="major-axis angle")
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    return fig
