"""Writing indexing results, and the whole ``crystalscope serial index`` job.

An output directory holds

* ``indexed.h5`` — a peaks-only Dataset (its frames stay in the pre-processed file) with
  the per-crystal table (``/entry/crystals``);
* ``indexed.stream`` — CrystFEL stream: one chunk per hit, its peaks and crystals;
* ``crystals.csv`` — the per-crystal table as text;
* ``indexed.lst`` — the indexed frames; ``cell.cell`` — the cell used (refined when
  asked), CrystFEL format; ``detector.geom`` — the geometry (without the elliptical
  distortion, which CrystFEL cannot hold);
* ``indexamajig/`` — the same peaks for CrystFEL's ``indexamajig --peaks=cxi``:
  ``peaks.cxi`` (CXI peak lists with each frame's centre shift and the ellipticity
  already applied, and an all-zero image so that indexamajig can open it),
  ``peaks.geom``, ``peaks.lst`` and ``run_indexamajig.sh``;
* ``indexing.png`` — indexing rate, indexed peaks and residual histograms;
  ``cell.png`` — virtual powder pattern and pair-distance histogram with the cell's
  lines (when the cell was refined);
* ``config.resolved.yaml`` — every parameter used.

Every file is written atomically and never over an earlier run's unless
``output.overwrite`` is set.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from crystalscope.config import write_resolved_config
from crystalscope.dataset.stacks import peak_arrays
from crystalscope.index.peaks import Q_COLUMNS
from crystalscope.index.powder import plot_radial_histograms
from crystalscope.io.atomic import atomic_path, check_outputs_free, save_png
from crystalscope.io.crystfel_cell import write_cell
from crystalscope.io.crystfel_geom import format_geom, write_geom
from crystalscope.io.crystfel_stream import Stream, StreamHeader
from crystalscope.io.crystfel_stream_write import write_stream
from crystalscope.io.lst import write_lst
from crystalscope.model.detector import Detector
from crystalscope.model.panel import WavelengthSource
from crystalscope.serial.index_config import IndexConfig
from crystalscope.serial.indexing import (
    IndexingResult,
    cell_file,
    hit_frames,
    index_serial,
    open_indexing_input,
    with_lattice_columns,
)

__all__ = ["index_output_paths", "run_index", "stream_tables", "write_indexed"]

CXI_DATA = "/entry_1/data_1/data"
CXI_PEAKS = "/entry_1/result_1"


def index_output_paths(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Files :func:`write_indexed` writes into ``directory``."""
    d = Path(directory)
    names = {
        "dataset": "indexed.h5", "stream": "indexed.stream", "crystals": "crystals.csv",
        "lst": "indexed.lst", "cell": "cell.cell", "geometry": "detector.geom",
        "cxi": "indexamajig/peaks.cxi", "cxi_geometry": "indexamajig/peaks.geom",
        "cxi_lst": "indexamajig/peaks.lst", "script": "indexamajig/run_indexamajig.sh",
        "plot": "indexing.png", "cell_plot": "cell.png",
    }  # fmt: skip
    return {k: d / v for k, v in names.items()}


def stream_tables(
    shots: pd.DataFrame, detector: Detector, wavelength: float, vectors: pd.DataFrame,
    crystals: pd.DataFrame, lattice: str,
) -> tuple[pd.DataFrame, ...]:  # fmt: skip
    """Chunks (hits), peaks (panel-relative) and crystals (numbered globally in table
    order) for a CrystFEL stream."""
    det = detector
    hits = shots[shots["frame"].isin(hit_frames(shots))]
    chunks = pd.DataFrame(
        {
            "chunk": hits["frame"].to_numpy(np.int64), "file": hits["file"].astype(str),
            "event": hits["event"].astype(str), "wavelength_A": wavelength,
            "num_peaks": hits["num_peaks"].to_numpy(np.int64),
            "average_camera_length_mm": float(det.panels[0].clen)
            if isinstance(det.panels[0].clen, float) else np.nan,
        }
    )  # fmt: skip
    vec = vectors
    local = det.raw_to_panel(vec["fs"].to_numpy(), vec["ss"].to_numpy(), vec["panel"].to_numpy())
    names = np.array(det.panel_names, dtype=object)
    stream_peaks = pd.DataFrame(
        {
            "chunk": vec["frame"].to_numpy(np.int64), "fs": local.fs, "ss": local.ss,
            "one_over_d": np.linalg.norm(vec[["qx", "qy", "qz"]].to_numpy(), axis=1),
            "intensity": vec["intensity"].to_numpy(float), "panel": names[local.panel],
        }
    )  # fmt: skip
    crystals = with_lattice_columns(crystals, lattice).rename(
        columns={"frame": "chunk", "crystal": "crystal_in_frame"}
    )
    crystals.insert(1, "crystal", np.arange(len(crystals)))  # streams number them globally
    return chunks, stream_peaks, crystals


def write_indexed_stream(result: IndexingResult, path: Path, *, overwrite: bool) -> None:
    """The CrystFEL stream of the result (peaks and crystals, no reflections yet)."""
    chunks, peaks, crystals = stream_tables(
        result.dataset.shots, result.detector, result.wavelength, result.vectors,
        result.crystals, result.lattice,
    )  # fmt: skip
    geom = _nominal(result.detector)
    stream = Stream.from_tables(
        chunks, peaks, crystals, header=StreamHeader(indexing_methods=("crystalscope",)),
        geometry_text=format_geom(geom), cell_text=cell_file(result.cell, result.lattice).to_text(),
    )  # fmt: skip
    write_stream(stream, path, overwrite=overwrite)


def _nominal(detector: Detector) -> Detector:
    """The geometry without the elliptical distortion (what CrystFEL can hold)."""
    return dataclasses.replace(detector, distortion=None)


def _cxi_detector(detector: Detector, wavelength: float) -> Detector:
    """The nominal geometry reading the virtual file's image and CXI peak lists."""
    panels = tuple(
        dataclasses.replace(p, data=CXI_DATA, dims=("%", "ss", "fs"), masks=())
        for p in detector.panels
    )
    return dataclasses.replace(
        detector, panels=panels, distortion=None, peak_list=CXI_PEAKS, peak_list_type="cxi",
        wavelength_source=WavelengthSource("wavelength", float(wavelength)),
    )  # fmt: skip


def _cxi_peak_arrays(result: IndexingResult, frames: np.ndarray) -> dict[str, np.ndarray]:
    """Peak positions on the nominal geometry (shift and ellipticity applied)."""
    det = result.detector
    vec = result.vectors
    hits = _nominal(det).q_to_pixel(vec[list(Q_COLUMNS)].to_numpy(), wavelength=result.wavelength)
    ok = hits.panel >= 0
    fs, ss = det.panel_to_raw(hits.panel[ok], hits.fs[ok], hits.ss[ok])
    table = pd.DataFrame(
        {"frame": vec["frame"][ok], "fs": fs, "ss": ss, "intensity": vec["intensity"][ok]}
    )
    return peak_arrays(table, frames)


def write_indexamajig_input(
    result: IndexingResult, paths: dict[str, Path], *, overwrite: bool
) -> None:
    """``peaks.cxi``, ``peaks.geom``, ``peaks.lst`` and a script for indexamajig."""
    frames = hit_frames(result.dataset.shots)
    arrays = _cxi_peak_arrays(result, frames)
    shape = result.detector.raw_shape
    paths["cxi"].parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(paths["cxi"], overwrite=overwrite) as tmp, h5py.File(tmp, "w") as fh:
        fh.create_dataset(
            CXI_DATA, shape=(len(frames), *shape), dtype=np.uint8, chunks=(1, *shape),
            compression="gzip", compression_opts=1, fillvalue=0,
        )  # fmt: skip
        group = fh.require_group(CXI_PEAKS)
        for name, values in arrays.items():
            group.create_dataset(name, data=values)
        fh.create_dataset("/entry_1/frame", data=frames.astype(np.int64))
    write_geom(
        _cxi_detector(result.detector, result.wavelength),
        paths["cxi_geometry"],
        overwrite=overwrite,
    )
    write_lst(paths["cxi_lst"], [("peaks.cxi", i) for i in range(len(frames))], overwrite=overwrite)
    cmd = [
        "indexamajig", "-i", "peaks.lst", "-g", "peaks.geom", "-p", "../cell.cell",
        "--peaks=cxi", "--indexing=pinkIndexer", "-o", "indexamajig.stream", "-j", "$(nproc)",
    ]  # fmt: skip
    text = (
        "#!/bin/sh\n# Index the same peaks with CrystFEL (run inside this directory).\n"
        "# Frame N of peaks.cxi is the data set's frame /entry_1/frame[N].\n"
        + " ".join(shlex.quote(c) if not c.startswith("$(") else c for c in cmd)
        + "\n"
    )
    with atomic_path(paths["script"], overwrite=overwrite) as tmp:
        tmp.write_text(text)
        tmp.chmod(0o755)


def plot_indexing(result: IndexingResult, path: str | os.PathLike[str]) -> Path:
    """PNG: indexing rate along the run, indexed peaks per crystal, residuals."""
    fig = Figure(figsize=(14, 3.8))
    axes = fig.subplots(1, 3)
    shots = result.dataset.shots
    frames = shots["frame"].to_numpy()
    indexed = np.isin(frames, result.crystals["frame"].to_numpy())
    window = max(1, min(200, len(frames) // 20))
    rate = pd.Series(indexed.astype(float)).rolling(window, center=True, min_periods=1).mean()
    axes[0].plot(np.arange(len(frames)), 100 * rate)
    axes[0].set(xlabel="frame", ylabel="indexed (%)", title=f"indexing rate ({window}-frame mean)")
    if len(result.crystals):
        axes[1].hist(result.crystals["n_indexed"], bins=40)
        axes[2].hist(1e3 * result.crystals["final_residual"].to_numpy(float), bins=40)
    axes[1].set(xlabel="indexed peaks", ylabel="crystals", title="indexed peaks per crystal")
    axes[2].set(xlabel="RMS residual (1e-3 1/A)", ylabel="crystals", title="residuals")
    return save_png(fig, path)


def write_indexed(
    result: IndexingResult, directory: str | os.PathLike[str], *, overwrite: bool = False
) -> dict[str, Path]:
    """Write the results of :func:`~crystalscope.serial.indexing.index_serial` (module doc)."""
    paths = index_output_paths(directory)
    check_outputs_free(paths.values(), overwrite=overwrite)
    Path(directory).mkdir(parents=True, exist_ok=True)
    ds = result.dataset
    ds.write(paths["dataset"], overwrite=overwrite, frames=False)
    with atomic_path(paths["crystals"], overwrite=overwrite) as tmp:
        result.crystals.to_csv(tmp, index=False)
    ds.select(np.isin(ds.shots["frame"], result.crystals["frame"])).write_lst(
        paths["lst"], overwrite=overwrite
    )
    write_cell(cell_file(result.cell, result.lattice), paths["cell"], overwrite=overwrite)
    write_geom(_nominal(result.detector), paths["geometry"], overwrite=overwrite)
    write_indexed_stream(result, paths["stream"], overwrite=overwrite)
    write_indexamajig_input(result, paths, overwrite=overwrite)
    plot_indexing(result, paths["plot"])
    if result.histograms is not None:
        span = None if result.refinement is None else (0.0, result.refinement.range_one_over_d[1])
        fig = plot_radial_histograms(
            result.histograms, cell=result.cell, range_one_over_d=span,
            lattice=result.space_group if result.space_group is not None else result.lattice,
        )  # fmt: skip
        with atomic_path(paths["cell_plot"], overwrite=True) as tmp:
            fig.savefig(tmp, format="png", dpi=90)
    return {k: p for k, p in paths.items() if p.exists()}


def run_index(
    cfg: IndexConfig,
    *,
    config_path: str | os.PathLike[str] | None = None,
    client: Any = None,
) -> tuple[IndexingResult, dict[str, Path]]:
    """Open the input, index it and write the outputs (the CLI command's job)."""
    out = cfg.output
    check_outputs_free(index_output_paths(out.directory).values(), overwrite=out.overwrite)
    base = Path(config_path).parent if config_path else None
    data = open_indexing_input(cfg.input, geometry=cfg.geometry, beam=cfg.beam, base=base)
    result = index_serial(data, cfg, base=base, client=client)
    paths = write_indexed(result, out.directory, overwrite=out.overwrite)
    paths["config"] = write_resolved_config(cfg, out.directory)
    return result, paths
