"""The jobs of ``crystalscope merge`` and ``crystalscope stats``.

``merge``: read observations (our ``observations.h5`` or a CrystFEL stream), scale and
merge them (:func:`~crystalscope.merge.merging.merge_observations`), compute the figures
of merit (:func:`~crystalscope.merge.stats.merge_statistics`) and write, into one
directory, the merged and unmerged MTZ, SHELX ``.hkl``/``.ins``, CrystFEL
``.hkl``/``.hkl1``/``.hkl2``, the statistics as CSV and PNG, the per-crystal scale
factors (``crystals.csv``, ``scales.png``) and the resolved configuration.

``stats``: the figures of merit of merged data already on disk: a CrystFEL ``.hkl``
with its half-sets, or one of our merged MTZ files.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from crystalscope.config import relative_to_config, write_resolved_config
from crystalscope.errors import ConfigError, DataError
from crystalscope.io.atomic import atomic_path, check_outputs_free, save_png
from crystalscope.io.crystfel_cell import read_cell
from crystalscope.io.crystfel_stream import read_stream
from crystalscope.io.observations import ObservationFile, read_observations
from crystalscope.merge.config import MergeConfig, MergingSection
from crystalscope.merge.export import write_merged
from crystalscope.merge.from_stream import observations_from_stream
from crystalscope.merge.merging import MergeParams, MergeResult, merge_observations
from crystalscope.merge.plots import plot_statistics
from crystalscope.merge.stats import MergeStatistics, merge_statistics, write_statistics_csv
from crystalscope.model.crystal import resolve_space_group

__all__ = [
    "MergeRun",
    "load_observations",
    "merge_output_paths",
    "merge_params",
    "plot_scales",
    "run_merge",
]


@dataclass
class MergeRun:
    """What :func:`run_merge` produced."""

    result: MergeResult
    statistics: MergeStatistics
    paths: dict[str, Path]

    def summary(self) -> str:
        """Crystals kept and rejected (by reason) and the statistics table, for the
        terminal (the per-cycle log is ``result.log``)."""
        crystals = self.result.crystals
        rejected = crystals[crystals["rejected"]]
        lines = [
            f"{len(crystals) - len(rejected)} of {len(crystals)} crystals merged, "
            f"{len(self.result.merged)} unique reflections"
        ]
        reasons = rejected["reason"].astype(str).map(_reason_kind).value_counts()
        lines += [f"  rejected: {n} ({reason})" for reason, n in reasons.items()]
        lines.append(self.statistics.table())
        return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    """The kind of a rejection reason, without its numbers."""
    if reason.startswith("delta-CC1/2"):
        return "delta-CC1/2 outlier"
    return reason.split(" (")[0]


def load_observations(
    path: str | os.PathLike[str],
    *,
    space_group: str | None = None,
    cell: str | os.PathLike[str] | None = None,
) -> ObservationFile:
    """Observations from ``observations.h5`` or a CrystFEL ``.stream``.

    Raises
    ------
    ConfigError
        A stream without ``space_group`` (streams carry only the lattice).
    FormatError
        Unreadable input (names the file and the field).
    """
    source = Path(path)
    cell_value = read_cell(cell).cell if cell is not None else None
    if source.suffix == ".stream":
        if space_group is None:
            raise ConfigError(
                "a CrystFEL stream carries no space group: give space_group (--space-group)",
                path=source, field="space_group",
            )  # fmt: skip
        return observations_from_stream(read_stream(source), space_group, cell=cell_value)
    data = read_observations(source)
    if space_group is not None:
        data.space_group = resolve_space_group(space_group)
    if cell_value is not None:
        data.cell = cell_value
    return data


def merge_params(section: MergingSection) -> MergeParams:
    """The :class:`MergeParams` of a configuration section."""
    return MergeParams(**section.model_dump())


def merge_output_paths(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Files :func:`run_merge` writes besides those of :func:`write_merged`."""
    d = Path(directory)
    names = {
        "statistics_csv": "statistics.csv", "statistics_plot": "statistics.png",
        "crystals": "crystals.csv", "scales_plot": "scales.png",
    }  # fmt: skip
    return {k: d / v for k, v in names.items()}


def plot_scales(crystals: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """PNG: histograms of the per-crystal scale, B factor and CC against the reference."""
    kept = crystals[~crystals["rejected"]]
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    for ax, column, label in zip(
        axes, ("scale", "b_factor", "cc_ref"), ("scale G", "relative B (A^2)", "CC to reference"),
        strict=True,
    ):  # fmt: skip
        values = kept[column].to_numpy(float) if column in kept else np.zeros(0)
        values = values[np.isfinite(values)]
        if len(values):
            ax.hist(values, bins=40)
        ax.set(xlabel=label, ylabel="crystals")
    axes[0].set_title(f"{len(kept)} crystals merged")
    return save_png(fig, path)


def run_merge(
    cfg: MergeConfig,
    *,
    config_path: str | os.PathLike[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> MergeRun:
    """Read, merge, validate and write (module docstring)."""
    if cfg.input is None:
        raise ConfigError("no input: give observations.h5 or a .stream", field="input")
    base = Path(config_path).parent if config_path else None
    source = relative_to_config(cfg.input, base)
    cell = relative_to_config(cfg.cell, base) if cfg.cell is not None else None
    out = cfg.output.directory
    check_outputs_free(merge_output_paths(out).values(), overwrite=cfg.output.overwrite)
    data = load_observations(source, space_group=cfg.space_group, cell=cell)
    result = merge_observations(
        data.table, data.cell, data.space_group, merge_params(cfg.merging),
        wavelength=data.wavelength, progress=progress,
    )  # fmt: skip
    if len(result.merged) == 0:
        raise DataError("no reflection could be merged", path=source, field="observations")
    st = cfg.statistics
    stats = merge_statistics(
        result.merged, result.half1, result.half2, result.cell, result.space_group,
        n_shells=st.n_shells, d_min=st.d_min, d_max=st.d_max,
    )  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    paths = write_merged(result, out, overwrite=cfg.output.overwrite)
    extra = merge_output_paths(out)
    paths["statistics_csv"] = write_statistics_csv(stats, extra["statistics_csv"], overwrite=True)
    paths["statistics_plot"] = plot_statistics(stats, extra["statistics_plot"])
    with atomic_path(extra["crystals"], overwrite=True) as tmp:
        result.crystals.to_csv(tmp, index=False)
    paths["crystals"] = extra["crystals"]
    paths["scales_plot"] = plot_scales(result.crystals, extra["scales_plot"])
    paths["config"] = write_resolved_config(cfg, out)
    return MergeRun(result, stats, paths)
