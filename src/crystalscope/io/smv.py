"""SMV images (ADSC style): a text header in braces, then raw pixels.

Layout
------
::

    {
    HEADER_BYTES=  512;
    DIM=2;
    BYTE_ORDER=little_endian;
    TYPE=unsigned_short;
    SIZE1=1024;          <- fast-scan size (columns)
    SIZE2=1024;          <- slow-scan size (rows)
    PIXEL_SIZE=0.055;    <- mm
    DISTANCE=530.0;      <- mm
    WAVELENGTH=0.0251;   <- A
    BEAM_CENTER_X=28.2;  <- mm, along the SLOW axis (ADSC/Mosflm convention)
    BEAM_CENTER_Y=28.1;  <- mm, along the FAST axis
    ...
    }

The header is padded (spaces) to ``HEADER_BYTES`` (a multiple of 512); the
``SIZE1 x SIZE2`` pixels follow.  ``TYPE`` is ``unsigned_short`` (uint16),
``unsigned_int`` (uint32), ``signed_short``, ``signed_int`` or ``float`` (float32).

Standard metadata
-----------------
``pixel_size_mm`` = (PIXEL_SIZE, PIXEL_SIZE), ``distance_mm`` = DISTANCE,
``wavelength_a`` = WAVELENGTH, ``exposure_time_s`` = TIME, ``phi_start_deg`` =
OSC_START, ``phi_range_deg`` = OSC_RANGE and ``beam_center_px`` =
``(BEAM_CENTER_Y / PIXEL_SIZE - 0.5, BEAM_CENTER_X / PIXEL_SIZE - 0.5)``: ADSC gives the
beam centre in mm from the corner of the first pixel with X along the slow axis (as
dxtbx's ADSC reader uses it); crystalscope's pixel coordinates are (fs, ss) with the
centre of the first pixel at 0.  Every header item is also kept, as text, in
``metadata["header"]`` and written back by :func:`write_smv`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_path
from crystalscope.io.image_data import ImageData, as_lossless, is_number, own_header

__all__ = ["read_smv", "read_smv_header", "write_smv"]

_TYPES = {
    "unsigned_short": "u2",
    "unsigned_int": "u4",
    "signed_short": "i2",
    "signed_int": "i4",
    "float": "f4",
}
_TYPE_OF = {np.dtype(v).name: k for k, v in _TYPES.items()}
_ORDERS = {"little_endian": "<", "big_endian": ">"}
_STRUCTURAL = ("HEADER_BYTES", "DIM", "BYTE_ORDER", "TYPE", "SIZE1", "SIZE2")
_SCALARS = {
    "distance_mm": "DISTANCE",
    "wavelength_a": "WAVELENGTH",
    "exposure_time_s": "TIME",
    "phi_start_deg": "OSC_START",
    "phi_range_deg": "OSC_RANGE",
}
_MAX_HEADER = 1 << 20


def read_smv_header(path: str | os.PathLike[str]) -> tuple[dict[str, str], int]:
    """Read the header of an SMV file.

    Returns
    -------
    header : dict of str to str
        Header items in file order, values as text.
    header_bytes : int
        Offset of the pixel data.

    Raises
    ------
    FormatError
        If the file is missing, has no ``{ ... }`` header, or ``HEADER_BYTES`` is bad.
    """
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            head = fh.read(_MAX_HEADER)
    except FileNotFoundError:
        raise FormatError("file not found", path=p) from None
    except OSError as exc:
        raise FormatError(f"cannot read file ({exc.strerror})", path=p) from None
    if not head.lstrip(b" \t\r\n").startswith(b"{"):
        raise FormatError("not an SMV file: header must start with '{'", path=p, line=1)
    end = head.find(b"}")
    if end < 0:
        raise FormatError("header has no closing '}'", path=p)
    text = head[head.find(b"{") + 1 : end].decode("latin-1")
    header = _parse_items(text, p)
    size = _header_bytes(header, p, end)
    return header, size


def _parse_items(text: str, path: Path) -> dict[str, str]:
    """``KEY=value;`` items of the text between the braces (line 1 holds the '{')."""
    header: dict[str, str] = {}
    start = 0
    for entry in text.split(";"):
        item = entry.strip()
        offset = start + len(entry) - len(entry.lstrip())
        start += len(entry) + 1
        if not item:
            continue
        number = 1 + text.count("\n", 0, offset)
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not _valid_key(key) or "\x00" in item:
            raise FormatError(f"malformed header item {item[:40]!r} (KEY=value; expected)",
                              path=path, field=key or None, line=number)  # fmt: skip
        if key in header:
            raise FormatError("header item given twice", path=path, field=key, line=number)
        header[key] = value.strip()
    return header


def _valid_key(key: str) -> bool:
    return bool(key) and not any(c.isspace() or c in "=;{}" for c in key)


def _header_bytes(header: dict[str, str], path: Path, brace: int) -> int:
    size = _int(header, "HEADER_BYTES", path, required=True)
    if size <= brace or size > _MAX_HEADER:
        raise FormatError(f"HEADER_BYTES={size} does not enclose the header", path=path,
                          field="HEADER_BYTES")  # fmt: skip
    return size


def _int(header: dict[str, str], key: str, path: Path, *, required: bool = False) -> int:
    if key not in header:
        if required:
            raise FormatError("required header item missing", path=path, field=key)
        return 0
    try:
        return int(header[key])
    except ValueError:
        raise FormatError(f"not an integer: {header[key]!r}", path=path, field=key) from None


def _float(header: dict[str, str], key: str, path: Path) -> float | None:
    if key not in header:
        return None
    try:
        value = float(header[key])
    except ValueError:
        raise FormatError(f"not a number: {header[key]!r}", path=path, field=key) from None
    if not math.isfinite(value):
        raise FormatError(f"not a finite number: {header[key]!r}", path=path, field=key)
    return value


def read_smv(path: str | os.PathLike[str]) -> ImageData:
    """Read an SMV image.

    Returns
    -------
    ImageData
        ``data`` of shape ``(SIZE2, SIZE1)``; metadata as in the module docstring.

    Raises
    ------
    FormatError
        If the header is malformed or the file is shorter than the pixel data.
    """
    p = Path(path)
    header, offset = read_smv_header(p)
    dtype, shape = _layout(header, p)
    count = shape[0] * shape[1]
    with open(p, "rb") as fh:
        fh.seek(offset)
        raw = fh.read(count * dtype.itemsize)
    if len(raw) < count * dtype.itemsize:
        raise FormatError(
            f"truncated: {count * dtype.itemsize} bytes of pixel data expected after the "
            f"header, found {len(raw)}", path=p, field="SIZE1",
        )  # fmt: skip
    data = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    return ImageData(data=data, metadata=smv_metadata(header, p), format="smv", path=str(p))


def _layout(header: dict[str, str], path: Path) -> tuple[np.dtype[Any], tuple[int, int]]:
    if header.get("DIM", "2") != "2":
        raise FormatError("only DIM=2 is supported", path=path, field="DIM")
    type_name = header.get("TYPE", "unsigned_short")
    order = header.get("BYTE_ORDER", "little_endian")
    if type_name not in _TYPES:
        raise FormatError(f"unsupported TYPE {type_name!r}", path=path, field="TYPE")
    if order not in _ORDERS:
        raise FormatError(f"unknown BYTE_ORDER {order!r}", path=path, field="BYTE_ORDER")
    size1 = _int(header, "SIZE1", path, required=True)
    size2 = _int(header, "SIZE2", path, required=True)
    if not (0 < size1 <= 1 << 16 and 0 < size2 <= 1 << 16):
        raise FormatError(f"implausible image size {size1} x {size2}", path=path,
                          field="SIZE1")  # fmt: skip
    return np.dtype(_ORDERS[order] + _TYPES[type_name]), (size2, size1)


def smv_metadata(header: dict[str, str], path: Path) -> dict[str, Any]:
    """Standard metadata from SMV header items (see the module docstring)."""
    meta: dict[str, Any] = {"header": dict(header), "header_format": "smv"}
    pixel = _float(header, "PIXEL_SIZE", path)
    if pixel is not None:
        if pixel <= 0:
            raise FormatError(f"PIXEL_SIZE must be positive, got {pixel}", path=path,
                              field="PIXEL_SIZE")  # fmt: skip
        meta["pixel_size_mm"] = (pixel, pixel)
    for name, key in _SCALARS.items():
        value = _float(header, key, path)
        if value is not None:
            meta[name] = value
    bx = _float(header, "BEAM_CENTER_X", path)
    by = _float(header, "BEAM_CENTER_Y", path)
    if pixel is not None and bx is not None and by is not None:
        meta["beam_center_px"] = (by / pixel - 0.5, bx / pixel - 0.5)
    return meta


# --------------------------------------------------------------------------- writing


def write_smv(
    path: str | os.PathLike[str],
    data: np.ndarray,
    metadata: dict[str, Any] | None = None,
    *,
    byte_order: str = "little_endian",
    overwrite: bool = True,
) -> None:
    """Write a 2-D image as SMV.

    Parameters
    ----------
    path : str or os.PathLike
        Output file (written atomically).
    data : numpy.ndarray, shape (ss, fs)
        Pixels; uint16, uint32, int16, int32 or float32, or values that one of these
        holds exactly (e.g. int64 counts below 65536 are written as unsigned_short).
    metadata : dict, optional
        Standard keys (module docstring) and ``header`` (further items, written as given;
        standard keys win over header items that disagree).
    byte_order : {"little_endian", "big_endian"}
        Byte order of the pixels.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    DataError
        If the array is not 2-D, the dtype is unsupported, a header value contains
        ``;``, ``{``, ``}`` or a newline, or the beam centre is given without pixel size.
    """
    data = np.asarray(data)
    if data.ndim != 2:
        raise DataError(f"SMV holds one 2-D image, got shape {data.shape}", field="data")
    if byte_order not in _ORDERS:
        raise DataError(f"byte_order must be little_endian or big_endian, got {byte_order!r}",
                        field="byte_order")  # fmt: skip
    data = as_lossless(data, ("uint16", "uint32", "int16", "int32", "float32"), what="SMV")
    items = _header_items(data, metadata or {}, byte_order)
    text = _header_text(items)
    raw = data.astype(np.dtype(_ORDERS[byte_order] + data.dtype.str[1:])).tobytes()
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(text + raw)


def _header_items(data: np.ndarray, metadata: dict[str, Any], order: str) -> dict[str, str]:
    raw = {str(k): str(v) for k, v in own_header(metadata, "smv").items()}
    items: dict[str, str] = {"HEADER_BYTES": "0", "DIM": "2", "BYTE_ORDER": order,
                             "TYPE": _TYPE_OF[data.dtype.name],
                             "SIZE1": str(data.shape[1]), "SIZE2": str(data.shape[0])}  # fmt: skip
    for key, value in raw.items():
        if key not in _STRUCTURAL:
            items[key] = value
    for key, number in _typed_items(metadata).items():
        if not _same_number(raw.get(key), number):
            items[key] = f"{number:.12g}"
    for key, value in items.items():
        if not _valid_key(key):
            raise DataError(f"invalid SMV header key {key!r}", field=key)
        if any(c in value for c in ";{}\n\r\x00") or not value.isascii():
            raise DataError(f"SMV header value must be ASCII without ; {{ }} or newlines: "
                            f"{value!r}", field=key)  # fmt: skip
    return items


def _typed_items(metadata: dict[str, Any]) -> dict[str, float]:
    typed: dict[str, float] = {}
    pixel = metadata.get("pixel_size_mm")
    if pixel is not None:
        sizes = [float(pixel)] * 2 if is_number(pixel) else [float(x) for x in pixel]
        if len(sizes) != 2 or not math.isclose(sizes[0], sizes[1], rel_tol=1e-9):
            raise DataError("SMV stores square pixels only", field="pixel_size_mm")
        typed["PIXEL_SIZE"] = sizes[0]
    for name, key in _SCALARS.items():
        if metadata.get(name) is not None:
            typed[key] = float(metadata[name])
    center = metadata.get("beam_center_px")
    if center is not None:
        if "PIXEL_SIZE" not in typed:
            raise DataError("beam_center_px needs pixel_size_mm to be written to SMV",
                            field="beam_center_px")  # fmt: skip
        fs_px, ss_px = (float(c) for c in center)
        typed["BEAM_CENTER_X"] = (ss_px + 0.5) * typed["PIXEL_SIZE"]
        typed["BEAM_CENTER_Y"] = (fs_px + 0.5) * typed["PIXEL_SIZE"]
    for key, value in typed.items():
        if not math.isfinite(value):
            raise DataError(f"{key} must be finite, got {value}", field=key)
    return typed


def _same_number(text: str | None, value: float) -> bool:
    if text is None:
        return False
    try:
        return math.isclose(float(text), value, rel_tol=1e-9, abs_tol=1e-12)
    except ValueError:
        return False


def _header_text(items: dict[str, str]) -> bytes:
    body = "".join(f"{k}={v};\n" for k, v in items.items() if k != "HEADER_BYTES")
    size = 512
    while True:
        text = "{\n" + f"HEADER_BYTES={size:5d};\n" + body + "}\n"
        encoded = text.encode("ascii")
        if len(encoded) <= size:
            return encoded + b" " * (size - len(encoded))
        size += 512
