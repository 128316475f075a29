"""The job of ``crystalscope stats``: figures of merit of merged data on disk.

Inputs:

* a CrystFEL ``.hkl`` (``partialator``/``process_hkl`` or ``crystalscope merge``) with
  its half-sets ``.hkl1``/``.hkl2`` beside it when present; the point group comes from
  the file's ``Symmetry:`` line (or ``--symmetry``), the cell and the centring from a
  CrystFEL ``.cell`` file (``--cell``), as ``check_hkl -p`` takes them;
* a merged MTZ (``IMEAN``/``SIGIMEAN``, cell and space group from the file); CC1/2 and
  Rsplit need half-sets and are left empty.

``--compare OTHER`` puts a second merged set beside the first (``compare_hkl``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import gemmi
import pandas as pd

from crystalscope.errors import ConfigError
from crystalscope.io.crystfel_cell import read_cell
from crystalscope.io.crystfel_hkl import half_set_paths, read_hkl
from crystalscope.io.mtz import read_mtz
from crystalscope.merge.compare import compare_sets
from crystalscope.merge.stats import MergeStatistics, merge_statistics
from crystalscope.merge.symmetry import space_group_of_point_group
from crystalscope.model.crystal import resolve_space_group

__all__ = ["MergedData", "load_merged", "run_stats"]


@dataclass
class MergedData:
    """Merged intensities, optional half-sets, cell and space group."""

    merged: pd.DataFrame
    half1: pd.DataFrame | None
    half2: pd.DataFrame | None
    cell: gemmi.UnitCell
    space_group: gemmi.SpaceGroup
    path: Path
    anomalous: bool = False


def _load_hkl(
    path: Path, cell_path: Path | None, symmetry: str | None, space_group: str | None
) -> MergedData:
    if cell_path is None:
        raise ConfigError(
            "a CrystFEL .hkl file has no cell: give the .cell file (--cell)",
            path=path, field="cell",
        )  # fmt: skip
    cell_file = read_cell(cell_path)
    merged = read_hkl(path)
    if space_group is not None:
        sg = resolve_space_group(space_group)
    else:
        pg = symmetry or str(merged.attrs.get("symmetry") or "")
        if not pg:
            raise ConfigError(
                "the .hkl file names no point group: give --symmetry or --space-group",
                path=path, field="symmetry",
            )  # fmt: skip
        sg = space_group_of_point_group(pg, cell_file.centering)
    first, second = half_set_paths(path)
    halves = (read_hkl(first), read_hkl(second)) if first.is_file() and second.is_file() else None
    # a point group without inversion (422, not 4/mmm) keeps Friedel mates apart, as
    # CrystFEL does for such files
    return MergedData(
        merged, halves[0] if halves else None, halves[1] if halves else None, cell_file.cell,
        sg, path, anomalous=not sg.is_centrosymmetric(),
    )  # fmt: skip


def _load_mtz(path: Path, space_group: str | None) -> MergedData:
    data = read_mtz(path)
    if data.cell is None or data.space_group is None:
        raise ConfigError("the MTZ file has no cell or space group", path=path, field="cell")
    sg = resolve_space_group(space_group) if space_group else data.space_group
    table = data.table
    if "nobs" not in table.columns and "nmeas" in table.columns:  # our merged MTZ
        table = table.rename(columns={"nmeas": "nobs"})
    return MergedData(table, None, None, data.cell, sg, path)


def load_merged(
    path: str | os.PathLike[str],
    *,
    cell: str | os.PathLike[str] | None = None,
    symmetry: str | None = None,
    space_group: str | None = None,
) -> MergedData:
    """Merged data from a CrystFEL ``.hkl`` (with half-sets) or a merged MTZ file."""
    source = Path(path)
    if source.suffix.lower() == ".mtz":
        return _load_mtz(source, space_group)
    return _load_hkl(source, Path(cell) if cell else None, symmetry, space_group)


def run_stats(
    data: MergedData,
    *,
    n_shells: int = 10,
    d_min: float | None = None,
    d_max: float | None = None,
    compare: MergedData | None = None,
) -> tuple[MergeStatistics, pd.DataFrame | None]:
    """Figures of merit of ``data`` and, with ``compare``, the two sets side by side."""
    stats = merge_statistics(
        data.merged, data.half1, data.half2, data.cell, data.space_group,
        n_shells=n_shells, d_min=d_min, d_max=d_max, anomalous=data.anomalous,
    )  # fmt: skip
    table = None
    if compare is not None:
        table = compare_sets(
            data.merged, compare.merged, data.cell, data.space_group, n_shells=n_shells,
            d_min=d_min, d_max=d_max, anomalous=data.anomalous,
        )  # fmt: skip
    return stats, table
