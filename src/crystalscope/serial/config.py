"""Configuration of ``crystalscope serial preprocess`` (YAML, validated by pydantic).

Every section forbids unknown keys.  Units are in the names; pixel values are pixels of
panel 0.  A minimal file::

    input:
      files: ["data/run_*.h5"]
      geometry: detector.geom
    corrections:
      mask_file: mask.h5
      dead_time_s: 1.0e-7
      exposure_s: 0.01
    output:
      directory: preprocessed

See ``docs/serial-preprocess.md`` for every key and the order of the steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from crystalscope.config import BeamConfig, ComputeConfig, StrictModel

__all__ = [
    "AggregateConfig",
    "BackgroundConfig",
    "CentreConfig",
    "CorrectionConfig",
    "EllipticityConfig",
    "HitConfig",
    "InputConfig",
    "PeakConfig",
    "PreprocessConfig",
    "PreprocessOutput",
    "WatchConfig",
]


class InputConfig(StrictModel):
    """Where the raw frames are and how to read them."""

    files: list[str] = Field(default_factory=list, description="files, globs or .lst files")
    geometry: Path | None = Field(
        None, description="CrystFEL .geom (data path, panels, masks, bad regions, metadata)"
    )
    data_path: str | None = Field(
        None, description="HDF5 dataset of the frames (default: the geometry's, else ours)"
    )
    distance_mm: float | None = Field(None, gt=0, description="overrides the camera length")

    @field_validator("files", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class CorrectionConfig(StrictModel):
    """Detector corrections (docs/algorithms/corrections.md for the order)."""

    mask_file: Path | None = Field(None, description="dead/hot pixel map (HDF5, TIFF, .npy)")
    mask_dataset: str | None = Field(None, description="HDF5 dataset inside mask_file")
    mask_bad: Literal["nonzero", "zero"] = Field(
        "nonzero", description="which pixel value marks a bad pixel in mask_file"
    )
    bad_pixels: Literal["interpolate", "flag"] = Field(
        "interpolate", description="replace bad pixels by their neighbours' mean, or flag them"
    )
    flat_field: Path | None = Field(None, description="relative pixel efficiency map")
    flat_field_dataset: str | None = None
    gain_adu_per_count: float = Field(1.0, gt=0, description="ADU per detected electron")
    dead_time_s: float | None = Field(
        None, gt=0, description="paralyzable dead time per pixel (counting detectors)"
    )
    exposure_s: float | None = Field(None, gt=0, description="frame exposure, needed with it")
    saturation_adu: float | None = Field(None, gt=0, description="values at/above are flagged")


class AggregateConfig(StrictModel):
    """Summing the dose fractions of each crystal into one frame (seed 004, 3.1.1)."""

    enabled: bool = False
    by: list[str] = Field(
        default_factory=lambda: ["file", "shot"], description="shots columns naming a crystal"
    )
    fraction_column: str = Field("fraction", description="index of a frame within its movie")
    first: int = Field(0, ge=0, description="first fraction summed")
    n_frames: int | None = Field(None, ge=1, description="fractions summed (None: all)")


class CentreConfig(StrictModel):
    """Pattern centre: thresholded COM, Lorentzian fit, Friedel-pair refinement."""

    threshold_adu: float | None = Field(None, description="COM threshold (None: automatic)")
    lorentzian_radius_px: float = Field(15.0, gt=0, description="radius of the fitted region")
    friedel: bool = Field(True, description="refine from Friedel-mate pairs of found peaks")
    friedel_sigma_px: float = Field(2.0, gt=0, description="pair matching width")
    min_pairs: int = Field(4, ge=1, description="pairs needed to accept a Friedel refinement")
    max_shift_px: float = Field(
        1.0, gt=0, description="Friedel search box about the first centre, px per axis"
    )


class PeakConfig(StrictModel):
    """peakfinder8 parameters (CrystFEL's names in docs/algorithms/peakfinder8.md)."""

    threshold_adu: float | None = Field(
        None,
        description="absolute threshold of peak pixels, ADU (None: 3 counts, i.e. "
        "3 x corrections.gain_adu_per_count, which keeps single-electron noise out where "
        "the background is near zero)",
    )
    min_snr: float = Field(5.0, gt=0)
    min_pix: int = Field(2, ge=1)
    max_pix: int = Field(200, ge=1)
    local_bg_radius: int = Field(3, ge=1)
    min_res_px: float = Field(0.0, ge=0, description="inner radius limit, pixels")
    max_res_px: float = Field(1e9, gt=0, description="outer radius limit, pixels")
    iterations: int = Field(5, ge=1, description="sigma-clipping iterations")
    max_peaks: int = Field(2048, ge=1)


class BackgroundConfig(StrictModel):
    """Radially symmetric background subtraction (seed 004, 3.1.5)."""

    subtract: bool = True
    exclude_radius_px: float = Field(4.0, ge=0, description="pixels around peaks left out")
    median_bins: int = Field(9, ge=1, description="median filter width of the profile, bins")
    bin_px: float = Field(1.0, gt=0, description="radial bin width, pixels")


class HitConfig(StrictModel):
    """Which frames are hits (column ``hit``)."""

    min_peaks: int = Field(10, ge=0, description="peaks needed for a hit")
    query: str | None = Field(None, description="further pandas query on the shots table")


class EllipticityConfig(StrictModel):
    """Data-set-wide elliptical distortion (seed 004, 3.1.4)."""

    fit: bool = True
    min_peaks: int = Field(500, ge=10, description="peaks needed over all hits to fit")
    r_min_px: float | None = Field(None, ge=0, description="inner radius used (None: auto)")
    r_max_px: float | None = Field(None, gt=0, description="outer radius used (None: auto)")


class WatchConfig(StrictModel):
    """On-line mode: follow a directory as files arrive."""

    pattern: str = Field("*.h5", description="glob of new files, relative to the directory")
    settle_s: float = Field(2.0, ge=0, description="a file is complete when unchanged this long")
    poll_s: float = Field(1.0, gt=0, description="how often to look for new files")
    idle_timeout_s: float | None = Field(
        None, gt=0, description="stop after this long without a new file (None: never)"
    )
    list_name: str = Field("preprocessed.lst", description=".lst that processed files join")


class PreprocessOutput(StrictModel):
    """Where results go."""

    directory: Path = Path("preprocessed")
    frames: bool = Field(True, description="write corrected, background-subtracted frames")
    overwrite: bool = False


class PreprocessConfig(StrictModel):
    """``crystalscope serial preprocess`` configuration."""

    input: InputConfig = Field(default_factory=InputConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)
    corrections: CorrectionConfig = Field(default_factory=CorrectionConfig)
    aggregate: AggregateConfig = Field(default_factory=AggregateConfig)
    centre: CentreConfig = Field(default_factory=CentreConfig)
    peaks: PeakConfig = Field(default_factory=PeakConfig)
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    hits: HitConfig = Field(default_factory=HitConfig)
    ellipticity: EllipticityConfig = Field(default_factory=EllipticityConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    output: PreprocessOutput = Field(default_factory=PreprocessOutput)
