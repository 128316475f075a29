"""TIFF images and multi-page stacks through tifffile.

Reading
-------
:func:`read_tiff` reads the first series of the file: one page gives ``(ss, fs)``, a
multi-page stack ``(n, ss, fs)`` (higher-dimensional series are flattened to frames).
Files written by crystalscope carry the standard metadata as JSON in the first page's
ImageDescription (tifffile's "shaped" description, key ``crystalscope``); they are read
back with tuples restored.  Other TIFFs have no standard metadata; their
ImageDescription, if any, is kept in ``metadata["header"]["ImageDescription"]``.

Writing
-------
:func:`write_tiff` writes a 2-D image as one page or a 3-D stack as one page per frame
(uncompressed, any numpy dtype tifffile supports), with the JSON metadata.

:func:`tiff_frames` gives a :class:`~crystalscope.io.image_data.LazyFrames` that reads
one page per frame.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_path
from crystalscope.io.image_data import CachedHandle, ImageData, LazyFrames, file_token

__all__ = ["read_tiff", "tiff_frames", "write_tiff"]

_KEY = "crystalscope"
_TUPLES = ("pixel_size_mm", "beam_center_px", "voxel_size_a")


def _open(path: str) -> Any:
    import tifffile

    return tifffile.TiffFile(path)


def _opened(path: str | os.PathLike[str]) -> Any:
    p = Path(path)
    if not p.is_file():
        raise FormatError("file not found", path=p)
    try:
        tif = _open(str(p))
        if not tif.series:
            raise ValueError("no image series")
        return tif
    except FormatError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error...
        raise FormatError(f"cannot read TIFF: {exc}", path=p) from None


def read_tiff(path: str | os.PathLike[str]) -> ImageData:
    """Read a TIFF image or stack.

    Returns
    -------
    ImageData
        ``(ss, fs)`` or ``(n, ss, fs)`` data and metadata (module docstring).

    Raises
    ------
    FormatError
        If the file is missing, not a TIFF, or truncated.
    """
    p = Path(path)
    with _opened(p) as tif:
        try:
            data = tif.series[0].asarray()
        except Exception as exc:  # truncated strips, bad compression...
            raise FormatError(f"cannot read TIFF pixel data: {exc}", path=p) from None
        meta = _metadata(tif, p)
    if data.ndim < 2:
        raise FormatError(f"TIFF holds no 2-D image (shape {data.shape})", path=p)
    if data.ndim > 3:
        data = data.reshape((-1, *data.shape[-2:]))
    return ImageData(data=data, metadata=meta, format="tiff", path=str(p))


def _metadata(tif: Any, path: Path) -> dict[str, Any]:
    shaped = tif.shaped_metadata
    if shaped and isinstance(shaped[0], dict) and isinstance(shaped[0].get(_KEY), dict):
        meta = dict(shaped[0][_KEY])
        for key in _TUPLES:
            if isinstance(meta.get(key), list):
                meta[key] = tuple(meta[key])
        return meta
    description = tif.pages[0].description if len(tif.pages) else ""
    if not description:
        return {}
    return {"header": {"ImageDescription": description}, "header_format": "tiff"}


def tiff_frames(path: str | os.PathLike[str]) -> tuple[LazyFrames, dict[str, Any]]:
    """Lazy ``(n, ss, fs)`` frames of a TIFF file and its metadata."""
    p = Path(path)
    with _opened(p) as tif:
        series = tif.series[0]
        shape, dtype = series.shape, series.dtype
        meta = _metadata(tif, p)
    if len(shape) < 2:
        raise FormatError(f"TIFF holds no 2-D image (shape {shape})", path=p)
    n = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    handle = CachedHandle(str(p), _open)
    reader = functools.partial(_read_frame, handle, n)
    frames = LazyFrames((n, shape[-2], shape[-1]), dtype, reader, file_token(p))
    return frames, meta


def _read_frame(handle: CachedHandle, n: int, index: int) -> np.ndarray:
    try:
        with handle.lock:
            tif = handle.get()
            if n == 1:
                return np.asarray(tif.series[0].asarray()).reshape(tif.series[0].shape[-2:])
            return np.asarray(tif.asarray(key=index, series=0))
    except Exception as exc:  # truncated file, decoding errors
        raise FormatError(f"cannot read frame {index}: {exc}", path=handle.path) from None


def write_tiff(
    path: str | os.PathLike[str],
    data: np.ndarray,
    metadata: dict[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write a 2-D image or a 3-D stack (one page per frame) with JSON metadata.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (written atomically).
    data : numpy.ndarray
        ``(ss, fs)`` or ``(n, ss, fs)``.
    metadata : dict, optional
        JSON-serialisable metadata (standard keys and anything else).
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    DataError
        If the data are not 2-D or 3-D or the metadata are not JSON-serialisable.
    """
    import tifffile

    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise DataError(f"TIFF images must be 2-D or 3-D, got shape {data.shape}", field="data")
    meta = {k: v for k, v in (metadata or {}).items() if k not in ("header", "header_format")}
    try:
        json.dumps(meta, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise DataError(f"metadata is not JSON-serialisable: {exc}", field="metadata") from None
    meta = json.loads(json.dumps(meta, default=_jsonable))
    with atomic_path(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, data, metadata={_KEY: meta}, photometric="minisblack")


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
