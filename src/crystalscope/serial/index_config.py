"""Configuration of ``crystalscope serial index`` (YAML sections, validated).

Example::

    input: preprocessed/preprocessed.h5   # from `crystalscope serial preprocess`
    cell:
      file: lysozyme.cell                 # CrystFEL unit cell file, or:
      # parameters: [79.1, 79.1, 37.9, 90, 90, 90]
      space_group: P 43 21 2              # for the indexing ambiguity (optional)
      refine: true                        # refine against the data set's peaks first
    indexing:
      profile_radius: 0.005               # 1/A
      min_peaks: 15
    output:
      directory: indexed
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from crystalscope.config import BeamConfig, ComputeConfig, StrictModel

__all__ = ["AmbiguityConfig", "CellConfig", "IndexConfig", "IndexOutput", "IndexingConfig"]


class CellConfig(StrictModel):
    """The unit cell to index with: a CrystFEL ``.cell`` file or parameters."""

    file: Path | None = Field(None, description="CrystFEL unit cell file")
    parameters: tuple[float, float, float, float, float, float] | None = Field(
        None, description="a, b, c (A), alpha, beta, gamma (deg)"
    )
    lattice: str | None = Field(
        None, description="Bravais lattice (e.g. tP) or space group; default from file"
    )
    space_group: str | None = Field(
        None, description="space group (absences, indexing ambiguity); optional"
    )
    refine: bool = Field(True, description="refine the cell against the peaks first")

    @model_validator(mode="after")
    def _one_source(self) -> CellConfig:
        if (self.file is None) == (self.parameters is None):
            raise ValueError("give exactly one of cell.file and cell.parameters")
        if self.parameters is not None and self.lattice is None and self.space_group is None:
            raise ValueError("cell.parameters need cell.lattice or cell.space_group")
        return self


class IndexingConfig(StrictModel):
    """Orientation search and refinement (docs/algorithms/indexing.md)."""

    profile_radius: float = Field(0.005, gt=0, description="spot radius in 1/A")
    min_peaks: int = Field(15, ge=3, description="frames with fewer peaks are skipped")
    max_lattices: int = Field(2, ge=1, le=4, description="crystals sought per frame")
    refine_cell: bool = Field(False, description="refine the cell per crystal")
    d_min: float | None = Field(None, gt=0, description="peaks beyond this resolution unused, A")
    assign_distance: float = Field(
        0.004, gt=0, description="peak-to-lattice-point distance for hkl assignment, 1/A"
    )


class AmbiguityConfig(StrictModel):
    """Indexing ambiguity across the data set (docs/algorithms/ambiguity.md)."""

    resolve: bool = Field(True, description="resolve when the space group has an ambiguity")
    n_iterations: int = Field(6, ge=1)
    seed: int = 0


class IndexOutput(StrictModel):
    """Where the results go."""

    directory: Path = Path("indexed")
    overwrite: bool = False


class IndexConfig(StrictModel):
    """``crystalscope serial index``: cell refinement, indexing, ambiguity, outputs."""

    input: Path | None = Field(None, description="preprocessed.h5 of `serial preprocess`")
    geometry: Path | None = Field(None, description="default: detector.geom beside the input")
    beam: BeamConfig | None = Field(None, description="default: the geometry's wavelength")
    cell: CellConfig
    indexing: IndexingConfig = Field(default_factory=IndexingConfig)
    ambiguity: AmbiguityConfig = Field(default_factory=AmbiguityConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    output: IndexOutput = Field(default_factory=IndexOutput)
