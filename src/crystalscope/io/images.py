"""One entry point for detector images of every supported format.

* :func:`read_image` reads a whole file into an
  :class:`~crystalscope.io.image_data.ImageData` (pixels + metadata);
* :func:`open_frames` gives a lazy :mod:`dask` array ``(n, ss, fs)`` with one frame per
  chunk, from one file (a TIFF/MRC stack, an HDF5/NeXus/CXI dataset, one SMV or CBF
  image) or from a list of single-image files (a rotation series of SMV or CBF frames);
* :func:`write_image` writes TIFF, MRC, SMV or CBF, chosen by the file extension.

The format is recognised from the file's magic bytes, then its extension
(:func:`crystalscope.io.detect.detect_format`).  The metadata keys shared by all formats
are listed in :data:`crystalscope.io.image_data.STANDARD_KEYS`.

Examples
--------
>>> frames, meta = open_frames("scan.cxi")                       # doctest: +SKIP
>>> frames[10].compute().sum(), meta["wavelength_a"]             # doctest: +SKIP
>>> write_image("frame.img", frames[0].compute(), meta)          # doctest: +SKIP
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np

from crystalscope.errors import DataError, FormatError
from crystalscope.io.cbf import read_cbf, write_cbf
from crystalscope.io.detect import detect_format
from crystalscope.io.image_data import ImageData, LazyFrames, file_token, frames_to_dask
from crystalscope.io.mrc import mrc_frames, read_mrc, write_mrc
from crystalscope.io.nexus import nexus_frames, read_nexus
from crystalscope.io.smv import read_smv, write_smv
from crystalscope.io.tiff import read_tiff, tiff_frames, write_tiff

__all__ = ["IMAGE_FORMATS", "image_format", "open_frames", "read_image", "write_image"]

#: Image formats and the extensions :func:`write_image` recognises.
IMAGE_FORMATS: dict[str, tuple[str, ...]] = {
    "tiff": (".tif", ".tiff"),
    "mrc": (".mrc", ".mrcs", ".st", ".map"),
    "smv": (".img", ".smv"),
    "cbf": (".cbf",),
    "hdf5": (".h5", ".hdf5", ".cxi", ".nxs"),
}
_READERS: dict[str, Callable[[Path], ImageData]] = {
    "tiff": read_tiff,
    "mrc": read_mrc,
    "smv": read_smv,
    "cbf": read_cbf,
}
_WRITERS: dict[str, Callable[..., None]] = {
    "tiff": write_tiff,
    "mrc": write_mrc,
    "smv": write_smv,
    "cbf": write_cbf,
}


def image_format(path: str | os.PathLike[str]) -> str:
    """The image format of an existing file: ``tiff``, ``mrc``, ``smv``, ``cbf``, ``hdf5``.

    Raises
    ------
    FormatError
        If the file is missing or is not an image format.
    """
    kind = detect_format(path)
    if kind == "dataset":
        return "hdf5"
    if kind not in IMAGE_FORMATS:
        raise FormatError(f"not an image file (detected: {kind})", path=path)
    return kind


def read_image(path: str | os.PathLike[str], *, dataset: str | None = None) -> ImageData:
    """Read an image file (all frames) with its metadata.

    Parameters
    ----------
    path : str or os.PathLike
        TIFF, MRC, SMV, CBF or HDF5/NeXus/CXI file.
    dataset : str, optional
        HDF5 path of the frames (HDF5 files only; found automatically otherwise).

    Returns
    -------
    ImageData

    Raises
    ------
    FormatError
        If the file is missing, of an unknown format, malformed or truncated.
    """
    p = Path(path)
    kind = image_format(p)
    if kind == "hdf5":
        return read_nexus(p, dataset)
    if dataset is not None:
        raise FormatError("dataset= applies to HDF5 files only", path=p, field="dataset")
    return _READERS[kind](p)


def open_frames(
    path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    dataset: str | None = None,
) -> tuple[da.Array, dict[str, Any]]:
    """Open frames lazily as a dask array ``(n, ss, fs)`` with one frame per chunk.

    Parameters
    ----------
    path : path or sequence of paths
        One file, or single-image files (SMV, CBF, 2-D TIFF/MRC) forming a series; their
        frames must all have the shape and dtype of the first.
    dataset : str, optional
        HDF5 path of the frames (HDF5 files only).

    Returns
    -------
    frames : dask.array.Array
        ``(n, ss, fs)``; nothing is read until computed.
    metadata : dict
        Metadata of the (first) file; for a series also ``paths``.

    Raises
    ------
    FormatError
        If a file is missing, malformed or truncated (when its frame is computed for the
        frames of a series after the first).
    """
    if isinstance(path, str | os.PathLike):
        frames, meta = _frames_of(Path(path), dataset)
    else:
        frames, meta = _series(list(path))
    return frames_to_dask(frames), meta


def _frames_of(p: Path, dataset: str | None) -> tuple[LazyFrames, dict[str, Any]]:
    kind = image_format(p)
    if kind == "hdf5":
        return nexus_frames(p, dataset)
    if dataset is not None:
        raise FormatError("dataset= applies to HDF5 files only", path=p, field="dataset")
    if kind == "tiff":
        return tiff_frames(p)
    if kind == "mrc":
        return mrc_frames(p)
    first = _READERS[kind](p)
    reader = functools.partial(_read_single, (str(p),))
    return LazyFrames((1, *first.data.shape), first.data.dtype, reader, file_token(p)), dict(
        first.metadata
    )


def _series(paths: list[str | os.PathLike[str]]) -> tuple[LazyFrames, dict[str, Any]]:
    if not paths:
        raise DataError("no files given", field="path")
    first = read_image(paths[0])
    if first.data.ndim != 2:
        raise FormatError(
            f"a series needs single-image files; this one has shape {first.data.shape}",
            path=paths[0],
        )  # fmt: skip
    names = tuple(str(Path(p)) for p in paths)
    reader = functools.partial(_read_single, names)
    frames = LazyFrames((len(names), *first.data.shape), first.data.dtype, reader,
                        (*file_token(names[0]), names))  # fmt: skip
    return frames, {**first.metadata, "paths": list(names)}


def _read_single(paths: tuple[str, ...], index: int) -> np.ndarray:
    image = read_image(paths[index])
    if image.data.ndim != 2:
        raise FormatError(f"expected a single image, got shape {image.data.shape}",
                          path=paths[index])  # fmt: skip
    return image.data


def write_image(
    path: str | os.PathLike[str],
    array: np.ndarray,
    metadata: dict[str, Any] | None = None,
    *,
    format: str | None = None,
    overwrite: bool = True,
) -> None:
    """Write an image (or a stack, for TIFF and MRC) with its metadata.

    Parameters
    ----------
    path : str or os.PathLike
        Output file; the extension chooses the format unless ``format`` is given.
    array : numpy.ndarray
        ``(ss, fs)``, or ``(n, ss, fs)`` for TIFF/MRC (``(1, ss, fs)`` is accepted by
        SMV and CBF).
    metadata : dict, optional
        Standard keys and the format's ``header``.
    format : {"tiff", "mrc", "smv", "cbf"}, optional
        Overrides the extension.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    FormatError
        If the format cannot be told from the extension or is not writable.
    DataError
        If the array does not fit the format (see the format's writer).
    """
    p = Path(path)
    kind = format or next(
        (k for k, exts in IMAGE_FORMATS.items() if p.suffix.lower() in exts), None
    )
    if kind not in _WRITERS:
        raise FormatError(
            f"cannot write images as {kind or p.suffix or 'a file without extension'} "
            f"(writable: {', '.join(_WRITERS)})", path=p,
        )  # fmt: skip
    data = np.asarray(array)
    if kind in ("smv", "cbf") and data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    _WRITERS[kind](p, data, metadata, overwrite=overwrite)
