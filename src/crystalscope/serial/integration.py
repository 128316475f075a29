"""SerialED integration: predict and integrate every indexed crystal (seed 004, 3.3.1).

Inputs are the ``preprocessed.h5`` of ``crystalscope serial preprocess`` (frames, masks,
the elliptical distortion) and the results of ``crystalscope serial index`` (the
per-crystal table with each crystal's UB, the frame's refined detector shift and the
profile radius).  For every frame with a crystal, every reflection within the profile
radius of the Ewald sphere is predicted and integrated by summation
(:func:`crystalscope.integrate.frame.integrate_frame`, ``docs/algorithms/integration.md``)
through dask, a block of frames per task.  The result is one observation table for the
whole data set, the input of ``crystalscope merge``.

Background-subtracted frames (the default output of pre-processing) are integrated with a
constant local background; frames without background subtraction with a plane fitted to
the background ring (``integration.background: auto``), as seed 004 recommends.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import gemmi
import numpy as np
import pandas as pd

from crystalscope.config import ComputeConfig, relative_to_config
from crystalscope.dataset import Dataset
from crystalscope.errors import ConfigError, CrystalscopeError, DataError
from crystalscope.integrate.frame import integrate_frame
from crystalscope.integrate.observations import empty_observations
from crystalscope.integrate.summation import IntegrationParams
from crystalscope.model.crystal import resolve_space_group
from crystalscope.model.detector import Detector
from crystalscope.parallel import compute
from crystalscope.serial.indexing import (
    IndexingInput,
    bravais_symbol,
    hit_vectors,
    open_indexing_input,
)
from crystalscope.serial.integrate_config import IntegrateConfig, IntegrationSection

__all__ = [
    "FRAMES_PER_TASK",
    "IntegrationInput",
    "IntegrationJob",
    "IntegrationResult",
    "integrate_block",
    "integrate_frames",
    "integrate_serial",
    "integration_params",
    "open_integration_input",
]

#: Frames integrated per dask task.
FRAMES_PER_TASK = 16


@dataclass
class IntegrationInput:
    """Frames, geometry and the indexing results to integrate."""

    frames: IndexingInput
    crystals: pd.DataFrame
    cell: gemmi.UnitCell
    space_group: gemmi.SpaceGroup
    indexed_path: Path
    background_subtracted: bool
    lattice: str


@dataclass
class IntegrationResult:
    """What :func:`integrate_serial` produced."""

    observations: pd.DataFrame
    crystals: pd.DataFrame
    cell: gemmi.UnitCell
    space_group: gemmi.SpaceGroup
    wavelength: float
    params: IntegrationParams
    d_min: float
    d_max: float
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the terminal."""
        obs = self.observations
        n_crystals = int(obs["crystal_id"].nunique()) if len(obs) else 0
        flagged = int((obs["flags"] != 0).sum()) if len(obs) else 0
        span = f"{self.d_max:.2f}-" if math.isfinite(self.d_max) else "to "
        lines = [
            f"{len(self.crystals)} crystals, {n_crystals} with observations, "
            f"{len(obs)} observations ({flagged} flagged)",
            f"resolution {span}{self.d_min:.2f} A, background {self.params.background}, "
            f"radii {self.params.r_peak_px:g}/{self.params.r_bg_inner_px:g}/"
            f"{self.params.r_bg_outer_px:g} px",
        ]
        if len(obs):
            strong = obs["I"] / obs["sigma"].where(obs["sigma"] > 0)
            lines.append(
                f"median observations per crystal {obs.groupby('crystal_id').size().median():.0f}"
                f", median I/sigma {np.nanmedian(strong):.2f}"
            )
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"{self.seconds:.1f} s")
        return "\n".join(lines)


def _indexed_file(path: Path) -> Path:
    target = path / "indexed.h5" if path.is_dir() else path
    if not target.is_file():
        raise CrystalscopeError(
            "indexing results not found: give the output directory (or indexed.h5) of "
            "`crystalscope serial index`", path=target, field="indexed",
        )  # fmt: skip
    return target


def _resolve(path: Path | None, base: Path | None) -> Path | None:
    return None if path is None else relative_to_config(path, base)


def open_integration_input(cfg: IntegrateConfig, *, base: Path | None = None) -> IntegrationInput:
    """Open the frames and the indexing results named by ``cfg``.

    The frames default to the file indexing read; the space group to the one indexing
    used (else the lattice's lowest-symmetry space group, P 1 for an unknown one).

    Raises
    ------
    CrystalscopeError
        If a file is missing; DataError if the indexing results have no crystals.
    """
    indexed_path = _indexed_file(_resolve(cfg.indexed, base) or Path("indexed"))
    indexed = Dataset.open(indexed_path)
    meta = dict(indexed.meta.get("index", {}))
    frames_path = _resolve(cfg.input, base) or (Path(meta["input"]) if "input" in meta else None)
    data = open_indexing_input(
        frames_path, geometry=_resolve(cfg.geometry, base), beam=cfg.beam, base=None
    )
    crystals = indexed.crystals.reset_index(drop=True)
    if crystals.empty:
        raise DataError(
            "the indexing results have no crystals", path=indexed_path, field="crystals"
        )
    if "cell" in meta:
        cell = gemmi.UnitCell(*[float(v) for v in meta["cell"]])
    else:
        cell = gemmi.UnitCell(*crystals[["a", "b", "c", "alpha", "beta", "gamma"]].median())
    sg_name = cfg.space_group or str(meta.get("space_group") or "") or "P 1"
    try:
        sg = resolve_space_group(sg_name)
    except DataError as exc:
        raise ConfigError(exc.message, field="space_group") from None
    subtracted = bool(data.dataset.meta.get("preprocess", {}).get("background_subtracted", True))
    lattice = str(meta.get("lattice") or "") or bravais_symbol(sg.xhm())
    return IntegrationInput(data, crystals, cell, sg, indexed_path, subtracted, lattice)


def integration_params(
    section: IntegrationSection, *, background_subtracted: bool
) -> IntegrationParams:
    """The kernel parameters of a config section (``auto`` background resolved)."""
    background = section.background
    if background == "auto":
        background = "mean" if background_subtracted else "plane"
    return IntegrationParams(
        r_peak_px=section.r_peak_px, r_bg_inner_px=section.r_bg_inner_px,
        r_bg_outer_px=section.r_bg_outer_px, background=background,
        gain_adu_per_count=section.gain_adu_per_count, saturation_adu=section.saturation_adu,
        min_background_px=section.min_background_px, partiality=section.partiality,
        prediction_factor=section.prediction_factor,
        min_beam_distance_px=section.min_beam_distance_px,
    )  # fmt: skip


def peak_resolution(data: IndexingInput, frames: np.ndarray, *, push: float = 0.05) -> float:
    """Default ``d_min`` (A): ``push`` (1/A) beyond the 99th percentile of the 1/d of the
    peaks found on ``frames``, the resolution to which the patterns show spots."""
    vectors = hit_vectors(data)
    vectors = vectors[vectors["frame"].isin(frames)]
    q = np.linalg.norm(vectors[["qx", "qy", "qz"]].to_numpy(float), axis=1)
    if len(q) == 0:
        raise DataError(
            "the indexed frames have no peaks: set integration.d_min", path=data.path,
            field="integration.d_min",
        )  # fmt: skip
    return 1.0 / (float(np.quantile(q, 0.99)) + push)


@dataclass(frozen=True)
class IntegrationJob:
    """Everything one integration task needs besides its frames (one graph object).

    ``static_mask`` (raw-frame shaped, True = bad) is combined with each frame's own
    mask stack, when the data set has one.
    """

    detector: Detector
    wavelength: float
    params: IntegrationParams
    d_min: float
    d_max: float
    space_group: str
    static_mask: np.ndarray | None = None


def integrate_block(
    frames: np.ndarray, masks: np.ndarray | None, groups: list[pd.DataFrame], job: IntegrationJob
) -> pd.DataFrame:
    """Observations of ``groups[i]`` (the crystals of frame i) on each of ``frames``."""
    tables = []
    for n, (frame, crystals) in enumerate(zip(frames, groups, strict=True)):
        mask = job.static_mask
        if masks is not None:
            own = masks[n].astype(bool)
            mask = own if mask is None else own | mask
        table = integrate_frame(
            frame, crystals, job.wavelength, job.detector, job.params, d_min=job.d_min,
            d_max=job.d_max, mask=mask, space_group=job.space_group,
        )  # fmt: skip
        tables.append(table)
    tables = [t for t in tables if len(t)]
    return pd.concat(tables, ignore_index=True) if tables else empty_observations()


def integrate_frames(
    ds: Dataset,
    crystals: pd.DataFrame,
    job: IntegrationJob,
    *,
    compute_config: ComputeConfig | None = None,
    client: Any = None,
    description: str = "integration",
) -> pd.DataFrame:
    """Observations of the ``crystals`` (rows keyed by ``frame``, with ``crystal_id``) on
    the frames of ``ds`` that have one, through dask, :data:`FRAMES_PER_TASK` per task."""
    ds = ds.select(np.isin(ds.shots["frame"].to_numpy(), crystals["frame"].to_numpy()))
    frame_ids = ds.shots["frame"].to_numpy()
    by_frame = dict(tuple(crystals.groupby("frame", sort=False)))
    masks = ds["mask"] if "mask" in ds else None
    shared: Any = client.scatter(job, broadcast=True) if client is not None else dask.delayed(job)
    tasks = []
    for start in range(0, len(frame_ids), FRAMES_PER_TASK):
        stop = min(start + FRAMES_PER_TASK, len(frame_ids))
        groups = [by_frame[f] for f in frame_ids[start:stop]]
        block_masks = masks[start:stop] if masks is not None else None
        tasks.append(
            dask.delayed(integrate_block, pure=True)(
                ds.data[start:stop], block_masks, groups, shared
            )
        )
    done = compute(*tasks, config=compute_config, client=client, description=description)
    parts = [p for p in done if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else empty_observations()


def integrate_serial(
    data: IntegrationInput, cfg: IntegrateConfig, *, client: Any = None
) -> IntegrationResult:
    """Integrate every crystal of ``data`` (module docstring).

    Raises
    ------
    DataError
        If none of the indexed frames is in the frames file.
    """
    t0 = time.perf_counter()
    ds = data.frames.dataset
    crystals = data.crystals.copy()
    crystals["crystal_id"] = np.arange(len(crystals), dtype=np.int64)
    keep = np.isin(ds.shots["frame"].to_numpy(), crystals["frame"].to_numpy())
    if not keep.any():
        raise DataError(
            "none of the indexed frames is in this file; is it the file that was indexed?",
            path=data.frames.path, field="frame",
        )  # fmt: skip
    notes = []
    missing = ~np.isin(crystals["frame"].to_numpy(), ds.shots["frame"].to_numpy())
    if missing.any():
        notes.append(f"{int(missing.sum())} crystals on frames absent from the input skipped")
    sec = cfg.integration
    detector, wavelength = data.frames.detector, data.frames.wavelength
    d_min = sec.d_min
    if d_min is None:
        d_min = peak_resolution(data.frames, crystals["frame"].to_numpy(), push=sec.push_res)
    d_max = sec.d_max if sec.d_max is not None else math.inf
    params = integration_params(sec, background_subtracted=data.background_subtracted)
    job = IntegrationJob(detector, wavelength, params, d_min, d_max, data.space_group.xhm())
    obs = integrate_frames(ds, crystals[~missing], job, compute_config=cfg.compute, client=client)
    return IntegrationResult(
        obs, crystals, data.cell, data.space_group, wavelength, params, d_min, d_max,
        time.perf_counter() - t0, notes,
    )  # fmt: skip
