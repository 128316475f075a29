"""Virtual powder pattern and pair-distance histogram of a whole data set (1/d).

Seed 004 (section 3.2.1, Fig. 6) refines the unit cell against two radial distribution
functions of the peaks found on all patterns:

* the **virtual powder pattern**: the histogram of ``|q|`` of every peak, with
  ``q = (r / |r| - z) / lambda`` from the detector model, the frame's pattern centre
  and the elliptical distortion (:func:`crystalscope.index.peaks.peak_vectors`), so
  that its maxima lie at the ``1/d`` of the allowed reflections;
* the **pair-distance histogram**: the histogram of ``|q_i - q_j|`` over all pairs of
  peaks ``i < j`` of the same frame.  Two Bragg peaks of one crystal lie (up to their
  excitation errors) on reciprocal-lattice points, so their difference is a lattice
  vector and the histogram peaks at the lengths of lattice vectors -- including the
  short basis vectors that the powder pattern lacks (systematic absences, or simply
  the beam stop).  This holds for electrons (almost flat Ewald sphere) and for X-rays
  (curved sphere) alike, since the difference is taken between the 3-D vectors ``q``.
  It is also insensitive to the pattern centre: a centre error moves all ``q`` of a
  frame almost equally.

Both are counted over ``[0, max_one_over_d)`` in uniform bins of ``bin_width`` (1/A).
Pairs are counted by a numba sweep over the peaks of each frame sorted along ``qx``
that stops at the first peak ``max_one_over_d`` or further along ``qx``: pairs beyond
the range along ``qx`` are never computed and no pair list is stored, so a frame of
``n`` peaks costs ``n k`` distance evaluations (``k`` the peaks within the range along
``qx``) and no memory.  Frames are split over local threads (the kernel releases the
GIL), or into dask tasks on a ``distributed.Client``.  See
``docs/algorithms/cell-refinement.md``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import gemmi
import numba
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from crystalscope.errors import ConfigError, DataError
from crystalscope.io.atomic import atomic_path

__all__ = ["RadialHistograms", "plot_radial_histograms", "radial_histograms"]

_Q_COLUMNS = ("qx", "qy", "qz")
_MAX_BINS = 5_000_000
_FRAMES_PER_TASK = 2000  # frames per dask task when a client is given
_MAX_THREADS = 8


@dataclass(frozen=True, eq=False)
class RadialHistograms:
    """Radial histograms of peak scattering vectors over a data set.

    Attributes
    ----------
    edges : numpy.ndarray, shape (n + 1,)
        Uniform bin edges in ``1/d`` (1/A), starting at 0.
    powder : numpy.ndarray, shape (n,)
        Virtual powder pattern: number of peaks with ``|q|`` in each bin.
    pairs : numpy.ndarray, shape (n,)
        Number of peak pairs of the same frame with ``|q_i - q_j|`` in each bin.
    n_frames : int
        Frames that contributed peaks.
    n_peaks : int
        Peaks with finite ``q`` (also those beyond the last edge).
    n_pairs : int
        Pairs counted in ``pairs`` (within the range).
    """

    edges: np.ndarray
    powder: np.ndarray
    pairs: np.ndarray
    n_frames: int
    n_peaks: int
    n_pairs: int

    @property
    def centres(self) -> np.ndarray:
        """Bin centres in 1/A."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def bin_width(self) -> float:
        """Bin width in 1/A."""
        return float(self.edges[1] - self.edges[0])

    @property
    def max_one_over_d(self) -> float:
        """Upper end of the range, 1/A."""
        return float(self.edges[-1])


@numba.njit(cache=True, nogil=True)
def _pair_counts(q: np.ndarray, starts: np.ndarray, bin_width: float, out: np.ndarray) -> int:
    """Add ``|q_i - q_j|`` of the pairs within each frame to the histogram ``out``.

    ``q`` (n, 3) is sorted by frame, and within each frame by ``qx``; frame ``f`` is
    ``q[starts[f]:starts[f + 1]]``.  Returns the number of pairs counted.
    """
    n_bins = out.shape[0]
    r_max = n_bins * bin_width
    r_max2 = r_max * r_max
    total = 0
    for f in range(starts.shape[0] - 1):
        stop = starts[f + 1]
        for i in range(starts[f], stop):
            for j in range(i + 1, stop):
                dx = q[j, 0] - q[i, 0]
                if dx >= r_max:
                    break
                dy = q[j, 1] - q[i, 1]
                dz = q[j, 2] - q[i, 2]
                r2 = dx * dx + dy * dy + dz * dz
                if r2 < r_max2:
                    k = int(math.sqrt(r2) / bin_width)
                    if k < n_bins:
                        out[k] += 1
                        total += 1
    return total


def _pairs_histogram(
    q: np.ndarray, starts: np.ndarray, bin_width: float, n_bins: int
) -> tuple[np.ndarray, int]:
    out = np.zeros(n_bins, dtype=np.int64)
    total = _pair_counts(q, starts, bin_width, out)
    return out, int(total)


def _sorted_vectors(vectors: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Finite q (n, 3) sorted by frame then qx, and the frame start offsets (m + 1,)."""
    for name in ("frame", *_Q_COLUMNS):
        if name not in vectors.columns:
            raise DataError(
                f"peak vector table has no column {name!r} (see index.peaks.peak_vectors)",
                field=name,
            )
    q = vectors[list(_Q_COLUMNS)].to_numpy(dtype=float)
    frame = vectors["frame"].to_numpy()
    ok = np.all(np.isfinite(q), axis=1)
    q, frame = q[ok], frame[ok]
    order = np.lexsort((q[:, 0], frame))
    q, frame = np.ascontiguousarray(q[order]), frame[order]
    change = np.flatnonzero(frame[1:] != frame[:-1]) + 1
    starts = np.concatenate([[0], change, [len(q)]]).astype(np.int64)
    return q, starts


def _check_range(
    max_one_over_d: float | None, bin_width: float, s: np.ndarray
) -> tuple[int, float]:
    """Number of bins and the bin width for the requested range."""
    if not (math.isfinite(bin_width) and bin_width > 0):
        raise ConfigError(
            f"bin width must be a positive number of 1/A, got {bin_width}", field="bin_width"
        )
    top = float(np.max(s)) if max_one_over_d is None else float(max_one_over_d)
    if not (math.isfinite(top) and top > bin_width):
        raise ConfigError(
            f"largest 1/d must exceed the bin width ({bin_width:g} 1/A), got {top:g}",
            field="max_one_over_d",
        )
    n_bins = math.ceil(top / bin_width - 1e-9)
    if max_one_over_d is None and n_bins * bin_width <= top:
        n_bins += 1  # keep the outermost peak inside the range
    if n_bins > _MAX_BINS:
        raise ConfigError(f"{n_bins} bins are too many; use a wider bin", field="bin_width")
    return n_bins, float(bin_width)


def radial_histograms(
    vectors: pd.DataFrame,
    *,
    max_one_over_d: float | None = None,
    bin_width: float = 2e-4,
    client: Any = None,
) -> RadialHistograms:
    """Virtual powder pattern and pair-distance histogram of peak scattering vectors.

    Parameters
    ----------
    vectors : DataFrame
        Peaks with ``frame`` and ``qx, qy, qz`` (1/A, lab frame), as returned by
        :func:`crystalscope.index.peaks.peak_vectors`; rows with non-finite ``q`` are
        ignored.
    max_one_over_d : float, optional
        Upper end of both histograms in 1/A (``|q|`` and ``|q_i - q_j|`` beyond it are
        not counted); default the largest ``|q|`` of the peaks.
    bin_width : float
        Bin width in 1/A (default 2e-4).
    client : distributed.Client, optional
        Count the pairs on this dask cluster (chunks of frames); locally otherwise.

    Returns
    -------
    RadialHistograms

    Raises
    ------
    DataError
        Missing columns or no peak with a finite ``q``.
    ConfigError
        Non-positive bin width or range.
    """
    q, starts = _sorted_vectors(vectors)
    if not len(q):
        raise DataError("no peaks with finite scattering vectors to histogram", field="qx")
    s = np.linalg.norm(q, axis=1)
    n_bins, width = _check_range(max_one_over_d, bin_width, s)
    index = np.floor(s / width).astype(np.int64)
    powder = np.bincount(index[index < n_bins], minlength=n_bins).astype(np.int64)
    if client is None:
        pairs, n_pairs = _pairs_threaded(q, starts, width, n_bins)
    else:
        pairs, n_pairs = _pairs_on_client(client, q, starts, width, n_bins)
    edges = np.arange(n_bins + 1) * width
    return RadialHistograms(edges, powder, pairs, len(starts) - 1, len(q), n_pairs)


def _chunks(starts: np.ndarray, n_chunks: int) -> list[tuple[int, int]]:
    """Frame ranges ``(f0, f1)`` holding about equal numbers of peak pairs."""
    sizes = np.diff(starts).astype(float)
    work = np.cumsum(sizes * sizes)
    if not len(work) or work[-1] == 0:
        return [(0, len(sizes))]
    cuts = np.searchsorted(work, work[-1] * np.arange(1, n_chunks) / n_chunks)
    bounds = np.unique(np.concatenate([[0], cuts + 1, [len(sizes)]]).clip(0, len(sizes)))
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]


def _pairs_threaded(
    q: np.ndarray, starts: np.ndarray, width: float, n_bins: int
) -> tuple[np.ndarray, int]:
    """The pair histogram on local threads (the numba kernel releases the GIL)."""
    n_threads = max(1, min(os.cpu_count() or 1, _MAX_THREADS))
    chunks = _chunks(starts, n_threads)
    if len(chunks) == 1:
        return _pairs_histogram(q, starts, width, n_bins)

    def run(chunk: tuple[int, int]) -> tuple[np.ndarray, int]:
        f0, f1 = chunk
        part = q[starts[f0] : starts[f1]]
        return _pairs_histogram(part, starts[f0 : f1 + 1] - starts[f0], width, n_bins)

    with ThreadPoolExecutor(max_workers=len(chunks)) as pool:
        results = list(pool.map(run, chunks))
    pairs = np.sum([r[0] for r in results], axis=0).astype(np.int64)
    return pairs, int(sum(r[1] for r in results))


def _pairs_on_client(
    client: Any, q: np.ndarray, starts: np.ndarray, width: float, n_bins: int
) -> tuple[np.ndarray, int]:
    """The pair histogram computed in chunks of frames on a dask client."""
    import dask

    from crystalscope.parallel import compute

    tasks = []
    for f0 in range(0, len(starts) - 1, _FRAMES_PER_TASK):
        f1 = min(f0 + _FRAMES_PER_TASK, len(starts) - 1)
        part = q[starts[f0] : starts[f1]]
        tasks.append(
            dask.delayed(_pairs_histogram)(part, starts[f0 : f1 + 1] - starts[f0], width, n_bins)
        )
    results = compute(*tasks, client=client, description="pair distances")
    pairs = np.sum([r[0] for r in results], axis=0).astype(np.int64)
    return pairs, int(sum(r[1] for r in results))


def _normalised(counts: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """Counts scaled to their robust maximum (99.5th percentile) over the shown bins."""
    inner = counts[shown]
    top = float(np.percentile(inner, 99.5)) if inner.size else 0.0
    return counts / top if top > 0 else counts.astype(float)


def plot_radial_histograms(
    hist: RadialHistograms,
    *,
    cell: gemmi.UnitCell | Sequence[float] | None = None,
    lattice: Any = None,
    path: str | os.PathLike[str] | None = None,
    range_one_over_d: tuple[float, float] | None = None,
    overwrite: bool = True,
) -> Figure:
    """Plot the powder and pair-distance histograms in the style of seed 004, Fig. 6.

    Parameters
    ----------
    hist : RadialHistograms
        The histograms.
    cell : gemmi.UnitCell or 6 floats, optional
        Draw the predicted lines of this cell: grey lines at the ``1/d`` of the allowed
        reflections (powder), light dotted lines at lattice-vector lengths that only
        the pair histogram shows (space-group absences).
    lattice : str or space group, optional
        Bravais symbol or space group of ``cell`` (default ``"aP"``, no absences).
    path : str or os.PathLike, optional
        Also write the figure as PNG there.
    range_one_over_d : (float, float), optional
        Range of the horizontal axis in 1/A; default the whole range.
    overwrite : bool
        Replace an existing ``path``.

    Returns
    -------
    matplotlib.figure.Figure
        An Agg-backed figure (no display needed).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = Figure(figsize=(10, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    x = hist.centres
    lo, hi = range_one_over_d if range_one_over_d is not None else (0.0, hist.max_one_over_d)
    if cell is not None:
        _draw_lines(ax, cell, lattice, lo, hi)
    shown = (x >= lo) & (x <= hi)
    for counts, colour, label in (
        (hist.powder, "tab:blue", f"powder ({hist.n_peaks} peaks)"),
        (hist.pairs, "tab:red", f"pair distances ({hist.n_pairs} pairs)"),
    ):
        ax.plot(x, _normalised(counts, shown), color=colour, lw=0.8, label=label)
    ax.set_xlim(lo, hi)
    ax.set_ylim(0.0, 1.15)
    ax.set_xlabel("1/d (1/A)")
    ax.set_ylabel("counts (normalised)")
    ax.set_title(f"{hist.n_frames} frames", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    if path is not None:
        with atomic_path(path, overwrite=overwrite) as tmp:
            fig.savefig(tmp, format="png")
    return fig


def _draw_lines(
    ax: Any, cell: gemmi.UnitCell | Sequence[float], lattice: Any, lo: float, hi: float
) -> None:
    from crystalscope.index.cell_refine import predicted_lines

    powder = predicted_lines(cell, lattice or "aP", max_one_over_d=hi, kind="powder")
    pairs = predicted_lines(cell, lattice or "aP", max_one_over_d=hi, kind="pairs")
    powder_s = powder["one_over_d"].to_numpy()
    pair_s = pairs["one_over_d"].to_numpy()
    only_pairs = pair_s[~np.isin(np.round(pair_s, 9), np.round(powder_s, 9))]
    ax.vlines(powder_s[powder_s >= lo], 0, 1.15, color="0.6", lw=0.5, zorder=0)
    ax.vlines(only_pairs[only_pairs >= lo], 0, 1.15, color="0.55", lw=0.6, ls=":", zorder=0)
