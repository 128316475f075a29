"""Configuration of the CBXD rotation-series simulator (:mod:`crystalscope.simulate.cbxd`).

Defaults follow the seed's silicon experiment (section 3.3, Methods 5.1), coarsened so
that a run takes seconds: 17.5 keV, off-axis MLL pair of NA 0.015, crystal 0.94 mm
downstream of focus, detector 164 mm from focus.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from crystalscope.config import StrictModel

__all__ = [
    "CbxdConfig",
    "CbxdDetectorConfig",
    "CbxdLensConfig",
    "CbxdSampleConfig",
    "CbxdScanConfig",
]


class CbxdLensConfig(StrictModel):
    """Lens pupil (seed 5.1): numerical apertures per axis, on- or off-axis."""

    kind: Literal["on_axis", "off_axis"] = "off_axis"
    na_x: float = Field(0.015, gt=0, lt=0.3, description="NA (half-angle sine) along x")
    na_y: float = Field(0.015, gt=0, lt=0.3, description="NA (half-angle sine) along y")
    inner_na_x: float = Field(0.0087, ge=0, lt=0.3, description="off-axis: inner edge, x")
    inner_na_y: float = Field(0.0087, ge=0, lt=0.3, description="off-axis: inner edge, y")
    focal_x_mm: float = Field(1.15, gt=0, description="focal length of the x lens")
    focal_y_mm: float = Field(1.25, gt=0, description="focal length of the y lens")
    efficiency_x: float = Field(1.0, ge=0, le=1, description="x lens: fraction focused")
    efficiency_y: float = Field(1.0, ge=0, le=1, description="y lens: fraction focused")
    photons_per_frame: float = Field(
        1e8, gt=0, description="photons through the lenses (the 2-D focus gets e_x e_y)"
    )

    @model_validator(mode="after")
    def _pupil_below_45(self) -> CbxdLensConfig:
        if max(self.inner_na_x + 2 * self.na_x, self.inner_na_y + 2 * self.na_y) >= 0.7:
            raise ValueError("the off-axis pupil must stay below sin = 0.7")
        return self


class CbxdSampleConfig(StrictModel):
    """Crystal: shape, structure factors, orientation, position, absorption."""

    shape: Literal["si-f-cuboid", "si-lamella", "b12-prism"] = "si-f-cuboid"
    voxel_um: float = Field(1.0, gt=0, description="voxel edge of the shape model")
    structure: Literal["silicon", "b12-like"] = "silicon"
    b_factor: float = Field(0.0, ge=0, description="extra overall B, A^2")
    d_min: float = Field(0.9, gt=0, description="resolution limit, A")
    orientation_deg: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="U: rotations about x, then y, then z (deg)"
    )
    offset_um: tuple[float, float, float] = Field(
        (0.0, 0.0, 0.0), description="crystal centre relative to the rotation centre"
    )
    centre_on_beam: bool = Field(
        True, description="rotation centre on the ray through the pupil centre"
    )
    defocus_mm: float = Field(0.94, gt=0, description="distance of crystal downstream of focus")
    mu_per_mm: float = Field(0.0, ge=0, description="linear absorption (Eq. 11); 0: off")


class CbxdDetectorConfig(StrictModel):
    """Flat detector normal to the optical axis and its imperfections."""

    distance_mm: float = Field(164.0, gt=0, description="l_D: distance from the focus")
    shape: tuple[int, int] = Field((1024, 1024), description="(n_ss, n_fs)")
    pixel_mm: float = Field(0.3, gt=0, description="pixel size")
    centre_fs: float | None = Field(None, description="optical axis, fs (default: middle)")
    centre_ss: float | None = Field(None, description="optical axis, ss (default: middle)")
    background: float = Field(0.5, ge=0, description="mean background counts per pixel")
    hot_fraction: float = Field(1e-4, ge=0, le=1, description="hot pixels (saturated)")
    dead_fraction: float = Field(1e-4, ge=0, le=1, description="dead pixels (0 counts)")
    saturation: int = Field(2**20 - 1, ge=1, description="largest count a pixel records")
    sensor_mu_per_mm: float = Field(0.0, ge=0, description="Eq. 9 sensor mu; 0: D = 1")
    sensor_thickness_mm: float = Field(0.45, gt=0, description="Eq. 9 sensor thickness")
    noise: bool = Field(True, description="Poisson noise")
    direct_beam: bool = Field(
        False, description="add the transmitted 2-D focus (projected pupil with shadow)"
    )

    @model_validator(mode="after")
    def _positive_shape(self) -> CbxdDetectorConfig:
        if min(self.shape) < 1:
            raise ValueError("detector shape must be positive")
        return self


class CbxdScanConfig(StrictModel):
    """Rotation series about one axis (Eq. 7)."""

    axis: tuple[float, float, float] = Field((0.0, 1.0, 0.0), description="lab axis")
    start_deg: float = 0.0
    step_deg: float = Field(0.2, gt=0, description="rotation per frame")
    n_frames: int = Field(10, ge=1)
    substeps: int = Field(4, ge=1, description="still orientations summed per frame")


class CbxdConfig(StrictModel):
    """A simulated CBXD rotation series."""

    energy_kev: float = Field(17.5, gt=0, description="photon energy")
    lens: CbxdLensConfig = Field(default_factory=CbxdLensConfig)
    sample: CbxdSampleConfig = Field(default_factory=CbxdSampleConfig)
    detector: CbxdDetectorConfig = Field(default_factory=CbxdDetectorConfig)
    scan: CbxdScanConfig = Field(default_factory=CbxdScanConfig)
    seed: int = Field(0, ge=0, description="random seed (noise, pixel defects)")
    overwrite: bool = False
