"""Frame stacks and experiment metadata from foreign HDF5, NeXus and CXI files.

Finding the frames
------------------
Unless a dataset path is given, the frames are the first of:

1. the NeXus default plot: the ``signal`` of the ``NXdata`` group named by the ``default``
   attributes (file -> NXentry -> NXdata), or of the first ``NXdata`` with a signal;
2. ``/entry/data/data``, ``/entry_1/data_1/data`` (CXI), ``/entry_1/instrument_1/
   detector_1/data``, ``/entry/instrument/detector/data``;
3. the only dataset of the file with two or more dimensions.

A path may also name a group holding ``data_000001``, ``data_000002``... (EIGER master
files); these datasets are concatenated along the frame axis.  Datasets with more than
three dimensions (a 4D-STEM scan ``(ny, nx, ky, kx)``) are flattened to frames; the
leading shape is kept in ``metadata["frames_shape"]``.

Metadata
--------
Read next to the frames (in the same entry), converted with the ``units`` attribute
(SI - metres, joules - where it is missing, as CXI prescribes):

======================  ===============================================================
key                     from
======================  ===============================================================
``wavelength_a``        ``instrument_1/source_1/wavelength``, ``instrument/beam/
                        incident_wavelength``; else the photon energy
                        ``instrument_1/source_1/energy``, ``instrument/beam/
                        incident_energy``, ``instrument/source/energy``
``energy_ev``           photon energy, where given
``distance_mm``         ``<detector>/distance``, ``<detector>/detector_distance``
``pixel_size_mm``       ``<detector>/x_pixel_size``, ``<detector>/y_pixel_size`` (fs, ss)
``exposure_time_s``     ``<detector>/count_time``
``mask``                ``<detector>/mask``, ``mask_shared``, ``pixel_mask`` as stored;
``bad_pixels``          bool, True where the mask is non-zero (CXI/NXmx: non-zero = bad)
``sample_translation_mm``  ``sample_1/geometry_1/translation`` (n, 3), lab frame, mm
``detector_basis_vectors_mm``  ``<detector>/basis_vectors`` as stored, in mm
``dataset``             the HDF5 path(s) of the frames
======================  ===============================================================

``<detector>`` is ``instrument_1/detector_1`` (CXI) or ``instrument/detector`` (NeXus).
Every error names the file and the HDF5 path.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
from scipy import constants as const

from crystalscope.errors import FormatError
from crystalscope.io.image_data import (
    CachedHandle,
    ImageData,
    LazyFrames,
    file_token,
    frames_to_dask,
)
from crystalscope.model.beam import photon_wavelength

__all__ = [
    "DEFAULT_DATA_PATHS",
    "find_frames_dataset",
    "nexus_frames",
    "open_nexus_frames",
    "read_nexus",
    "read_nexus_metadata",
]

DEFAULT_DATA_PATHS: tuple[str, ...] = (
    "/entry/data/data",
    "/entry_1/data_1/data",
    "/entry_1/instrument_1/detector_1/data",
    "/entry/instrument/detector/data",
)
_DETECTORS = ("instrument_1/detector_1", "instrument/detector")
_LENGTH_MM = {"m": 1e3, "metre": 1e3, "meter": 1e3, "mm": 1.0, "cm": 10.0, "um": 1e-3,
              "µm": 1e-3, "micron": 1e-3, "microns": 1e-3, "nm": 1e-6, "angstrom": 1e-7,
              "a": 1e-7, "å": 1e-7}  # fmt: skip
_ENERGY_EV = {"j": 1.0 / const.e, "ev": 1.0, "kev": 1e3}
_TIME_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
_EIGER_PART = re.compile(r"data_\d{6}")


def _open_h5(path: str) -> Any:
    import h5py
    import hdf5plugin  # noqa: F401  (registers compression filters: bitshuffle, LZ4...)

    # a 64 MiB chunk cache: chunks often span several frames, which are read one by one
    return h5py.File(path, "r", rdcc_nbytes=64 << 20, rdcc_nslots=100_003)


def _open(path: Path) -> Any:
    if not path.is_file():
        raise FormatError("file not found", path=path)
    try:
        return _open_h5(str(path))
    except OSError as exc:
        raise FormatError(f"cannot open as HDF5: {exc}", path=path) from None


# --------------------------------------------------------------------------- locating data


def find_frames_dataset(path: str | os.PathLike[str], dataset: str | None = None) -> list[str]:
    """HDF5 path(s) of the frame dataset(s) of ``path`` (see the module docstring).

    Returns
    -------
    list of str
        One dataset, or the ``data_NNNNNN`` parts of an EIGER data group, in order.

    Raises
    ------
    FormatError
        If ``dataset`` does not exist or is not image data, or no frames can be found.
    """
    p = Path(path)
    with _open(p) as f:
        if dataset is not None:
            return _resolve(f, dataset, p)
        for candidate in _nxdata_signals(f) + list(DEFAULT_DATA_PATHS):
            if _exists(f, candidate):
                return _resolve(f, candidate, p)
        return _only_image_dataset(f, p)


def _exists(f: Any, name: str) -> bool:
    try:
        return name in f
    except (KeyError, OSError, RuntimeError):
        return False


def _resolve(f: Any, name: str, path: Path) -> list[str]:
    import h5py

    if not _exists(f, name):
        raise FormatError("no such dataset or group", path=path, field=name)
    obj = f[name]
    if isinstance(obj, h5py.Group):
        parts = sorted(k for k in obj if _EIGER_PART.fullmatch(k))
        if not parts:
            raise FormatError("is a group without data_NNNNNN datasets", path=path, field=name)
        names = [f"{obj.name}/{k}" for k in parts]
    else:
        names = [obj.name]
    for n in names:
        _check_image_dataset(f[n], path)
    return names


def _check_image_dataset(ds: Any, path: Path) -> None:
    import h5py

    if not isinstance(ds, h5py.Dataset):
        raise FormatError("not a dataset", path=path, field=ds.name)
    if ds.ndim < 2 or min(ds.shape[-2:]) == 0:
        raise FormatError(f"not image data (shape {ds.shape})", path=path, field=ds.name)
    if ds.dtype.kind not in "biuf":
        raise FormatError(f"not numeric data (dtype {ds.dtype})", path=path, field=ds.name)


def _attr(obj: Any, name: str) -> str | None:
    value = obj.attrs.get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None if value is None else str(value)


def _nxdata_signals(f: Any) -> list[str]:
    """Signal datasets of NXdata groups: the default chain first, then all others."""
    import h5py

    found: list[str] = []
    entry_name = _attr(f, "default")
    if entry_name and isinstance(f.get(entry_name), h5py.Group):
        data_name = _attr(f[entry_name], "default")
        if data_name and isinstance(f[entry_name].get(data_name), h5py.Group):
            found += _signal_of(f[entry_name][data_name])
    for entry in f.values():
        if isinstance(entry, h5py.Group) and _attr(entry, "NX_class") == "NXentry":
            for group in entry.values():
                if isinstance(group, h5py.Group) and _attr(group, "NX_class") == "NXdata":
                    found += _signal_of(group)
    return found


def _signal_of(group: Any) -> list[str]:
    signal = _attr(group, "signal")
    return [f"{group.name}/{signal}"] if signal and signal in group else []


def _only_image_dataset(f: Any, path: Path) -> list[str]:
    import h5py

    images: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.ndim >= 2 and obj.dtype.kind in "biuf":
            images.append("/" + name)

    f.visititems(visit)
    if len(images) == 1:
        return images
    listed = ", ".join(images[:8]) + (" ..." if len(images) > 8 else "")
    raise FormatError(
        "cannot tell which dataset holds the frames; give the dataset path "
        f"(candidates: {listed or 'none'})", path=path, field="dataset",
    )  # fmt: skip


# --------------------------------------------------------------------------- frames


class _OpenDatasets:
    """An open file with its frame datasets (each keeps its own HDF5 chunk cache)."""

    def __init__(self, names: tuple[str, ...], path: str) -> None:
        self.file = _open_h5(path)
        self.datasets = {name: self.file[name] for name in names}

    def close(self) -> None:
        self.file.close()


class _FrameReader:
    """Picklable reader of frame ``index`` across one or more HDF5 datasets."""

    def __init__(self, path: str, names: list[str], lead_shapes: list[tuple[int, ...]]) -> None:
        self.handle = CachedHandle(path, functools.partial(_OpenDatasets, tuple(names)))
        self.names = names
        self.lead_shapes = lead_shapes
        self.counts = np.cumsum([int(np.prod(s)) for s in lead_shapes])

    def __call__(self, index: int) -> np.ndarray:
        part = int(np.searchsorted(self.counts, index, side="right"))
        local = index - (int(self.counts[part - 1]) if part else 0)
        name = self.names[part]
        lead = np.unravel_index(local, self.lead_shapes[part]) if self.lead_shapes[part] else ()
        try:
            with self.handle.lock:
                dataset = self.handle.get().datasets[name]
                return np.asarray(dataset[tuple(int(i) for i in lead)])
        except (OSError, KeyError, ValueError, RuntimeError) as exc:
            raise FormatError(f"cannot read frame {index}: {exc}", path=self.handle.path,
                              field=name) from None  # fmt: skip


def nexus_frames(
    path: str | os.PathLike[str], dataset: str | None = None
) -> tuple[LazyFrames, dict[str, Any]]:
    """Lazy ``(n, ss, fs)`` frames and the metadata of an HDF5/NeXus/CXI file."""
    p = Path(path)
    names = find_frames_dataset(p, dataset)
    with _open(p) as f:
        shapes = [f[n].shape for n in names]
        dtype = f[names[0]].dtype
        frame_shape = shapes[0][-2:]
        for n, s in zip(names, shapes, strict=True):
            if s[-2:] != frame_shape or len(s) != len(shapes[0]) or f[n].dtype != dtype:
                raise FormatError("data parts differ in frame shape or type", path=p, field=n)
        meta = read_nexus_metadata(p, names[0], _file=f)
    lead = [tuple(s[:-2]) for s in shapes]
    n_frames = sum(int(np.prod(s)) for s in lead)
    meta["dataset"] = names[0] if len(names) == 1 else names
    meta["frames_shape"] = lead[0] if len(lead) == 1 else (n_frames,)
    reader = _FrameReader(str(p), names, lead)
    token = (*file_token(p), tuple(names))
    return LazyFrames((n_frames, *frame_shape), dtype, reader, token), meta


def open_nexus_frames(
    path: str | os.PathLike[str], dataset: str | None = None
) -> tuple[da.Array, dict[str, Any]]:
    """A dask array ``(n, ss, fs)``, one frame per chunk, and the metadata."""
    frames, meta = nexus_frames(path, dataset)
    return frames_to_dask(frames), meta


def read_nexus(path: str | os.PathLike[str], dataset: str | None = None) -> ImageData:
    """Read all frames into memory: ``(ss, fs)`` for one frame, else ``(n, ss, fs)``."""
    frames, meta = nexus_frames(path, dataset)
    data = frames[:]
    if data.shape[0] == 1 and meta["frames_shape"] == ():
        data = data[0]
    return ImageData(data=data, metadata=meta, format="hdf5", path=str(path))


# --------------------------------------------------------------------------- metadata


def read_nexus_metadata(
    path: str | os.PathLike[str], dataset: str, *, _file: Any = None
) -> dict[str, Any]:
    """Experiment metadata found in the entry of ``dataset`` (see the module docstring)."""
    p = Path(path)
    if _file is None:
        with _open(p) as f:
            return read_nexus_metadata(p, dataset, _file=f)
    f = _file
    entry = "/" + dataset.strip("/").split("/")[0]
    meta: dict[str, Any] = {}
    _beam(f, entry, p, meta)
    for det in (f"{entry}/{d}" for d in _DETECTORS):
        if _exists(f, det):
            _detector(f, det, p, meta)
            break
    name = f"{entry}/sample_1/geometry_1/translation"
    if _exists(f, name):
        meta["sample_translation_mm"] = _values(f, name, p, _LENGTH_MM, "m")
    return meta


def _values(f: Any, name: str, path: Path, units: dict[str, float], default: str) -> Any:
    """Dataset ``name`` converted with its ``units`` attribute (``default`` if none)."""
    import h5py

    ds = f[name]
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "biuf":
        raise FormatError("expected a numeric dataset", path=path, field=name)
    unit = (_attr(ds, "units") or default).strip().lower()
    if unit not in units:
        raise FormatError(f"unknown unit {unit!r} (expected {', '.join(units)})",
                          path=path, field=name)  # fmt: skip
    values = np.asarray(ds[()], dtype=np.float64) * units[unit]
    if not np.all(np.isfinite(values)):
        raise FormatError("non-finite values", path=path, field=name)
    return values


def _scalar(values: np.ndarray, name: str, path: Path, *, positive: bool = True) -> Any:
    flat = np.ravel(values)
    if flat.size == 0:
        raise FormatError("empty dataset", path=path, field=name)
    if positive and np.any(flat <= 0):
        raise FormatError("values must be positive", path=path, field=name)
    return float(flat[0]) if np.allclose(flat, flat[0], rtol=1e-9) else flat


def _first(f: Any, entry: str, names: tuple[str, ...]) -> str | None:
    return next((f"{entry}/{n}" for n in names if _exists(f, f"{entry}/{n}")), None)


def _beam(f: Any, entry: str, path: Path, meta: dict[str, Any]) -> None:
    wl = _first(
        f, entry, ("instrument_1/source_1/wavelength", "instrument/beam/incident_wavelength")
    )
    en = _first(f, entry, ("instrument_1/source_1/energy", "instrument/beam/incident_energy",
                           "instrument/source/energy"))  # fmt: skip
    if en is not None:
        meta["energy_ev"] = _scalar(_values(f, en, path, _ENERGY_EV, "J"), en, path)
    if wl is not None:
        wavelength_mm = _values(f, wl, path, _LENGTH_MM, "m")
        meta["wavelength_a"] = _scalar(wavelength_mm * 1e7, wl, path)
    elif en is not None:
        energy = meta["energy_ev"]
        meta["wavelength_a"] = (
            photon_wavelength(energy)
            if isinstance(energy, float)
            else photon_wavelength(1.0) / energy
        )


def _detector(f: Any, det: str, path: Path, meta: dict[str, Any]) -> None:
    name = _first(f, det, ("distance", "detector_distance"))
    if name is not None:
        meta["distance_mm"] = _scalar(_values(f, name, path, _LENGTH_MM, "m"), name, path)
    x, y = _first(f, det, ("x_pixel_size",)), _first(f, det, ("y_pixel_size",))
    if x is not None and y is not None:
        meta["pixel_size_mm"] = (
            float(_scalar(_values(f, x, path, _LENGTH_MM, "m"), x, path)),
            float(_scalar(_values(f, y, path, _LENGTH_MM, "m"), y, path)),
        )
    name = _first(f, det, ("count_time",))
    if name is not None:
        meta["exposure_time_s"] = _scalar(_values(f, name, path, _TIME_S, "s"), name, path)
    name = _first(f, det, ("mask", "mask_shared", "pixel_mask"))
    if name is not None:
        _mask(f, name, path, meta)
    name = _first(f, det, ("basis_vectors",))
    if name is not None:
        meta["detector_basis_vectors_mm"] = _values(f, name, path, _LENGTH_MM, "m")


def _mask(f: Any, name: str, path: Path, meta: dict[str, Any]) -> None:
    import h5py

    ds = f[name]
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "biu" or ds.ndim < 2:
        raise FormatError("mask must be an integer array of 2 or more dimensions",
                          path=path, field=name)  # fmt: skip
    mask = np.asarray(ds[()])
    meta["mask"] = mask
    meta["bad_pixels"] = mask != 0
