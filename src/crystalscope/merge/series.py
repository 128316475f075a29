"""Merging a dose series: one exposure length per observation file, and the best one.

``crystalscope serial integrate`` with ``dose.enabled`` writes ``dose/series.csv`` and one
``observations.h5`` per exposure (the same crystals summed over 1, 2, 4 ... dose
fractions; seed 004, section 3.3.3).  :func:`merge_series` merges every exposure with the
same parameters, computes the figures of merit in the same resolution shells, and
recommends the exposure whose data reach the highest resolution (where CC1/2 falls to
0.143); exposures within 0.05 A of that are ranked by their overall CC1/2.  Short
exposures are noisy, long ones damaged: the recommendation is the compromise seed 004
(Fig. 7) makes by eye.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from crystalscope.errors import ConfigError, CrystalscopeError, FormatError
from crystalscope.io.atomic import atomic_path, save_png
from crystalscope.io.observations import read_observations
from crystalscope.merge.config import MergeConfig
from crystalscope.merge.export import write_merged
from crystalscope.merge.merging import MergeResult, merge_observations
from crystalscope.merge.plots import plot_statistics
from crystalscope.merge.run import merge_params
from crystalscope.merge.stats import MergeStatistics, merge_statistics, write_statistics_csv

__all__ = ["SERIES_COLUMNS", "SeriesResult", "merge_series", "plot_series", "recommend"]

#: Columns of :attr:`SeriesResult.table`.
SERIES_COLUMNS = (
    "n_fractions", "dose_e_per_a2", "crystals", "reflections", "completeness", "cc_half",
    "cc_star", "mean_i_over_sigma", "cutoff_d",
)  # fmt: skip
_TIE_A = 0.05  # exposures whose cut-off is within this of the best are ranked by CC1/2


@dataclass
class SeriesResult:
    """Per-exposure statistics and the recommendation."""

    table: pd.DataFrame
    recommended: int
    statistics: dict[int, MergeStatistics]
    paths: dict[str, Path]

    def summary(self) -> str:
        """The comparison table and the recommendation, for the terminal."""
        text = self.table.to_string(index=False, float_format=lambda v: f"{v:.4g}")
        row = self.table.set_index("n_fractions").loc[self.recommended]
        return (
            f"{text}\nrecommended: {self.recommended} fraction(s) "
            f"({row['dose_e_per_a2']:.3g} e/A^2), CC1/2 = 0.143 at {row['cutoff_d']:.2f} A"
        )


def _read_index(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FormatError(
            "dose-series index not found: run `crystalscope serial integrate` with "
            "dose.enabled", path=path, field="series.csv",
        )  # fmt: skip
    table = pd.read_csv(path)
    missing = [c for c in ("n_fractions", "dose_e_per_a2", "file") if c not in table.columns]
    if missing:
        raise FormatError("column missing", path=path, field=missing[0])
    return table.sort_values("n_fractions").reset_index(drop=True)


def recommend(table: pd.DataFrame) -> int:
    """The exposure (``n_fractions``) to use: highest resolution at CC1/2 = 0.143, then
    the highest overall CC1/2 among those within 0.05 A of it."""
    cutoff = table["cutoff_d"].to_numpy(float)
    best = np.nanmin(cutoff) if np.isfinite(cutoff).any() else np.nan
    close = cutoff <= best + _TIE_A if np.isfinite(best) else np.ones(len(table), bool)
    candidates = table[close]
    return int(candidates.loc[candidates["cc_half"].idxmax(), "n_fractions"])


def _row(n: int, dose: float, merged: MergeResult, stats: MergeStatistics) -> dict[str, float]:
    overall = stats.shells.loc["overall"]
    cutoff = stats.cutoff_d if stats.cutoff_d is not None else float(overall["d_min"])
    return {
        "n_fractions": n, "dose_e_per_a2": dose,
        "crystals": int((~merged.crystals["rejected"]).sum()), "reflections": len(merged.merged),
        "completeness": float(overall["completeness"]), "cc_half": float(overall["cc_half"]),
        "cc_star": float(overall["cc_star"]),
        "mean_i_over_sigma": float(overall["mean_i_over_sigma"]), "cutoff_d": cutoff,
    }  # fmt: skip


def plot_series(statistics: dict[int, MergeStatistics], table: pd.DataFrame, path: Path) -> Path:
    """PNG: CC1/2 against resolution per exposure, and overall CC1/2 against dose."""
    fig = Figure(figsize=(11, 4))
    ax, ax2 = fig.subplots(1, 2)
    for n, stats in statistics.items():
        shells = stats.shells.drop(index="overall")
        centre = 0.5 * (1 / shells["d_min"] ** 2 + 1 / shells["d_max"] ** 2)
        ax.plot(centre, shells["cc_half"], "o-", label=f"{n} fraction(s)")
    ax.axhline(0.143, color="grey", lw=0.8, ls="--")
    ax.set(xlabel="1/d^2 (1/A^2)", ylabel="CC1/2", title="CC1/2 per exposure")
    ax.legend(fontsize=8)
    ax2.plot(table["dose_e_per_a2"], table["cc_half"], "o-")
    ax2.set(xlabel="dose (e/A^2)", ylabel="overall CC1/2", title="overall CC1/2 against dose")
    return save_png(fig, path)


def _merge_each(
    path: Path, rows_in: pd.DataFrame, cfg: MergeConfig, progress: Callable[[str], None] | None
) -> dict[int, tuple[MergeResult, float]]:
    params = merge_params(cfg.merging)
    results: dict[int, tuple[MergeResult, float]] = {}
    for _, row in rows_in.iterrows():
        data = read_observations(path.parent / str(row["file"]))
        n = int(row["n_fractions"])
        if progress is not None:
            progress(f"exposure of {n} fraction(s): merging {len(data.table)} observations")
        merged = merge_observations(
            data.table, data.cell, data.space_group, params, wavelength=data.wavelength
        )
        results[n] = (merged, float(row["dose_e_per_a2"]))
    return results


def _write_exposure(
    n: int, merged: MergeResult, stats: MergeStatistics, out: Path, overwrite: bool
) -> dict[str, Path]:
    folder = out / f"exposure_{n:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    written = write_merged(merged, folder, overwrite=overwrite)
    written["statistics_csv"] = write_statistics_csv(
        stats, folder / "statistics.csv", overwrite=True
    )
    written["statistics_plot"] = plot_statistics(stats, folder / "statistics.png")
    return {f"{key}_{n:02d}": value for key, value in written.items()}


def merge_series(
    index: str | os.PathLike[str],
    cfg: MergeConfig,
    *,
    progress: Callable[[str], None] | None = None,
) -> SeriesResult:
    """Merge every exposure of a dose series into ``cfg.output.directory`` (module doc).

    ``index`` is ``dose/series.csv`` or its folder.  Every exposure is merged with the
    same parameters and its statistics computed in the same shells.

    Raises
    ------
    FormatError
        Missing or malformed ``series.csv``.
    """
    path = Path(index)
    path = path / "series.csv" if path.is_dir() else path
    rows_in = _read_index(path)
    if len(rows_in) == 0:
        raise ConfigError("the dose series has no exposure", path=path, field="series.csv")
    out = Path(cfg.output.directory)
    summary_path = out / "dose_series.csv"
    if summary_path.exists() and not cfg.output.overwrite:
        raise CrystalscopeError("output exists; pass --overwrite", path=summary_path)
    results = _merge_each(path, rows_in, cfg, progress)
    d_min = cfg.statistics.d_min or min(float(r.merged["d"].min()) for r, _ in results.values())
    d_max = cfg.statistics.d_max or max(float(r.merged["d"].max()) for r, _ in results.values())
    statistics, rows, paths = {}, [], {}
    for n, (merged, dose) in results.items():
        stats = merge_statistics(
            merged.merged, merged.half1, merged.half2, merged.cell, merged.space_group,
            n_shells=cfg.statistics.n_shells, d_min=d_min, d_max=d_max,
        )  # fmt: skip
        paths.update(_write_exposure(n, merged, stats, out, cfg.output.overwrite))
        statistics[n] = stats
        rows.append(_row(n, dose, merged, stats))
    table = pd.DataFrame(rows, columns=list(SERIES_COLUMNS))
    with atomic_path(summary_path, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    paths["dose_series"] = summary_path
    paths["dose_series_plot"] = plot_series(statistics, table, out / "dose_series.png")
    return SeriesResult(table, recommend(table), statistics, paths)
