"""Per-pixel maps of a detector: bad-pixel masks, flat fields, gain maps.

A pixel map is one 2-D array of the raw frame shape ``(ss, fs)``, stored as

* **HDF5** (``.h5``, ``.hdf5``, ``.hdf``, ``.cxi``, ``.nxs``): a 2-D dataset; by default
  the only 2-D dataset in the file, else ``/data/data`` (CrystFEL's and Cheetah's mask
  and flat-field files).  A 3-D dataset with one frame (``(1, ss, fs)``) is accepted.
* **TIFF** (``.tif``, ``.tiff``): one page.
* **NumPy** (``.npy``).

The format is recognised from the file's first bytes (the name's suffix only when those
are unknown).  Masks come in two conventions: ``bad="nonzero"`` (Cheetah, pyFAI,
diffractem: non-zero marks a bad pixel) and ``bad="zero"`` (CrystFEL's ``mask_good``
files: zero marks a bad pixel).  NaN pixels of a floating-point mask count as bad in
both.

Writing is atomic (:mod:`crystalscope.io.atomic`); boolean maps are stored as uint8
(0/1) in HDF5 and TIFF, which every program reads, and as bool in ``.npy``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import ConfigError, DataError, FormatError
from crystalscope.io.atomic import atomic_path

__all__ = ["read_pixel_map", "read_pixel_mask", "write_pixel_map"]

DEFAULT_DATASET = "/data/data"
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".cxi", ".nxs")
TIFF_SUFFIXES = (".tif", ".tiff")
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_NPY_MAGIC = b"\x93NUMPY"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

Kind = Literal["hdf5", "tiff", "npy"]


def _kind(path: Path) -> Kind:
    """File format from the magic bytes (HDF5 may start at 0, 512, 1024, ...)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if head.startswith(_NPY_MAGIC):
                return "npy"
            if head[:4] in _TIFF_MAGIC:
                return "tiff"
            offset = 0
            while head:
                if head == _HDF5_MAGIC:
                    return "hdf5"
                offset = 512 if offset == 0 else 2 * offset
                handle.seek(offset)
                head = handle.read(8)
    except OSError as exc:
        raise FormatError(f"cannot read pixel map: {exc.strerror or exc}", path=path) from None
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        raise FormatError("not an HDF5 file (no HDF5 signature)", path=path)
    if suffix in TIFF_SUFFIXES:
        raise FormatError("not a TIFF file (no TIFF header)", path=path)
    if suffix == ".npy":
        raise FormatError("not a NumPy .npy file (no NUMPY header)", path=path)
    raise FormatError("unknown pixel-map format; use HDF5, TIFF or .npy", path=path)


def _hdf5_candidates(f: Any) -> list[str]:
    """Names of the numeric datasets with a 2-D frame (2-D, or 3-D with one frame)."""
    import h5py

    found: list[str] = []

    def visit(name: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "biuf":
            shape = obj.shape
            if len(shape) == 2 or (len(shape) == 3 and shape[0] == 1):
                found.append("/" + name)

    f.visititems(visit)
    return found


def _read_hdf5(path: Path, dataset: str | None) -> tuple[np.ndarray, str]:
    import h5py

    name = dataset
    try:
        with h5py.File(path, "r") as f:
            if name is None:
                candidates = _hdf5_candidates(f)
                if len(candidates) == 1:
                    name = candidates[0]
                elif DEFAULT_DATASET in f:
                    name = DEFAULT_DATASET
                elif not candidates:
                    raise FormatError("no 2-D numeric dataset in the file", path=path)
                else:
                    raise FormatError(
                        f"several 2-D datasets ({', '.join(candidates[:6])}); choose one "
                        "with the dataset option",
                        path=path,
                    )
            obj = f.get(name)
            if not isinstance(obj, h5py.Dataset):
                what = "not found" if obj is None else "not a dataset"
                raise FormatError(f"dataset {what}", path=path, field=name)
            if obj.dtype.kind not in "biuf":
                raise FormatError(f"dataset is not numeric ({obj.dtype})", path=path, field=name)
            return np.asarray(obj[()]), name
    except FormatError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, RuntimeError, ValueError...
        raise FormatError(f"cannot read HDF5 pixel map: {exc}", path=path, field=name) from None


def _read_other(path: Path, kind: Kind) -> np.ndarray:
    try:
        if kind == "npy":
            return np.asarray(np.load(path, allow_pickle=False))
        import tifffile

        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise ValueError("no image in the file")
            return np.asarray(tif.series[0].asarray())
    except Exception as exc:  # tifffile: TiffFileError, ValueError, struct.error...
        what = "TIFF" if kind == "tiff" else ".npy"
        raise FormatError(f"cannot read {what} pixel map: {exc}", path=path) from None


def read_pixel_map(
    path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    shape: tuple[int, ...] | None = None,
    field: str = "mask",
) -> np.ndarray:
    """Read a 2-D per-pixel map (mask, flat field, gain) from HDF5, TIFF or ``.npy``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    dataset : str, optional
        HDF5 dataset; default: the only 2-D dataset in the file, else ``/data/data``.
        Ignored for TIFF and ``.npy``.
    shape : tuple of int, optional
        Expected ``(ss, fs)`` shape (the raw frame's).
    field : str
        Name of the option the file came from, for error messages (e.g.
        ``corrections.mask_file``).

    Returns
    -------
    ndarray
        The map in its stored dtype (native byte order), shape ``(ss, fs)``.

    Raises
    ------
    FormatError
        Missing, truncated or corrupt file, unknown format, missing or ambiguous
        dataset, non-numeric data or not one 2-D frame (names the file and dataset).
    DataError
        The map's shape differs from ``shape`` (names the file and ``field``).
    """
    p = Path(path)
    if not p.is_file():
        raise FormatError("file not found", path=p, field=field)
    kind = _kind(p)
    name = None
    if kind == "hdf5":
        array, name = _read_hdf5(p, dataset)
    else:
        array = _read_other(p, kind)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise FormatError(
            f"a pixel map must be one 2-D frame, got shape {array.shape}", path=p, field=name
        )
    if array.dtype.kind not in "biuf":
        raise FormatError(f"pixel map is not numeric ({array.dtype})", path=p, field=name)
    if shape is not None and tuple(array.shape) != tuple(shape):
        where = f" (dataset {name})" if name else ""
        raise DataError(
            f"pixel map{where} has shape {tuple(array.shape)}, the frames {tuple(shape)}",
            path=p,
            field=field,
        )
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))


def read_pixel_mask(
    path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    shape: tuple[int, ...] | None = None,
    bad: Literal["nonzero", "zero"] = "nonzero",
    field: str = "mask",
) -> np.ndarray:
    """Read a bad-pixel mask; True marks a bad pixel.

    Parameters
    ----------
    path, dataset, shape, field
        As :func:`read_pixel_map`.
    bad : {"nonzero", "zero"}
        Which stored value marks a bad pixel: non-zero (Cheetah, pyFAI, diffractem) or
        zero (CrystFEL ``mask_good`` files).  NaN is bad in both.

    Raises
    ------
    ConfigError
        ``bad`` is neither convention.
    FormatError, DataError
        As :func:`read_pixel_map`.
    """
    if bad not in ("nonzero", "zero"):
        raise ConfigError(f"bad must be 'nonzero' or 'zero', got {bad!r}", field=f"{field}.bad")
    values = read_pixel_map(path, dataset=dataset, shape=shape, field=field)
    nan = np.isnan(values) if values.dtype.kind == "f" else False
    return np.asarray((values != 0) if bad == "nonzero" else (values == 0)) | nan


def write_pixel_map(
    path: str | os.PathLike[str],
    array: ArrayLike,
    *,
    dataset: str = DEFAULT_DATASET,
    overwrite: bool = False,
) -> Path:
    """Write a 2-D pixel map atomically; the format follows the suffix.

    Parameters
    ----------
    path : str or os.PathLike
        Target: ``.h5``/``.hdf5``/``.hdf``/``.cxi``/``.nxs`` (HDF5, gzip-compressed
        dataset ``dataset``), ``.tif``/``.tiff`` (one page) or ``.npy``.
    array : array_like
        The map, 2-D, numeric or bool (bool is stored as uint8 in HDF5 and TIFF).
    dataset : str
        HDF5 dataset path (default ``/data/data``).
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The file written.

    Raises
    ------
    DataError
        ``array`` is not a numeric 2-D array.
    FormatError
        Unknown suffix.
    CrystalscopeError
        The file exists and ``overwrite`` is false, or the directory does not exist.
    """
    target = Path(path)
    values = np.asarray(array)
    if values.ndim != 2 or values.dtype.kind not in "biuf":
        raise DataError(
            f"a pixel map must be a numeric 2-D array, got {values.dtype} {values.shape}",
            path=target,
            field="array",
        )
    suffix = target.suffix.lower()
    if suffix not in (*HDF5_SUFFIXES, *TIFF_SUFFIXES, ".npy"):
        raise FormatError(
            "unknown pixel-map suffix; use .h5, .hdf5, .cxi, .nxs, .tif, .tiff or .npy",
            path=target,
        )
    stored = values.astype(np.uint8) if values.dtype == bool and suffix != ".npy" else values
    with atomic_path(target, overwrite=overwrite) as tmp:
        if suffix in HDF5_SUFFIXES:
            import h5py

            with h5py.File(tmp, "w") as f:
                try:
                    f.create_dataset(
                        dataset, data=stored, compression="gzip", compression_opts=4, shuffle=True
                    )
                except (ValueError, TypeError, KeyError) as exc:
                    raise ConfigError(
                        f"cannot create HDF5 dataset {dataset!r}: {exc}",
                        path=target,
                        field="dataset",
                    ) from None
        elif suffix in TIFF_SUFFIXES:
            import tifffile

            tifffile.imwrite(tmp, stored)
        else:
            with open(tmp, "wb") as handle:
                np.save(handle, stored, allow_pickle=False)
    return target
