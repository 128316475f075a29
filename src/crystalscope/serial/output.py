"""Writing pre-processing results, and the whole ``crystalscope serial preprocess`` job.

An output directory holds

* ``preprocessed.h5`` — the Dataset of usable frames: shots table with the per-frame
  results, CXI peak lists (``/entry/data/nPeaks`` ... where CrystFEL's
  ``--peaks=cxi`` reads them), corrected and background-subtracted frames (stack
  ``data``) and their pixel masks (stack ``mask``); with ``output.frames: false`` a
  peaks-only file whose shots point at the raw frames instead;
* ``hits.lst`` — the hits, one ``file //event`` line each, for CrystFEL;
* ``rejected_frames.csv`` — skipped frames and why (only when there are any);
* ``detector.geom`` — the geometry used (CrystFEL cannot hold the elliptical distortion;
  it is in the Dataset metadata, ``preprocess/ellipse_ratio`` and
  ``preprocess/ellipse_angle_deg``);
* ``preprocess.png`` — centre positions, peaks per frame and the centre-finding method;
* ``ellipticity.png`` — polar peak histograms before and after the distortion fit;
* ``config.resolved.yaml`` — every parameter used.

Every file is written atomically; an existing output is never replaced unless
``output.overwrite`` is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from crystalscope.config import write_resolved_config
from crystalscope.dataset import Dataset
from crystalscope.errors import CrystalscopeError
from crystalscope.io.atomic import atomic_path, check_outputs_free, save_png
from crystalscope.io.crystfel_geom import write_geom
from crystalscope.parallel import byte_progress
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.ellipticity import plot_ellipticity
from crystalscope.serial.inputs import open_input
from crystalscope.serial.preprocess import (
    PreprocessResult,
    output_paths,
    preprocess,
)

__all__ = ["plot_overview", "run_preprocess", "write_preprocessed"]


def plot_overview(result: PreprocessResult, path: str | os.PathLike[str]) -> Path:
    """PNG: centre positions and peaks per frame over the run, centre methods."""
    shots = result.dataset.shots
    fig = Figure(figsize=(14, 3.8))
    axes = fig.subplots(1, 3)
    x = np.arange(len(shots))
    ax = axes[0]
    ax.plot(x, shots["centre_fs"] - np.nanmedian(shots["centre_fs"]), ".", ms=2, label="fs")
    ax.plot(x, shots["centre_ss"] - np.nanmedian(shots["centre_ss"]), ".", ms=2, label="ss")
    ax.set(xlabel="frame", ylabel="centre - median (px)", title="pattern centre")
    ax.legend()
    ax = axes[1]
    hit = shots["hit"].to_numpy(bool)
    ax.plot(x[~hit], shots["num_peaks"][~hit], ".", ms=2, color="0.6", label="non-hit")
    ax.plot(x[hit], shots["num_peaks"][hit], ".", ms=2, label="hit")
    ax.set(xlabel="frame", ylabel="peaks", title="peaks per frame")
    ax.legend()
    ax = axes[2]
    counts = shots["centre_method"].value_counts()
    ax.bar(counts.index.astype(str), counts.to_numpy())
    ax.set(ylabel="frames", title="centre determined by")
    return save_png(fig, path)


def write_preprocessed(
    result: PreprocessResult,
    directory: str | os.PathLike[str],
    *,
    frames: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write the results of :func:`preprocess` into ``directory`` (see the module doc)."""
    paths = output_paths(directory)
    check_outputs_free(paths.values(), overwrite=overwrite)
    Path(directory).mkdir(parents=True, exist_ok=True)
    ds = result.dataset if frames else _peaks_only(result.raw)
    with byte_progress("writing frames", enabled=progress) as callback:
        ds.write(paths["dataset"], overwrite=overwrite, frames=frames, progress=callback)
    written = Dataset.open(paths["dataset"])
    written.select("hit").write_lst(paths["hits"], overwrite=overwrite)
    if len(result.rejected):
        with atomic_path(paths["rejected"], overwrite=overwrite) as tmp:
            result.rejected.to_csv(tmp, index=False)
    write_geom(result.detector, paths["geometry"], overwrite=overwrite)
    plot_overview(result, paths["overview"])
    if result.ellipticity is not None:
        peaks = written.peaks()
        shots = written.shots.set_index("frame")
        sel = peaks[peaks["frame"].isin(shots.index[shots["hit"]])]
        dx = sel["fs"].to_numpy() - shots.loc[sel["frame"], "centre_fs"].to_numpy()
        dy = sel["ss"].to_numpy() - shots.loc[sel["frame"], "centre_ss"].to_numpy()
        plot_ellipticity(dx, dy, result.ellipticity, paths["ellipticity"])
    return {k: p for k, p in paths.items() if p.exists()}


def _peaks_only(ds: Dataset) -> Dataset:
    """The dataset with its raw frames (unchanged, from the source files) as ``data``."""
    if ds.frames_path is None:
        raise CrystalscopeError(
            "output.frames: false needs raw frames read unchanged from files; aggregated "
            "frames exist only in memory (set output.frames: true)",
            field="output.frames",
        )
    return ds


def run_preprocess(
    cfg: PreprocessConfig,
    *,
    config_path: str | os.PathLike[str] | None = None,
    client: Any = None,
) -> tuple[PreprocessResult, dict[str, Path]]:
    """Open the input, pre-process it and write the outputs (the CLI command's job)."""
    out = cfg.output
    check_outputs_free(output_paths(out.directory).values(), overwrite=out.overwrite)
    raw = open_input(cfg.input, config_path=config_path)
    result = preprocess(raw, cfg, client=client, config_path=config_path)
    paths = write_preprocessed(
        result, out.directory, frames=out.frames, overwrite=out.overwrite,
        progress=cfg.compute.progress,
    )  # fmt: skip
    paths["config"] = write_resolved_config(cfg, out.directory)
    return result, paths
