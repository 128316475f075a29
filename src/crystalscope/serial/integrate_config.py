"""Configuration of ``crystalscope serial integrate`` (YAML sections, validated).

Example::

    input: preprocessed/preprocessed.h5   # frames, from `crystalscope serial preprocess`
    indexed: indexed                      # directory (or indexed.h5) of `serial index`
    integration:
      r_peak_px: 3.0                      # summation radius
      r_bg_inner_px: 4.0                  # background annulus
      r_bg_outer_px: 6.0
      background: auto                    # mean on background-subtracted frames, else plane
      d_min: 2.0                          # A; default: just beyond the peaks
      partiality: xsphere
    dose:                                 # dose-fractionation movies (optional)
      enabled: true
      input: sim/frames.h5                # the raw movie frames
      exposures: [1, 2, 4, 8]             # fractions summed per exposure
    output:
      directory: integrated
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from crystalscope.config import BeamConfig, ComputeConfig, StrictModel

__all__ = ["DoseSeriesSection", "IntegrateConfig", "IntegrateOutput", "IntegrationSection"]


class IntegrationSection(StrictModel):
    """Spot prediction and summation integration (docs/algorithms/integration.md)."""

    r_peak_px: float = Field(3.0, gt=0, description="radius of the summation disk, px")
    r_bg_inner_px: float = Field(4.0, gt=0, description="inner radius of the background ring")
    r_bg_outer_px: float = Field(6.0, gt=0, description="outer radius of the background ring")
    background: Literal["auto", "plane", "mean"] = Field(
        "auto", description="auto: mean on background-subtracted frames, plane otherwise"
    )
    d_min: float | None = Field(
        None, gt=0, description="highest resolution predicted, A; default: from the peaks"
    )
    push_res: float = Field(
        0.05, ge=0, description="default d_min: 1/A beyond the 99th percentile of peak 1/d"
    )
    d_max: float | None = Field(None, gt=0, description="lowest resolution predicted, A")
    prediction_factor: float = Field(
        1.0, gt=0, description="predict reflections with |s| <= factor * profile radius"
    )
    partiality: Literal["unity", "xsphere", "gaussian"] = Field(
        "xsphere", description="model of the per-observation partiality estimate"
    )
    gain_adu_per_count: float = Field(1.0, gt=0, description="detector gain, ADU per count")
    saturation_adu: float | None = Field(None, gt=0, description="values at/above are flagged")
    min_background_px: int = Field(10, ge=3, description="fewer ring pixels: spot flagged")
    min_beam_distance_px: float = Field(
        20.0, ge=0, description="spots nearer the direct beam are flagged (zero-order halo)"
    )

    @model_validator(mode="after")
    def _radii(self) -> IntegrationSection:
        if not self.r_peak_px <= self.r_bg_inner_px < self.r_bg_outer_px:
            raise ValueError("need r_peak_px <= r_bg_inner_px < r_bg_outer_px")
        if self.d_min is not None and self.d_max is not None and self.d_max <= self.d_min:
            raise ValueError("d_max must be larger than d_min")
        return self


class DoseSeriesSection(StrictModel):
    """Dose fractionation (seed 004, 3.3.3): the indexing solutions, found on one
    aggregation of each crystal's movie, integrated on sums of different lengths."""

    enabled: bool = False
    input: Path | None = Field(None, description="the raw movie frames (Dataset file)")
    exposures: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8], description="fractions summed, from `first`"
    )
    first: int = Field(0, ge=0, description="first fraction summed")
    by: list[str] = Field(
        default_factory=lambda: ["file", "shot"], description="shots columns naming a crystal"
    )
    fraction_column: str = Field("fraction", description="index of a frame within its movie")
    dose_per_fraction: float | None = Field(
        None, gt=0, description="e/A^2 per fraction; default: from a dose_e_per_a2 column"
    )

    @model_validator(mode="after")
    def _check(self) -> DoseSeriesSection:
        if self.enabled and self.input is None:
            raise ValueError("dose.input (the raw movie frames) is needed when enabled")
        if not self.exposures or min(self.exposures) < 1:
            raise ValueError("dose.exposures must be positive numbers of fractions")
        return self


class IntegrateOutput(StrictModel):
    """Where the results go."""

    directory: Path = Path("integrated")
    overwrite: bool = False
    stream: bool = Field(True, description="also write a CrystFEL stream with reflections")


class IntegrateConfig(StrictModel):
    """``crystalscope serial integrate``: predict and integrate every indexed crystal."""

    input: Path | None = Field(None, description="preprocessed.h5 of `serial preprocess`")
    indexed: Path | None = Field(None, description="output directory or indexed.h5 of `index`")
    geometry: Path | None = Field(None, description="default: detector.geom beside the input")
    beam: BeamConfig | None = Field(None, description="default: the geometry's wavelength")
    space_group: str | None = Field(None, description="default: the one indexing used")
    integration: IntegrationSection = Field(default_factory=IntegrationSection)
    dose: DoseSeriesSection = Field(default_factory=DoseSeriesSection)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    output: IntegrateOutput = Field(default_factory=IntegrateOutput)
