"""Coherent diffraction imaging: phase retrieval in 2-D and 3-D (the "numerical lens").

Seed 002: an isolated object in a coherent plane wave gives a far-field speckle pattern
``I(q) = |F[rho](q)|^2``; sampled finer than the Nyquist rate of the object's
autocorrelation (oversampling ``sigma >= 3`` advised), the lost phases are recovered by
iterating between the measured Fourier magnitudes and a real-space support.

Modules
-------
:mod:`~crystalscope.cdi.state`
    :class:`CDIState`: object, support, data, unknown-pixel mask, free pixels.
:mod:`~crystalscope.cdi.operators` and :mod:`~crystalscope.cdi.algebra`
    ER, HIO, RAAR, shrink-wrap, positivity... composable as
    ``(Sup * ER**5 * HIO**40)**20 * state`` or ``parse_algorithm("...")``.
:mod:`~crystalscope.cdi.runs`
    Many runs through dask, ranking by free log-likelihood, alignment, averaging, PRTF,
    FRC/FSC.
:mod:`~crystalscope.cdi.simulate`, :mod:`~crystalscope.cdi.plan`,
:mod:`~crystalscope.cdi.io`, :mod:`~crystalscope.cdi.plots`
    Test objects and patterns, sampling calculator, file I/O, figures.

The array backend is chosen at run time (:func:`~crystalscope.cdi.backend.get_backend`):
CuPy when a GPU is usable, NumPy with multi-threaded scipy.fft otherwise.
"""

from __future__ import annotations

from crystalscope.cdi.algebra import Operator, parse_algorithm
from crystalscope.cdi.backend import Backend, get_backend
from crystalscope.cdi.operators import (
    ER,
    HIO,
    LLK,
    RAAR,
    AutoSupport,
    FourierProj,
    InitObj,
    Pos,
    Real,
    Sup,
    SupProj,
    poisson_llk,
)
from crystalscope.cdi.plan import SamplingPlan, plan_sampling
from crystalscope.cdi.runs import (
    DEFAULT_ALGORITHM,
    RunResult,
    align,
    average,
    fourier_shell_correlation,
    normalized_rms_error,
    prtf,
    resolution_at,
    run_many,
    run_once,
    select_best,
)
from crystalscope.cdi.state import CDIState

__all__ = [
    "DEFAULT_ALGORITHM",
    "ER",
    "HIO",
    "LLK",
    "RAAR",
    "AutoSupport",
    "Backend",
    "CDIState",
    "FourierProj",
    "InitObj",
    "Operator",
    "Pos",
    "Real",
    "RunResult",
    "SamplingPlan",
    "Sup",
    "SupProj",
    "align",
    "average",
    "fourier_shell_correlation",
    "get_backend",
    "normalized_rms_error",
    "parse_algorithm",
    "plan_sampling",
    "poisson_llk",
    "prtf",
    "resolution_at",
    "run_many",
    "run_once",
    "select_best",
]
