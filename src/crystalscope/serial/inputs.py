"""Opening raw serial data: frames, the detector geometry and its per-file metadata.

Raw frames come as

* crystalscope Dataset files (as written by ``crystalscope simulate serial``);
* other HDF5 files (Cheetah/CXI/NeXus, detector software) whose layout a CrystFEL
  ``.geom`` describes: the panels' ``data`` path with the event axis first
  (``dim0 = %``), masks, bad regions, and values read per file or per event such as
  ``clen = /instrument/clen`` or ``photon_energy = /instrument/energy``;
* TIFF, MRC, SMV and CBF images through :func:`crystalscope.io.images.open_frames`.

Files may be given as names, glob patterns or CrystFEL ``.lst`` files, in any mix of
the above within one kind.  Without a geometry, a ``detector.geom`` beside the first
file is used (``crystalscope simulate`` writes one); otherwise the frames are taken as
one flat panel, which is enough for pre-processing (positions in pixels) but not for
anything that needs a camera length.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from crystalscope.dataset import Dataset
from crystalscope.dataset.sources import expand_sources
from crystalscope.errors import ConfigError, CrystalscopeError, DataError, FormatError
from crystalscope.image.geometry import lateral_detector
from crystalscope.io.crystfel_geom import read_geom
from crystalscope.io.detect import detect_format
from crystalscope.io.images import open_frames
from crystalscope.model.detector import Detector
from crystalscope.model.panel import MetadataRef
from crystalscope.serial.config import InputConfig

__all__ = ["RawInput", "frame_detector", "open_input"]

_HDF5_KINDS = {"dataset", "hdf5"}


@dataclass
class RawInput:
    """Raw frames with the detector that describes them.

    Attributes
    ----------
    dataset : Dataset
        The frames (lazy) and their shots table; geometry values read per file/event
        are shots columns named after the geometry field (``clen``, ``photon_energy``).
    detector : Detector
        The geometry (values read from files stay :class:`MetadataRef`; see
        :func:`frame_detector`).
    geometry_path : Path or None
        The ``.geom`` used (None for the flat-panel fallback).
    mask : ndarray of bool
        Static raw-frame mask from the geometry (gaps, bad regions, ``no_index``).
    """

    dataset: Dataset
    detector: Detector
    geometry_path: Path | None
    mask: np.ndarray


def _geometry(cfg: InputConfig, first: str, config_path: str | None) -> Path | None:
    if cfg.geometry is not None:
        path = Path(cfg.geometry)
        if config_path is not None and not path.is_absolute():
            beside = Path(config_path).parent / path
            path = beside if beside.exists() else path
        if not path.exists():
            raise ConfigError("geometry file not found", path=path, field="input.geometry")
        return path
    beside = Path(first).parent / "detector.geom"
    return beside if beside.exists() else None


def _frames_path(det: Detector | None, cfg: InputConfig) -> str | None:
    if cfg.data_path is not None:
        return cfg.data_path
    if det is None:
        return None
    paths = {p.data for p in det.panels}
    if len(paths) != 1:
        raise FormatError(
            "panels read from different HDF5 datasets; give input.data_path of one stacked "
            "array (several data blocks per frame are not supported)",
            field="data",
        )
    return paths.pop()


def _open_hdf5(names: list[str], det: Detector | None, cfg: InputConfig) -> Dataset:
    try:
        if cfg.data_path is None:
            return Dataset.open(names)
    except FormatError:
        if det is None:
            raise
    data_path = _frames_path(det, cfg)
    return Dataset.open(names, data_path=data_path)


def _open_images(names: list[str]) -> Dataset:
    frames, _ = open_frames(names[0] if len(names) == 1 else names)
    if len(names) == 1:
        files, events = [names[0]] * frames.shape[0], np.arange(frames.shape[0])
    else:
        files, events = names, np.zeros(len(names), dtype=np.int64)
    shots = pd.DataFrame({"file": files, "event": events})
    return Dataset.from_arrays(frames, shots)


def _metadata_columns(ds: Dataset, det: Detector) -> None:
    """Read every per-file/per-event geometry value into a shots column."""
    refs = det.metadata_refs()
    if not refs:
        return
    shots = ds.shots
    for field, ref in refs.items():
        column = np.full(len(shots), np.nan)
        for file, rows in shots.groupby("file", sort=False).indices.items():
            events = shots["event"].to_numpy()[rows]
            column[rows] = _read_value(str(file), ref, field, events)
        shots[field] = column
    ds.shots = shots


def _read_value(file: str, ref: MetadataRef, field: str, events: np.ndarray) -> np.ndarray:
    try:
        with h5py.File(file, "r") as f:
            if ref.path not in f:
                raise FormatError(
                    f"the geometry's {field} is read from {ref.path}, which this file lacks",
                    path=file,
                    field=ref.path,
                )
            value = np.asarray(f[ref.path][()], dtype=float)
    except OSError as exc:
        raise FormatError(f"cannot read file ({exc})", path=file, field=ref.path) from None
    except (TypeError, ValueError):
        raise FormatError(f"{ref.path} is not a number", path=file, field=ref.path) from None
    if value.ndim == 0:
        value = np.full(len(events), float(value))
    elif value.ndim == 1 and value.size > int(events.max(initial=0)):
        value = value[events]
    else:
        raise FormatError(
            f"{ref.path} has shape {value.shape}: expected a number or one per event",
            path=file,
            field=ref.path,
        )
    if not np.all(np.isfinite(value)):
        raise FormatError(f"{ref.path} is not finite", path=file, field=ref.path)
    return value


def frame_detector(detector: Detector, row: pd.Series | dict[str, float]) -> Detector:
    """The geometry of one frame: per-file/event values taken from its shots ``row``."""
    refs = detector.metadata_refs()
    if not refs:
        return detector
    values = {}
    for field, ref in refs.items():
        if field not in row:
            raise DataError(f"no column for the geometry's {field} ({ref.path})", field=field)
        values[ref.path] = float(row[field])
    return detector.resolve(values)


def _fallback_detector(shape: tuple[int, ...]) -> Detector:
    if len(shape) != 2:
        raise DataError(f"frames must be 2-D without a geometry, got shape {shape}", field="data")
    n_ss, n_fs = shape
    return Detector.single_panel(n_fs, n_ss, 0.055, 1000.0, ((n_fs - 1) / 2, (n_ss - 1) / 2))


def open_input(cfg: InputConfig, *, config_path: str | os.PathLike[str] | None = None) -> RawInput:
    """Open the raw frames and geometry named by an ``input`` configuration section.

    Raises
    ------
    ConfigError
        No input files, or a geometry file that does not exist.
    FormatError
        Unreadable frames, a geometry that does not match the frames (shape), or a
        per-file value the geometry asks for that a file lacks; the message names the
        file and the field.
    """
    src = os.fspath(config_path) if config_path is not None else None
    if not cfg.files:
        raise ConfigError("no input files", path=src, field="input.files")
    names = list(dict.fromkeys(r.file for r in expand_sources(cfg.files)))
    geom = _geometry(cfg, names[0], src)
    det = read_geom(geom) if geom is not None else None
    kind = detect_format(names[0])
    ds = _open_hdf5(cfg.files, det, cfg) if kind in _HDF5_KINDS else _open_images(names)
    shape = tuple(int(n) for n in ds.data.shape[1:])
    if det is None:
        det = _fallback_detector(shape)
    elif cfg.distance_mm is not None:
        det = _with_distance(det, cfg.distance_mm)
    try:
        mask = lateral_detector(det).bad_pixel_mask(shape)
    except CrystalscopeError as exc:
        raise FormatError(
            f"the geometry does not fit frames of shape {shape}: {exc.message}",
            path=geom,
            field="data",
        ) from None
    if mask.shape != shape:
        raise FormatError(
            f"the geometry describes frames of shape {det.raw_shape}, the data have {shape}",
            path=geom,
            field="data",
        )
    _metadata_columns(ds, det)
    return RawInput(ds, det, geom, mask)


def _with_distance(det: Detector, distance_mm: float) -> Detector:
    panels = tuple(dataclasses.replace(p, clen=None) for p in det.panels)
    return dataclasses.replace(det, clen=distance_mm, panels=panels)
