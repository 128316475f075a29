"""Writing a rotation series: frame files, metadata log, Dataset and truth tables.

:func:`simulate_rotation` builds a :class:`~.rotation_sim.RotationSimulation`, computes
the frames through dask (one task per frame, local threads, rich progress bar) and
writes, into one directory,

* ``frames/00001.img`` ... : one SMV (or TIFF) file per frame, as Instamatic writes
  them, with the frame's start angle and oscillation, wavelength, camera length, pixel
  size, exposure and beam centre in its header (SMV: ``OSC_START``, ``OSC_RANGE``,
  ``PHI``, ``WAVELENGTH``, ``DISTANCE``, ``PIXEL_SIZE``, ``TIME``, ``BEAM_CENTER_X/Y``,
  plus ``FRAME``, ``ROTATION_AXIS``, ``DEFOCUSED``, ``APERTURE_SCALE``);
* ``rotation.yaml``: the metadata log (wavelength, camera length, pixel size, rotation
  axis, oscillation, dead time, exposure, start angle, defocused flag and aperture scale
  of every frame);
* ``rotation.h5``: a :class:`~crystalscope.dataset.Dataset` of the same frames (read
  back from the frame files) with the per-frame table (``phi_start_deg, phi_end_deg,
  defocused, aperture_scale, n_on_crystal``, shift, true beam centre, ``image_file``)
  and a per-frame crystal table (``UB`` at the middle of the exposure, 1/A, and cell);
* ``truth.h5``: ``truth/reflections`` (one row per reflection crossing per frame with
  counts: ``crossing, frame, fraction, counts, h, k, l, phi0_deg, d, F2, full_counts,
  lorentz, panel, fs, ss``) and ``truth/crossings`` (every crossing: ``phi0_deg``,
  ``q`` at the crossing, ``ds_dphi``, ``lorentz``, ``zeta``, ``full_counts``,
  ``recorded_fraction``, ``recorded_counts``, ``simulated``), read back with
  :func:`read_rotation_truth`;
* ``detector.geom`` and ``config.resolved.yaml``.

Frame files hold counts rounded to integers (``unsigned_int``) when counting noise is on,
as a counting detector reads out, and the exact float32 expectation otherwise.  Every
file is written atomically; nothing is replaced unless ``overwrite`` is given (and then
earlier frame files of this naming that the new series does not have are removed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml

from crystalscope.errors import ConfigError, CrystalscopeError
from crystalscope.simulate.config import RotationConfig
from crystalscope.simulate.kinematics import centre_px
from crystalscope.simulate.rotation_sim import RotationSimulation

__all__ = [
    "FrameFormat",
    "RotationResult",
    "frame_file_name",
    "read_rotation_truth",
    "simulate_rotation",
]

_UB_COLUMNS = [f"{v}star_{x}" for v in "abc" for x in "xyz"]
_EXTENSIONS = {"smv": ".img", "tiff": ".tiff"}

FrameFormat = Literal["smv", "tiff"]


@dataclass
class RotationResult:
    """Files written by :func:`simulate_rotation` and a summary."""

    dataset: Path
    truth: Path
    log: Path
    geometry: Path
    config: Path
    frame_files: list[Path]
    n_frames: int
    n_defocused: int
    n_crossings: int
    n_partials: int

    def summary(self) -> str:
        """One line per output."""
        folder = self.frame_files[0].parent if self.frame_files else Path()
        return (
            f"{self.n_frames} frames ({self.n_defocused} defocused) -> {folder}/ and "
            f"{self.dataset}\n"
            f"{self.n_crossings} Ewald crossings, {self.n_partials} partial reflections "
            f"-> {self.truth}\n"
            f"metadata log -> {self.log}; geometry -> {self.geometry}; "
            f"configuration -> {self.config}"
        )


def frame_file_name(frame: int, frame_format: FrameFormat) -> str:
    """File name of ``frame`` (0-based) in the frames folder: ``00001.img`` for frame 0."""
    return f"{frame + 1:05d}{_EXTENSIONS[frame_format]}"


def _frame_dtype(config: RotationConfig) -> np.dtype[Any]:
    return np.dtype(np.uint32 if config.detector_effects.noise else np.float32)


def _as_stored(frame: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """Frame as written: rounded unsigned counts (noise on) or float32 expectations."""
    if dtype.kind == "u":
        top = float(np.iinfo(dtype).max)
        return np.asarray(np.clip(np.rint(frame), 0.0, top), dtype=dtype)
    return np.asarray(frame, dtype=dtype)


def _frame_metadata(sim: RotationSimulation, frame: int, centre: np.ndarray) -> dict[str, Any]:
    row = sim.frames.iloc[frame]
    axis = ",".join(f"{v:.9g}" for v in sim.scan.axis)
    return {
        "pixel_size_mm": sim.detector.panels[0].pixel_size_mm,
        "distance_mm": float(sim.config.detector.distance_mm),
        "wavelength_a": sim.beam.wavelength,
        "exposure_time_s": sim.config.detector_effects.exposure_s,
        "phi_start_deg": float(row["phi_start_deg"]),
        "phi_range_deg": sim.scan.oscillation_deg,
        "beam_center_px": (float(centre[0]), float(centre[1])),
        "header": {
            "FRAME": str(frame + 1),
            "PHI": f"{float(row['phi_start_deg']):.12g}",
            "ROTATION_AXIS": axis,
            "DEFOCUSED": str(int(bool(row["defocused"]))),
            "APERTURE_SCALE": f"{float(row['aperture_scale']):.12g}",
            "DETECTOR_PRESET": str(sim.config.detector.preset or "geometry"),
        },
    }


def _write_frame(
    sim: RotationSimulation,
    paths: list[Path],
    frame_format: FrameFormat,
    centres: np.ndarray,
    overwrite: bool,
    frame: int,
) -> float:
    """Render, convert and write one frame; returns its total (stored) value."""
    from crystalscope.io.smv import write_smv
    from crystalscope.io.tiff import write_tiff

    data = _as_stored(sim.frame(frame), _frame_dtype(sim.config))
    meta = _frame_metadata(sim, frame, centres[frame])
    if frame_format == "smv":
        write_smv(paths[frame], data, meta, overwrite=overwrite)
    else:
        header = meta.pop("header")
        meta.update({k.lower(): v for k, v in header.items()})
        write_tiff(paths[frame], data, meta, overwrite=overwrite)
    return float(data.sum(dtype=np.float64))


def _log(sim: RotationSimulation, files: list[str], frame_format: FrameFormat) -> dict[str, Any]:
    """Contents of the metadata log ``rotation.yaml``."""
    cfg = sim.config
    frames = sim.frames
    return {
        "format": frame_format,
        "n_frames": len(frames),
        "radiation": sim.beam.radiation,
        "wavelength_a": sim.beam.wavelength,
        "camera_length_mm": float(cfg.detector.distance_mm),
        "pixel_size_mm": sim.detector.panels[0].pixel_size_mm,
        "detector": cfg.detector.preset if cfg.detector.geometry is None else "detector.geom",
        "frame_shape": [int(n) for n in sim.detector.raw_shape],
        "beam_centre_px": [float(v) for v in centre_px(sim.detector, sim.beam)],
        "rotation_axis": [float(v) for v in sim.scan.axis],
        "start_deg": float(cfg.start_deg),
        "oscillation_deg": float(cfg.oscillation_deg),
        "dead_time_deg": float(cfg.dead_time_deg),
        "exposure_s": float(cfg.detector_effects.exposure_s),
        "dose_e_per_a2_per_frame": float(cfg.beam_effects.dose_e_per_a2),
        "defocus_every": int(cfg.defocus_every),
        "defocus_cost_deg": float(cfg.defocus_cost_deg),
        "defocus_frames": [int(j) for j in frames.loc[frames["defocused"], "frame"]],
        "crystal": {
            "cell": [float(v) for v in sim.crystal.parameters],
            "space_group": sim.sf.space_group.hm,
            "U_at_phi0": sim.crystal.U.tolist(),
            "offset_a": [float(v) for v in cfg.crystal_offset_a],
            "aperture_diameter_a": cfg.aperture_diameter_a,
        },
        "frames": [
            {
                "frame": int(r.frame),
                "file": files[i],
                "phi_start_deg": float(r.phi_start_deg),
                "phi_end_deg": float(r.phi_end_deg),
                "defocused": bool(r.defocused),
                "aperture_scale": float(r.aperture_scale),
            }
            for i, r in enumerate(frames.itertuples())
        ],
    }


def _crystals_table(sim: RotationSimulation) -> pd.DataFrame:
    """``UB`` of the crystal at the middle of every frame's exposure (1/A), cell."""
    mid = 0.5 * (sim.frames["phi_start_deg"] + sim.frames["phi_end_deg"]).to_numpy()
    table = pd.DataFrame({"frame": sim.frames["frame"].to_numpy(), "crystal": 0, "phi_deg": mid})
    ub = np.stack([sim.crystal_at(phi).UB for phi in mid])
    for k, name in enumerate(_UB_COLUMNS):
        table[name] = ub[:, k % 3, k // 3]
    names = ("a", "b", "c", "alpha", "beta", "gamma")
    for name, value in zip(names, sim.crystal.parameters, strict=True):
        table[name] = value
    return table


def _write_truth(sim: RotationSimulation, path: Path, *, overwrite: bool) -> None:
    import h5py

    from crystalscope.dataset.tables import encode_table, write_table
    from crystalscope.io.atomic import atomic_path

    encoded = [encode_table(sim.partials), encode_table(sim.crossings)]
    with atomic_path(path, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        write_table(f.create_group("truth/reflections"), encoded[0])
        write_table(f.create_group("truth/crossings"), encoded[1])


def read_rotation_truth(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read ``truth.h5`` of :func:`simulate_rotation`: ``(reflections, crossings)``.

    Raises
    ------
    FormatError
        If the file is missing, not HDF5 or lacks the tables.
    """
    import h5py

    from crystalscope.dataset.tables import read_table
    from crystalscope.errors import FormatError

    p = Path(path)
    try:
        handle = h5py.File(p, "r")
    except FileNotFoundError:
        raise FormatError("file not found", path=p) from None
    except OSError as exc:
        raise FormatError(f"not a readable HDF5 file ({exc})", path=p) from None
    with handle:
        tables = [read_table(handle, f"truth/{n}", str(p)) for n in ("reflections", "crossings")]
    for name, table in zip(("reflections", "crossings"), tables, strict=True):
        if table is None:
            raise FormatError("truth table missing", path=p, field=f"truth/{name}")
    return tables[0], tables[1]  # type: ignore[return-value]


_OUTPUTS = ("rotation.h5", "truth.h5", "rotation.yaml", "detector.geom", "config.resolved.yaml")
_FRAME_FILE = re.compile(r"^\d{5}\.(img|tiff)$")


def _prepare(out: Path, frame_format: FrameFormat, overwrite: bool) -> Path:
    """Check that nothing is overwritten by accident; return the frames folder."""
    folder = out / "frames"
    if not overwrite:
        for name in _OUTPUTS:
            if (out / name).exists():
                raise CrystalscopeError("output exists; use --overwrite to replace it",
                                        path=out / name)  # fmt: skip
        if folder.exists() and any(folder.iterdir()):
            raise CrystalscopeError("frames folder is not empty; use --overwrite", path=folder)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _remove_stale(folder: Path, keep: list[Path]) -> None:
    """With overwrite: delete earlier frame files (our naming only) not in ``keep``."""
    wanted = {p.name for p in keep}
    for child in folder.iterdir():
        if child.is_file() and _FRAME_FILE.match(child.name) and child.name not in wanted:
            child.unlink()


def simulate_rotation(
    config: RotationConfig,
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool = True,
    frame_format: FrameFormat = "smv",
    say: Callable[[str], None] = lambda message: None,
) -> RotationResult:
    """Simulate a rotation series into ``out_dir`` (see the module docstring for files).

    Parameters
    ----------
    config : RotationConfig
        The series.
    out_dir : str or os.PathLike
        Output folder (created).
    overwrite : bool
        Replace earlier outputs; otherwise an existing output raises.
    progress : bool
        Show rich progress bars (on a terminal).
    frame_format : {"smv", "tiff"}
        Format of the per-frame files.
    say : callable
        Receives one-line messages about what is being done.

    Raises
    ------
    CrystalscopeError
        If an output exists and ``overwrite`` is false; ConfigError for invalid settings.
    """
    import dask

    from crystalscope.config import ComputeConfig, write_resolved_config
    from crystalscope.dataset import Dataset
    from crystalscope.io.atomic import atomic_write
    from crystalscope.io.crystfel_geom import write_geom
    from crystalscope.io.images import open_frames
    from crystalscope.parallel import byte_progress, compute

    if frame_format not in _EXTENSIONS:
        raise ConfigError(f"frame format must be smv or tiff, got {frame_format!r}",
                          field="frame_format")  # fmt: skip
    out = Path(out_dir)
    folder = _prepare(out, frame_format, overwrite)
    sim = RotationSimulation.build(config)
    source = config.source.mtz or config.source.structure
    say(f"{sim.beam}; {len(sim.sf.table)} reflections (P1) to {sim.sf.d_min} A from {source}")
    say(f"{len(sim.crossings)} Ewald crossings, {len(sim.partials)} partial reflections")
    paths = [folder / frame_file_name(j, frame_format) for j in range(len(sim.frames))]
    if overwrite:
        _remove_stale(folder, paths)
    centres = sim.true_centres()
    writer = partial(_write_frame, sim, paths, frame_format, centres, overwrite)
    tasks = [dask.delayed(writer, pure=False)(j) for j in range(len(paths))]
    say(f"simulating {len(paths)} frames of {sim.detector.raw_shape} through dask")
    compute(*tasks, config=ComputeConfig(progress=progress), description="rotation frames")
    shots = sim.frames.copy()
    shots["true_centre_fs"], shots["true_centre_ss"] = centres[:, 0], centres[:, 1]
    shots["image_file"] = [str(p.relative_to(out)) for p in paths]
    frames, _ = open_frames(paths)
    ds = Dataset.from_arrays(frames, shots=shots, crystals=_crystals_table(sim), meta=_meta(sim))
    with byte_progress("writing dataset", enabled=progress) as bar:
        ds.write(out / "rotation.h5", overwrite=overwrite, progress=bar)
    _write_truth(sim, out / "truth.h5", overwrite=overwrite)
    write_geom(sim.detector, out / "detector.geom", overwrite=overwrite)
    log = _log(sim, [str(p.relative_to(out)) for p in paths], frame_format)
    with atomic_write(out / "rotation.yaml", overwrite=overwrite) as fh:
        fh.write("# crystalscope rotation series: metadata log\n")
        yaml.safe_dump(log, fh, sort_keys=False)
    cfg_path = write_resolved_config(config, out)
    return RotationResult(
        out / "rotation.h5", out / "truth.h5", out / "rotation.yaml", out / "detector.geom",
        cfg_path, paths, len(paths), int(sim.frames["defocused"].sum()), len(sim.crossings),
        len(sim.partials),
    )  # fmt: skip


def _meta(sim: RotationSimulation) -> dict[str, Any]:
    cfg = sim.config
    return {
        "instrument": {
            "wavelength_a": sim.beam.wavelength,
            "radiation": sim.beam.radiation,
            "distance_mm": float(cfg.detector.distance_mm),
            "pixel_size_mm": sim.detector.panels[0].pixel_size_mm,
        },
        "goniometer": {
            "rotation_axis": [float(v) for v in sim.scan.axis],
            "start_deg": float(cfg.start_deg),
            "oscillation_deg": float(cfg.oscillation_deg),
            "dead_time_deg": float(cfg.dead_time_deg),
            "defocus_every": int(cfg.defocus_every),
            "defocus_cost_deg": float(cfg.defocus_cost_deg),
        },
        "sample": {
            "space_group": sim.sf.space_group.hm,
            "cell": [float(v) for v in sim.crystal.parameters],
            "source": str(cfg.source.structure or cfg.source.mtz),
        },
    }
