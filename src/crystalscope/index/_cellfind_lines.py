"""Lattice-vector lengths of a data set: shortest line, line width, excess histogram.

The difference ``q_j - q_i`` of two peaks of one pattern is a reciprocal-lattice
vector, so the lengths of within-pattern differences cluster at the lengths of lattice
vectors ("lines").  This module finds the shortest line (the scale of everything
else), the width of a line, and the histogram of distinct per-pattern vector lengths
split into lines and a smooth background, against which candidate cells are scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, uniform_filter1d
from scipy.signal import find_peaks

from crystalscope.index._cellfind_kernels import (
    nearest_neighbour_distances,
    pair_length_histogram,
)

_FIRST_LINE_BINS = 2000
_MIN_PEAK_FRACTION = 0.15  # of the highest smoothed maximum of the pair-distance function
_BACKGROUND_WINDOW = 12.0  # background running mean over this many delta


def shortest_line(q: np.ndarray, start: np.ndarray, stop: np.ndarray, min_length: float) -> float:
    """Length (1/A) of the shortest lattice vector seen as a within-pattern difference.

    Within-pattern pair lengths up to twice the median nearest-neighbour distance (of
    neighbours at least ``min_length`` apart) are histogrammed (2000 bins).  Randomly
    placed peaks give counts ``c L`` per bin, with ``c`` the mean count over the length;
    a maximum of the smoothed pair-distance function ``n(L) / L`` is *significant* when
    the counts within +-1 % of its length exceed that expectation by 5 Poisson sigmas
    (and 10 counts).  The shortest
    significant maximum above ``min_length`` reaching 15 % of the highest significant
    one is returned; NaN when there is none.
    """
    nn = nearest_neighbour_distances(q, start, stop, min_length)
    nn = nn[np.isfinite(nn) & (nn > 0)]
    if len(nn) == 0:
        return math.nan
    hi = max(2.0 * float(np.median(nn)), 4.0 * min_length)
    counts = pair_length_histogram(q, start, stop, hi, _FIRST_LINE_BINS).astype(float)
    width = hi / _FIRST_LINE_BINS
    centres = (np.arange(_FIRST_LINE_BINS) + 0.5) * width
    usable = centres >= min_length
    if counts[usable].sum() == 0:
        return math.nan
    rate = counts[usable].sum() / centres[usable].sum()  # random pairs: rate * L per bin
    rdf = gaussian_filter1d(counts / centres, 3.0)
    peaks, _ = find_peaks(rdf)
    significant = []
    for p in peaks[usable[peaks]]:
        k = max(3, round(0.01 * centres[p] / width))
        lo, hi_ = max(p - k, 0), min(p + k + 1, len(counts))
        observed, expected = counts[lo:hi_].sum(), rate * centres[lo:hi_].sum()
        if observed >= max(10.0, expected + 5.0 * math.sqrt(expected + 1.0)):
            significant.append(p)
    if not significant:
        return math.nan
    top = max(rdf[p] for p in significant)
    first = next(p for p in significant if rdf[p] >= _MIN_PEAK_FRACTION * top)
    return float(centres[first])


def line_width(lengths: np.ndarray, line: float) -> tuple[float, float]:
    """``(position, sigma)`` (1/A) of the line near ``line`` in a set of vector lengths.

    The lengths within +-12 % of ``line`` are modelled as a Gaussian line on a uniform
    background and fitted by maximum likelihood (expectation maximisation, no binning).
    Falls back to ``(line, 1 % of line)`` with fewer than 5 lengths in the window.
    """
    half = 0.12 * line
    x = lengths[np.abs(lengths - line) < half]
    if len(x) < 5:
        return line, 0.01 * line
    mu, sigma, frac = line, 0.01 * line, 0.5
    for _ in range(200):
        g = frac * np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
        r = g / (g + (1.0 - frac) / (2.0 * half))
        total = r.sum()
        if total < 3:
            return line, 0.01 * line
        new_mu = float((r * x).sum() / total)
        new_sigma = float(math.sqrt((r * (x - new_mu) ** 2).sum() / total))
        new_sigma = min(max(new_sigma, 1e-4 * line), 0.05 * line)
        frac = float(total / len(x))
        done = abs(new_mu - mu) < 1e-6 * line and abs(new_sigma - sigma) < 1e-4 * sigma
        mu, sigma = new_mu, new_sigma
        if done:
            break
    return mu, sigma


@dataclass(frozen=True)
class LengthHistogram:
    """Histogram of distinct vector lengths split into lines and background.

    Attributes
    ----------
    bin_width : float
        1/A; bins start at 0.
    counts, background, excess : numpy.ndarray
        Counts per bin, their running mean over ``12 delta`` (the background) and
        ``counts - background``.
    window : numpy.ndarray
        ``excess`` summed over ``+-delta`` around each bin (the signal of a line there).
    delta : float
        Half width (1/A) within which a vector length matches a predicted line.
    """

    bin_width: float
    counts: np.ndarray
    background: np.ndarray
    excess: np.ndarray
    window: np.ndarray
    delta: float

    @property
    def max_length(self) -> float:
        """Upper end of the histogram (1/A)."""
        return self.bin_width * len(self.counts)


def length_histogram(lengths: np.ndarray, delta: float, max_length: float) -> LengthHistogram:
    """Histogram of ``lengths`` (1/A) up to ``max_length`` in bins of ``delta / 3``."""
    bin_width = delta / 3.0
    nbins = max(math.ceil(max_length / bin_width), 1)
    idx = (lengths / bin_width).astype(np.int64)
    counts = np.bincount(idx[(idx >= 0) & (idx < nbins)], minlength=nbins).astype(float)
    size = int(_BACKGROUND_WINDOW * delta / bin_width) | 1
    background = uniform_filter1d(counts, size, mode="nearest")
    excess = counts - background
    half = math.ceil(delta / bin_width)
    window = uniform_filter1d(excess, 2 * half + 1, mode="constant") * (2 * half + 1)
    return LengthHistogram(bin_width, counts, background, excess, window, delta)


def find_lines(
    hist: LengthHistogram, lengths: np.ndarray, *, significance: float = 4.0
) -> np.ndarray:
    """Positions (1/A) of the significant lines, shortest first.

    A line is a local maximum of the windowed excess whose window sum exceeds
    ``significance`` times the square root of the background in the window (Poisson),
    and at least 3 counts; its position is the mean of the lengths within ``+-delta``.
    Maxima closer than ``2 delta`` to a stronger one are dropped.
    """
    half = math.ceil(hist.delta / hist.bin_width)
    bg = uniform_filter1d(hist.background, 2 * half + 1, mode="constant") * (2 * half + 1)
    threshold = np.maximum(significance * np.sqrt(np.maximum(bg, 1.0)), 3.0)
    peaks, _ = find_peaks(hist.window, height=threshold, distance=2 * 3)
    centres = (peaks + 0.5) * hist.bin_width
    lengths = np.sort(lengths)
    out = []
    for c in centres:
        lo, hi = np.searchsorted(lengths, [c - hist.delta, c + hist.delta])
        if hi > lo:
            out.append(float(np.mean(lengths[lo:hi])))
    return np.array(out)
