"""Many independent reconstructions: ranking, alignment, averaging and resolution.

Phase retrieval from random starts ends in different local solutions; the usual
remedy (seed 002 section 2) is to run tens of reconstructions, keep those with the best
error metric and average them.  Here the metric is the *free* Poisson log-likelihood
(computed on reserved pixels that took no part in the fit, see
:mod:`crystalscope.cdi.state`), which does not reward over-fitting noise.

Kept solutions are made comparable before averaging: each is compared with the
reference both as it is and as its twin ``conj(rho(-r))`` (which has the same
diffraction pattern), shifted to the reference by the sub-pixel maximum of their
cross-correlation (parabolic interpolation, Fourier shift), and multiplied by the
global phase factor that best matches the reference.

Resolution estimates:

* PRTF (phase-retrieval transfer function) per shell of ``|q|``:
  ``sum |<F_k>| / sum sqrt(I_obs)`` over measured pixels, ``F_k`` the Fourier
  transforms of the aligned solutions; the resolution is where it first drops below
  ``1/e``;
* FRC/FSC between the averages of two halves of the solutions:
  ``Re sum F_a F_b^* / sqrt(sum |F_a|^2 sum |F_b|^2)`` per shell.

Frequencies are in cycles per pixel (``0.5`` is Nyquist along an axis); multiply by
``1 / pixel_size`` for 1/A.  Arrays here are *centred* (origin at ``n // 2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crystalscope.cdi.algebra import Operator, parse_algorithm
from crystalscope.cdi.backend import to_numpy
from crystalscope.cdi.operators import poisson_llk
from crystalscope.cdi.state import CDIState
from crystalscope.errors import ConfigError

__all__ = [
    "DEFAULT_ALGORITHM",
    "RunResult",
    "align",
    "average",
    "fourier_shell_correlation",
    "modes",
    "normalized_rms_error",
    "prtf",
    "resolution_at",
    "run_many",
    "run_once",
    "select_best",
    "shell_index",
    "twin",
]

#: A robust default: loose autocorrelation support, HIO with shrink-wrap, ER to finish.
DEFAULT_ALGORITHM = "AutoSupport,InitObj,HIO**400,(Sup*HIO**20)**20,ER**200"


@dataclass
class RunResult:
    """One reconstruction: centred object and support, final likelihoods, history."""

    seed: int
    obj: np.ndarray
    support: np.ndarray
    llk: float
    llk_free: float
    history: list[dict[str, float]] = field(default_factory=list)


def run_once(
    iobs: np.ndarray,
    mask: np.ndarray | None,
    algorithm: str | Operator = DEFAULT_ALGORITHM,
    *,
    seed: int = 0,
    positivity: bool = False,
    free_fraction: float = 0.05,
    backend: str = "auto",
    workers: int | None = None,
) -> RunResult:
    """Run one reconstruction of a centred pattern from a random start.

    Parameters
    ----------
    iobs, mask : ndarray
        Centred intensities (photons) and unknown-pixel mask (True = unknown).
    algorithm : str or Operator
        Operator or algorithm string (see :func:`~crystalscope.cdi.algebra.parse_algorithm`).
    seed : int
        Seed of the free set and of the random start.
    positivity : bool
        Constrain the object to be real and non-negative.
    free_fraction : float
        Fraction of measured pixels reserved for the free log-likelihood.
    backend, workers : str, int
        Array backend and CPU FFT threads.

    Returns
    -------
    RunResult
    """
    op = parse_algorithm(algorithm) if isinstance(algorithm, str) else algorithm
    state = CDIState.from_pattern(
        iobs, mask, free_fraction=free_fraction, backend=backend, seed=seed, workers=workers
    )
    state.positivity = positivity
    state = op * state
    llk, llk_free = poisson_llk(state)
    from crystalscope.cdi.operators import support_projected

    obj = np.fft.fftshift(to_numpy(support_projected(state, state.obj)))
    return RunResult(seed, obj, state.support_centred(), llk, llk_free, list(state.history))


def run_many(
    iobs: np.ndarray,
    mask: np.ndarray | None,
    algorithm: str | Operator = DEFAULT_ALGORITHM,
    *,
    n_runs: int = 8,
    seed: int = 0,
    n_workers: int = 1,
    **kwargs: Any,
) -> list[RunResult]:
    """Run ``n_runs`` independent reconstructions through dask; best first.

    Runs use seeds ``seed, seed + 1, ...``; they execute in ``n_workers`` threads (the
    FFTs release the GIL), each FFT single-threaded when ``n_workers > 1``.  Extra
    keyword arguments go to :func:`run_once`.  The result is sorted by free
    log-likelihood (lower first).
    """
    if n_runs < 1:
        raise ConfigError("n_runs must be >= 1", field="n_runs")
    import dask

    if n_workers > 1:
        kwargs.setdefault("workers", 1)
    tasks = [
        dask.delayed(run_once)(iobs, mask, algorithm, seed=seed + i, **kwargs)
        for i in range(n_runs)
    ]
    results = list(dask.compute(*tasks, scheduler="threads", num_workers=n_workers))
    return select_best(results, len(results))


def select_best(results: list[RunResult], k: int) -> list[RunResult]:
    """The ``k`` results with the lowest free log-likelihood (NaN ranks last)."""
    if k < 1:
        raise ConfigError("keep at least one run (k >= 1)", field="keep")
    key = [(np.inf if not np.isfinite(r.llk_free) else r.llk_free) for r in results]
    order = np.argsort(key, kind="stable")
    return [results[i] for i in order[:k]]


def twin(a: np.ndarray) -> np.ndarray:
    """The twin ``conj(a(-r))`` of a centred array (same diffraction pattern)."""
    out = np.conj(np.flip(a))
    shifts = tuple(1 if n % 2 == 0 else 0 for n in a.shape)
    return np.roll(out, shifts, axis=tuple(range(a.ndim)))


def _subpixel_peak(cc: np.ndarray) -> np.ndarray:
    """Position of the maximum of ``|cc|`` with parabolic refinement (wrapped)."""
    mag = np.abs(cc)
    peak = np.array(np.unravel_index(int(np.argmax(mag)), mag.shape), dtype=float)
    for axis, n in enumerate(mag.shape):
        idx = [int(p) for p in peak]
        vals = []
        for d in (-1, 0, 1):
            j = list(idx)
            j[axis] = (idx[axis] + d) % n
            vals.append(mag[tuple(j)])
        denom = vals[0] - 2 * vals[1] + vals[2]
        if denom < 0:
            peak[axis] += 0.5 * (vals[0] - vals[2]) / denom
    size = np.array(mag.shape, dtype=float)
    return (peak + size / 2) % size - size / 2


def fourier_shift(a: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Shift ``a`` by ``shift`` pixels (periodic, sub-pixel) through its FFT."""
    f = np.fft.fftn(a)
    phase = np.zeros(a.shape)
    for axis, n in enumerate(a.shape):
        k = np.fft.fftfreq(n).reshape([-1 if i == axis else 1 for i in range(a.ndim)])
        phase = phase + k * shift[axis]
    return np.fft.ifftn(f * np.exp(-2j * np.pi * phase))


def align(reference: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, float]:
    """Align ``a`` (or its twin) on ``reference``: shift, global phase.

    Returns
    -------
    aligned : ndarray of complex
        The better-matching of ``a`` and its twin, shifted and phased.
    score : float
        Normalised overlap ``|<ref, aligned>| / (|ref| |aligned|)`` (1 is identical).
    """
    ref = np.asarray(reference, dtype=complex)
    fref = np.fft.fftn(ref)
    best: tuple[np.ndarray, float] | None = None
    for cand in (np.asarray(a, dtype=complex), twin(np.asarray(a, dtype=complex))):
        moved = cand
        for _ in range(3):  # parabolic estimates converge as the residual shift shrinks
            cc = np.fft.ifftn(fref * np.conj(np.fft.fftn(moved)))
            moved = fourier_shift(moved, _subpixel_peak(cc))
        overlap = np.vdot(moved, ref)
        moved = moved * np.exp(1j * np.angle(overlap))
        norm = np.linalg.norm(ref) * np.linalg.norm(moved)
        score = float(abs(overlap) / norm) if norm > 0 else 0.0
        if best is None or score > best[1]:
            best = (moved, score)
    assert best is not None
    return best


def average(objects: list[np.ndarray], reference: np.ndarray | None = None) -> np.ndarray:
    """Mean of ``objects`` after aligning each on ``reference`` (default the first)."""
    if not objects:
        raise ConfigError("nothing to average", field="keep")
    ref = objects[0] if reference is None else reference
    return np.mean([align(ref, o)[0] for o in objects], axis=0)


def modes(objects: list[np.ndarray], n_modes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Orthogonal modes of aligned solutions (SVD); returns ``(modes, weights)``.

    ``weights`` are the fractions of the total squared norm carried by each mode; a
    first weight near 1 means the solutions agree.
    """
    ref = objects[0]
    stack = np.array([align(ref, o)[0].ravel() for o in objects])
    _, s, vh = np.linalg.svd(stack, full_matrices=False)
    w = s**2 / np.sum(s**2)
    k = min(n_modes, len(s))
    return vh[:k].reshape((k, *ref.shape)) * s[:k, None].reshape(-1, *[1] * ref.ndim), w[:k]


def shell_index(
    shape: tuple[int, ...], n_shells: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Shell number of each (centred) pixel and the shells' centre ``|q|`` (cycles/px).

    Shells are ``dq = 1 / min(shape)`` wide (one pixel of the smallest axis) unless
    ``n_shells`` is given (then up to ``|q| = 0.5``).
    """
    q2 = np.zeros(shape)
    for axis, n in enumerate(shape):
        f = np.fft.fftshift(np.fft.fftfreq(n))
        q2 = q2 + f.reshape([-1 if i == axis else 1 for i in range(len(shape))]) ** 2
    q = np.sqrt(q2)
    n = n_shells or min(shape) // 2
    dq = 0.5 / n
    idx = np.floor(q / dq).astype(int)
    return idx, (np.arange(n) + 0.5) * dq


def _centred_fft(a: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(a), norm="ortho"))


def prtf(
    objects: list[np.ndarray],
    iobs: np.ndarray,
    mask: np.ndarray | None = None,
    n_shells: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Phase-retrieval transfer function of aligned solutions against the data.

    Returns ``(q, prtf)`` with ``q`` in cycles per pixel; shells without measured
    signal get 0.
    """
    mean_f = np.mean([_centred_fft(o) for o in objects], axis=0)
    measured = np.ones(iobs.shape, bool) if mask is None else ~np.asarray(mask, bool)
    idx, q = shell_index(iobs.shape, n_shells)
    sel = measured & (idx < len(q))
    num = np.bincount(idx[sel], np.abs(mean_f)[sel], minlength=len(q))[: len(q)]
    den = np.bincount(idx[sel], np.sqrt(np.maximum(iobs[sel], 0)), minlength=len(q))[: len(q)]
    out = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return q, out


def fourier_shell_correlation(
    a: np.ndarray, b: np.ndarray, n_shells: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """FRC (2-D) / FSC (3-D) between two aligned reconstructions: ``(q, corr)``."""
    fa, fb = _centred_fft(a), _centred_fft(b)
    idx, q = shell_index(a.shape, n_shells)
    sel = idx < len(q)
    num = np.bincount(idx[sel], (fa * np.conj(fb)).real[sel], minlength=len(q))[: len(q)]
    pa = np.bincount(idx[sel], (np.abs(fa) ** 2)[sel], minlength=len(q))[: len(q)]
    pb = np.bincount(idx[sel], (np.abs(fb) ** 2)[sel], minlength=len(q))[: len(q)]
    den = np.sqrt(pa * pb)
    return q, np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def resolution_at(
    q: np.ndarray, curve: np.ndarray, level: float = 1 / math.e, q_min: float = 0.0
) -> float:
    """First ``q`` above ``q_min`` where ``curve`` drops below ``level`` (interpolated).

    Returns the last ``q`` if it never does.
    """
    start = int(np.searchsorted(q, q_min))
    for i in range(max(start, 1), len(q)):
        if curve[i] < level <= curve[i - 1]:
            t = (curve[i - 1] - level) / (curve[i - 1] - curve[i])
            return float(q[i - 1] + t * (q[i] - q[i - 1]))
        if curve[i] < level and i == start:
            return float(q[i])
    return float(q[-1])


def normalized_rms_error(reconstruction: np.ndarray, truth: np.ndarray) -> float:
    """``|| s * aligned - truth || / || truth ||`` after alignment and best complex scale."""
    aligned, _ = align(truth, reconstruction)
    t = np.asarray(truth, dtype=complex)
    scale = np.vdot(aligned, t) / np.vdot(aligned, aligned)
    return float(np.linalg.norm(scale * aligned - t) / np.linalg.norm(t))
