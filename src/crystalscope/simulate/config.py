"""Parameters of the simulators, as validated configuration sections.

Every physical effect has its own switch so that a test or a user can isolate it.
Units are in the names (see docs/conventions.md); defaults describe a typical
200 kV SerialED experiment on small protein crystals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from crystalscope.config import BeamConfig, StrictModel

__all__ = [
    "BeamEffects",
    "CrystalConfig",
    "DetectorEffects",
    "DoseConfig",
    "RotationConfig",
    "SerialConfig",
    "SimDetectorConfig",
    "SourceConfig",
]


class SourceConfig(StrictModel):
    """Where structure factors come from (exactly one of ``structure`` and ``mtz``)."""

    structure: str | None = Field(
        "builtin:lysozyme-like",
        description="structure file (PDB, mmCIF, small-molecule CIF) or builtin:NAME",
    )
    mtz: Path | None = Field(None, description="measured intensities, expanded to P1")
    mtz_labels: tuple[str, str] | None = Field(None, description="(I, SIGI) column labels")
    form_factors: Literal["auto", "xray", "electron"] = Field(
        "auto", description="auto: electron for electron beams, X-ray (IT92) otherwise"
    )
    b_factor: float = Field(0.0, ge=0, description="extra overall B factor, A^2")
    d_min: float = Field(2.0, gt=0, description="resolution limit of the simulation, A")


class CrystalConfig(StrictModel):
    """The crystals: size, shape of reciprocal-lattice points, mosaicity."""

    thickness_a: float = Field(1000.0, gt=0, description="size along the beam, A")
    lateral_size_a: float = Field(5000.0, gt=0, description="illuminated width, A")
    profile: Literal["gaussian", "shape"] = Field(
        "gaussian",
        description="rel-point profile: Gaussian of equal integral, or sinc^2 shape transform",
    )
    mosaicity_deg: float = Field(0.0, ge=0, description="FWHM of mosaic block spread")
    orientations: Path | None = Field(None, description="file of U matrices (n x 9), else random")


class BeamEffects(StrictModel):
    """Beam-side effects."""

    divergence_mrad: float = Field(0.0, ge=0, description="full angle (FWHM) of divergence")
    dose_e_per_a2: float = Field(1.0, gt=0, description="fluence per frame (e-/A^2 or ph/A^2)")
    beam_diameter_a: float = Field(1.0e4, gt=0, description="illuminated beam diameter, A")
    zero_order: bool = Field(True, description="unscattered beam with Lorentzian tails")
    zero_order_width_px: float = Field(1.5, gt=0, description="Lorentzian half width, px")
    inelastic: bool = Field(True, description="radially symmetric inelastic background")
    inelastic_mfp_a: float = Field(1500.0, gt=0, description="inelastic mean free path, A")
    inelastic_width_px: float = Field(40.0, gt=0, description="characteristic width, px")
    centre_jitter_px: float = Field(0.0, ge=0, description="RMS per-frame beam-centre jitter")
    ellipticity: float = Field(0.0, ge=0, lt=0.5, description="axis ratio - 1 of the distortion")
    ellipticity_angle_deg: float = Field(0.0, description="direction of the long axis")


class DetectorEffects(StrictModel):
    """Detector-side effects."""

    noise: bool = Field(True, description="Poisson counting noise")
    gain_adu_per_count: float = Field(1.0, gt=0)
    psf_sigma_px: float = Field(0.7, ge=0, description="Gaussian point-spread function")
    dead_pixel_fraction: float = Field(0.0, ge=0, le=1)
    hot_pixel_fraction: float = Field(0.0, ge=0, le=1)
    hot_pixel_counts: float = Field(1000.0, ge=0)
    flat_field_rms: float = Field(0.0, ge=0, description="relative pixel-sensitivity spread")
    dead_time_s: float = Field(0.0, ge=0, description="paralyzable dead time per pixel")
    exposure_s: float = Field(0.01, gt=0, description="frame exposure time")
    saturation_adu: float | None = Field(None, gt=0, description="values above are clipped")
    gaps: bool = Field(True, description="zero the pixels between modules")


class SimDetectorConfig(StrictModel):
    """Which detector: a preset or a CrystFEL geometry."""

    preset: Literal["lambda-750k", "timepix-quad", "single"] | None = "lambda-750k"
    geometry: Path | None = Field(None, description="CrystFEL .geom (overrides preset)")
    distance_mm: float = Field(1100.0, gt=0, description="(effective) camera length")


class DoseConfig(StrictModel):
    """Dose fractionation and radiation damage."""

    frames_per_crystal: int = Field(1, ge=1)
    b_per_dose: float = Field(0.0, ge=0, description="A^2 of B factor per e-/A^2 absorbed")


class SerialConfig(StrictModel):
    """A serial (stills) data set."""

    n_crystals: int = Field(100, ge=1)
    hit_fraction: float = Field(1.0, ge=0, le=1, description="frames with a crystal")
    two_lattice_fraction: float = Field(0.0, ge=0, le=1)
    seed: int = 0
    beam: BeamConfig = Field(default_factory=lambda: BeamConfig(voltage_kv=200.0))
    source: SourceConfig = Field(default_factory=SourceConfig)
    crystal: CrystalConfig = Field(default_factory=CrystalConfig)
    beam_effects: BeamEffects = Field(default_factory=BeamEffects)
    detector: SimDetectorConfig = Field(default_factory=SimDetectorConfig)
    detector_effects: DetectorEffects = Field(default_factory=DetectorEffects)
    dose: DoseConfig = Field(default_factory=DoseConfig)


class RotationConfig(StrictModel):
    """A continuous-rotation series (cRED / 3D ED, or X-ray rotation)."""

    n_frames: int = Field(200, ge=1)
    start_deg: float = 0.0
    oscillation_deg: float = Field(0.5, gt=0, description="rotation during one exposure")
    dead_time_deg: float = Field(0.0, ge=0, description="rotation lost between exposures")
    axis: tuple[float, float, float] = Field((1.0, 0.0, 0.0), description="lab frame")
    defocus_every: int = Field(0, ge=0, description="every n-th frame is a defocused image")
    defocus_cost_deg: float = Field(0.0, ge=0, description="extra rotation a defocus costs")
    crystal_offset_a: tuple[float, float] = Field(
        (0.0, 0.0), description="crystal position off the rotation axis (perp. to axis), A"
    )
    aperture_diameter_a: float | None = Field(None, gt=0, description="selected-area aperture")
    orientation_u: tuple[float, float, float, float, float, float, float, float, float] | None = (
        Field(
            None,
            description="U at phi = 0 (crystal Cartesian -> lab), 9 values row by row; "
            "None: random from the seed",
        )
    )
    seed: int = 0
    beam: BeamConfig = Field(default_factory=lambda: BeamConfig(voltage_kv=200.0))
    source: SourceConfig = Field(default_factory=SourceConfig)
    crystal: CrystalConfig = Field(default_factory=CrystalConfig)
    beam_effects: BeamEffects = Field(default_factory=BeamEffects)
    detector: SimDetectorConfig = Field(
        default_factory=lambda: SimDetectorConfig(preset="timepix-quad", distance_mm=700.0)
    )
    detector_effects: DetectorEffects = Field(default_factory=DetectorEffects)
