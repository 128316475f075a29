"""Sampling calculator for plane-wave CDI (seed 002, section 4).

For a detector of ``N_pix`` pixels of size ``p`` at distance ``D`` from a sample of
size ``S`` illuminated at wavelength ``lambda``:

* linear oversampling ratio ``sigma = D lambda / (p S)``; phasing needs
  ``sigma > 2^(1/n)`` in ``n`` dimensions and ``sigma >= 3`` is advised in practice;
* the largest sample for ``sigma = 3``: ``S_max = D lambda / (3 p)``;
* real-space pixel (resolution element) ``dr = D lambda / (N_pix p) = sigma S / N_pix``,
  i.e. ``3 S / N_pix`` at ``sigma = 3``;
* depth of field ``DOF = 2 dr^2 / lambda``: thicker samples show defocus artefacts in 2-D
  and need a 3-D (Ewald-sphere) treatment.

Units at the interface: distance in mm, pixel size in micrometres, sample size in
micrometres, wavelength in Angstrom (or photon energy in keV); results in the same
units as named in the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from crystalscope.errors import ConfigError

__all__ = ["HC_KEV_A", "SamplingPlan", "plan_sampling", "wavelength_from_kev"]

#: h c in keV Angstrom.
HC_KEV_A = 12.398419843320026


def wavelength_from_kev(energy_kev: float) -> float:
    """X-ray wavelength in Angstrom for a photon energy in keV."""
    if energy_kev <= 0:
        raise ConfigError("photon energy must be > 0 keV", field="energy_kev")
    return HC_KEV_A / energy_kev


@dataclass(frozen=True)
class SamplingPlan:
    """Result of :func:`plan_sampling` (lengths in the units of the field names)."""

    distance_mm: float
    wavelength_a: float
    pixel_size_um: float
    n_pixels: int
    sample_size_um: float
    oversampling: float
    max_sample_um: float
    pixel_nm: float
    resolution_at_sigma3_nm: float
    depth_of_field_um: float

    @property
    def ok(self) -> bool:
        """Whether the oversampling is at least 3."""
        return self.oversampling >= 3.0

    def table(self) -> str:
        """The plan as a two-column text table."""
        rows = [
            ("sample-detector distance D", f"{self.distance_mm / 1000:.3f} m"),
            ("wavelength lambda", f"{self.wavelength_a:.4f} A"),
            ("pixel size p", f"{self.pixel_size_um:.1f} um"),
            ("detector pixels N_pix", f"{self.n_pixels}"),
            ("sample size S", f"{self.sample_size_um:.3f} um"),
            (
                "oversampling sigma = D lambda / (p S)",
                f"{self.oversampling:.2f}" + ("" if self.ok else "  (< 3: too low)"),
            ),
            ("largest sample for sigma = 3", f"{self.max_sample_um:.3f} um"),
            ("real-space pixel D lambda / (N_pix p)", f"{self.pixel_nm:.2f} nm"),
            ("resolution element 3 S / N_pix", f"{self.resolution_at_sigma3_nm:.2f} nm"),
            ("depth of field 2 dr^2 / lambda", f"{self.depth_of_field_um:.3f} um"),
        ]
        width = max(len(r[0]) for r in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def plan_sampling(
    *,
    distance_mm: float,
    pixel_size_um: float,
    n_pixels: int,
    sample_size_um: float,
    wavelength_a: float | None = None,
    energy_kev: float | None = None,
) -> SamplingPlan:
    """Oversampling, resolution element and depth of field of a CDI geometry.

    Parameters
    ----------
    distance_mm : float
        Sample-to-detector distance D, mm.
    pixel_size_um : float
        Detector pixel size p, micrometres.
    n_pixels : int
        Detector size N_pix along one axis, pixels.
    sample_size_um : float
        Sample size S, micrometres.
    wavelength_a, energy_kev : float
        Wavelength in Angstrom, or photon energy in keV (exactly one).

    Returns
    -------
    SamplingPlan
        ``dr`` (``pixel_nm``) uses the actual ``sigma``; the depth of field is for the
        ``3 S / N_pix`` element.

    Raises
    ------
    ConfigError
        Non-positive inputs, or both/neither of wavelength and energy.
    """
    if (wavelength_a is None) == (energy_kev is None):
        raise ConfigError("give exactly one of wavelength_a and energy_kev", field="wavelength_a")
    lam = wavelength_a if wavelength_a is not None else wavelength_from_kev(energy_kev or 0.0)
    for name, value in (
        ("distance_mm", distance_mm),
        ("pixel_size_um", pixel_size_um),
        ("n_pixels", n_pixels),
        ("sample_size_um", sample_size_um),
        ("wavelength_a", lam),
    ):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value}", field=name)
    d_a = distance_mm * 1e7
    p_a = pixel_size_um * 1e4
    s_a = sample_size_um * 1e4
    sigma = d_a * lam / (p_a * s_a)
    dr3_a = 3.0 * s_a / n_pixels
    return SamplingPlan(
        distance_mm=distance_mm,
        wavelength_a=lam,
        pixel_size_um=pixel_size_um,
        n_pixels=int(n_pixels),
        sample_size_um=sample_size_um,
        oversampling=sigma,
        max_sample_um=d_a * lam / (3.0 * p_a) / 1e4,
        pixel_nm=d_a * lam / (n_pixels * p_a) / 10.0,
        resolution_at_sigma3_nm=dr3_a / 10.0,
        depth_of_field_um=2.0 * dr3_a**2 / lam / 1e4,
    )
