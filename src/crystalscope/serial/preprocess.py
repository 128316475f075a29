"""SerialED pre-processing of a whole data set (seed 004, sections 3.1.1-3.1.5).

:func:`preprocess` runs, on a :class:`~crystalscope.serial.inputs.RawInput`:

1. aggregation of dose-fraction movies into frames of a chosen equivalent exposure
   (``aggregate``; optional);
2. the per-frame analysis (corrections, centre, peaks, Friedel refinement:
   :func:`~crystalscope.serial.frame_steps.analyse_frame`) through dask, local threads
   by default or a ``dask.distributed`` client, with a progress bar;
3. frame selection: frames whose raw data are unusable (NaN, all zero) are flagged and
   left out, hits are the frames with at least ``hits.min_peaks`` peaks (and matching
   ``hits.query``);
4. the elliptical distortion, fitted from the peaks of all hits
   (:func:`~crystalscope.serial.ellipticity.fit_ellipticity`) and carried into the
   returned :class:`~crystalscope.model.detector.Detector`;
5. the output frames: corrected and background-subtracted
   (:func:`~crystalscope.serial.frame_steps.finish_frame`), lazily, computed while they
   are written.

:func:`write_preprocessed` writes the results; :func:`run_preprocess` is the whole job
behind ``crystalscope serial preprocess``.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd

from crystalscope.dataset import Dataset
from crystalscope.errors import ConfigError, DataError
from crystalscope.image.corrections import Corrections
from crystalscope.image.geometry import (
    beam_in_plane,
    panel_jacobians,
    plane_coordinates,
    plane_to_lab_shift,
)
from crystalscope.image.peakfinder8 import PeakFinder8Params
from crystalscope.io.pixel_mask import read_pixel_map, read_pixel_mask
from crystalscope.model.detector import Detector
from crystalscope.parallel import compute
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.ellipticity import EllipticityFit, fit_ellipticity
from crystalscope.serial.frame_steps import (
    CENTRE_METHODS,
    FLAGS,
    PEAK_COLUMNS,
    RESULT_COLUMNS,
    FrameSetup,
    analyse_frame,
    finish_frame,
)
from crystalscope.serial.inputs import RawInput

__all__ = ["PreprocessResult", "build_setup", "preprocess"]

#: Frames analysed per dask task (amortises the scheduler's per-task cost).
FRAMES_PER_TASK = 4


@dataclass
class PreprocessResult:
    """What pre-processing found.

    Attributes
    ----------
    dataset : Dataset
        Usable frames only: shots table with the per-frame results (``centre_fs``,
        ``centre_ss``, ``centre_method``, ``friedel_pairs``, ``num_peaks``, ``hit`` ...),
        CXI peak lists, the radial background profiles (stack
        ``background_profile``), and (lazily) the corrected, background-subtracted frames as
        stack ``data`` with their pixel mask as stack ``mask`` (1 = unusable).
    raw : Dataset
        The same frames, tables and peaks, with the raw frames as ``data`` (what a
        peaks-only output file points at).
    detector : Detector
        The geometry, with the fitted elliptical distortion.
    rejected : DataFrame
        Frames left out: ``file``, ``event``, ``frame``, ``reason``.
    ellipticity : EllipticityFit or None
        The fit (None when switched off or with too few peaks; see ``notes``).
    seconds : float
        Wall time of the per-frame analysis.
    notes : list of str
        Things the user should know (e.g. why the ellipticity was not fitted).
    """

    dataset: Dataset
    raw: Dataset
    detector: Detector
    rejected: pd.DataFrame
    ellipticity: EllipticityFit | None
    seconds: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the terminal."""
        shots = self.dataset.shots
        n_all = len(shots) + len(self.rejected)
        lines = [
            f"{n_all} frames analysed in {self.seconds:.1f} s "
            f"({n_all / max(self.seconds, 1e-9):.1f} frames/s)",
        ]
        if len(self.rejected):
            counts = self.rejected["reason"].value_counts()
            lines.append("skipped: " + ", ".join(f"{n} {reason}" for reason, n in counts.items()))
        hits = int(shots["hit"].sum()) if len(shots) else 0
        peaks = shots["num_peaks"].to_numpy() if len(shots) else np.zeros(0)
        lines.append(
            f"hits: {hits} of {len(shots)} ({100 * hits / max(len(shots), 1):.1f} %), "
            f"median {np.median(peaks) if len(peaks) else 0:.0f} peaks per frame"
        )
        if len(shots):
            methods = shots["centre_method"].value_counts()
            lines.append("centre from: " + ", ".join(f"{m} {n}" for m, n in methods.items()))
        if self.ellipticity is not None:
            e = self.ellipticity
            lines.append(
                f"ellipticity: ratio {e.ratio:.5f}, angle {e.angle_deg:.1f} deg "
                f"from {e.n_peaks} peaks"
            )
        lines.extend(self.notes)
        return "\n".join(lines)


# --------------------------------------------------------------------------- setup


def _corrections(
    cfg: PreprocessConfig, shape: tuple[int, ...], valid: np.ndarray, src: str | None
) -> Corrections:
    c = cfg.corrections
    if c.dead_time_s is not None and c.exposure_s is None:
        raise ConfigError(
            "dead-time correction needs the frame exposure time", path=src,
            field="corrections.exposure_s",
        )  # fmt: skip
    bad = None
    if c.mask_file is not None:
        bad = read_pixel_mask(
            c.mask_file, dataset=c.mask_dataset, shape=shape, bad=c.mask_bad,
            field="corrections.mask_file",
        )  # fmt: skip
    flat = None
    if c.flat_field is not None:
        flat = read_pixel_map(
            c.flat_field, dataset=c.flat_field_dataset, shape=shape,
            field="corrections.flat_field",
        ).astype(np.float32)  # fmt: skip
    return Corrections(
        bad=bad, valid=valid, flat=flat, interpolate=c.bad_pixels == "interpolate",
        gain_adu_per_count=c.gain_adu_per_count, dead_time_s=c.dead_time_s,
        exposure_s=c.exposure_s, saturation_adu=c.saturation_adu,
    )  # fmt: skip


def build_setup(
    detector: Detector,
    mask: np.ndarray,
    cfg: PreprocessConfig,
    *,
    config_path: str | os.PathLike[str] | None = None,
) -> FrameSetup:
    """Everything the frames of a data set share, from the geometry and configuration."""
    src = os.fspath(config_path) if config_path is not None else None
    shape = tuple(int(n) for n in mask.shape)
    x, y = plane_coordinates(detector, shape)
    static = mask | ~np.isfinite(x) | ~np.isfinite(y)
    p = cfg.peaks
    threshold = p.threshold_adu
    if threshold is None:
        threshold = 3.0 * cfg.corrections.gain_adu_per_count
    peaks = PeakFinder8Params(
        threshold_adu=threshold, min_snr=p.min_snr, min_pix=p.min_pix, max_pix=p.max_pix,
        local_bg_radius=p.local_bg_radius, min_res_px=p.min_res_px, max_res_px=p.max_res_px,
        iterations=p.iterations, max_peaks=p.max_peaks,
    )  # fmt: skip
    c, b = cfg.centre, cfg.background
    ss, fs = np.indices(shape)
    exists = ~static
    cx0, cy0 = beam_in_plane(detector)
    reach = np.nanmax(np.hypot(x - cx0, y - cy0)) + 100.0  # + generous centre wander
    n_bins = int(np.ceil(reach / b.bin_px)) + 1
    identity = bool(np.allclose(x[exists], fs[exists], atol=1e-3)) and bool(
        np.allclose(y[exists], ss[exists], atol=1e-3)
    )
    return FrameSetup(
        x=x, y=y, mask=static, corrections=_corrections(cfg, shape, ~static, src),
        peaks=peaks, nominal_centre=(cx0, cy0), jacobian=panel_jacobians(detector),
        panel_map=detector.panel_map(shape=shape), com_threshold=c.threshold_adu,
        lorentzian_radius_px=c.lorentzian_radius_px, friedel=c.friedel,
        friedel_sigma_px=c.friedel_sigma_px, min_pairs=c.min_pairs,
        max_shift_px=c.max_shift_px, identity_plane=identity, subtract_background=b.subtract,
        exclude_radius_px=b.exclude_radius_px, median_bins=b.median_bins, bin_px=b.bin_px,
        n_bins=n_bins,
    )  # fmt: skip


# --------------------------------------------------------------------------- analysis


def _analyse_block(
    block: np.ndarray, setup: FrameSetup
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return [analyse_frame(frame, setup) for frame in block]


def _analyse(
    frames: da.Array, setup: FrameSetup, cfg: PreprocessConfig, client: Any
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Per-frame results ``(n, len(RESULT_COLUMNS))``, peak arrays and background
    profiles ``(n, setup.n_bins)``, through dask."""
    n = int(frames.shape[0])
    if n == 0:
        return np.zeros((0, len(RESULT_COLUMNS))), [], np.zeros((0, setup.n_bins), np.float32)
    shared: Any = setup
    if client is not None:
        # one task per stored chunk: each worker reads its frames from the file itself
        # (merging chunks would ship frames between worker processes)
        shared = client.scatter(setup, broadcast=True)
        arr = frames
    else:
        shared = dask.delayed(setup, pure=True)
        arr = frames.rechunk((FRAMES_PER_TASK, *frames.shape[1:]))
    blocks = arr.to_delayed().ravel()
    tasks = [dask.delayed(_analyse_block, pure=True)(b, shared) for b in blocks]
    outputs = compute(*tasks, config=cfg.compute, client=client, description="pre-processing")
    results = [r for block in outputs for r in block]
    profiles = np.array([r[2] for r in results], dtype=np.float32)
    return np.array([r[0] for r in results]), [r[1] for r in results], profiles


def _result_table(shots: pd.DataFrame, values: np.ndarray, detector: Detector) -> pd.DataFrame:
    table = shots.copy()
    for i, name in enumerate(RESULT_COLUMNS):
        table[name] = values[:, i]
    for name in ("flag", "friedel_pairs", "num_peaks", "masked_pixels"):
        table[name] = np.nan_to_num(table[name]).astype(np.int64)
    codes = values[:, RESULT_COLUMNS.index("centre_method")]
    table["centre_method"] = [
        CENTRE_METHODS.get(int(m), "nominal") if m == m else "none" for m in codes
    ]
    shifts = [
        plane_to_lab_shift(detector, cx, cy) if np.isfinite(cx) else (np.nan, np.nan)
        for cx, cy in zip(table["centre_fs"], table["centre_ss"], strict=True)
    ]
    table["shift_x_mm"] = [s[0] for s in shifts]
    table["shift_y_mm"] = [s[1] for s in shifts]
    return table


def _peak_table(frames: np.ndarray, peaks: list[np.ndarray]) -> pd.DataFrame:
    counts = [len(p) for p in peaks]
    stacked = np.concatenate(peaks) if peaks else np.zeros((0, len(PEAK_COLUMNS)), np.float32)
    table = pd.DataFrame(stacked.astype(float), columns=list(PEAK_COLUMNS))
    table.insert(0, "frame", np.repeat(frames, counts).astype(np.int64))
    return table


def _hits(table: pd.DataFrame, cfg: PreprocessConfig, src: str | None) -> np.ndarray:
    hit = table["num_peaks"].to_numpy() >= cfg.hits.min_peaks
    if cfg.hits.query:
        try:
            chosen = table.eval(cfg.hits.query)
        except Exception as exc:  # pandas raises many types for a bad expression
            raise ConfigError(
                f"cannot evaluate hits.query: {exc}", path=src, field="hits.query"
            ) from None
        hit &= np.asarray(chosen, dtype=bool)
    return hit


# --------------------------------------------------------------------------- ellipticity


def _fit_ellipticity(
    table: pd.DataFrame, peaks: pd.DataFrame, setup: FrameSetup, cfg: PreprocessConfig
) -> tuple[EllipticityFit | None, str | None]:
    e = cfg.ellipticity
    if not e.fit:
        return None, None
    hits = table.loc[table["hit"], ["frame", "centre_fs", "centre_ss"]]
    sel = peaks.merge(hits, on="frame")
    if len(sel) < e.min_peaks:
        return None, (
            f"ellipticity not fitted: {len(sel)} peaks in hits, {e.min_peaks} needed "
            "(ellipticity.min_peaks)"
        )
    px, py = setup.to_plane(sel["fs"].to_numpy(), sel["ss"].to_numpy())
    dx, dy = px - sel["centre_fs"].to_numpy(), py - sel["centre_ss"].to_numpy()
    r_range = None
    if e.r_min_px is not None or e.r_max_px is not None:
        r = np.hypot(dx, dy)
        r_range = (e.r_min_px or 0.0, e.r_max_px or float(r.max()) + 1.0)
    try:
        fit = fit_ellipticity(dx, dy, r_range_px=r_range)
    except DataError as exc:
        return None, f"ellipticity not fitted: {exc.message}"
    if not fit.significant:
        halves = ", ".join(f"{r:.4f}" for r in fit.half_ratios)
        return None, (
            f"ellipticity not applied: the fit (ratio {fit.ratio:.4f}) is not confirmed by "
            f"halves of the {fit.n_peaks} peaks (ratios {halves}): no distortion detectable"
        )
    return fit, None


# --------------------------------------------------------------------------- output frames


def _finished_stack(ds: Dataset, setup: FrameSetup, profiles: np.ndarray) -> da.Array:
    """Lazy ``(n, 2, ss, fs)``: finished frames and masks of the frames of ``ds``."""
    frames = ds.data.rechunk((1, *ds.data.shape[1:]))
    centres = ds.shots[["centre_fs", "centre_ss"]].to_numpy(float)

    def block(raw: np.ndarray, block_info: dict[Any, Any] | None = None) -> np.ndarray:
        assert block_info is not None
        i = block_info[0]["chunk-location"][0]
        out, mask = finish_frame(raw[0], setup, (centres[i, 0], centres[i, 1]), profiles[i])
        return np.stack([out, mask.astype(np.float32)])[np.newaxis]

    shape = frames.shape[1:]
    return da.map_blocks(
        block,
        frames,
        dtype=np.float32,
        chunks=((1,) * int(frames.shape[0]), (2,), (shape[0],), (shape[1],)),
        new_axis=[1],
        meta=np.empty((0, 0, 0, 0), np.float32),
    )


def _aggregate(ds: Dataset, cfg: PreprocessConfig, src: str | None) -> Dataset:
    a = cfg.aggregate
    missing = [c for c in (*a.by, a.fraction_column) if c not in ds.shots.columns]
    if missing:
        raise ConfigError(
            f"aggregation needs shots column(s) {', '.join(missing)}; the data have "
            f"{', '.join(map(str, ds.shots.columns))}", path=src, field="aggregate.by",
        )  # fmt: skip
    query = f"`{a.fraction_column}` >= {a.first}"
    if a.n_frames is not None:
        query += f" and `{a.fraction_column}` < {a.first + a.n_frames}"
    return ds.aggregate(a.by, "sum", query=query, stacks=["data"], dtype=np.float32)


def preprocess(
    raw: RawInput,
    cfg: PreprocessConfig,
    *,
    client: Any = None,
    config_path: str | os.PathLike[str] | None = None,
) -> PreprocessResult:
    """Pre-process a data set (see the module documentation for the steps).

    Parameters
    ----------
    raw : RawInput
        Frames and geometry (:func:`crystalscope.serial.inputs.open_input`).
    cfg : PreprocessConfig
        Parameters.
    client : distributed.Client, optional
        Run the per-frame work on this cluster (default: ``cfg.compute``).
    config_path : path, optional
        The configuration file, named in error messages.

    Returns
    -------
    PreprocessResult
    """
    src = os.fspath(config_path) if config_path is not None else None
    ds = _aggregate(raw.dataset, cfg, src) if cfg.aggregate.enabled else raw.dataset
    setup = build_setup(raw.detector, raw.mask, cfg, config_path=src)
    start = time.perf_counter()
    values, peak_arrays, profiles = _analyse(ds.data, setup, cfg, client)
    seconds = time.perf_counter() - start
    table = _result_table(ds.shots, values, raw.detector)
    peaks = _peak_table(table["frame"].to_numpy(), peak_arrays)
    good = table["flag"].to_numpy() == 0
    rejected = table.loc[~good, ["file", "event", "frame"]].copy()
    rejected["reason"] = [FLAGS[int(f)] for f in table.loc[~good, "flag"]]
    table["hit"] = _hits(table, cfg, src) & good
    fit, note = _fit_ellipticity(table, peaks, setup, cfg)
    detector = raw.detector
    if fit is not None:
        detector = dataclasses.replace(detector, distortion=fit.distortion)
    kept_shots = table.loc[good].drop(columns=["flag"]).reset_index(drop=True)
    kept = peaks[peaks["frame"].isin(kept_shots["frame"])]
    meta = _meta(fit, setup)
    raw_out, out = (_with_results(ds.select(good), kept_shots, kept, meta, cfg) for _ in "12")
    for d in (raw_out, out):
        d.add_stack("background_profile", profiles[good], overwrite=True)
    finished = _finished_stack(out, setup, profiles[good])
    out.replace_stack("data", finished[:, 0])
    out.add_stack("mask", finished[:, 1].astype(np.uint8), overwrite=True)
    notes = [note] if note else []
    if raw.geometry_path is None:
        notes.append(
            "no geometry file (input.geometry, or detector.geom beside the frames): a single "
            "panel of 55 um pixels at 1000 mm with the centre in the middle is assumed; "
            "resolutions and cells are only right with the real geometry"
        )
    return PreprocessResult(out, raw_out, detector, rejected.reset_index(drop=True), fit,
                            seconds, notes)  # fmt: skip


def _with_results(
    ds: Dataset, shots: pd.DataFrame, peaks: pd.DataFrame, meta: dict[str, Any],
    cfg: PreprocessConfig,
) -> Dataset:  # fmt: skip
    ds.shots = shots.copy()
    ds.add_peaks(peaks, max_peaks=cfg.peaks.max_peaks)
    ds.meta["preprocess"] = dict(meta)
    return ds


def _meta(fit: EllipticityFit | None, setup: FrameSetup) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "nominal_centre_fs": setup.nominal_centre[0],
        "nominal_centre_ss": setup.nominal_centre[1],
        "background_subtracted": bool(setup.subtract_background),
        "gain_adu_per_count": float(setup.corrections.gain_adu_per_count),
    }
    if fit is not None:
        meta["ellipse_ratio"] = float(fit.ratio)
        meta["ellipse_angle_deg"] = float(fit.angle_deg)
    return meta


def load_preprocessed_detector(ds: Dataset, detector: Detector) -> Detector:
    """``detector`` with the elliptical distortion stored by :func:`preprocess` in ``ds``."""
    from crystalscope.model.distortion import EllipticalDistortion

    meta = ds.meta.get("preprocess", {})
    if "ellipse_ratio" not in meta:
        return detector
    dist = EllipticalDistortion(float(meta["ellipse_ratio"]), float(meta["ellipse_angle_deg"]))
    return dataclasses.replace(detector, distortion=dist)


def output_paths(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Files :func:`crystalscope.serial.output.write_preprocessed` writes into ``directory``."""
    d = Path(directory)
    names = {
        "dataset": "preprocessed.h5",
        "hits": "hits.lst",
        "rejected": "rejected_frames.csv",
        "ellipticity": "ellipticity.png",
        "overview": "preprocess.png",
        "geometry": "detector.geom",
    }
    return {k: d / v for k, v in names.items()}
