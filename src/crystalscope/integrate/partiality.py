"""Partiality models: the fraction of a reflection recorded in a still.

A still records only the part of a reciprocal-lattice point's intensity that the Ewald
sphere cuts.  Given the excitation error ``s`` of a reflection (1/A, distance of the
lattice point from the sphere, positive inside, as
:meth:`~crystalscope.model.crystal.Crystal.excitation_error`) and the crystal's profile
radius ``R`` (1/A), a model returns the partiality ``p(s)``, normalised so that
``p(0) = 1``; scale factors absorb the overall normalisation.

Models
------
``unity``
    ``p = 1``: plain averaging (Monte-Carlo merging).
``xsphere``
    The lattice point is a uniform sphere of radius ``R`` (CrystFEL's ``xsphere``).  The
    recorded fraction is the part of the sphere between the two Ewald spheres of the
    shortest and longest wavelength, a slab of thickness ``w`` (1/A) centred on ``s``.
    With ``F(x) = 3 u^2 - 2 u^3``, ``u = clip((x + R) / (2 R), 0, 1)``, the fraction of
    the sphere below a plane at height ``x``,

    .. math::

        p(s) = \\frac{F(s + w/2) - F(s - w/2)}{F(w/2) - F(-w/2)} ,

    which for a monochromatic beam (``w -> 0``, electrons) is the cross-section of the
    sphere, ``p(s) = 1 - (s / R)^2`` for ``|s| < R`` and 0 outside.
``gaussian``
    A Gaussian lattice point with the same second moment as the sphere's cross-section
    (``sigma^2 = R^2 / 5``): ``p(s) = exp(-s^2 / (2 sigma^2))``.  It matches the
    simulator's ``gaussian`` rel-point profile.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import ConfigError, DataError

__all__ = ["PARTIALITY_MODELS", "PartialityModel", "partiality"]

PartialityModel = Literal["unity", "xsphere", "gaussian"]

#: Names accepted by :func:`partiality`.
PARTIALITY_MODELS: tuple[str, ...] = ("unity", "xsphere", "gaussian")


def _sphere_below(x: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """Fraction of a uniform sphere of ``radius`` below the plane at height ``x``."""
    u = np.clip((x + radius) / (2.0 * radius), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def partiality(
    excitation_error: ArrayLike,
    profile_radius: ArrayLike,
    model: str = "xsphere",
    *,
    bandwidth: float = 0.0,
) -> np.ndarray:
    """Partiality of reflections under ``model`` (module docstring), ``p(0) = 1``.

    Parameters
    ----------
    excitation_error : array_like
        ``s`` per reflection, 1/A.
    profile_radius : array_like
        ``R`` (1/A), a scalar or one value per reflection; must be positive.
    model : {"unity", "xsphere", "gaussian"}
    bandwidth : float
        ``w``, thickness in 1/A of the shell between the Ewald spheres of the extreme
        wavelengths (``w ~ |q|^2 lambda dlambda/lambda`` is small; 0 for a
        monochromatic beam); only ``xsphere`` uses it.

    Returns
    -------
    numpy.ndarray
        ``p`` in ``[0, 1]``, broadcast shape of the inputs.

    Raises
    ------
    ConfigError
        For an unknown model or a negative bandwidth.
    DataError
        For non-positive or non-finite profile radii.
    """
    if model not in PARTIALITY_MODELS:
        raise ConfigError(
            f"unknown partiality model {model!r}; choose one of {', '.join(PARTIALITY_MODELS)}",
            field="partiality",
        )
    if not (bandwidth >= 0 and np.isfinite(bandwidth)):
        raise ConfigError(f"bandwidth must be >= 0, got {bandwidth}", field="bandwidth")
    s = np.asarray(excitation_error, dtype=float)
    r = np.asarray(profile_radius, dtype=float)
    if r.size and not np.all(np.isfinite(r) & (r > 0)):
        raise DataError("profile radius must be positive and finite", field="profile_radius")
    s, r = np.broadcast_arrays(s, r)
    if model == "unity":
        return np.ones(s.shape)
    if model == "gaussian":
        return np.exp(-2.5 * (s / r) ** 2)
    if bandwidth == 0.0:
        return np.clip(1.0 - (s / r) ** 2, 0.0, 1.0)
    half = 0.5 * bandwidth
    top = _sphere_below(s + half, r) - _sphere_below(s - half, r)
    norm = _sphere_below(np.full(r.shape, half), r) - _sphere_below(np.full(r.shape, -half), r)
    return np.clip(top / norm, 0.0, 1.0)
