"""CBF images (miniCBF as written by PILATUS/EIGER detectors) through fabio.

fabio decodes the binary section (byte-offset compression, MD5 checked).  The
``_array_data.header_contents`` text of a miniCBF holds the experiment as ``# Key value``
lines; these are read into the standard metadata:

=====================  ==================================  ===========================
header line            example                             metadata
=====================  ==================================  ===========================
``Pixel_size``         ``172e-6 m x 172e-6 m``             ``pixel_size_mm`` (fs, ss)
``Detector_distance``  ``0.58591 m``                       ``distance_mm``
``Wavelength``         ``0.97938 A``                       ``wavelength_a``
``Beam_xy``            ``(1242.81, 1250.20) pixels``       ``beam_center_px`` (- 0.5)
``Exposure_time``      ``0.1 s``                           ``exposure_time_s``
``Start_angle``        ``-90.0 deg.``                      ``phi_start_deg``
``Angle_increment``    ``1.0 deg.``                        ``phi_range_deg``
=====================  ==================================  ===========================

``Beam_xy`` is in pixels from the corner of the first pixel (as dxtbx reads it), so
``beam_center_px = (x - 0.5, y - 0.5)`` in crystalscope's pixel-centre convention.  All
header items are kept in ``metadata["header"]`` (fabio's dictionary) and the parsed
``# Key value`` lines in ``metadata["pilatus"]``.  Full imgCIF axis definitions are not
interpreted.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_path
from crystalscope.io.image_data import ImageData, as_lossless, is_number, own_header

__all__ = ["read_cbf", "write_cbf"]

_CONTENTS = "_array_data.header_contents"
_CONVENTION = "_array_data.header_convention"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_LENGTH_TO_MM = {"m": 1e3, "mm": 1.0, "um": 1e-3, "cm": 10.0}
_SCALARS = {  # metadata key: (header key, unit words accepted, factor)
    "distance_mm": ("Detector_distance", _LENGTH_TO_MM),
    "wavelength_a": ("Wavelength", {"A": 1.0, "Å": 1.0, "nm": 10.0}),
    "exposure_time_s": ("Exposure_time", {"s": 1.0}),
    "phi_start_deg": ("Start_angle", {"deg.": 1.0, "deg": 1.0}),
    "phi_range_deg": ("Angle_increment", {"deg.": 1.0, "deg": 1.0}),
}
_WRITE_UNITS = {
    "Detector_distance": ("m", 1e-3),
    "Wavelength": ("A", 1.0),
    "Exposure_time": ("s", 1.0),
    "Start_angle": ("deg.", 1.0),
    "Angle_increment": ("deg.", 1.0),
}


def read_cbf(path: str | os.PathLike[str]) -> ImageData:
    """Read a (mini)CBF image.

    Returns
    -------
    ImageData
        ``data`` (ss, fs) as decoded by fabio (int32 for PILATUS) and the metadata of
        the module docstring.

    Raises
    ------
    FormatError
        If the file is missing, not CBF, truncated (checksum or size mismatch), or a
        header value of the table above is malformed.
    """
    from fabio.cbfimage import CbfImage

    p = Path(path)
    if not p.is_file():
        raise FormatError("file not found", path=p)
    try:
        image = CbfImage().read(str(p))
        data = np.asarray(image.data)
    except Exception as exc:  # fabio raises assorted types (Assertion, Value, Index...)
        raise FormatError(f"cannot read CBF: {type(exc).__name__}: {exc}", path=p) from None
    if data.ndim != 2 or data.size == 0:
        raise FormatError(f"CBF holds no 2-D image (shape {data.shape})", path=p,
                          field="_array_data.data")  # fmt: skip
    header = {str(k): str(v) for k, v in dict(image.header).items()}
    return ImageData(data=data, metadata=cbf_metadata(header, p), format="cbf", path=str(p))


def cbf_metadata(header: dict[str, str], path: Path) -> dict[str, Any]:
    """Standard metadata from a fabio CBF header (see the module docstring)."""
    pilatus = _pilatus_lines(header.get(_CONTENTS, ""))
    meta: dict[str, Any] = {"header": header, "header_format": "cbf", "pilatus": pilatus}
    if "Pixel_size" in pilatus:
        meta["pixel_size_mm"] = _pixel_size(pilatus["Pixel_size"], path)
    for name, (key, units) in _SCALARS.items():
        if key in pilatus:
            meta[name] = _quantity(pilatus[key], key, units, path)
    if "Beam_xy" in pilatus:
        x, y = _numbers(pilatus["Beam_xy"], 2, "Beam_xy", path)
        meta["beam_center_px"] = (x - 0.5, y - 0.5)
    return meta


def _pilatus_lines(contents: str) -> dict[str, str]:
    lines: dict[str, str] = {}
    for line in contents.splitlines():
        body = line.strip().lstrip("#").strip()
        if not body:
            continue
        key, _, rest = body.partition(" ")
        lines.setdefault(key.rstrip(":"), rest.strip().lstrip("=").strip())
    return lines


def _numbers(text: str, count: int, key: str, path: Path) -> list[float]:
    found = [float(x) for x in re.findall(_NUMBER, text)[:count]]
    if len(found) != count or not all(math.isfinite(x) for x in found):
        raise FormatError(f"expected {count} number(s), got {text!r}", path=path, field=key)
    return found


def _quantity(text: str, key: str, units: dict[str, float], path: Path) -> float:
    words = text.split()
    value = _numbers(words[0] if words else "", 1, key, path)[0]
    unit = words[1] if len(words) > 1 else next(iter(units))
    if unit not in units:
        raise FormatError(f"unknown unit {unit!r} (expected {', '.join(units)})", path=path,
                          field=key)  # fmt: skip
    return value * units[unit]


def _pixel_size(text: str, path: Path) -> tuple[float, float]:
    match = re.fullmatch(rf"\s*({_NUMBER})\s*(\w+)\s*x\s*({_NUMBER})\s*(\w+)\s*", text)
    if (
        match is None
        or match.group(2) not in _LENGTH_TO_MM
        or match.group(4) not in (_LENGTH_TO_MM)
    ):
        raise FormatError(f"expected '<size> m x <size> m', got {text!r}", path=path,
                          field="Pixel_size")  # fmt: skip
    fs = float(match.group(1)) * _LENGTH_TO_MM[match.group(2)]
    ss = float(match.group(3)) * _LENGTH_TO_MM[match.group(4)]
    if not (fs > 0 and ss > 0 and math.isfinite(fs) and math.isfinite(ss)):
        raise FormatError(f"pixel size must be positive, got {text!r}", path=path,
                          field="Pixel_size")  # fmt: skip
    return fs, ss


# --------------------------------------------------------------------------- writing


def write_cbf(
    path: str | os.PathLike[str],
    data: np.ndarray,
    metadata: dict[str, Any] | None = None,
    *,
    overwrite: bool = True,
) -> None:
    """Write a 2-D image as miniCBF (byte-offset compression, PILATUS_1.2 header).

    Parameters
    ----------
    path : str or os.PathLike
        Output file (written atomically).
    data : numpy.ndarray, shape (ss, fs)
        Integer pixels that int32 holds exactly.
    metadata : dict, optional
        Standard keys (module docstring); further ``# Key value`` lines are taken from
        ``metadata["header"]["_array_data.header_contents"]`` where present.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    DataError
        If the array is not 2-D or not exactly representable as int32.
    """
    from fabio.cbfimage import CbfImage

    data = np.asarray(data)
    if data.ndim != 2:
        raise DataError(f"CBF holds one 2-D image, got shape {data.shape}", field="data")
    data = as_lossless(data, ("int32",), what="CBF (byte offset)")
    contents = _header_contents(metadata or {})
    header = {_CONVENTION: "PILATUS_1.2", _CONTENTS: contents}
    with atomic_path(path, overwrite=overwrite) as tmp:
        CbfImage(data=data, header=header).write(str(tmp))


def _header_contents(metadata: dict[str, Any]) -> str:
    """Raw ``# Key value`` lines, with the lines of changed standard keys replaced."""
    raw = str(own_header(metadata, "cbf").get(_CONTENTS, ""))
    typed = _typed_lines(metadata)
    out: list[str] = []
    for line in raw.splitlines():
        key, value = next(iter(_pilatus_lines(line).items()), ("", ""))
        if key in typed:
            new = typed.pop(key)
            line = line if _same_values(value, new) else f"# {key} {new}"
        if line.strip():
            out.append(line.rstrip())
    out += [f"# {key} {value}" for key, value in typed.items()]
    for line in out:
        if line.strip() == ";" or line.startswith(";"):
            raise DataError(f"CBF header line cannot start with ';': {line!r}", field=_CONTENTS)
    return "\n".join(out)


def _typed_lines(metadata: dict[str, Any]) -> dict[str, str]:
    lines: dict[str, str] = {}
    pixel = metadata.get("pixel_size_mm")
    if pixel is not None:
        fs, ss = [float(pixel)] * 2 if is_number(pixel) else [float(x) for x in pixel]
        lines["Pixel_size"] = f"{fs * 1e-3:.10g} m x {ss * 1e-3:.10g} m"
    for name, (key, _) in _SCALARS.items():
        if metadata.get(name) is not None:
            unit, factor = _WRITE_UNITS[key]
            lines[key] = f"{float(metadata[name]) * factor:.10g} {unit}"
    center = metadata.get("beam_center_px")
    if center is not None:
        fs_px, ss_px = (float(c) for c in center)
        lines["Beam_xy"] = f"({fs_px + 0.5:.10g}, {ss_px + 0.5:.10g}) pixels"
    return lines


def _same_values(old: str, new: str) -> bool:
    a, b = re.findall(_NUMBER, old), re.findall(_NUMBER, new)
    if len(a) != len(b) or not a:
        return False
    return all(math.isclose(float(x), float(y), rel_tol=1e-9) for x, y in zip(a, b, strict=True))
