"""SHELX HKLF 4 reflection files (``.hkl``): intensities ``F^2`` with standard deviations.

Format
------
One reflection per line in Fortran format ``(3I4, 2F8.2, I4)``: ``h k l`` in columns
1-12, ``I`` in 13-20, ``sigma(I)`` in 21-28 and an optional batch number in 29-32.
Anything after column 32 (direction cosines for absorption corrections) is ignored.
The list ends at a line with ``h = k = l = 0`` (or at the end of the file); what follows
the terminator is not read.  Fields are fixed-width: ``   0   0  -118982.80`` is
``l = -1``, ``I = 18982.80``, so the lines are never split on blanks.

COD and IUCr CIFs archive SHELX data inside a CIF: :func:`read_shelx_hkl` also reads a
CIF that embeds an HKLF 4 file in ``_shelx_hkl_file`` (and then takes the cell and space
group from the CIF), or, failing that, a small-molecule CIF reflection loop
(``_refln_F_squared_meas`` / ``_refln_F_squared_sigma``, as COD's ``.hkl`` files).

Writing
-------
:func:`write_shelx_hkl` writes the fixed format and the ``0 0 0`` terminator.  Values must
fit ``F8.2`` (-9999.99 ... 99999.99): intensities are multiplied by a scale factor chosen
so that they fit (1 when they already do, unless ``scale=`` is given), and the factor used
is returned.  SHELX refines an overall scale, so the factor does not matter to it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_write
from crystalscope.io.reflection_data import ReflectionData
from crystalscope.io.textfile import read_file_bytes
from crystalscope.model.reflections import make_reflections, validate_reflections

__all__ = ["read_shelx_hkl", "read_shelx_hkl_text", "write_shelx_hkl"]

_F8_MAX = 99999.99
_F8_MIN = -9999.99
_FIELDS = (("h", 0, 4), ("k", 4, 8), ("l", 8, 12))


def read_shelx_hkl(path: str | os.PathLike[str]) -> ReflectionData:
    """Read a SHELX HKLF 4 file (or a CIF embedding one, or a CIF reflection loop).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.hkl`` file, or a CIF with ``_shelx_hkl_file`` or an ``_refln_`` loop.

    Returns
    -------
    ReflectionData
        Unmerged table ``h, k, l, I, sigma`` (+ ``batch`` where any line has one);
        cell and space group only when read from a CIF.  ``metadata["terminated"]`` tells
        whether the ``0 0 0`` line was found.

    Raises
    ------
    FormatError
        If the file is missing, unreadable, or a line is malformed (naming the line).
    """
    text = _read_text(path)
    if _looks_like_cif(text):
        return _read_cif(path, text)
    return read_shelx_hkl_text(text, source=path)


def read_shelx_hkl_text(
    text: str, *, source: str | os.PathLike[str] | None = None, first_line: int = 1
) -> ReflectionData:
    """Parse HKLF 4 lines from a string (see :func:`read_shelx_hkl`).

    ``first_line`` is the line number of the first line of ``text`` in ``source``, for
    error messages when the text comes from inside a CIF.
    """
    rows: list[tuple[int, int, int, float, float, int | None]] = []
    terminated = False
    for number, line in enumerate(text.splitlines(), start=first_line):
        if not line.strip():
            continue
        row = _parse_line(line, number, source)
        if row[:3] == (0, 0, 0):
            terminated = True
            break
        rows.append(row)
    return _to_data(rows, terminated, source)


def _read_text(path: str | os.PathLike[str]) -> str:
    p = Path(path)
    raw = read_file_bytes(p)
    if b"\x00" in raw:
        raise FormatError("binary data (NUL bytes) in a text reflection file", path=p)
    return raw.decode("utf-8", errors="replace")


def _parse_line(
    line: str, number: int, source: Any
) -> tuple[int, int, int, float, float, int | None]:
    if len(line.rstrip()) < 28:
        raise FormatError(
            "HKLF 4 line shorter than 28 characters (3I4, 2F8.2 expected)",
            path=source, field="h k l I sigma", line=number,
        )  # fmt: skip
    h, k, ell = (_int_field(line[a:b], name, number, source) for name, a, b in _FIELDS)
    intensity = _float_field(line[12:20], "I", number, source)
    sigma = _float_field(line[20:28], "sigma", number, source)
    batch_text = line[28:32]
    batch = _int_field(batch_text, "batch", number, source) if batch_text.strip() else None
    return h, k, ell, intensity, sigma, batch


def _int_field(text: str, name: str, number: int, source: Any) -> int:
    stripped = text.strip()
    if not stripped:
        return 0  # Fortran reads a blank integer field as 0
    try:
        return int(stripped)
    except ValueError:
        raise FormatError(
            f"not an integer: {stripped!r}", path=source, field=name, line=number
        ) from None


def _float_field(text: str, name: str, number: int, source: Any) -> float:
    stripped = text.strip()
    try:
        value = float(stripped) if stripped else 0.0
    except ValueError:
        raise FormatError(
            f"not a number: {stripped!r}", path=source, field=name, line=number
        ) from None
    if not math.isfinite(value):
        raise FormatError(f"not a finite number: {stripped!r}", path=source, field=name,
                          line=number)  # fmt: skip
    return value


def _to_data(
    rows: list[tuple[int, int, int, float, float, int | None]], terminated: bool, source: Any
) -> ReflectionData:
    hkl = np.array([r[:3] for r in rows], dtype=np.int64).reshape(-1, 3)
    columns: dict[str, Any] = {}
    if any(r[5] is not None for r in rows):
        columns["batch"] = np.array([r[5] or 0 for r in rows], dtype=np.int32)
    table = make_reflections(hkl, [r[3] for r in rows], [r[4] for r in rows], **columns)
    return ReflectionData(
        table=table,
        merged=False,
        metadata={"format": "HKLF 4", "terminated": terminated},
        source=None if source is None else str(source),
    )


# --------------------------------------------------------------------------- CIF


def _looks_like_cif(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped.lower().startswith("data_")
    return False


def _read_cif(path: str | os.PathLike[str], text: str) -> ReflectionData:
    try:
        document = gemmi.cif.read_string(text)
    except (RuntimeError, ValueError) as exc:
        raise FormatError(f"cannot parse CIF: {exc}", path=path) from None
    blocks = list(document)
    if not blocks:
        raise FormatError("CIF has no data block", path=path)
    wanted = ("_shelx_hkl_file", "_refln_F_squared_meas")
    block = next((b for b in blocks if any(b.find_value(t) or b.find_loop(t) for t in wanted)),
                 blocks[0])  # fmt: skip
    embedded = block.find_value("_shelx_hkl_file")
    if embedded is not None:
        body = gemmi.cif.as_string(embedded)
        start = _line_of(text, "_shelx_hkl_file") + 1  # the value starts on the ';' line
        data = read_shelx_hkl_text(body, source=path, first_line=start)
    else:
        data = _read_refln_loop(block, path)
    data.cell, data.space_group = _cif_crystal(block, path)
    wavelength = block.find_value("_diffrn_radiation_wavelength")
    if wavelength is not None and not gemmi.cif.is_null(wavelength):
        data.wavelength = _cif_float(wavelength, "_diffrn_radiation_wavelength", path)
    data.metadata["cif_block"] = block.name
    return data


def _line_of(text: str, tag: str) -> int:
    for i, line in enumerate(text.splitlines(), start=1):
        if line.strip().startswith(tag):
            return i
    return 1


def _read_refln_loop(block: gemmi.cif.Block, path: Any) -> ReflectionData:
    tags = ["_refln_index_h", "_refln_index_k", "_refln_index_l",
            "_refln_F_squared_meas", "_refln_F_squared_sigma"]  # fmt: skip
    table = block.find(tags)
    if len(table) == 0:
        raise FormatError(
            "CIF has neither _shelx_hkl_file nor an _refln_F_squared_meas loop",
            path=path, field="_refln_F_squared_meas",
        )  # fmt: skip
    values = np.array(
        [[_cif_float(row[i], tags[i], path) for i in range(5)] for row in table], dtype=float
    )
    hkl = values[:, :3]
    if np.any(hkl != np.round(hkl)):
        raise FormatError("Miller indices are not integers", path=path, field=tags[0])
    ref = make_reflections(hkl.astype(np.int64), values[:, 3], values[:, 4])
    return ReflectionData(table=ref, merged=True, metadata={"format": "CIF refln loop"},
                          source=str(path))  # fmt: skip


def _cif_float(value: str, tag: str, path: Any) -> float:
    try:
        number = gemmi.cif.as_number(value)
    except (RuntimeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise FormatError(f"not a number: {value!r}", path=path, field=tag)
    return float(number)


def _cif_crystal(
    block: gemmi.cif.Block, path: Any
) -> tuple[gemmi.UnitCell | None, gemmi.SpaceGroup | None]:
    names = ["_cell_length_a", "_cell_length_b", "_cell_length_c",
             "_cell_angle_alpha", "_cell_angle_beta", "_cell_angle_gamma"]  # fmt: skip
    raw = [block.find_value(tag) for tag in names]
    cell = None
    if all(v is not None for v in raw):
        params = [_cif_float(str(v), tag, path) for v, tag in zip(raw, names, strict=True)]
        cell = gemmi.UnitCell(*params)
    return cell, _cif_space_group(block)


def _cif_space_group(block: gemmi.cif.Block) -> gemmi.SpaceGroup | None:
    for tag in ("_space_group_name_H-M_alt", "_symmetry_space_group_name_H-M"):
        value = block.find_value(tag)
        if value is not None:
            found = gemmi.find_spacegroup_by_name(gemmi.cif.as_string(value))
            if found is not None:
                return found
    ops = block.find_values("_space_group_symop_operation_xyz")
    if len(ops) == 0:
        ops = block.find_values("_symmetry_equiv_pos_as_xyz")
    try:
        group = gemmi.GroupOps([gemmi.Op(gemmi.cif.as_string(op)) for op in ops])
        return gemmi.find_spacegroup_by_ops(group) if len(ops) else None
    except (RuntimeError, ValueError):
        return None


# --------------------------------------------------------------------------- writing


def write_shelx_hkl(
    table: pd.DataFrame | ReflectionData,
    path: str | os.PathLike[str],
    *,
    scale: float | None = None,
    overwrite: bool = True,
) -> float:
    """Write an HKLF 4 file, scaling intensities to fit the ``F8.2`` fields.

    Parameters
    ----------
    table : pandas.DataFrame or ReflectionData
        Reflections ``h, k, l, I, sigma`` (+ optional integer ``batch``).
    path : str or os.PathLike
        Output file (written atomically).
    scale : float, optional
        Multiply ``I`` and ``sigma`` by this factor; by default 1 when all values fit
        ``F8.2``, else the largest power-of-ten fraction that makes them fit.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    float
        The scale factor applied to ``I`` and ``sigma``.

    Raises
    ------
    DataError
        If values are not finite, indices do not fit ``I4``, a reflection is ``0 0 0``,
        or the given ``scale`` does not make the values fit.
    """
    if isinstance(table, ReflectionData):
        table = table.table
    table = validate_reflections(table)
    intensity = table["I"].to_numpy(dtype=float)
    sigma = table["sigma"].to_numpy(dtype=float)
    if not (np.all(np.isfinite(intensity)) and np.all(np.isfinite(sigma))):
        raise DataError("I and sigma must be finite to write SHELX HKLF 4", field="I")
    hkl = table[["h", "k", "l"]].to_numpy(dtype=np.int64)
    _check_indices(hkl)
    factor = _fit_scale(intensity, sigma) if scale is None else float(scale)
    _check_fits(intensity * factor, sigma * factor, factor)
    batch = table["batch"].to_numpy(dtype=np.int64) if "batch" in table else None
    if batch is not None and (batch.min(initial=0) < -999 or batch.max(initial=0) > 9999):
        raise DataError("batch numbers must fit I4 (-999 ... 9999)", field="batch")
    lines = _format_lines(hkl, intensity * factor, sigma * factor, batch)
    with atomic_write(path, overwrite=overwrite) as fh:
        fh.write("".join(lines))
        fh.write(f"{0:4d}{0:4d}{0:4d}{0.0:8.2f}{0.0:8.2f}{0:4d}\n")
    return factor


def _check_indices(hkl: np.ndarray) -> None:
    if hkl.size and (hkl.min() < -999 or hkl.max() > 9999):
        raise DataError("Miller indices must fit I4 (-999 ... 9999)", field="h")
    if np.any(np.all(hkl == 0, axis=1)):
        raise DataError("reflection 0 0 0 would end the HKLF 4 list early", field="h")


def _fit_scale(intensity: np.ndarray, sigma: np.ndarray) -> float:
    """1.0 when everything fits F8.2, else the largest 10**-n that makes it fit."""
    top = max(float(np.max(intensity, initial=0)), float(np.max(sigma, initial=0)))
    bottom = min(float(np.min(intensity, initial=0)), float(np.min(sigma, initial=0)))
    factor = 1.0
    while round(top * factor, 2) > _F8_MAX or round(bottom * factor, 2) < _F8_MIN:
        factor /= 10.0
    return factor


def _check_fits(intensity: np.ndarray, sigma: np.ndarray, factor: float) -> None:
    if not (math.isfinite(factor) and factor > 0):
        raise DataError(f"scale must be a positive number, got {factor}", field="scale")
    rounded = np.round(np.concatenate([intensity, sigma]), 2)
    if rounded.size and (rounded.max() > _F8_MAX or rounded.min() < _F8_MIN):
        raise DataError(
            f"with scale {factor:g} values do not fit the F8.2 field (-9999.99 ... 99999.99)",
            field="I",
        )


def _format_lines(
    hkl: np.ndarray, intensity: np.ndarray, sigma: np.ndarray, batch: np.ndarray | None
) -> list[str]:
    lines = []
    for i, (h, k, ell) in enumerate(hkl.tolist()):
        tail = f"{int(batch[i]):4d}" if batch is not None else ""
        lines.append(f"{h:4d}{k:4d}{ell:4d}{intensity[i]:8.2f}{sigma[i]:8.2f}{tail}\n")
    return lines
