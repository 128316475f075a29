"""Configuration of ``crystalscope serial run``: every step of the SerialED pipeline in one
YAML file (validated by pydantic; unknown keys are errors).

The sections are those of the single-step commands, side by side::

    input:                         # raw frames (as `serial preprocess`)
      files: ["data/run_*.h5"]
      geometry: detector.geom
    corrections: {mask_file: mask.h5}
    aggregate: {enabled: true, by: [shot]}
    centre: {}                     # centre, peaks, background, hits, ellipticity
    cell:                          # as `serial index`
      file: lysozyme.cell
      space_group: P 43 21 2
    indexing: {min_peaks: 15}
    integration: {partiality: xsphere}
    dose: {enabled: false}         # as `serial integrate`; input defaults to the raw frames
    merging: {n_cycles: 3}         # as `crystalscope merge`
    statistics: {n_shells: 10}
    compute: {scheduler: threads}
    output:
      directory: runs              # run-001, run-002, ... are created inside

Relative paths are taken from the configuration file's folder.  Each run records the
resolved configuration (``config.yaml`` in its run directory, absolute paths, defaults
filled in) and the report shows it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator

from crystalscope.config import BeamConfig, ComputeConfig, StrictModel, relative_to_config
from crystalscope.merge.config import MergingSection, StatisticsSection
from crystalscope.serial.config import (
    AggregateConfig,
    BackgroundConfig,
    CentreConfig,
    CorrectionConfig,
    EllipticityConfig,
    HitConfig,
    InputConfig,
    PeakConfig,
    WatchConfig,
)
from crystalscope.serial.index_config import AmbiguityConfig, CellConfig, IndexingConfig
from crystalscope.serial.integrate_config import DoseSeriesSection, IntegrationSection

__all__ = [
    "ReportSection",
    "RunDoseSection",
    "RunOutput",
    "SerialRunConfig",
    "resolve_paths",
]


class RunOutput(StrictModel):
    """Where runs go: one numbered directory per run inside ``directory``."""

    directory: Path = Path("serial-runs")
    frames: bool = Field(True, description="write corrected, background-subtracted frames")
    stream: bool = Field(True, description="write a CrystFEL stream with the reflections")


class ReportSection(StrictModel):
    """The HTML report of a run."""

    enabled: bool = True
    title: str | None = Field(None, description="default: the run directory's name")


class RunDoseSection(DoseSeriesSection):
    """The dose series of a run: ``input`` defaults to the run's raw frames (one file),
    ``by`` to ``aggregate.by``."""

    @model_validator(mode="after")
    def _check(self) -> RunDoseSection:  # replaces the parent's: input may be omitted
        if not self.exposures or min(self.exposures) < 1:
            raise ValueError("dose.exposures must be positive numbers of fractions")
        return self


class SerialRunConfig(StrictModel):
    """``crystalscope serial run``: pre-processing, indexing, integration and merging."""

    input: InputConfig = Field(default_factory=InputConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)
    corrections: CorrectionConfig = Field(default_factory=CorrectionConfig)
    aggregate: AggregateConfig = Field(default_factory=AggregateConfig)
    centre: CentreConfig = Field(default_factory=CentreConfig)
    peaks: PeakConfig = Field(default_factory=PeakConfig)
    background: BackgroundConfig = Field(default_factory=BackgroundConfig)
    hits: HitConfig = Field(default_factory=HitConfig)
    ellipticity: EllipticityConfig = Field(default_factory=EllipticityConfig)
    cell: CellConfig
    indexing: IndexingConfig = Field(default_factory=IndexingConfig)
    ambiguity: AmbiguityConfig = Field(default_factory=AmbiguityConfig)
    integration: IntegrationSection = Field(default_factory=IntegrationSection)
    dose: RunDoseSection = Field(default_factory=RunDoseSection)
    space_group: str | None = Field(None, description="merging; default: the cell's")
    merging: MergingSection = Field(default_factory=MergingSection)
    statistics: StatisticsSection = Field(default_factory=StatisticsSection)
    report: ReportSection = Field(default_factory=ReportSection)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    output: RunOutput = Field(default_factory=RunOutput)

    @model_validator(mode="after")
    def _dose_input(self) -> SerialRunConfig:
        if self.dose.enabled and self.dose.input is None and len(self.input.files) != 1:
            raise ValueError("dose.input (the raw movie frames) is needed with several inputs")
        return self


def _absolute(path: Path | None, base: Path | None) -> Path | None:
    return None if path is None else relative_to_config(path, base).absolute()


def _absolute_source(name: str, base: Path | None) -> str:
    """A file, glob or ``.lst`` name made absolute (globs keep their pattern)."""
    return os.fspath(relative_to_config(name, base).absolute())


def resolve_paths(
    cfg: SerialRunConfig, config_path: str | os.PathLike[str] | None
) -> SerialRunConfig:
    """A copy of ``cfg`` with every path absolute, relative ones taken from the folder of
    ``config_path`` (the working directory without one)."""
    base = Path(config_path).parent if config_path is not None else None
    out = cfg.model_copy(deep=True)
    out.input.files = [_absolute_source(f, base) for f in cfg.input.files]
    out.input.geometry = _absolute(cfg.input.geometry, base)
    out.corrections.mask_file = _absolute(cfg.corrections.mask_file, base)
    out.corrections.flat_field = _absolute(cfg.corrections.flat_field, base)
    out.cell.file = _absolute(cfg.cell.file, base)
    out.dose.input = _absolute(cfg.dose.input, base)
    out.output.directory = _absolute(cfg.output.directory, base) or Path()
    return out
