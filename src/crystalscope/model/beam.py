"""Incident beam: X-ray photons or electrons, with the exact (relativistic) wavelength.

Wavelengths are in Angstrom.  For electrons accelerated through a potential ``U`` the
relativistic de Broglie wavelength is

.. math::

    \\lambda = \\frac{h}{\\sqrt{2 m_0 e U \\left(1 + \\frac{e U}{2 m_0 c^2}\\right)}}

(200 kV: 0.025079 A; 300 kV: 0.019687 A).  For photons ``lambda = h c / E``
(12.398 keV: 1.0000 A).  The wave number follows gemmi's crystallographic convention
``k = 1 / lambda`` (no factor 2 pi), in inverse Angstrom, so that the Ewald sphere has
radius ``1 / lambda``.  The beam travels along +z of the lab frame (NeXus/McStas).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import constants as const

__all__ = [
    "Beam",
    "electron_wavelength",
    "photon_energy_from_wavelength",
    "photon_wavelength",
    "voltage_from_electron_wavelength",
]

Radiation = Literal["xray", "electron"]

_HC_EV_A = const.h * const.c / const.e * 1e10  # photon: lambda[A] = _HC_EV_A / E[eV]
_M0C2_EV = const.m_e * const.c**2 / const.e  # electron rest energy in eV


def photon_wavelength(energy_ev: float) -> float:
    """Wavelength in Angstrom of a photon of energy ``energy_ev`` (eV)."""
    if not energy_ev > 0:
        raise ValueError(f"photon energy must be positive, got {energy_ev} eV")
    return _HC_EV_A / energy_ev


def photon_energy_from_wavelength(wavelength: float) -> float:
    """Photon energy in eV for a wavelength in Angstrom."""
    if not wavelength > 0:
        raise ValueError(f"wavelength must be positive, got {wavelength} A")
    return _HC_EV_A / wavelength


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic wavelength in Angstrom of electrons accelerated through ``voltage_kv`` kV."""
    if not voltage_kv > 0:
        raise ValueError(f"accelerating voltage must be positive, got {voltage_kv} kV")
    ev = voltage_kv * 1e3  # kinetic energy in eV
    p = math.sqrt(2.0 * const.m_e * const.e * ev * (1.0 + ev / (2.0 * _M0C2_EV)))
    return const.h / p * 1e10


def voltage_from_electron_wavelength(wavelength: float) -> float:
    """Accelerating voltage in kV that gives electrons of ``wavelength`` Angstrom."""
    if not wavelength > 0:
        raise ValueError(f"wavelength must be positive, got {wavelength} A")
    pc_ev = const.h * const.c / (wavelength * 1e-10) / const.e  # momentum * c in eV
    kinetic = math.sqrt(pc_ev**2 + _M0C2_EV**2) - _M0C2_EV
    return kinetic / 1e3


@dataclass(frozen=True)
class Beam:
    """A monochromatic incident beam along +z.

    Build it with :meth:`from_energy_ev`, :meth:`from_energy_kev`,
    :meth:`from_wavelength` or :meth:`from_voltage_kv` rather than directly.

    Attributes
    ----------
    wavelength : float
        Wavelength in Angstrom.
    radiation : {"xray", "electron"}
        Kind of radiation; decides which scattering factors apply downstream.
    bandwidth : float
        Relative energy spread (FWHM, dE/E), 0 for an ideal beam.
    divergence : float
        Full beam divergence (or convergence) angle in radians.
    """

    wavelength: float
    radiation: Radiation = "xray"
    bandwidth: float = 0.0
    divergence: float = 0.0

    def __post_init__(self) -> None:
        if not (np.isfinite(self.wavelength) and self.wavelength > 0):
            raise ValueError(f"wavelength must be a positive number, got {self.wavelength}")
        if self.radiation not in ("xray", "electron"):
            raise ValueError(f"radiation must be 'xray' or 'electron', got {self.radiation!r}")
        if self.bandwidth < 0 or self.divergence < 0:
            raise ValueError("bandwidth and divergence must be non-negative")

    @classmethod
    def from_energy_ev(cls, energy_ev: float, **kwargs: float) -> Beam:
        """X-ray beam from a photon energy in eV."""
        return cls(photon_wavelength(energy_ev), "xray", **kwargs)

    @classmethod
    def from_energy_kev(cls, energy_kev: float, **kwargs: float) -> Beam:
        """X-ray beam from a photon energy in keV."""
        return cls.from_energy_ev(energy_kev * 1e3, **kwargs)

    @classmethod
    def from_wavelength(
        cls, wavelength: float, radiation: Radiation = "xray", **kwargs: float
    ) -> Beam:
        """Beam of a given wavelength in Angstrom."""
        return cls(float(wavelength), radiation, **kwargs)

    @classmethod
    def from_voltage_kv(cls, voltage_kv: float, **kwargs: float) -> Beam:
        """Electron beam from the accelerating voltage in kV (relativistic wavelength)."""
        return cls(electron_wavelength(voltage_kv), "electron", **kwargs)

    @property
    def k(self) -> float:
        """Wave number ``1 / lambda`` in inverse Angstrom (Ewald sphere radius)."""
        return 1.0 / self.wavelength

    @property
    def k_vector(self) -> np.ndarray:
        """Incident wave vector ``(0, 0, 1/lambda)`` in the lab frame, inverse Angstrom."""
        return np.array([0.0, 0.0, self.k])

    @property
    def energy_ev(self) -> float:
        """Photon energy in eV (X-rays) or kinetic energy in eV (electrons)."""
        if self.radiation == "electron":
            return self.voltage_kv * 1e3
        return photon_energy_from_wavelength(self.wavelength)

    @property
    def voltage_kv(self) -> float:
        """Accelerating voltage in kV (electrons only)."""
        if self.radiation != "electron":
            raise ValueError("an X-ray beam has no accelerating voltage")
        return voltage_from_electron_wavelength(self.wavelength)

    def __str__(self) -> str:
        if self.radiation == "electron":
            return f"electron beam {self.voltage_kv:.1f} kV (lambda = {self.wavelength:.6f} A)"
        return f"X-ray beam {self.energy_ev / 1e3:.4f} keV (lambda = {self.wavelength:.6f} A)"
