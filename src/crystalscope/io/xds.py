"""XDS reflection files: ``INTEGRATE.HKL`` and unmerged/merged ``XDS_ASCII.HKL``.

Header lines start with ``!`` and hold ``KEY= value`` items (several per line are
allowed); the data columns are named either by a comma-separated list after
``!NUMBER_OF_ITEMS_IN_EACH_DATA_RECORD=`` (INTEGRATE.HKL) or by ``!ITEM_NAME=column``
lines (XDS_ASCII.HKL).  Data lines hold blank-separated numbers; the file ends with
``!END_OF_DATA`` (a file without it is truncated and rejected).

Column mapping
--------------
=================  =======================  ==========================================
XDS item           table column             conversion
=================  =======================  ==========================================
H, K, L            h, k, l                  int32
IOBS               I                        as is (detector units)
SIGMA, SIGMA(IOBS) sigma                    as is (negative in XDS_ASCII: rejected)
XCAL, YCAL / XD, YD fs, ss                  ``- 1`` (pixel-centre origin, see below)
ZCAL / ZD          zcal, frame, phi_deg     zcal as is; ``frame = floor(zcal) + 1``
                                            (image number); ``phi_deg`` = rotation
                                            angle (below)
XOBS, YOBS         fs_obs, ss_obs           ``- 1``; NaN where XDS wrote 0 0 0
ZOBS               zobs                     as is; NaN where not observed
MAXC               peak                     highest pixel value of the spot
PEAK               peak_percent             % of the profile observed (XDS PEAK)
PSI                psi_deg                  degrees
ISEG, ISET         iseg, iset               int32
others             lower-case item name     as is (RLP, CORR, ALF0, BET0, ...)
=================  =======================  ==========================================

Pixel coordinates
-----------------
XDS numbers pixels from 1 to NX with the *centre* of the first pixel at ``(1, 1)`` (the
XDS wiki: pixel indices run "from 1 to NX", where VIEW shows 0 to NX-1; DIALS/dxtbx add
0.5 to their pixel-corner coordinates to obtain ORGX/ORGY).  crystalscope puts the
centre of the first pixel at ``(0, 0)``, so ``fs = X - 1`` and ``ss = Y - 1``; the same
shift is applied to ORGX/ORGY (``metadata["beam_center_px"]``).  The frame coordinate
``zcal`` is kept as XDS writes it: image ``n`` covers ``n - 1 <= z < n``, and
``phi_deg = STARTING_ANGLE + OSCILLATION_RANGE * (zcal - STARTING_FRAME + 1)``.
"""

from __future__ import annotations

import io
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import FormatError
from crystalscope.io.reflection_data import ReflectionData
from crystalscope.io.textfile import read_text
from crystalscope.model.reflections import validate_reflections

__all__ = ["read_xds_ascii", "read_xds_integrate"]

_KEY = re.compile(r"([A-Za-z][A-Za-z0-9_.\-'()/]*)=")
_RENAME = {
    "IOBS": "I", "SIGMA": "sigma", "SIGMA(IOBS)": "sigma", "MAXC": "peak",
    "PEAK": "peak_percent", "PSI": "psi_deg", "ISEG": "iseg", "ISET": "iset",
}  # fmt: skip
_POSITION = {"XCAL": "fs", "YCAL": "ss", "XD": "fs", "YD": "ss", "XOBS": "fs_obs",
             "YOBS": "ss_obs"}  # fmt: skip
_FRAME = {"ZCAL": "zcal", "ZD": "zcal", "ZOBS": "zobs"}
_INT_ITEMS = {"ISEG", "ISET"}


@dataclass
class _Header:
    items: list[str] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    n_items: int | None = None
    first: str = ""


def read_xds_integrate(path: str | os.PathLike[str]) -> ReflectionData:
    """Read an XDS ``INTEGRATE.HKL`` (or ``XDS_ASCII.HKL``) file.

    Parameters
    ----------
    path : str or os.PathLike
        The file.

    Returns
    -------
    ReflectionData
        Table with the columns of the module docstring; cell and space group from
        ``UNIT_CELL_CONSTANTS`` / ``SPACE_GROUP_NUMBER``; wavelength (A) from
        ``X-RAY_WAVELENGTH``.  ``metadata`` holds the typed geometry (``detector``,
        ``nx``, ``ny``, ``pixel_size_mm`` (QX, QY), ``distance_mm``, ``beam_center_px``
        (pixel-centre origin), ``starting_frame``, ``starting_angle_deg``,
        ``oscillation_range_deg``, ``rotation_axis``, ``incident_beam_direction``,
        ``detector_x_axis``, ``detector_y_axis``, ``cell_axes`` (rows a, b, c in A)),
        ``items`` (XDS column names) and ``header`` (every raw ``KEY= value``).

    Raises
    ------
    FormatError
        For a missing or truncated file, an unknown first line, a malformed header
        value or data line (naming the line and item).
    """
    p = Path(path)
    lines = _read_lines(p)
    header, data_lines, end = _split(lines, p)
    if end is None:
        raise FormatError("no !END_OF_DATA line: the file is truncated", path=p,
                          line=len(lines))  # fmt: skip
    values = _parse_data(data_lines, header, p)
    meta = _geometry(header, p)
    table = _table(values, header.items, meta, [n for n, _ in data_lines], p)
    merged = "MERGE=TRUE" in header.first.replace(" ", "").upper()
    return ReflectionData(
        table=validate_reflections(table, source=str(p)),
        cell=meta.pop("cell"),
        space_group=meta.pop("space_group"),
        merged=merged,
        wavelength=meta.pop("wavelength"),
        metadata={**meta, "items": header.items, "header": header.values},
        source=str(p),
    )


#: ``XDS_ASCII.HKL`` has the same structure; this is the same reader.
read_xds_ascii = read_xds_integrate


# --------------------------------------------------------------------------- parsing


def _read_lines(path: Path) -> list[str]:
    lines = read_text(path, fallback="replace").splitlines()
    first = lines[0] if lines else ""
    if not first.startswith(("!OUTPUT_FILE=INTEGRATE.HKL", "!FORMAT=XDS_ASCII")):
        raise FormatError(
            "not an XDS file (first line must be !OUTPUT_FILE=INTEGRATE.HKL or "
            "!FORMAT=XDS_ASCII)", path=path, line=1,
        )  # fmt: skip
    return lines


def _split(lines: list[str], path: Path) -> tuple[_Header, list[tuple[int, str]], int | None]:
    """Header items, numbered data lines and the line number of !END_OF_DATA."""
    header = _Header(first=lines[0])
    data: list[tuple[int, str]] = []
    pending_names = False
    for number, line in enumerate(lines, start=1):
        if not line.startswith("!"):
            if line.strip():
                data.append((number, line))
            continue
        body = line[1:]
        if body.startswith("END_OF_DATA"):
            _check_items(header, path, number)
            return header, data, number
        if pending_names and "," in body and "=" not in body:
            header.items += [n.strip() for n in body.split(",") if n.strip()]
            pending_names = header.n_items is not None and len(header.items) < header.n_items
            continue
        pending_names = False
        if body.startswith("Generated by "):
            words = body.split()
            header.values.setdefault("Generated by", words[2] if len(words) > 2 else "")
            continue
        for key, value in _key_values(body):
            _store(header, key, value, number, path)
            if key == "NUMBER_OF_ITEMS_IN_EACH_DATA_RECORD":
                pending_names = not any(k.startswith("ITEM_") for k in header.values)
    return header, data, None


def _key_values(body: str) -> list[tuple[str, str]]:
    matches = list(_KEY.finditer(body))
    out = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        out.append((match.group(1), body[match.end() : end].strip()))
    return out


def _store(header: _Header, key: str, value: str, number: int, path: Path) -> None:
    header.values.setdefault(key, value)
    header.lines.setdefault(key, number)
    if key == "NUMBER_OF_ITEMS_IN_EACH_DATA_RECORD":
        header.n_items = _to_int(value, key, number, path)
        if not 5 <= header.n_items <= 100:
            raise FormatError(f"implausible number of items {header.n_items}", path=path,
                              field=key, line=number)  # fmt: skip
    elif key.startswith("ITEM_"):
        column = _to_int(value, key, number, path)
        if header.n_items is None or not 1 <= column <= header.n_items:
            raise FormatError(f"column {column} out of range", path=path, field=key,
                              line=number)  # fmt: skip
        if len(header.items) < header.n_items:
            header.items += [""] * (header.n_items - len(header.items))
        header.items[column - 1] = key[len("ITEM_") :]


def _check_items(header: _Header, path: Path, number: int) -> None:
    key = "NUMBER_OF_ITEMS_IN_EACH_DATA_RECORD"
    if header.n_items is None:
        raise FormatError("header lacks the number of items", path=path, field=key, line=number)
    if len(header.items) != header.n_items or "" in header.items:
        raise FormatError(
            f"header names {len([i for i in header.items if i])} columns, expected "
            f"{header.n_items}", path=path, field=key, line=header.lines.get(key),
        )  # fmt: skip
    for name in ("H", "K", "L", "IOBS"):
        if name not in header.items:
            raise FormatError("required column missing", path=path, field=name,
                              line=header.lines.get(key))  # fmt: skip
    if "SIGMA" not in header.items and "SIGMA(IOBS)" not in header.items:
        raise FormatError("required column missing", path=path, field="SIGMA",
                          line=header.lines.get(key))  # fmt: skip


def _parse_data(data: list[tuple[int, str]], header: _Header, path: Path) -> np.ndarray:
    n = len(header.items)
    if not data:
        return np.zeros((0, n))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            text = "\n".join(t for _, t in data)
            values = np.loadtxt(io.StringIO(text), ndmin=2, comments=None)
        if values.shape[1] != n:
            raise ValueError("wrong number of items")
    except (ValueError, UserWarning):
        _diagnose(data, header.items, path)
        raise FormatError("malformed data line", path=path) from None
    bad = ~np.all(np.isfinite(values), axis=1)
    if np.any(bad):
        row = int(np.argmax(bad))
        col = int(np.argmax(~np.isfinite(values[row])))
        raise FormatError("not a finite number", path=path, field=header.items[col],
                          line=data[row][0])  # fmt: skip
    return values


def _diagnose(data: list[tuple[int, str]], items: list[str], path: Path) -> None:
    """Find the first bad data line and raise a FormatError naming it."""
    for number, line in data:
        tokens = line.split()
        if len(tokens) != len(items):
            raise FormatError(f"{len(tokens)} items on a data line, expected {len(items)}",
                              path=path, line=number)  # fmt: skip
        for token, name in zip(tokens, items, strict=True):
            try:
                float(token)
            except ValueError:
                raise FormatError(f"not a number: {token!r}", path=path, field=name,
                                  line=number) from None  # fmt: skip


# --------------------------------------------------------------------------- header values


def _to_int(value: str, key: str, number: int | None, path: Path) -> int:
    try:
        return int(value.split()[0])
    except (ValueError, IndexError):
        raise FormatError(f"not an integer: {value!r}", path=path, field=key,
                          line=number) from None  # fmt: skip


def _floats(header: _Header, key: str, count: int, path: Path) -> list[float] | None:
    raw = header.values.get(key)
    if raw is None:
        return None
    tokens = raw.split()
    try:
        numbers = [float(t) for t in tokens[:count]]
    except ValueError:
        numbers = []
    if len(numbers) != count or not all(math.isfinite(x) for x in numbers):
        raise FormatError(f"expected {count} number(s), got {raw!r}", path=path, field=key,
                          line=header.lines.get(key))  # fmt: skip
    return numbers


def _one(header: _Header, key: str, path: Path) -> float | None:
    numbers = _floats(header, key, 1, path)
    return None if numbers is None else numbers[0]


def _geometry(header: _Header, path: Path) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "generated_by": header.values.get("Generated by") or _generated_by(header),
        "detector": header.values.get("DETECTOR", "").strip() or None,
        "cell": _cell(header, path),
        "space_group": _space_group(header, path),
        "wavelength": _positive(header, "X-RAY_WAVELENGTH", path),
        "distance_mm": _one(header, "DETECTOR_DISTANCE", path),
        "starting_angle_deg": _one(header, "STARTING_ANGLE", path),
        "oscillation_range_deg": _one(header, "OSCILLATION_RANGE", path),
    }
    key = "STARTING_FRAME"
    meta["starting_frame"] = (
        _to_int(header.values[key], key, header.lines[key], path) if key in header.values else 1
    )
    for key in ("NX", "NY"):
        meta[key.lower()] = (
            _to_int(header.values[key], key, header.lines[key], path)
            if key in header.values else None
        )  # fmt: skip
    qx, qy = _one(header, "QX", path), _one(header, "QY", path)
    meta["pixel_size_mm"] = (qx, qy) if qx is not None and qy is not None else None
    orgx, orgy = _one(header, "ORGX", path), _one(header, "ORGY", path)
    meta["beam_center_px"] = (orgx - 1.0, orgy - 1.0) if orgx is not None and orgy is not None \
        else None  # fmt: skip
    for key, name in (
        ("ROTATION_AXIS", "rotation_axis"),
        ("INCIDENT_BEAM_DIRECTION", "incident_beam_direction"),
        ("DIRECTION_OF_DETECTOR_X-AXIS", "detector_x_axis"),
        ("DIRECTION_OF_DETECTOR_Y-AXIS", "detector_y_axis"),
    ):
        vec = _floats(header, key, 3, path)
        meta[name] = None if vec is None else np.array(vec)
    axes = [_floats(header, f"UNIT_CELL_{c}-AXIS", 3, path) for c in "ABC"]
    meta["cell_axes"] = np.array(axes) if all(a is not None for a in axes) else None
    return meta


def _generated_by(header: _Header) -> str | None:
    first = header.first
    return "INTEGRATE" if first.startswith("!OUTPUT_FILE=INTEGRATE.HKL") else None


def _positive(header: _Header, key: str, path: Path) -> float | None:
    value = _one(header, key, path)
    if value is not None and value <= 0:
        raise FormatError(f"must be positive, got {value}", path=path, field=key,
                          line=header.lines.get(key))  # fmt: skip
    return value


def _cell(header: _Header, path: Path) -> gemmi.UnitCell | None:
    key = "UNIT_CELL_CONSTANTS"
    params = _floats(header, key, 6, path)
    if params is None:
        return None
    a, b, c, alpha, beta, gamma = params
    ok = min(a, b, c) > 0 and all(0 < x < 180 for x in (alpha, beta, gamma))
    cell = gemmi.UnitCell(*params) if ok else None
    if cell is None or not math.isfinite(cell.volume) or cell.volume <= 0:
        raise FormatError(f"invalid unit cell {params}", path=path, field=key,
                          line=header.lines.get(key))  # fmt: skip
    return cell


def _space_group(header: _Header, path: Path) -> gemmi.SpaceGroup | None:
    key = "SPACE_GROUP_NUMBER"
    if key not in header.values:
        return None
    number = _to_int(header.values[key], key, header.lines[key], path)
    if not 1 <= number <= 230:
        raise FormatError(f"space group number {number} is not 1-230", path=path, field=key,
                          line=header.lines[key])  # fmt: skip
    return gemmi.SpaceGroup(number)


# --------------------------------------------------------------------------- table


def _table(
    values: np.ndarray, items: list[str], meta: dict[str, Any], numbers: list[int], path: Path
) -> pd.DataFrame:
    columns: dict[str, np.ndarray] = {}
    observed = _observed(values, items)
    for i, item in enumerate(items):
        col = values[:, i]
        if item in ("H", "K", "L") or item in _INT_ITEMS:
            columns[item.lower()] = _integers(col, item, numbers, path)
        elif item in ("XOBS", "YOBS"):
            columns[_POSITION[item]] = np.where(observed, col - 1.0, np.nan)
        elif item in _POSITION:
            columns[_POSITION[item]] = col - 1.0
        elif item in _FRAME:
            columns[_FRAME[item]] = np.where(observed, col, np.nan) if item == "ZOBS" else col
        else:
            columns[_RENAME.get(item, item.lower())] = col
    table = pd.DataFrame(columns)
    if "zcal" in table:
        table["frame"] = np.floor(table["zcal"].to_numpy()).astype(np.int64) + 1
        start, osc = meta["starting_angle_deg"], meta["oscillation_range_deg"]
        if start is not None and osc is not None:
            z = table["zcal"].to_numpy() - meta["starting_frame"] + 1
            table["phi_deg"] = start + osc * z
    return table


def _observed(values: np.ndarray, items: list[str]) -> np.ndarray:
    """True where XDS gives an observed position (it writes 0 0 0 for unobserved spots)."""
    obs = [items.index(n) for n in ("XOBS", "YOBS", "ZOBS") if n in items]
    if not obs:
        return np.ones(len(values), dtype=bool)
    return np.any(values[:, obs] != 0, axis=1)


def _integers(col: np.ndarray, item: str, numbers: list[int], path: Path) -> np.ndarray:
    bad = (col != np.round(col)) | (np.abs(col) > 2**31 - 1)
    if np.any(bad):
        row = int(np.argmax(bad))
        raise FormatError(f"not an integer: {col[row]}", path=path, field=item,
                          line=numbers[row])  # fmt: skip
    return col.astype(np.int32)
