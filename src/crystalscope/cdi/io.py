"""Reading and writing CDI patterns (with masks) and reconstructions.

Patterns are *centred* intensities (zero frequency at ``n // 2``), 2-D ``(ss, fs)`` or
3-D volumes, with a boolean mask that is True where the intensity is unknown.

Readers:

* ``.npy``: the array; ``.npz``: arrays ``intensity`` (or ``data``) and ``mask``;
* TIFF (``.tif``, ``.tiff``) through :func:`crystalscope.io.tiff.read_tiff`;
* HDF5/CXI (``.h5``, ``.hdf5``, ``.cxi``, ``.nxs``): the dataset given, else the first of
  ``entry_1/data_1/data``, ``entry_1/instrument_1/detector_1/data``, ``data``; the mask
  from ``entry_1/instrument_1/detector_1/mask`` or ``mask`` when present (non-zero =
  unknown, as in CXI);
* a separate mask file (any of the above; non-zero = unknown).

Negative and non-finite intensities are masked.  Writers are atomic and never replace a
file unless ``overwrite`` is set.  HDF5 output follows CXI: ``entry_1/data_1/data`` and
``entry_1/instrument_1/detector_1/mask`` (uint8, 1 = unknown).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_path

__all__ = ["read_mask", "read_pattern", "write_pattern", "write_reconstruction"]

_HDF5 = (".h5", ".hdf5", ".cxi", ".nxs")
_DATA_PATHS = ("entry_1/data_1/data", "entry_1/instrument_1/detector_1/data", "data")
_MASK_PATHS = ("entry_1/instrument_1/detector_1/mask", "entry_1/data_1/mask", "mask")


def _suffix(p: Path) -> str:
    return p.suffix.lower()


def _read_array(p: Path, dataset: str | None, field: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(array, mask or None) from one file."""
    if not p.is_file():
        raise FormatError("file not found", path=p, field=field)
    suffix = _suffix(p)
    try:
        if suffix == ".npy":
            return np.load(p, allow_pickle=False), None
        if suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                key = dataset or ("intensity" if "intensity" in z else "data")
                if key not in z:
                    raise FormatError(f"no array {key!r} in .npz", path=p, field=key)
                return z[key], (z["mask"] if "mask" in z else None)
        if suffix in (".tif", ".tiff"):
            from crystalscope.io.tiff import read_tiff

            return read_tiff(p).data, None
        if suffix in _HDF5:
            return _read_hdf5(p, dataset)
    except (FormatError, DataError):
        raise
    except Exception as exc:  # numpy/h5py errors on corrupt files
        raise FormatError(f"cannot read: {exc}", path=p, field=field) from None
    raise FormatError(
        f"unknown pattern format {suffix!r}; use .npy, .npz, .tif, .h5 or .cxi", path=p, field=field
    )


def _read_hdf5(p: Path, dataset: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    import h5py

    with h5py.File(p, "r") as f:
        paths = (dataset,) if dataset else _DATA_PATHS
        found = [d for d in paths if d in f and isinstance(f[d], h5py.Dataset)]
        if not found:
            raise FormatError(
                f"no pattern dataset; tried {', '.join(paths)}", path=p, field=dataset or "data"
            )
        data = f[found[0]][()]
        masks = [m for m in _MASK_PATHS if m in f and isinstance(f[m], h5py.Dataset)]
        mask = f[masks[0]][()] if masks else None
    return data, mask


def read_mask(
    path: str | os.PathLike[str], shape: tuple[int, ...], *, dataset: str | None = None
) -> np.ndarray:
    """Read a mask file (non-zero = unknown) and check it has ``shape``."""
    p = Path(path)
    arr, inner = _read_array(p, dataset, "mask")
    if _suffix(p) in _HDF5 and dataset is None and inner is not None:
        arr = inner
    arr = np.asarray(arr)
    if arr.ndim == len(shape) + 1 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != tuple(shape):
        raise DataError(
            f"mask shape {arr.shape} differs from pattern {shape}", path=p, field="mask"
        )
    return arr != 0


def read_pattern(
    path: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    mask_path: str | os.PathLike[str] | None = None,
    mask_dataset: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a centred pattern and its mask.

    Parameters
    ----------
    path : str or os.PathLike
        The pattern file (see module docstring).
    dataset : str, optional
        HDF5 dataset or ``.npz`` array name.
    mask_path, mask_dataset : optional
        Separate mask file and its dataset; combined (logical or) with a mask stored in
        the pattern file and with invalid intensities.

    Returns
    -------
    intensity : ndarray of float32
        Photons; 0 where masked.
    mask : ndarray of bool
        True = unknown.

    Raises
    ------
    FormatError
        Missing or unreadable file, unknown format, missing dataset.
    DataError
        Not 2-D/3-D, or a mask of another shape.
    """
    p = Path(path)
    data, inner = _read_array(p, dataset, dataset or "data")
    data = np.asarray(data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim not in (2, 3) or data.dtype.kind not in "biuf":
        raise DataError(
            f"a pattern must be a 2-D or 3-D numeric array, got {data.dtype} {data.shape}",
            path=p,
            field=dataset or "data",
        )
    data = data.astype(np.float32)
    mask = ~np.isfinite(data) | (data < 0)
    if inner is not None:
        inner = np.asarray(inner)
        if inner.shape != data.shape:
            raise DataError(
                f"mask shape {inner.shape} differs from {data.shape}", path=p, field="mask"
            )
        mask |= inner != 0
    if mask_path is not None:
        mask |= read_mask(mask_path, data.shape, dataset=mask_dataset)
    return np.where(mask, 0, data).astype(np.float32), mask


def write_pattern(
    path: str | os.PathLike[str],
    intensity: np.ndarray,
    mask: np.ndarray,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a pattern and mask as CXI-style HDF5 (``.h5``/``.cxi``) or ``.npz``."""
    p = Path(path)
    if _suffix(p) == ".npz":
        with atomic_path(p, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, intensity=intensity, mask=mask.astype(bool))
        return p
    if _suffix(p) not in _HDF5:
        raise FormatError("write patterns as .cxi, .h5 or .npz", path=p, field="output")
    import h5py

    with atomic_path(p, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("entry_1/data_1/data", data=intensity, compression="gzip")
        f.create_dataset(
            "entry_1/instrument_1/detector_1/mask", data=mask.astype(np.uint8), compression="gzip"
        )
        f["entry_1/data_1"].attrs["description"] = "centred far-field intensities, photons"
    return p


def write_reconstruction(
    path: str | os.PathLike[str],
    obj: np.ndarray,
    support: np.ndarray | None = None,
    *,
    overwrite: bool = False,
    **extra: np.ndarray,
) -> Path:
    """Write a reconstruction (centred complex object, support, extras) as ``.npz``/HDF5."""
    p = Path(path)
    arrays = {"object": obj, **extra}
    if support is not None:
        arrays["support"] = support.astype(bool)
    if _suffix(p) == ".npz":
        with atomic_path(p, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        return p
    if _suffix(p) not in _HDF5:
        raise FormatError("write reconstructions as .npz, .h5 or .cxi", path=p, field="output")
    import h5py

    with atomic_path(p, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        for name, arr in arrays.items():
            f.create_dataset(f"entry_1/image_1/{name}", data=arr, compression="gzip")
    return p
