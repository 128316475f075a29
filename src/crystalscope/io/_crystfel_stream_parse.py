"""The line-based parser behind :func:`crystalscope.io.crystfel_stream.read_stream`.

One pass over the lines of the file: metadata lines are dispatched on their key, tables
(peak and reflection lists) are found with ``list.index`` on their end marker, and at
the end all peak lists and all reflection lists are converted at once
(:func:`._crystfel_columns.read_blocks`: pandas' C parser, with a line-by-line fallback
that names the line and column of any error).  A chunk is committed only when its end
marker is reached, so a truncated last chunk leaves nothing behind.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crystalscope.errors import FormatError
from crystalscope.io._crystfel_columns import read_blocks
from crystalscope.io.crystfel_cell import CENTERINGS, LATTICE_TYPES
from crystalscope.io.crystfel_stream import (
    CELL_END,
    CELL_START,
    CHUNK_COLUMNS,
    CHUNK_END,
    CHUNK_START,
    CRYSTAL_COLUMNS,
    CRYSTAL_END,
    CRYSTAL_START,
    GEOM_END,
    GEOM_START,
    HC_EV_A,
    NO_REFLECTIONS,
    PEAK_COLUMNS,
    PEAKS_END,
    PEAKS_START,
    REFLECTION_COLUMNS,
    REFLECTIONS_END,
    REFLECTIONS_START,
    Stream,
    StreamHeader,
    StreamWarning,
    cell_from_reciprocal,
)

__all__ = ["StreamParser"]

_Block = tuple[int, int]  # 0-based start and stop of the data lines of a table

_IN_CHUNK_MARKERS = frozenset(
    (PEAKS_START, PEAKS_END, CRYSTAL_START, CRYSTAL_END, REFLECTIONS_START, REFLECTIONS_END)
)
_BLOCK_MARKERS = frozenset((GEOM_START, GEOM_END, CELL_START, CELL_END, CHUNK_START))


class _Truncated(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _float(text: str, field: str, line: int, path: Path | None) -> float:
    try:
        return float(text)
    except ValueError:
        raise FormatError(
            f"'{text[:40]}' is not a number", path=path, line=line, field=field
        ) from None


def _int(text: str, field: str, line: int, path: Path | None) -> int:
    try:
        return int(text)
    except ValueError:
        raise FormatError(
            f"'{text[:40]}' is not an integer", path=path, line=line, field=field
        ) from None


def _with_unit(value: str, unit: str, field: str, line: int, path: Path | None) -> float:
    """A number followed by ``unit`` (which may be absent, as in old streams)."""
    bits = value.split()
    if not bits or len(bits) > 2 or (len(bits) == 2 and bits[1] != unit):
        raise FormatError(f"expected '<number> {unit}'", path=path, line=line, field=field)
    return _float(bits[0], field, line, path)


def _inverse_nm(value: str, field: str, line: int, path: Path | None) -> float:
    """``<x> nm^-1 or <d> A`` (or ``<x> nm^-1``): return x in 1/A."""
    bits = value.split()
    if len(bits) not in (2, 5) or bits[1] != "nm^-1":
        raise FormatError(
            "expected '<number> nm^-1 or <number> A'", path=path, line=line, field=field
        )
    return _float(bits[0], field, line, path) / 10.0


class _Columns:
    """Column lists that grow row by row; unknown keys become padded extra columns."""

    def __init__(self, names: dict[str, str]) -> None:
        self.data: dict[str, list[Any]] = {name: [] for name in names}
        self.extra: dict[str, list[Any]] = {}
        self.n = 0

    def add(self, row: dict[str, Any], extra: dict[str, Any]) -> None:
        for name, values in self.data.items():
            values.append(row.get(name))
        for name, value in extra.items():
            column = self.extra.setdefault(name, [None] * self.n)
            column.append(value)
        self.n += 1
        for column in self.extra.values():
            if len(column) < self.n:
                column.append(None)


def _int_in_range(text: str, field: str, line: int, path: Path | None) -> int:
    value = _int(text, field, line, path)
    if not -(2**62) < value < 2**62:
        raise FormatError(f"integer {text[:40]} out of range", path=path, line=line, field=field)
    return value


# Chunk and crystal fields: key in the file -> parser(value, line, path) -> {column: value}.
_ChunkParser = Callable[[str, int, Path | None], dict[str, Any]]


def _photon_energy(value: str, line: int, path: Path | None) -> dict[str, Any]:
    energy = _float(value, "photon_energy_eV", line, path)
    if not (math.isfinite(energy) and energy > 0):
        raise FormatError(
            "photon energy must be positive", path=path, line=line, field="photon_energy_eV"
        )
    return {"photon_energy_eV": energy, "wavelength_A": HC_EV_A / energy}


_CHUNK_PARSERS: dict[str, _ChunkParser] = {
    "Image filename": lambda v, n, p: {"file": v},
    "Event": lambda v, n, p: {"event": v},
    "Image serial number": lambda v, n, p: {"serial": _int_in_range(v, "serial", n, p)},
    "hit": lambda v, n, p: {"hit": _int_in_range(v, "hit", n, p)},
    "indexed_by": lambda v, n, p: {"indexed_by": v.strip()},
    "n_indexing_tries": lambda v, n, p: {
        "n_indexing_tries": _int_in_range(v, "n_indexing_tries", n, p)
    },
    "photon_energy_eV": _photon_energy,
    "beam_divergence": lambda v, n, p: {
        "beam_divergence_rad": _with_unit(v, "rad", "beam_divergence", n, p)
    },
    "beam_bandwidth": lambda v, n, p: {
        "beam_bandwidth": _with_unit(v, "(fraction)", "beam_bandwidth", n, p)
    },
    "average_camera_length": lambda v, n, p: {
        "average_camera_length_mm": 1e3 * _with_unit(v, "m", "average_camera_length", n, p)
    },
    "num_peaks": lambda v, n, p: {"num_peaks": _int_in_range(v, "num_peaks", n, p)},
    "num_saturated_peaks": lambda v, n, p: {
        "num_saturated_peaks": _int_in_range(v, "num_saturated_peaks", n, p)
    },
    "peak_resolution": lambda v, n, p: {
        "peak_resolution_one_over_d": _inverse_nm(v, "peak_resolution", n, p)
    },
}
_COLON_FIELDS = ("Image filename: ", "Event: ", "Image serial number: ")


def _cell_parameters(value: str, line: int, path: Path | None) -> dict[str, Any]:
    bits = value.split()
    if len(bits) != 8 or bits[3] != "nm," or bits[7] != "deg":
        raise FormatError(
            "expected 'Cell parameters <a> <b> <c> nm, <al> <be> <ga> deg'",
            path=path,
            line=line,
            field="Cell parameters",
        )
    names = ("a", "b", "c", "alpha", "beta", "gamma")
    values = [_float(b, "Cell parameters", line, path) for b in bits[:3] + bits[4:7]]
    return {n: v * 10.0 if i < 3 else v for i, (n, v) in enumerate(zip(names, values, strict=True))}


def _star(axis: str) -> _ChunkParser:
    def parse(value: str, line: int, path: Path | None) -> dict[str, Any]:
        bits = value.split()
        if len(bits) != 4 or bits[3] != "nm^-1":
            raise FormatError(
                f"expected '{axis}star = <x> <y> <z> nm^-1'",
                path=path,
                line=line,
                field=f"{axis}star",
            )
        return {
            f"{axis}star_{x}": _float(b, f"{axis}star", line, path) / 10.0
            for x, b in zip("xyz", bits[:3], strict=True)
        }

    return parse


def _choice(name: str, allowed: tuple[str, ...]) -> _ChunkParser:
    def parse(value: str, line: int, path: Path | None) -> dict[str, Any]:
        value = value.strip()
        if value not in allowed:
            raise FormatError(
                f"'{value[:40]}' is not one of {', '.join(allowed)}",
                path=path,
                line=line,
                field=name,
            )
        return {name: value}

    return parse


def _det_shift(value: str, line: int, path: Path | None) -> dict[str, Any]:
    bits = value.split()
    if len(bits) != 5 or bits[1:3] != ["y", "="] or bits[4] != "mm":
        raise FormatError(
            "expected 'predict_refine/det_shift x = <x> y = <y> mm'",
            path=path,
            line=line,
            field="predict_refine/det_shift",
        )
    field_name = "predict_refine/det_shift"
    return {
        "det_shift_x_mm": _float(bits[0], field_name, line, path),
        "det_shift_y_mm": _float(bits[3], field_name, line, path),
    }


_CRYSTAL_PARSERS: dict[str, _ChunkParser] = {
    "Cell parameters": _cell_parameters,
    "astar": _star("a"),
    "bstar": _star("b"),
    "cstar": _star("c"),
    "lattice_type": _choice("lattice_type", LATTICE_TYPES),
    "centering": _choice("centering", tuple(CENTERINGS)),
    "unique_axis": _choice("unique_axis", ("a", "b", "c", "?", "*")),
    "profile_radius": lambda v, n, p: {
        "profile_radius": _with_unit(v, "nm^-1", "profile_radius", n, p) / 10.0
    },
    "predict_refine/final_residual": lambda v, n, p: {
        "final_residual": _float(v, "predict_refine/final_residual", n, p)
    },
    "predict_refine/det_shift x": _det_shift,
    "diffraction_resolution_limit": lambda v, n, p: {
        "resolution_limit_one_over_d": _inverse_nm(v, "diffraction_resolution_limit", n, p)
    },
    "num_reflections": lambda v, n, p: {
        "num_reflections": _int_in_range(v, "num_reflections", n, p)
    },
    "num_saturated_reflections": lambda v, n, p: {
        "num_saturated_reflections": _int_in_range(v, "num_saturated_reflections", n, p)
    },
    "num_implausible_reflections": lambda v, n, p: {
        "num_implausible_reflections": _int_in_range(v, "num_implausible_reflections", n, p)
    },
}
_PEAK_NAMES = ("fs", "ss", "one_over_d", "intensity", "panel")
_REFL_NAMES = ("h", "k", "l", "I", "sigma", "peak", "background", "fs", "ss", "panel")


@dataclass
class _Chunk:
    """What one chunk holds, committed only when its end marker was found."""

    row: dict[str, Any]
    extra: dict[str, Any]
    peaks: _Block | None = None
    crystals: list[tuple[dict[str, Any], _Block | None]] = field(default_factory=list)


class StreamParser:
    """Line-based stream parser: one pass, jumping over tables with ``list.index``."""

    def __init__(self, lines: list[str], path: Path | None) -> None:
        self.lines = lines
        self.path = path
        self.header = StreamHeader()
        self.geometry: str | None = None
        self.cell: str | None = None
        self.geometry_line: int | None = None
        self.cell_line: int | None = None
        self.chunks = _Columns(CHUNK_COLUMNS)
        self.crystals = _Columns(CRYSTAL_COLUMNS)
        self.peak_blocks: list[tuple[int, _Block]] = []  # (chunk, block)
        self.refl_blocks: list[tuple[int, _Block]] = []  # (crystal, block)

    def error(self, message: str, line: int, field: str | None = None) -> FormatError:
        return FormatError(message, path=self.path, line=line, field=field)

    def parse(self, allow_truncated: bool) -> Stream:
        lines = self.lines
        i = self._parse_header()
        while i < len(lines):
            line = lines[i]
            if line == CHUNK_START:
                try:
                    i = self._parse_chunk(i)
                except _Truncated as exc:
                    self._truncated(i + 1, exc.line, allow_truncated)
                    break
            elif line in (GEOM_START, CELL_START):
                i = self._parse_block(i)
            elif line in _IN_CHUNK_MARKERS or line in (CHUNK_END, GEOM_END, CELL_END):
                raise self.error(f"'{line}' outside a chunk (a begin marker is missing)", i + 1)
            else:
                i += 1  # audit lines of concatenated streams, as CrystFEL skips them
        return self._build()

    def _truncated(self, start: int, line: int, allow: bool) -> None:
        msg = f"the stream ends inside the chunk beginning at line {start} (truncated file?)"
        if not allow:
            raise self.error(msg + "; pass allow_truncated=True to read the complete chunks", line)
        warnings.warn(f"{self.path}: {msg}; that chunk was dropped", StreamWarning, stacklevel=4)

    def _parse_header(self) -> int:
        lines = self.lines
        prefix = "CrystFEL stream format "
        if not lines[0].startswith(prefix):
            raise self.error(f"not a CrystFEL stream (first line must be '{prefix}2.3')", 1)
        version = lines[0][len(prefix) :].strip()
        if version not in ("2.1", "2.2", "2.3"):
            raise self.error(f"unsupported stream format version '{version}'", 1, "format")
        generator, command = "", None
        methods: tuple[str, ...] = ()
        extra: list[str] = []
        i = 1
        while i < len(lines) and not lines[i].startswith("-----"):
            line = lines[i]
            if line.startswith("Generated by "):
                generator = line[len("Generated by ") :]
            elif line.startswith("Indexing methods selected: "):
                methods = tuple(m for m in line[27:].strip().split(",") if m)
            elif line.strip() and command is None:
                command = line
            elif line.strip():
                extra.append(line)
            i += 1
        self.header = StreamHeader(version, generator, command, methods, tuple(extra))
        return i

    def _parse_block(self, i: int) -> int:
        lines = self.lines
        geometry = lines[i] == GEOM_START
        end_marker = GEOM_END if geometry else CELL_END
        try:
            stop = lines.index(end_marker, i + 1)
        except ValueError:
            raise self.error(f"no '{end_marker}' after this line", i + 1) from None
        body = lines[i + 1 : stop]
        if CHUNK_START in body:
            raise self.error(f"no '{end_marker}' before the next chunk", i + 1)
        text = "".join(line + "\n" for line in body)
        self._keep("geometry" if geometry else "cell", text, i + 2)
        return stop + 1

    def _keep(self, what: str, text: str, line: int) -> None:
        old = getattr(self, what)
        if old is None:
            setattr(self, what, text)
            setattr(self, f"{what}_line", line)
        elif old != text:
            warnings.warn(
                f"{self.path}: the stream holds different {what} blocks (concatenated "
                "streams?); the first is kept",
                StreamWarning,
                stacklevel=5,
            )

    def _parse_chunk(self, start: int) -> int:
        lines = self.lines
        try:
            end = lines.index(CHUNK_END, start + 1)
        except ValueError:
            raise _Truncated(len(lines)) from None
        chunk = _Chunk({"chunk": self.chunks.n, "has_peaks": False}, {})
        seen: set[str] = set()
        i = start + 1
        while i < end:
            line = lines[i]
            if line == PEAKS_START:
                if chunk.peaks is not None:
                    raise self.error("second peak list in one chunk", i + 1, "peaks")
                chunk.peaks, i = self._parse_peaks(i, end)
                chunk.row["has_peaks"] = True
            elif line == CRYSTAL_START:
                crystal, i = self._parse_crystal(i, end)
                chunk.crystals.append(crystal)
            elif line in _IN_CHUNK_MARKERS or line in _BLOCK_MARKERS:
                raise self.error(
                    f"unexpected '{line}' in the chunk beginning at line {start + 1}", i + 1
                )
            else:
                self._chunk_field(line, i + 1, chunk, seen)
                i += 1
        for key, name in (("file", "Image filename"), ("photon_energy_eV", "photon_energy_eV")):
            if key not in chunk.row:
                raise self.error(f"incomplete chunk: no '{name}' line", start + 1, name)
        self._commit(chunk)
        return end + 1

    def _chunk_field(self, line: str, lineno: int, chunk: _Chunk, seen: set[str]) -> None:
        if not line.strip():
            return
        for prefix in _COLON_FIELDS:
            if line.startswith(prefix):
                key, value = prefix[:-2], line[len(prefix) :]
                break
        else:
            key, sep, value = line.partition(" = ")
            if not sep:
                raise self.error(f"unrecognised line in chunk: '{line[:60]}'", lineno)
        if key in seen:
            raise self.error("field given twice in one chunk", lineno, key)
        seen.add(key)
        parser = _CHUNK_PARSERS.get(key)
        if parser is not None:
            chunk.row.update(parser(value, lineno, self.path))
        elif key in CHUNK_COLUMNS or not key.strip():
            raise self.error("field name clashes with a standard column", lineno, key)
        else:
            chunk.extra[key] = value.strip()

    def _table(self, start: int, end: int, marker: str, header: str) -> tuple[_Block, int]:
        """Find the table after line ``start`` up to ``marker`` (before line ``end``).

        Its lines are converted to numbers for all tables at once in :meth:`_build`.
        """
        try:
            stop = self.lines.index(marker, start + 1, end)
        except ValueError:
            raise self.error(f"no '{marker}' line after this one", start + 1, header) from None
        first = start + 1
        if first < stop and self.lines[first].split()[:1] == [header]:
            first += 1  # the column header line
        return (first, stop), stop + 1

    def _parse_peaks(self, start: int, end: int) -> tuple[_Block, int]:
        return self._table(start, end, PEAKS_END, "fs/px")

    def _parse_crystal(
        self, start: int, end: int
    ) -> tuple[tuple[dict[str, Any], _Block | None], int]:
        lines = self.lines
        try:
            stop = lines.index(CRYSTAL_END, start + 1, end)
        except ValueError:
            raise self.error(f"no '{CRYSTAL_END}' in this chunk", start + 1, "crystal") from None
        row: dict[str, Any] = {"has_reflections": False}
        notes: list[str] = []
        seen: set[str] = set()
        refls = None
        i = start + 1
        while i < stop:
            line = lines[i]
            if line == REFLECTIONS_START:
                if refls is not None:
                    raise self.error("second reflection list in one crystal", i + 1)
                refls, i = self._table(i, stop, REFLECTIONS_END, "h")
                row["has_reflections"] = True
                continue
            if line in _IN_CHUNK_MARKERS or line in _BLOCK_MARKERS or line == CHUNK_END:
                raise self.error(f"unexpected '{line}' inside a crystal", i + 1)
            if line != NO_REFLECTIONS:
                self._crystal_field(line, i + 1, row, notes, seen)
            i += 1
        self._finish_crystal(row, notes, start + 1)
        return (row, refls), stop + 1

    def _crystal_field(
        self, line: str, lineno: int, row: dict[str, Any], notes: list[str], seen: set[str]
    ) -> None:
        if line.startswith("Cell parameters "):
            key, value = "Cell parameters", line[len("Cell parameters ") :]
        else:
            key, _, value = line.partition(" = ")
        parser = _CRYSTAL_PARSERS.get(key)
        if parser is None:
            if line.strip():
                notes.append(line)  # crystal notes (e.g. predict_refine/R old = ...)
            return
        if key in seen:
            raise self.error("field given twice in one crystal", lineno, key)
        seen.add(key)
        row.update(parser(value, lineno, self.path))

    def _finish_crystal(self, row: dict[str, Any], notes: list[str], line: int) -> None:
        for axis in "abc":
            if f"{axis}star_x" not in row:
                raise self.error(f"crystal without '{axis}star' line", line, f"{axis}star")
        row.setdefault("lattice_type", "triclinic")
        row.setdefault("centering", "P")
        row.setdefault("unique_axis", "?")
        row["notes"] = "\n".join(notes)
        if "a" not in row:
            star = np.array([[row[f"{v}star_{x}"] for x in "xyz"] for v in "abc"])
            cell = cell_from_reciprocal(star)
            if cell is None:
                raise self.error("reciprocal basis is singular", line, "astar")
            row.update(zip(("a", "b", "c", "alpha", "beta", "gamma"), cell, strict=True))

    def _commit(self, chunk: _Chunk) -> None:
        chunk_id = chunk.row["chunk"]
        self.chunks.add(chunk.row, chunk.extra)
        if chunk.peaks is not None:
            self.peak_blocks.append((chunk_id, chunk.peaks))
        for row, refls in chunk.crystals:
            row["chunk"] = chunk_id
            row["crystal"] = self.crystals.n
            if refls is not None:
                self.refl_blocks.append((self.crystals.n, refls))
            self.crystals.add(row, {})

    def _build(self) -> Stream:
        chunks = _frame(self.chunks.data, CHUNK_COLUMNS)
        for name, values in self.chunks.extra.items():
            chunks[name] = _typed_extra(values)
        peaks = self._concat(self.peak_blocks, PEAK_COLUMNS, "chunk", "ffffs", _PEAK_NAMES)
        peaks["fs"] -= 0.5
        peaks["ss"] -= 0.5
        peaks["one_over_d"] /= 10.0
        refls = self._concat(
            self.refl_blocks, REFLECTION_COLUMNS, "crystal", "iiiffffffs", _REFL_NAMES
        )
        refls["fs"] -= 0.5
        refls["ss"] -= 0.5
        return Stream(
            chunks=chunks,
            peaks=peaks,
            crystals=_frame(self.crystals.data, CRYSTAL_COLUMNS),
            reflections=refls,
            header=self.header,
            geometry_text=self.geometry,
            cell_text=self.cell,
            path=self.path,
            geometry_line=self.geometry_line,
            cell_line=self.cell_line,
        )

    def _concat(
        self,
        blocks: list[tuple[int, _Block]],
        dtypes: dict[str, str],
        key: str,
        kinds: str,
        names: tuple[str, ...],
    ) -> pd.DataFrame:
        """One table from all blocks: ``key`` is the chunk or crystal of each block."""
        ranges = [b for _, b in blocks]
        # format 2.1/2.2 tables have no panel column: it is filled with ""
        cols = read_blocks(self.lines, ranges, kinds, names, path=self.path, fill_last=True)
        lengths = [b - a for a, b in ranges]
        ids = np.array([i for i, _ in blocks], dtype=np.int64)
        cols[key] = np.repeat(ids, lengths)
        return pd.DataFrame({n: cols[n].astype(t, copy=False) for n, t in dtypes.items()})


def _frame(data: dict[str, list[Any]], dtypes: dict[str, str]) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for name, dtype in dtypes.items():
        values = data[name]
        if dtype == "Int64":
            columns[name] = pd.array(values, dtype="Int64")
        elif dtype == "object":
            columns[name] = np.array(values, dtype=object)
        else:
            columns[name] = np.array(
                [np.nan if v is None else v for v in values] if dtype == "float64" else values,
                dtype=dtype,
            )
    return pd.DataFrame(columns)


def _typed_extra(values: list[Any]) -> Any:
    """Extra chunk fields: Int64 if all are integers, float64 if all are numbers, else str."""
    present = [v for v in values if v is not None]
    try:
        ints = [int(v) for v in present]
        if all(-(2**62) < v < 2**62 for v in ints):
            return pd.array([None if v is None else int(v) for v in values], dtype="Int64")
    except ValueError:
        pass
    try:
        return np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    except ValueError:
        return np.array(values, dtype=object)
