"""MTZ reflection files (CCP4), merged and unmerged, read and written through gemmi.

Reading
-------
:func:`read_mtz` returns a :class:`~crystalscope.io.reflection_data.ReflectionData`:

* ``h, k, l`` from ``H, K, L``.  For **unmerged** files (an ``M/ISYM`` column or batch
  headers) the indices are the *original* (observed) indices, recovered with gemmi's
  ``Mtz.switch_to_original_hkl``; the asymmetric-unit indices stored in the file are kept
  as ``h_asu, k_asu, l_asu``, ``M/ISYM`` becomes ``isym`` and ``BATCH`` becomes ``batch``.
* ``I, sigma`` from the first pair present of ``IMEAN/SIGIMEAN``, ``I/SIGI``,
  ``IOBS/SIGIOBS``, ``I-obs/SIGI-obs``, else the first intensity column (type ``J``)
  followed by a standard deviation (type ``Q``), or the labels given as ``intensity=``.
  Without intensities ``I`` and ``sigma`` are NaN (amplitudes are never squared).
* ``F, sigF`` likewise from ``F/SIGF``, ``FP/SIGFP``, ``FOBS/SIGFOBS``, ``F-obs/SIGF-obs``
  or the first ``F`` + ``Q`` pair, or ``amplitude=``.
* Every other column under its MTZ label (a label that clashes with a column name above
  gets the suffix ``_mtz``).  Integer-typed columns (``H, I, B, Y``) are int32 when they
  have no missing values, float64 with NaN otherwise.

``metadata`` holds ``labels`` (table column -> MTZ label), ``column_types`` (table
column -> MTZ column type), ``datasets``, ``title``, ``history``, ``batches`` (batch
numbers) and ``resolution_high`` / ``resolution_low`` (A).

Writing
-------
:func:`write_mtz` writes a merged file (``H K L`` as given, ``IMEAN SIGIMEAN`` ...) or an
unmerged one (``H K L`` mapped to the asymmetric unit with ``M/ISYM``, ``BATCH`` and one
batch header per batch number, ``I SIGI`` ...).  All values are stored as 32-bit floats.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_path
from crystalscope.io.reflection_data import ReflectionData
from crystalscope.model.reflections import validate_reflections

__all__ = ["AMPLITUDE_LABELS", "INTENSITY_LABELS", "read_mtz", "write_mtz"]

#: Intensity label pairs tried in order when reading.
INTENSITY_LABELS: list[tuple[str, str]] = [
    ("IMEAN", "SIGIMEAN"),
    ("I", "SIGI"),
    ("IOBS", "SIGIOBS"),
    ("I-obs", "SIGI-obs"),
]
#: Amplitude label pairs tried in order when reading.
AMPLITUDE_LABELS: list[tuple[str, str]] = [
    ("F", "SIGF"),
    ("FP", "SIGFP"),
    ("FOBS", "SIGFOBS"),
    ("F-obs", "SIGF-obs"),
]

_INT_TYPES = frozenset("HIBY")
_RESERVED = ("h", "k", "l", "I", "sigma", "F", "sigF", "batch", "isym", "h_asu", "k_asu", "l_asu")
_DERIVED = frozenset({"h", "k", "l", "isym", "h_asu", "k_asu", "l_asu"})


# --------------------------------------------------------------------------- reading


def read_mtz(
    path: str | os.PathLike[str],
    *,
    intensity: tuple[str, str] | None = None,
    amplitude: tuple[str, str] | None = None,
) -> ReflectionData:
    """Read a merged or unmerged MTZ file.

    Parameters
    ----------
    path : str or os.PathLike
        The MTZ file.
    intensity : (str, str), optional
        Labels of the intensity and its standard deviation, e.g. ``("I(+)", "SIGI(+)")``.
    amplitude : (str, str), optional
        Labels of the amplitude and its standard deviation.

    Returns
    -------
    ReflectionData
        Table, cell, space group, ``merged`` flag, wavelength (A) and header metadata.

    Raises
    ------
    FormatError
        If the file is missing, not an MTZ file, truncated, or a requested label is absent.
    """
    mtz = _open_mtz(path)
    try:
        return _read(mtz, path, intensity, amplitude)
    except UnicodeDecodeError as exc:  # gemmi decodes labels and titles as UTF-8
        raise FormatError(f"non-text bytes in the MTZ header ({exc.reason})", path=path,
                          field="header") from None  # fmt: skip


def _read(
    mtz: gemmi.Mtz,
    path: str | os.PathLike[str],
    intensity: tuple[str, str] | None,
    amplitude: tuple[str, str] | None,
) -> ReflectionData:
    if len(mtz.columns) < 3:
        raise FormatError("MTZ file has fewer than 3 columns", path=path, field="NCOL")
    labels = [c.label for c in mtz.columns]
    if labels[:3] != ["H", "K", "L"]:
        raise FormatError("MTZ file must start with columns H, K, L", path=path, field="H")
    merged = "M/ISYM" not in labels and len(mtz.batches) == 0
    array = np.asarray(mtz, dtype=np.float64)
    table = pd.DataFrame(_hkl(array, path))
    if not merged:
        table = _add_original_hkl(mtz, table, path)
    picks = _pick_labels(mtz, intensity, amplitude, path)
    used = _fill_columns(table, mtz, array, picks, merged, path)
    return ReflectionData(
        table=validate_reflections(table, source=str(path)),
        cell=gemmi.UnitCell(*mtz.cell.parameters),
        space_group=mtz.spacegroup,
        merged=merged,
        wavelength=_wavelength(mtz, picks),
        metadata=_metadata(mtz, used),
        source=str(path),
    )


def _open_mtz(path: str | os.PathLike[str]) -> gemmi.Mtz:
    p = Path(path)
    if not p.is_file():
        raise FormatError("file not found", path=p)
    _check_layout(p)
    try:
        mtz = gemmi.read_mtz_file(str(p))
    except (RuntimeError, ValueError, OSError, MemoryError) as exc:
        raise FormatError(f"cannot read MTZ file: {exc}", path=p) from None
    if mtz.spacegroup is None:
        raise FormatError("MTZ file has no space group", path=p, field="SYMINF")
    return mtz


def _check_layout(path: Path) -> None:
    """Check the header position and data size before gemmi allocates anything.

    The file starts with ``MTZ ``, the header position (4-byte words, 1-based) and the
    machine stamp; the 80-character header records follow the data.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"MTZ ":
            raise FormatError("not an MTZ file (no 'MTZ ' at the start)", path=path)
        order = "<" if head[8] >> 4 == 4 else ">"
        offset = (struct.unpack(order + "i", head[4:8])[0] - 1) * 4
        if not 80 <= offset < size:
            raise FormatError(f"header position {offset} is outside the file of {size} bytes "
                              "(truncated?)", path=path, field="header")  # fmt: skip
        fh.seek(offset)
        records = fh.read(min(size - offset, 80 * 100_000)).decode("latin-1")
    ncol, nref = _ncol_record(records, path)
    if 80 + ncol * nref * 4 > offset:
        raise FormatError(f"{ncol} columns x {nref} reflections do not fit before the header",
                          path=path, field="NCOL")  # fmt: skip


def _ncol_record(records: str, path: Path) -> tuple[int, int]:
    for start in range(0, len(records), 80):
        record = records[start : start + 80]
        if record.startswith("NCOL"):
            try:
                ncol, nref = (int(x) for x in record[4:].split()[:2])
            except ValueError:
                break
            if ncol >= 0 and nref >= 0:
                return ncol, nref
            break
    raise FormatError("no valid NCOL header record", path=path, field="NCOL")


def _hkl(array: np.ndarray, path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    hkl = array[:, :3]
    if not np.all(np.isfinite(hkl)) or np.any(hkl != np.round(hkl)) or np.any(abs(hkl) > 9999):
        raise FormatError("Miller indices are not integers", path=path, field="H")
    return {"h": hkl[:, 0].astype(np.int32), "k": hkl[:, 1].astype(np.int32),
            "l": hkl[:, 2].astype(np.int32)}  # fmt: skip


def _add_original_hkl(mtz: gemmi.Mtz, table: pd.DataFrame, path: Any) -> pd.DataFrame:
    """Keep the stored (asu) indices and replace h, k, l by the original indices."""
    if "M/ISYM" not in [c.label for c in mtz.columns]:
        raise FormatError("unmerged MTZ file lacks the M/ISYM column", path=path, field="M/ISYM")
    table = table.rename(columns={"h": "h_asu", "k": "k_asu", "l": "l_asu"})
    try:
        mtz.switch_to_original_hkl()
    except (RuntimeError, ValueError) as exc:
        raise FormatError(
            f"cannot map to original indices: {exc}", path=path, field="M/ISYM"
        ) from None
    original = _hkl(np.asarray(mtz, dtype=np.float64), path)
    return pd.concat([pd.DataFrame(original), table], axis=1)


def _pick_labels(
    mtz: gemmi.Mtz,
    intensity: tuple[str, str] | None,
    amplitude: tuple[str, str] | None,
    path: Any,
) -> dict[str, str]:
    """Map canonical column names (I, sigma, F, sigF) to MTZ labels."""
    picks: dict[str, str] = {}
    for (value, sig), given, pairs, typ in (
        (("I", "sigma"), intensity, INTENSITY_LABELS, "J"),
        (("F", "sigF"), amplitude, AMPLITUDE_LABELS, "F"),
    ):
        pair = _find_pair(mtz, given, pairs, typ, path)
        if pair is not None:
            picks[value], picks[sig] = pair
    return picks


def _find_pair(
    mtz: gemmi.Mtz,
    given: tuple[str, str] | None,
    pairs: list[tuple[str, str]],
    typ: str,
    path: Any,
) -> tuple[str, str] | None:
    labels = [c.label for c in mtz.columns]
    if given is not None:
        for label in given:
            if label not in labels:
                raise FormatError("column not found in MTZ file", path=path, field=label)
        return given[0], given[1]
    for pair in pairs:
        if pair[0] in labels and pair[1] in labels:
            return pair
    columns = list(mtz.columns)
    for first, second in itertools.pairwise(columns):
        if first.type == typ and second.type == "Q":
            return first.label, second.label
    return None


def _fill_columns(
    table: pd.DataFrame,
    mtz: gemmi.Mtz,
    array: np.ndarray,
    picks: dict[str, str],
    merged: bool,
    mtz_path: str | os.PathLike[str],
) -> dict[str, tuple[str, str]]:
    """Add all data columns to ``table``; return table column -> (MTZ label, type)."""
    index_of = {c.label: i for i, c in enumerate(mtz.columns)}
    type_of = {c.label: c.type for c in mtz.columns}
    used: dict[str, tuple[str, str]] = {}
    for name in ("I", "sigma"):
        table[name] = array[:, index_of[picks[name]]] if name in picks else np.nan
    for name in ("F", "sigF"):
        if name in picks:
            table[name] = array[:, index_of[picks[name]]]
    used.update({name: (label, type_of[label]) for name, label in picks.items()})
    if not merged:
        _unmerged_columns(table, array, index_of, used, mtz_path)
    taken = {label for label, _ in used.values()}
    for i, col in enumerate(mtz.columns):
        if i < 3 or col.label in taken:
            continue
        name = col.label if col.label not in _RESERVED else f"{col.label}_mtz"
        table[name] = _typed(array[:, i], col.type)
        used[name] = (col.label, col.type)
    return used


def _unmerged_columns(
    table: pd.DataFrame,
    array: np.ndarray,
    index_of: dict[str, int],
    used: dict[str, tuple[str, str]],
    path: str | os.PathLike[str],
) -> None:
    for name, label, typ in (("isym", "M/ISYM", "Y"), ("batch", "BATCH", "B")):
        if label in index_of:
            values = array[:, index_of[label]]
            if not np.all(np.isfinite(values)):
                raise FormatError("missing values", path=path, field=label)
            table[name] = values.astype(np.int32)
            used[name] = (label, typ)


def _typed(values: np.ndarray, mtz_type: str) -> np.ndarray:
    if mtz_type in _INT_TYPES and np.all(np.isfinite(values)):
        if np.all(values == np.round(values)) and np.all(np.abs(values) < 2**31):
            return values.astype(np.int32)
    return values


def _metadata(mtz: gemmi.Mtz, used: dict[str, tuple[str, str]]) -> dict[str, Any]:
    datasets = [
        {
            "id": d.id,
            "project": d.project_name,
            "crystal": d.crystal_name,
            "dataset": d.dataset_name,
            "wavelength": float(d.wavelength),
            "cell": tuple(d.cell.parameters),
        }
        for d in mtz.datasets
    ]
    return {
        "labels": {name: label for name, (label, _) in used.items()},
        "column_types": {name: typ for name, (_, typ) in used.items()},
        "datasets": datasets,
        "title": mtz.title,
        "history": list(mtz.history),
        "batches": [b.number for b in mtz.batches],
        "resolution_high": float(mtz.resolution_high()) if mtz.nreflections else None,
        "resolution_low": float(mtz.resolution_low()) if mtz.nreflections else None,
    }


def _wavelength(mtz: gemmi.Mtz, picks: dict[str, str]) -> float | None:
    for name in ("I", "F"):
        if name in picks:
            dataset_id = mtz.column_with_label(picks[name]).dataset_id
            for d in mtz.datasets:
                if d.id == dataset_id and d.wavelength > 0:
                    return float(d.wavelength)
    for b in mtz.batches:
        if b.wavelength > 0:
            return float(b.wavelength)
    for d in mtz.datasets:
        if d.wavelength > 0:
            return float(d.wavelength)
    return None


# --------------------------------------------------------------------------- writing


def write_mtz(
    table: pd.DataFrame | ReflectionData,
    path: str | os.PathLike[str],
    cell: gemmi.UnitCell | Sequence[float] | None = None,
    space_group: gemmi.SpaceGroup | str | int | None = None,
    merged: bool | None = None,
    *,
    wavelength: float | None = None,
    labels: Mapping[str, str] | None = None,
    column_types: Mapping[str, str] | None = None,
    dataset_name: str = "crystalscope",
    title: str = "written by crystalscope",
    overwrite: bool = True,
) -> None:
    """Write a reflection table as a merged or unmerged MTZ file.

    Parameters
    ----------
    table : pandas.DataFrame or ReflectionData
        Reflection table (``h, k, l, I, sigma``; ``F, sigF``, ``batch`` and any further
        numeric columns are written too).  A :class:`ReflectionData` supplies the cell,
        space group, merged flag, wavelength, labels and column types itself.
    path : str or os.PathLike
        Output file (written atomically).
    cell : gemmi.UnitCell or sequence of 6 floats
        Unit cell, A and degrees.
    space_group : gemmi.SpaceGroup, str or int
        Space group (name or number).
    merged : bool, optional
        Merged (default) or unmerged output.  Unmerged: ``h, k, l`` are the original
        indices; they are mapped to the asymmetric unit with ``M/ISYM`` and written with
        ``BATCH`` (``batch`` column, or 1) and one batch header per batch number.
    wavelength : float, optional
        Wavelength in A for the dataset and batch headers.
    labels : mapping, optional
        MTZ label for a table column (default: ``I`` -> ``IMEAN`` merged / ``I``
        unmerged, ``sigma`` -> ``SIGIMEAN`` / ``SIGI``, ``F`` -> ``F``, ``sigF`` ->
        ``SIGF``, other columns by their own name).
    column_types : mapping, optional
        MTZ column type for a table column (default: ``J, Q, F, Q`` for the above,
        ``I`` for integer columns, ``R`` otherwise).
    dataset_name : str
        Project, crystal and dataset name of the data columns.
    title : str
        MTZ title.
    overwrite : bool
        Replace an existing file.

    Raises
    ------
    DataError
        If the table lacks required columns, has non-numeric columns, or the cell or
        space group is missing or invalid.
    """
    table, cell, space_group, merged, wavelength, labels, column_types = _unpack(
        table, cell, space_group, merged, wavelength, labels, column_types
    )
    table = validate_reflections(table)
    uc = _unit_cell(cell)
    sg = _space_group(space_group)
    columns = _output_columns(table, merged, labels, column_types)
    mtz = gemmi.Mtz(with_base=True)
    mtz.title = title[:70]
    mtz.spacegroup = sg
    mtz.set_cell_for_all(uc)
    dataset = mtz.add_dataset(dataset_name)
    dataset.wavelength = wavelength or 0.0
    header = [("M/ISYM", "Y"), ("BATCH", "B")] if not merged else []
    for label, typ in header + [(label, typ) for _, label, typ in columns]:
        mtz.add_column(label, typ)
    data = _data_array(table, merged, sg, columns)
    mtz.set_data(data)
    if not merged:
        _add_batches(mtz, data[:, 4], uc, wavelength, dataset.id)
    mtz.update_reso()
    with atomic_path(path, overwrite=overwrite) as tmp:
        mtz.write_to_file(str(tmp))


def _unpack(
    table: pd.DataFrame | ReflectionData,
    cell: Any,
    space_group: Any,
    merged: bool | None,
    wavelength: float | None,
    labels: Mapping[str, str] | None,
    column_types: Mapping[str, str] | None,
) -> tuple[Any, ...]:
    if isinstance(table, ReflectionData):
        data = table
        cell = data.cell if cell is None else cell
        space_group = data.space_group if space_group is None else space_group
        merged = data.merged if merged is None else merged
        wavelength = data.wavelength if wavelength is None else wavelength
        labels = {**data.metadata.get("labels", {}), **(labels or {})}
        column_types = {**data.metadata.get("column_types", {}), **(column_types or {})}
        table = data.table
    merged = True if merged is None else merged
    return table, cell, space_group, merged, wavelength, labels or {}, column_types or {}


def _unit_cell(cell: Any) -> gemmi.UnitCell:
    if cell is None:
        raise DataError("a unit cell is needed to write MTZ", field="cell")
    if isinstance(cell, gemmi.UnitCell):
        return cell
    try:
        params = [float(x) for x in cell]
        if len(params) != 6 or not all(np.isfinite(params)) or min(params) <= 0:
            raise ValueError("need 6 positive numbers")
        return gemmi.UnitCell(*params)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"invalid unit cell {cell!r} ({exc})", field="cell") from None


def _space_group(space_group: Any) -> gemmi.SpaceGroup:
    if space_group is None:
        raise DataError("a space group is needed to write MTZ", field="space_group")
    if isinstance(space_group, gemmi.SpaceGroup):
        return space_group
    try:
        if isinstance(space_group, int | np.integer):
            return gemmi.SpaceGroup(int(space_group))
        found = gemmi.find_spacegroup_by_name(str(space_group))
        if found is None:
            raise ValueError("unknown name")
        return found
    except (ValueError, RuntimeError) as exc:
        raise DataError(
            f"invalid space group {space_group!r} ({exc})", field="space_group"
        ) from None


def _output_columns(
    table: pd.DataFrame,
    merged: bool,
    labels: Mapping[str, str],
    column_types: Mapping[str, str],
) -> list[tuple[str, str, str]]:
    """(table column, MTZ label, MTZ type) of each data column, in order."""
    defaults = {
        "I": ("IMEAN" if merged else "I", "J"),
        "sigma": ("SIGIMEAN" if merged else "SIGI", "Q"),
        "F": ("F", "F"),
        "sigF": ("SIGF", "Q"),
    }
    skip = set(_DERIVED) | ({"batch"} if not merged else set())
    out: list[tuple[str, str, str]] = []
    for name in table.columns:
        if name in skip:
            continue
        if name in ("I", "sigma") and table["I"].isna().all():
            continue
        if not (pd.api.types.is_numeric_dtype(table[name]) or table[name].dtype == bool):
            raise DataError("column is not numeric; MTZ stores numbers only", field=str(name))
        label, typ = defaults.get(name, (str(name), _infer_type(table[name])))
        out.append((name, labels.get(name, label), column_types.get(name, typ)))
    seen: set[str] = {"H", "K", "L", "M/ISYM", "BATCH"} if not merged else {"H", "K", "L"}
    for name, label, _ in out:
        if label in seen:
            raise DataError(f"MTZ label {label!r} would be written twice", field=str(name))
        seen.add(label)
    return out


def _infer_type(column: pd.Series) -> str:
    return "I" if pd.api.types.is_integer_dtype(column) or column.dtype == bool else "R"


def _data_array(
    table: pd.DataFrame,
    merged: bool,
    sg: gemmi.SpaceGroup,
    columns: list[tuple[str, str, str]],
) -> np.ndarray:
    hkl = table[["h", "k", "l"]].to_numpy(dtype=np.int64)
    parts: list[np.ndarray] = []
    if merged:
        parts.append(hkl.astype(np.float64))
    else:
        asu_hkl, isym = _to_asu(hkl, sg)
        batch = table["batch"].to_numpy(dtype=np.float64) if "batch" in table else 1.0
        parts += [asu_hkl.astype(np.float64), isym[:, None].astype(np.float64)]
        parts.append(np.broadcast_to(batch, (len(table),))[:, None])
    parts += [table[name].to_numpy(dtype=np.float64)[:, None] for name, _, _ in columns]
    data = np.hstack(parts) if parts else np.zeros((0, 3))
    return np.ascontiguousarray(data, dtype=np.float32)


def _to_asu(hkl: np.ndarray, sg: gemmi.SpaceGroup) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric-unit indices and MTZ ISYM (odd: h, even: Friedel mate) of each row."""
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    out = np.empty_like(hkl)
    isym = np.empty(len(hkl), dtype=np.int32)
    for i, row in enumerate(hkl.tolist()):
        out[i], isym[i] = asu.to_asu(row, ops)
    return out, isym


def _add_batches(
    mtz: gemmi.Mtz,
    batch_column: np.ndarray,
    cell: gemmi.UnitCell,
    wavelength: float | None,
    dataset_id: int,
) -> None:
    for number in np.unique(batch_column.astype(np.int64)).tolist():
        batch = gemmi.Mtz.Batch()
        batch.number = int(number)
        batch.dataset_id = dataset_id
        batch.cell = cell
        batch.wavelength = wavelength or 0.0
        batch.title = f"batch {number}"
        mtz.batches.append(batch)
