"""Phase-retrieval operators: projections, ER, HIO, RAAR, shrink-wrap, likelihoods.

Model
-----
The far-field intensity of an isolated object ``rho`` is ``I(q) = |F[rho](q)|^2`` (Born
approximation, orthonormal FFT).  Phase retrieval alternates two projections:

* the *Fourier-magnitude* projection ``P_M``: ``F <- sqrt(I_obs) F / |F|`` on measured
  pixels; unknown pixels (``state.mask``) and the reserved free pixels keep the current
  ``F`` (they are left free);
* the *support* projection ``P_S``: zero outside the support ``S``; with ``positivity``
  also the real part clipped at zero and the imaginary part dropped inside ``S``; with
  ``real`` the imaginary part dropped.

With ``p = P_M(rho)`` and ``inside = S`` (and ``Re p >= 0`` under positivity):

* ER (error reduction, Gerchberg-Saxton-Fienup): ``rho <- P_S(p)``;
* HIO (Fienup 1982): ``rho <- p`` inside, ``rho - beta p`` outside;
* RAAR (Luke 2005): ``rho <- p`` inside, ``beta rho + (1 - 2 beta) p`` outside.

Shrink-wrap (Marchesini et al. 2003): the support becomes the region where ``|rho|``,
smoothed by a Gaussian of width ``sigma`` pixels, exceeds ``threshold`` times its
maximum; ``sigma`` decays by ``decay`` per update down to ``sigma_min``; the support
fraction is kept within ``[min_fraction, max_fraction]`` by moving the threshold.  The
initial support is the thresholded autocorrelation (inverse FFT of the measured
intensities), which contains the object's support.

The Poisson log-likelihood reported is the mean Poisson deviance per pixel,
``2 (c - o + o ln(o / c))`` for observed counts ``o`` and model ``c = |F[P_S rho]|^2``;
its expectation for the true model is about 1 on pixels with many photons and less
on weak ones (0 where nothing is expected); a wrong model gives far larger values.  It is
computed separately on the measured pixels used in the fit and on the free set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crystalscope.cdi.algebra import REGISTRY, Operator
from crystalscope.cdi.backend import to_numpy
from crystalscope.cdi.state import CDIState

__all__ = [
    "ER",
    "HIO",
    "LLK",
    "RAAR",
    "AmplitudeProjection",
    "AutoSupport",
    "ErrorReduction",
    "FourierProj",
    "HybridInputOutput",
    "InitObj",
    "LogLikelihood",
    "Pos",
    "Positivity",
    "RandomObject",
    "Real",
    "RealConstraint",
    "RelaxedAveragedAlternatingReflections",
    "ShrinkWrap",
    "Sup",
    "SupProj",
    "SupportFromAutocorrelation",
    "SupportProjection",
    "fourier_projection",
    "gaussian_smooth",
    "poisson_llk",
]

_EPS = 1e-12


def fourier_projection(state: CDIState, obj: Any) -> Any:
    """Return ``P_M(obj)``: measured Fourier magnitudes, free pixels left unchanged."""
    be = state.backend
    xp = be.xp
    f = be.fftn(obj)
    mag = xp.abs(f)
    sel = (state.known | state.mask) if state.zero_mask else state.known
    scale = xp.where(sel, state.amp / xp.maximum(mag, np.float32(_EPS)), np.float32(1))
    f *= scale
    return be.ifftn(f)


def _constrained(state: CDIState, p: Any) -> tuple[Any, Any]:
    """``(inside, value)``: where the support constraint holds, and the value there."""
    if state.positivity:
        value = p.real.astype(np.complex64)
        return state.support & (p.real >= 0), value
    if state.real:
        return state.support, p.real.astype(np.complex64)
    return state.support, p


def support_projected(state: CDIState, obj: Any) -> Any:
    """Return ``P_S(obj)`` (support, positivity and reality constraints)."""
    inside, value = _constrained(state, obj)
    return state.backend.xp.where(inside, value, np.complex64(0))


def gaussian_smooth(state: CDIState, a: Any, sigma: float) -> Any:
    """Smooth real array ``a`` with a periodic Gaussian of ``sigma`` pixels (via FFT)."""
    be = state.backend
    xp = be.xp
    k2 = xp.zeros(a.shape, dtype=np.float32)
    for axis, n in enumerate(a.shape):
        f = xp.fft.fftfreq(n).astype(np.float32)
        shape = [1] * a.ndim
        shape[axis] = n
        k2 = k2 + f.reshape(shape) ** 2
    kernel = xp.exp(np.float32(-2.0 * np.pi**2 * sigma**2) * k2)
    return be.ifftn(be.fftn(a.astype(np.complex64)) * kernel).real


@dataclass(frozen=True, eq=False, repr=False)
class ErrorReduction(Operator):
    """Error reduction: ``rho <- P_S P_M rho``."""

    name = "ER"

    def apply(self, state: CDIState) -> CDIState:
        state.obj = support_projected(state, fourier_projection(state, state.obj))
        state.iteration += 1
        return state


@dataclass(frozen=True, eq=False, repr=False)
class HybridInputOutput(Operator):
    """Fienup's hybrid input-output with feedback ``beta``."""

    beta: float = 0.9
    name = "HIO"

    def apply(self, state: CDIState) -> CDIState:
        p = fourier_projection(state, state.obj)
        inside, value = _constrained(state, p)
        beta = np.float32(self.beta)
        state.obj = state.backend.xp.where(inside, value, state.obj - beta * p)
        state.iteration += 1
        return state


@dataclass(frozen=True, eq=False, repr=False)
class RelaxedAveragedAlternatingReflections(Operator):
    """Luke's relaxed averaged alternating reflections with relaxation ``beta``."""

    beta: float = 0.75
    name = "RAAR"

    def apply(self, state: CDIState) -> CDIState:
        p = fourier_projection(state, state.obj)
        inside, value = _constrained(state, p)
        b = np.float32(self.beta)
        outside = b * state.obj + np.float32(1 - 2 * self.beta) * p
        state.obj = state.backend.xp.where(inside, value, outside)
        state.iteration += 1
        return state


@dataclass(frozen=True, eq=False, repr=False)
class AmplitudeProjection(Operator):
    """The Fourier-magnitude projection ``P_M`` alone (idempotent)."""

    name = "FourierProj"

    def apply(self, state: CDIState) -> CDIState:
        state.obj = fourier_projection(state, state.obj)
        return state


@dataclass(frozen=True, eq=False, repr=False)
class SupportProjection(Operator):
    """The support projection ``P_S`` alone (idempotent)."""

    name = "SupProj"

    def apply(self, state: CDIState) -> CDIState:
        state.obj = support_projected(state, state.obj)
        return state


@dataclass(frozen=True, eq=False, repr=False)
class Positivity(Operator):
    """Switch on the positivity constraint (real, >= 0 in the support) and apply it."""

    name = "Pos"

    def apply(self, state: CDIState) -> CDIState:
        state.positivity = True
        return SupportProjection().apply(state)


@dataclass(frozen=True, eq=False, repr=False)
class ZeroMask(Operator):
    """From now on force the unknown pixels to zero amplitude (``on=False``: free again).

    Useful during the first iterations from a loose support, when the unconstrained
    low-frequency modes behind a beamstop would otherwise drift (PyNX's ``zero_mask``).
    """

    on: bool = True
    name = "ZeroMask"

    def apply(self, state: CDIState) -> CDIState:
        state.zero_mask = self.on
        return state


@dataclass(frozen=True, eq=False, repr=False)
class RealConstraint(Operator):
    """Switch on the real-object constraint and apply it."""

    name = "Real"

    def apply(self, state: CDIState) -> CDIState:
        state.real = True
        return SupportProjection().apply(state)


@dataclass(frozen=True, eq=False, repr=False)
class ShrinkWrap(Operator):
    """Shrink-wrap support update (see module docstring); ``sigma`` in pixels."""

    threshold: float = 0.04
    sigma: float = 2.0
    sigma_min: float = 0.8
    decay: float = 0.95
    min_fraction: float = 0.001
    max_fraction: float = 0.5
    name = "Sup"

    def apply(self, state: CDIState) -> CDIState:
        xp = state.backend.xp
        sigma = self.sigma if state.sup_sigma is None else state.sup_sigma
        smooth = gaussian_smooth(state, xp.abs(support_projected(state, state.obj)), sigma)
        state.support = _threshold_support(
            smooth, self.threshold, self.min_fraction, self.max_fraction, xp
        )
        state.sup_sigma = max(self.sigma_min, sigma * self.decay)
        return state


def _threshold_support(
    smooth: Any, threshold: float, min_fraction: float, max_fraction: float, xp: Any
) -> Any:
    """Pixels above ``threshold * max``, with the fraction clipped to the bounds."""
    support = smooth > np.float32(threshold) * smooth.max()
    frac = float(xp.count_nonzero(support)) / smooth.size
    if min_fraction <= frac <= max_fraction:
        return support
    keep = max(1, round((max_fraction if frac > max_fraction else min_fraction) * smooth.size))
    level = xp.sort(smooth.ravel())[-keep]
    return smooth >= level


def _radius(shape: tuple[int, ...]) -> np.ndarray:
    """|q| in pixels for an FFT-layout array."""
    q2 = sum(
        (np.fft.fftfreq(n) * n).reshape([-1 if i == ax else 1 for i in range(len(shape))]) ** 2
        for ax, n in enumerate(shape)
    )
    return np.sqrt(np.asarray(q2, dtype=float))


def guinier_filled(iobs: np.ndarray, mask: np.ndarray, ring_px: float = 1.5) -> np.ndarray:
    """Intensities (FFT layout) with the beamstop filled by a Guinier fit, others 0.

    The masked pixels closer to ``q = 0`` than the nearest measured pixel plus one are
    given ``exp(a - b q^2)`` (Guinier law, ``b >= 0``) fitted to the measured pixels
    within ``ring_px`` of the beamstop edge; every other masked pixel is 0.  Used only
    to estimate the autocorrelation, whose level the missing centre would otherwise
    spoil (the missing central speckle subtracts a broad, ringing term from it).
    """
    r = _radius(iobs.shape)
    measured = ~mask
    out = np.where(measured, iobs, 0.0).astype(np.float64)
    if not measured.any() or measured.flat[0]:
        return out
    r0 = float(r[measured].min())
    ring = measured & (r <= r0 + ring_px) & (iobs > 0)
    if np.count_nonzero(ring) < 3:
        return out
    slope, intercept = np.polyfit(r[ring] ** 2, np.log(iobs[ring]), 1)
    hole = mask & (r < r0 + 1)
    out[hole] = np.exp(intercept + min(float(slope), 0.0) * r[hole] ** 2)
    return out


@dataclass(frozen=True, eq=False, repr=False)
class SupportFromAutocorrelation(Operator):
    """Initial support from the autocorrelation (inverse FFT of the intensities).

    The beamstop is filled by :func:`guinier_filled`; the autocorrelation (real part,
    negative values clipped), smoothed by ``sigma`` pixels, is thresholded at
    ``threshold`` of its maximum and only the region connected to the origin is kept.
    """

    threshold: float = 0.1
    sigma: float = 2.0
    name = "AutoSupport"

    def apply(self, state: CDIState) -> CDIState:
        from scipy import ndimage

        iobs, mask = to_numpy(state.iobs), to_numpy(state.mask)
        ac = np.fft.ifftn(guinier_filled(iobs, mask)).real
        ac = np.fft.fftshift(np.maximum(ac, 0.0))
        ac = ndimage.gaussian_filter(ac, self.sigma, mode="wrap")
        support = ac > self.threshold * ac.max()
        labels, _ = ndimage.label(support)
        centre = tuple(n // 2 for n in ac.shape)
        support = labels == labels[centre]
        state.support = state.backend.asarray(np.fft.ifftshift(support))
        state.sup_sigma = None
        return state


@dataclass(frozen=True, eq=False, repr=False)
class RandomObject(Operator):
    """Random start in the support: random amplitudes and phases, scaled to the data."""

    amplitude_range: float = 0.5
    name = "InitObj"

    def apply(self, state: CDIState) -> CDIState:
        be = state.backend
        shape = state.shape
        amp = 1.0 - self.amplitude_range * state.rng.random(shape)
        phase = np.exp(2j * np.pi * state.rng.random(shape))
        obj = be.asarray((amp * phase).astype(np.complex64)) * state.support
        xp = be.xp
        measured = ~state.mask
        total = (
            float(xp.sum(state.iobs[measured]))
            * state.iobs.size
            / max(1, int(xp.count_nonzero(measured)))
        )
        norm = float(xp.sum(xp.abs(obj) ** 2))
        state.obj = (obj * np.float32(np.sqrt(total / max(norm, _EPS)))).astype(np.complex64)
        state.iteration = 0
        return state


def poisson_llk(state: CDIState) -> tuple[float, float]:
    """Mean Poisson deviance per pixel on the fitted and on the free pixels.

    Returns
    -------
    llk, llk_free : float
        Lower is better; at most about 1 for a model fitting to the Poisson noise (NaN
        for an empty free set).
    """
    be = state.backend
    xp = be.xp
    f = be.fftn(support_projected(state, state.obj))
    calc = xp.maximum(f.real**2 + f.imag**2, np.float32(1e-6))
    obs = state.iobs
    ratio = xp.where(obs > 0, obs / calc, np.float32(1))
    dev = 2 * (calc - obs + obs * xp.log(ratio))
    out = []
    for sel in (state.known, state.free):
        n = int(xp.count_nonzero(sel))
        out.append(float(xp.sum(dev[sel])) / n if n else float("nan"))
    return out[0], out[1]


@dataclass(frozen=True, eq=False, repr=False)
class LogLikelihood(Operator):
    """Record the Poisson log-likelihood (fit and free) in ``state.history``."""

    name = "LLK"

    def apply(self, state: CDIState) -> CDIState:
        llk, free = poisson_llk(state)
        state.history.append(
            {
                "iteration": float(state.iteration),
                "llk": llk,
                "llk_free": free,
                "support_fraction": state.support_fraction(),
            }
        )
        return state


ER = ErrorReduction()
HIO = HybridInputOutput()
RAAR = RelaxedAveragedAlternatingReflections()
Sup = ShrinkWrap()
Pos = Positivity()
Real = RealConstraint()
FourierProj = AmplitudeProjection()
SupProj = SupportProjection()
AutoSupport = SupportFromAutocorrelation()
InitObj = RandomObject()
LLK = LogLikelihood()
ZeroMaskOp = ZeroMask()
FreeMask = ZeroMask(on=False)

for _op in (ER, HIO, RAAR, Sup, Pos, Real, FourierProj, SupProj, AutoSupport, InitObj, LLK):
    REGISTRY[_op.name] = _op
REGISTRY["ZeroMask"] = ZeroMaskOp
REGISTRY["FreeMask"] = FreeMask
