"""Outputs of ``crystalscope serial integrate``, written into one directory.

* ``observations.h5``: every integrated observation (:mod:`crystalscope.io.observations`),
  with the cell, space group and wavelength: the input of ``crystalscope merge``;
* ``integrated.stream``: the same as a CrystFEL stream (chunks, peaks, crystals and
  their reflection lists, without the observations merging leaves out by default:
  masked, saturated, edge, near-beam), for ``partialator`` and other CrystFEL tools;
* ``integration.png``: observations per crystal, mean I/sigma against resolution and
  the partiality estimates;
* ``config.resolved.yaml``: the exact parameters;
* with ``dose.enabled``: ``dose/exposure_NN/observations.h5`` for every exposure of NN
  fractions and ``dose/series.csv`` (fractions, dose, observations, file), the input of
  ``crystalscope merge --series``.

Every file is written atomically; existing files are only replaced with ``overwrite``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from crystalscope.config import write_resolved_config
from crystalscope.errors import CrystalscopeError
from crystalscope.integrate.observations import FLAGS_EXCLUDED_BY_DEFAULT
from crystalscope.io.atomic import atomic_path, check_outputs_free, save_png
from crystalscope.io.crystfel_geom import format_geom
from crystalscope.io.crystfel_stream import Stream, StreamHeader
from crystalscope.io.crystfel_stream_write import write_stream
from crystalscope.io.observations import ObservationFile, write_observations
from crystalscope.serial.dose_series import DoseExposure, integrate_dose_series
from crystalscope.serial.index_output import stream_tables
from crystalscope.serial.indexing import cell_file, hit_vectors
from crystalscope.serial.integrate_config import IntegrateConfig
from crystalscope.serial.integration import (
    IntegrationInput,
    IntegrationResult,
    integrate_serial,
    open_integration_input,
)

__all__ = [
    "integrate_output_paths",
    "plot_integration",
    "run_integrate",
    "write_dose_series",
    "write_integrated",
]


def integrate_output_paths(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Files :func:`write_integrated` writes into ``directory``."""
    d = Path(directory)
    names = {
        "observations": "observations.h5", "stream": "integrated.stream",
        "plot": "integration.png",
    }  # fmt: skip
    return {k: d / v for k, v in names.items()}


def write_integrated_stream(
    result: IntegrationResult, data: IntegrationInput, path: Path, *, overwrite: bool
) -> None:
    """The CrystFEL stream: indexed chunks, peaks, crystals and reflection lists."""
    frames = data.frames
    vectors = hit_vectors(frames)
    lattice = data.lattice
    chunks, peaks, crystals = stream_tables(
        frames.dataset.shots, frames.detector, result.wavelength, vectors, result.crystals,
        lattice,
    )  # fmt: skip
    obs = result.observations
    obs = obs[(obs["flags"].to_numpy() & FLAGS_EXCLUDED_BY_DEFAULT) == 0]  # CrystFEL has no flags
    det = frames.detector
    local = det.raw_to_panel(obs["fs"].to_numpy(), obs["ss"].to_numpy(), obs["panel"].to_numpy())
    names = np.array(det.panel_names, dtype=object)
    refls = pd.DataFrame(
        {
            "h": obs["h"], "k": obs["k"], "l": obs["l"], "I": obs["I"], "sigma": obs["sigma"],
            "peak": obs["peak"], "background": obs["background"], "fs": local.fs,
            "ss": local.ss, "panel": names[local.panel], "crystal": obs["crystal_id"],
        }
    )  # fmt: skip
    stream = Stream.from_tables(
        chunks, peaks, crystals, refls, header=StreamHeader(indexing_methods=("crystalscope",)),
        geometry_text=format_geom(det), cell_text=cell_file(result.cell, lattice).to_text(),
    )  # fmt: skip
    write_stream(stream, path, overwrite=overwrite)


def plot_integration(result: IntegrationResult, path: str | os.PathLike[str]) -> Path:
    """PNG: observations per crystal, mean I/sigma against resolution, partialities."""
    obs = result.observations
    good = obs[(obs["flags"] & FLAGS_EXCLUDED_BY_DEFAULT) == 0]
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    if len(obs):
        axes[0].hist(obs.groupby("crystal_id").size(), bins=40)
        s2 = 1.0 / good["d"].to_numpy() ** 2
        edges = np.quantile(s2, np.linspace(0, 1, 16)) if len(s2) else np.array([0.0, 1.0])
        which = np.clip(np.searchsorted(edges, s2) - 1, 0, len(edges) - 2)
        snr = (good["I"] / good["sigma"].where(good["sigma"] > 0)).to_numpy()
        mean = [np.nanmean(snr[which == i]) if (which == i).any() else np.nan for i in range(15)]
        axes[1].plot(0.5 * (edges[1:] + edges[:-1]), mean, "o-")
        axes[2].hist(obs["partiality"], bins=40)
    axes[0].set(xlabel="observations per crystal", ylabel="crystals", title="observations")
    axes[1].set(xlabel="1/d^2 (1/A^2)", ylabel="mean I/sigma", title="signal against resolution")
    axes[2].set(xlabel="partiality estimate", ylabel="observations", title="partiality")
    return save_png(fig, path)


def write_integrated(
    result: IntegrationResult,
    data: IntegrationInput,
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    stream: bool = True,
) -> dict[str, Path]:
    """Write the outputs of :func:`integrate_serial` (module docstring)."""
    paths = integrate_output_paths(directory)
    if not stream:
        paths.pop("stream")
    check_outputs_free(paths.values(), overwrite=overwrite)
    Path(directory).mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "frames": str(data.frames.path), "indexed": str(data.indexed_path),
        "d_min": result.d_min, "d_max": result.d_max, "background": result.params.background,
        "r_peak_px": result.params.r_peak_px, "r_bg_inner_px": result.params.r_bg_inner_px,
        "r_bg_outer_px": result.params.r_bg_outer_px, "partiality": result.params.partiality,
    }  # fmt: skip
    data_file = ObservationFile(
        result.observations, result.cell, result.space_group, result.wavelength, meta
    )
    write_observations(data_file, paths["observations"], overwrite=overwrite)
    if stream:
        write_integrated_stream(result, data, paths["stream"], overwrite=overwrite)
    plot_integration(result, paths["plot"])
    return paths


def write_dose_series(
    exposures: list[DoseExposure],
    data: IntegrationInput,
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write each exposure's observations and the ``series.csv`` index; return its path."""
    root = Path(directory) / "dose"
    index = root / "series.csv"
    if index.exists() and not overwrite:
        raise CrystalscopeError("output exists; pass --overwrite", path=index)
    rows = []
    for exp in exposures:
        folder = root / f"exposure_{exp.n_fractions:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        res = exp.result
        meta = {"frames": "dose series", "n_fractions": exp.n_fractions,
                "dose_e_per_a2": exp.dose_e_per_a2, "indexed": str(data.indexed_path)}  # fmt: skip
        target = write_observations(
            ObservationFile(res.observations, res.cell, res.space_group, res.wavelength, meta),
            folder / "observations.h5", overwrite=overwrite,
        )  # fmt: skip
        rows.append((exp.n_fractions, exp.dose_e_per_a2, len(res.observations), target.name))
    table = pd.DataFrame(rows, columns=["n_fractions", "dose_e_per_a2", "observations", "file"])
    table["file"] = [
        f"exposure_{n:02d}/{name}"
        for n, name in zip(table["n_fractions"], table["file"], strict=True)
    ]
    with atomic_path(index, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    return index


def run_integrate(
    cfg: IntegrateConfig,
    *,
    config_path: str | os.PathLike[str] | None = None,
    client: Any = None,
) -> tuple[IntegrationResult, dict[str, Path]]:
    """Open the inputs, integrate and write the outputs (the CLI command's job)."""
    out = cfg.output
    check_outputs_free(integrate_output_paths(out.directory).values(), overwrite=out.overwrite)
    base = Path(config_path).parent if config_path else None
    data = open_integration_input(cfg, base=base)
    result = integrate_serial(data, cfg, client=client)
    paths = write_integrated(
        result, data, out.directory, overwrite=out.overwrite, stream=out.stream
    )
    if cfg.dose.enabled:
        exposures = integrate_dose_series(data, result, cfg, base=base, client=client)
        paths["dose_series"] = write_dose_series(
            exposures, data, out.directory, overwrite=out.overwrite
        )
        for exp in exposures:
            result.notes.append(
                f"{exp.n_fractions} fraction(s) ({exp.dose_e_per_a2:.3g} e/A^2): "
                f"{len(exp.result.observations)} observations"
            )
    paths["config"] = write_resolved_config(cfg, out.directory)
    return result, paths
