"""MRC / MRC2014 images, stacks and volumes through mrcfile.

Reading
-------
:func:`read_mrc` returns ``(ss, fs)`` for a single image and ``(n, ss, fs)`` for an
image stack or a volume (sections along z).  Metadata:

* ``voxel_size_a`` = ``(x, y, z)`` voxel size in A (mrcfile's ``voxel_size``);
* ``mrc_stack`` / ``mrc_volume``: what the header's space group (``ispg``) says;
* ``header``: ``mode``, ``ispg``, ``nxstart/nystart/nzstart``, ``mx/my/mz`` and the
  text ``labels``;
* further standard keys written by crystalscope (``distance_mm``, ``wavelength_a``...),
  stored as JSON in text labels that start with ``crystalscope:`` (labels keep the file
  valid MRC2014 for every other program).

Writing
-------
:func:`write_mrc` writes int8, int16, uint16, float16 and float32 data as is, uint8 as
uint16 and float64 as float32 (MRC has no 64-bit mode; values are rounded to float32).
Other integer types are converted to int16, uint16 or float32 when that is exact, else
a DataError is raised.  3-D data become an image stack (``ispg = 0``) unless
``metadata["mrc_volume"]`` is true.  Of the other metadata only the standard keys
(:data:`~crystalscope.io.image_data.STANDARD_KEYS`) are kept; together with the header
labels they must fit the nine free 80-character labels.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_path
from crystalscope.io.image_data import (
    STANDARD_KEYS,
    ImageData,
    LazyFrames,
    as_lossless,
    file_token,
    is_number,
    own_header,
)

__all__ = ["mrc_frames", "read_mrc", "write_mrc"]

_CREATED = "Created by mrcfile.py"
_MARK = "crystalscope:"
_CHUNK = 80 - len(_MARK)
_DTYPES = ("int16", "uint16", "float32", "int8", "float16")
_OWN = ("voxel_size_a", "mrc_stack", "mrc_volume", "header", "header_format")


def _open(path: Path, *, header_only: bool = False) -> Any:
    import mrcfile

    if not path.is_file():
        raise FormatError("file not found", path=path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            return mrcfile.open(str(path), mode="r", header_only=header_only)
    except Exception as exc:  # mrcfile raises ValueError, RuntimeWarning (as error), OSError
        raise FormatError(f"cannot read MRC file: {exc}", path=path) from None


def read_mrc(path: str | os.PathLike[str]) -> ImageData:
    """Read an MRC file.

    Returns
    -------
    ImageData
        ``(ss, fs)`` or ``(n, ss, fs)`` data and the metadata of the module docstring.

    Raises
    ------
    FormatError
        If the file is missing, not MRC, has an invalid header or is truncated.
    """
    p = Path(path)
    with _open(p) as mrc:
        data = np.array(mrc.data)
        meta = _metadata(mrc, p)
    if data.ndim < 2:
        raise FormatError(f"MRC holds no 2-D image (shape {data.shape})", path=p, field="nx")
    return ImageData(data=data, metadata=meta, format="mrc", path=str(p))


def _metadata(mrc: Any, path: Path) -> dict[str, Any]:
    h = mrc.header
    voxel = mrc.voxel_size
    meta: dict[str, Any] = {
        "voxel_size_a": (float(voxel.x), float(voxel.y), float(voxel.z)),
        "mrc_stack": int(h.nz) > 1 and int(h.ispg) == 0,
        "mrc_volume": int(h.nz) > 1 and 1 <= int(h.ispg) <= 230,
        "header_format": "mrc",
        "header": {
            "mode": int(h.mode),
            "ispg": int(h.ispg),
            "nxstart": int(h.nxstart), "nystart": int(h.nystart), "nzstart": int(h.nzstart),
            "mx": int(h.mx), "my": int(h.my), "mz": int(h.mz),
            "labels": [],
        },
    }  # fmt: skip
    labels = [bytes(lab).rstrip(b" \x00").decode("latin-1") for lab in h.label[: int(h.nlabl)]]
    chunks = [lab[len(_MARK) :] for lab in labels if lab.startswith(_MARK)]
    meta["header"]["labels"] = [lab for lab in labels if not lab.startswith(_MARK)]
    if chunks:
        meta.update(_json_labels("".join(chunks), path))
    return meta


def _json_labels(text: str, path: Path) -> dict[str, Any]:
    try:
        extra = json.loads(text)
    except ValueError as exc:
        raise FormatError(f"bad crystalscope metadata label: {exc}", path=path,
                          field="label") from None  # fmt: skip
    if not isinstance(extra, dict):
        raise FormatError("crystalscope metadata label is not an object", path=path,
                          field="label")  # fmt: skip
    for key in ("pixel_size_mm", "beam_center_px"):
        if isinstance(extra.get(key), list):
            extra[key] = tuple(extra[key])
    return {k: v for k, v in extra.items() if k not in _OWN}


def mrc_frames(path: str | os.PathLike[str]) -> tuple[LazyFrames, dict[str, Any]]:
    """Lazy ``(n, ss, fs)`` frames of an MRC file (memory-mapped per read) and metadata."""
    p = Path(path)
    with _open(p, header_only=True) as mrc:
        meta = _metadata(mrc, p)
        h = mrc.header
        shape = (int(h.nz), int(h.ny), int(h.nx))
    mode = meta["header"]["mode"]
    frames = LazyFrames(shape, _mode_dtype(mode, p), functools.partial(_read_frame, str(p)),
                        file_token(p))  # fmt: skip
    return frames, meta


def _mode_dtype(mode: int, path: Path) -> np.dtype[Any]:
    import mrcfile.utils

    try:
        return np.dtype(mrcfile.utils.dtype_from_mode(mode))
    except ValueError as exc:
        raise FormatError(str(exc), path=path, field="mode") from None


def _read_frame(path: str, index: int) -> np.ndarray:
    import mrcfile

    try:
        with mrcfile.mmap(path, mode="r") as mrc:
            data = mrc.data
            frame = data if data.ndim == 2 else data[index]
            return np.array(frame)
    except (ValueError, OSError) as exc:
        raise FormatError(f"cannot read frame {index}: {exc}", path=path) from None


def write_mrc(
    path: str | os.PathLike[str],
    data: np.ndarray,
    metadata: dict[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write a 2-D image or a 3-D stack/volume as MRC2014.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (written atomically).
    data : numpy.ndarray
        ``(ss, fs)`` or ``(n, ss, fs)``.
    metadata : dict, optional
        ``voxel_size_a`` (x, y, z in A, or one number), ``mrc_volume`` (bool) and
        ``header["labels"]``; the other standard keys go into labels as JSON.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    DataError
        If the data are not 2-D/3-D, the dtype cannot be stored exactly, or the metadata
        are not JSON-serialisable.
    """
    import mrcfile

    meta = dict(metadata or {})
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise DataError(f"MRC data must be 2-D or 3-D, got shape {data.shape}", field="data")
    if data.dtype == np.uint8:
        data = data.astype(np.uint16)
    elif data.dtype.kind == "f" and data.dtype.itemsize > 4:
        data = data.astype(np.float32)  # MRC has no float64; rounds to ~1e-7 relative
    data = as_lossless(data, _DTYPES, what="MRC")
    labels = _labels(meta)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with mrcfile.new(str(tmp), overwrite=True) as mrc:
            mrc.set_data(data)
            if data.ndim == 3 and meta.get("mrc_volume"):
                mrc.set_volume()
            elif data.ndim == 3:
                mrc.set_image_stack()
            if meta.get("voxel_size_a") is not None:
                mrc.voxel_size = _voxel(meta["voxel_size_a"])
            for label in labels:
                mrc.add_label(label)


def _voxel(value: Any) -> tuple[float, float, float]:
    try:
        values = [float(value)] * 3 if is_number(value) else [float(v) for v in value]
    except (TypeError, ValueError):
        values = []
    if len(values) != 3 or not all(np.isfinite(values)):
        raise DataError(f"voxel_size_a must be 3 finite numbers, got {value!r}",
                        field="voxel_size_a")  # fmt: skip
    return values[0], values[1], values[2]


def _labels(meta: dict[str, Any]) -> list[str]:
    """User labels (without mrcfile's own) and the JSON of the standard keys, as labels."""
    given = [str(x)[:80] for x in own_header(meta, "mrc").get("labels", [])]
    labels = [x for x in given if not x.startswith((_CREATED, _MARK))]
    extra = {k: v for k, v in meta.items() if k in STANDARD_KEYS and k not in _OWN}
    if extra:
        try:
            text = json.dumps(extra, default=_jsonable, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise DataError(f"metadata is not JSON-serialisable: {exc}",
                            field="metadata") from None  # fmt: skip
        labels += [_MARK + text[i : i + _CHUNK] for i in range(0, len(text), _CHUNK)]
    if len(labels) > 9 or not all(x.isascii() and x.isprintable() for x in labels):
        raise DataError("MRC labels: at most 9 printable ASCII labels (metadata included)",
                        field="labels")  # fmt: skip
    return labels


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
