"""Intensities of CBXD Bragg streaks (seed Eqs. 4, 5, 7, 9-11).

Streak intensity (Eq. 5)
------------------------
Counts along a Bragg streak, integrated across its (rocking) width, are
``I(k_out(chi)) = c P L |F|^2 |A(k_in(chi))|^2 P_S(k_in(chi), omega)``.  In a defocused
beam every crystal position sees exactly one incident direction, so the rocking curve
(width ``Delta theta = lambda L / t``, Eq. 4) is integrated by the neighbouring columns of
the crystal, and counts per radian of deficiency line are::

    dN / d(ell) = (N / Omega) * r_e^2 lambda^3 |F|^2 P L / V_cell^2 * |A|^2 * P_S

with ``N`` the photons per exposure through the pupil of solid angle ``Omega``, ``r_e``
the classical electron radius and ``P_S`` the projected crystal length along the incident
ray (Eq. 6).  This is the kinematic integrated reflectivity of a crystal column; ``c`` of
Eq. 5 is ``(N / Omega) r_e^2 lambda^3 / V_cell^2`` (:func:`scattering_constant`).  Along
the Kossel circle ``d(ell) = cos(theta_B) d(chi)`` (the cone's semi-angle is
``pi/2 - theta_B``).

Other factors
-------------
* Lorentz ``L = 1/sin(2 theta_B)`` (Eq. 4); polarisation for a beam polarised along
  ``x``: ``P = 1 - (k_out_hat . x)^2``, which equals Eq. 10
  ``cos^2(2 theta) cos^2(xi) + sin^2(xi)`` with ``xi`` the azimuth of the scattering plane
  from the horizontal; sampling factor ``W = 1/cos(xi)`` (Eq. 7).
* Absorption: ``T`` of Eq. 11 through :func:`crystalscope.cbxd.shapes.project_rays`.
* Detector efficiency ``D = 1 - exp(-mu t_s / cos(2 theta))`` (Eq. 9).

Structure factors come from gemmi through
:func:`crystalscope.simulate.structure_factors.load_structure_factors`: silicon
(``builtin:silicon``, Fd-3m, a = 5.431 A, B = 0.46 A^2) and a vitamin-B12-like
random-atom model in P 21 21 21 (:func:`b12_like_structure_factors`).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.simulate.structure_factors import StructureFactors

__all__ = [
    "R_ELECTRON_A",
    "b12_like_structure_factors",
    "detector_efficiency",
    "lorentz_factor",
    "polarisation_eq10",
    "polarisation_factor",
    "rocking_width",
    "sampling_factor",
    "scattering_constant",
    "silicon_structure_factors",
    "streak_intensity",
]

#: Classical electron radius in A (CODATA 2018).
R_ELECTRON_A = 2.8179403262e-5


def rocking_width(wavelength: float, thickness_a: ArrayLike, theta_rad: ArrayLike) -> np.ndarray:
    """Angular width of a Bragg streak ``Delta theta = lambda / (t sin 2 theta_B)`` (Eq. 4),
    rad; ``thickness_a`` and ``wavelength`` in A."""
    return wavelength / (np.asarray(thickness_a, float) * np.sin(2 * np.asarray(theta_rad)))


def lorentz_factor(theta_rad: ArrayLike) -> np.ndarray:
    """``L = 1 / sin(2 theta_B)`` (Eq. 4)."""
    return 1.0 / np.sin(2 * np.asarray(theta_rad, dtype=float))


def polarisation_factor(k_out: ArrayLike, polarisation: ArrayLike = (1.0, 0.0, 0.0)) -> np.ndarray:
    """``P = 1 - (k_out_hat . e)^2`` for a beam linearly polarised along ``e`` (lab)."""
    k = np.asarray(k_out, dtype=float)
    e = np.asarray(polarisation, dtype=float)
    c = (k @ (e / np.linalg.norm(e))) / np.linalg.norm(k, axis=-1)
    return 1.0 - c**2


def polarisation_eq10(two_theta_rad: ArrayLike, xi_rad: ArrayLike) -> np.ndarray:
    """``P = cos^2(2 theta) cos^2(xi) + sin^2(xi)`` (Eq. 10)."""
    tt, xi = np.asarray(two_theta_rad, float), np.asarray(xi_rad, float)
    return np.cos(tt) ** 2 * np.cos(xi) ** 2 + np.sin(xi) ** 2


def sampling_factor(xi_rad: ArrayLike) -> np.ndarray:
    """``W = 1 / cos(xi)`` (Eq. 7, section 3.1)."""
    return 1.0 / np.cos(np.asarray(xi_rad, dtype=float))


def detector_efficiency(
    two_theta_rad: ArrayLike, mu_per_mm: float, thickness_mm: float
) -> np.ndarray:
    """``D = 1 - exp(-mu_det t_s / cos 2 theta)`` (Eq. 9); 1 where ``mu_per_mm <= 0``."""
    tt = np.asarray(two_theta_rad, dtype=float)
    if mu_per_mm <= 0:
        return np.ones_like(tt)
    return 1.0 - np.exp(-mu_per_mm * thickness_mm / np.cos(tt))


def scattering_constant(
    photons: float, pupil_solid_angle: float, wavelength: float, cell_volume_a3: float
) -> float:
    """``c`` of Eq. 5: ``(N / Omega) r_e^2 lambda^3 / V_cell^2`` (photons per radian of
    deficiency line per A of projected crystal per electron^2 of ``|F|^2``)."""
    return photons / pupil_solid_angle * R_ELECTRON_A**2 * wavelength**3 / cell_volume_a3**2


def streak_intensity(
    c: float,
    polarisation: ArrayLike,
    lorentz: ArrayLike,
    f2: ArrayLike,
    aperture: ArrayLike,
    projection_a: ArrayLike,
) -> np.ndarray:
    """Eq. 5: ``c P L |F|^2 |A|^2 P_S`` (counts per radian of deficiency line);
    ``projection_a`` is ``P_S`` in A."""
    return (
        c
        * np.asarray(polarisation)
        * np.asarray(lorentz)
        * np.asarray(f2)
        * np.asarray(aperture)
        * np.asarray(projection_a)
    )


def silicon_structure_factors(d_min: float, b_factor: float = 0.0) -> StructureFactors:
    """Silicon (Fd-3m, a = 5.431 A, B = 0.46 A^2 from the CIF, plus ``b_factor``):
    X-ray ``|F|`` in electrons from gemmi's IT92 form factors."""
    from crystalscope.simulate.config import SourceConfig
    from crystalscope.simulate.structure_factors import load_structure_factors

    src = SourceConfig(structure="builtin:silicon", d_min=d_min, b_factor=b_factor)
    return load_structure_factors(src, "xray")


def b12_like_structure_factors(d_min: float) -> StructureFactors:
    """A random-atom model with cyanocobalamin's composition (C63 H88 Co N14 O14 P, no
    H, plus 12 waters as O) in the vitamin-B12-like cell (P 21 21 21, a = 15.70,
    b = 22.15, c = 24.96 A), B = 3 A^2: Wilson statistics, not the real structure."""
    from crystalscope.cbxd.shapes import B12_CELL, B12_SPACE_GROUP
    from crystalscope.simulate._sf_atoms import (
        RandomAtomModel,
        model_from_structure,
        random_atom_structure,
    )
    from crystalscope.simulate.structure_factors import structure_factors_from_model

    recipe = RandomAtomModel(
        "b12-like", B12_CELL, B12_SPACE_GROUP,
        {"C": 63, "N": 14, "O": 26, "P": 1, "Co": 1}, 3.0, 20_260_012,
    )  # fmt: skip
    model = model_from_structure(random_atom_structure(recipe), source="builtin:b12-like")
    return structure_factors_from_model(model, "xray", d_min)
