"""Configuration of ``crystalscope merge`` and ``crystalscope stats`` (YAML, validated).

Example (``crystalscope merge merge.yaml``)::

    input: integrated/observations.h5    # or a CrystFEL .stream with reflections
    space_group: P 43 21 2               # default: the observations file's
    merging:
      partiality: xsphere                # unity | xsphere | gaussian
      n_cycles: 3
      post_refine: true
    statistics:
      n_shells: 10
    output:
      directory: merged
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from crystalscope.config import StrictModel

__all__ = ["MergeConfig", "MergeOutput", "MergingSection", "StatisticsSection"]


class MergingSection(StrictModel):
    """Scaling, post-refinement and merging (docs/algorithms/merging.md)."""

    partiality: Literal["unity", "xsphere", "gaussian"] = "xsphere"
    n_cycles: int = Field(3, ge=0, description="scaling (+ post-refinement) cycles")
    scale: bool = Field(True, description="refine a scale factor per crystal")
    b_factor: bool = Field(True, description="refine a relative B factor per crystal")
    post_refine: bool = Field(True, description="refine tilts and profile radius per crystal")
    bandwidth: float = Field(0.0, ge=0, description="xsphere shell thickness, 1/A")
    min_partiality: float = Field(0.1, ge=0, lt=1, description="smaller ones are not merged")
    min_cc_z: float | None = Field(
        3.0, description="reject crystals whose CC with the others has Fisher z below this"
    )
    reject_delta_cc: float | None = Field(
        3.0, gt=0, description="reject crystals with negative delta-CC1/2 below mean - this * std"
    )
    min_observations: int = Field(10, ge=1, description="per crystal")
    d_min: float | None = Field(None, gt=0, description="highest resolution merged, A")
    d_max: float | None = Field(None, gt=0, description="lowest resolution merged, A")
    max_abs_b: float = Field(100.0, gt=0, description="bound of |B|, A^2")


class StatisticsSection(StrictModel):
    """Figures of merit (docs/algorithms/merging-statistics.md)."""

    n_shells: int = Field(10, ge=1, le=100, description="equal volume in (1/d)^3")
    d_min: float | None = Field(None, gt=0, description="default: the data's highest resolution")
    d_max: float | None = Field(None, gt=0, description="default: the data's lowest resolution")


class MergeOutput(StrictModel):
    """Where the results go."""

    directory: Path = Path("merged")
    overwrite: bool = False


class MergeConfig(StrictModel):
    """``crystalscope merge``: observations to merged, validated intensities."""

    input: Path | None = Field(None, description="observations.h5 or a CrystFEL .stream")
    space_group: str | None = Field(None, description="default: the observations file's")
    cell: Path | None = Field(None, description="CrystFEL .cell (streams; default: stream's)")
    merging: MergingSection = Field(default_factory=MergingSection)
    statistics: StatisticsSection = Field(default_factory=StatisticsSection)
    output: MergeOutput = Field(default_factory=MergeOutput)
