"""Integrated observations (unmerged reflections of every crystal) in an HDF5 file.

The file written by ``crystalscope serial integrate`` and read by ``crystalscope merge``::

    /observations/<column>     one 1-D dataset per column of the observation table
                               (crystalscope.integrate.observations.OBSERVATION_COLUMNS,
                               and any extra numeric columns), bitshuffle/LZ4-compressed
    /observations@cell         (a, b, c, alpha, beta, gamma), A and degrees
    /observations@space_group  extended Hermann-Mauguin symbol (gemmi ``xhm``)
    /observations@wavelength   A
    /observations@meta         JSON object: where the data came from, parameters
    /@crystalscope_format      "observations 1"

Writes are atomic (a temporary file renamed into place), so a reader never sees a
half-written file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gemmi
import h5py
import hdf5plugin
import numpy as np
import pandas as pd

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_path
from crystalscope.model.crystal import resolve_space_group

__all__ = [
    "FORMAT",
    "ObservationFile",
    "concat_observations",
    "read_observations",
    "write_observations",
]

#: Value of the root attribute ``crystalscope_format``.
FORMAT = "observations 1"
_GROUP = "observations"


@dataclass
class ObservationFile:
    """The contents of an observations file.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per observation.
    cell : gemmi.UnitCell
    space_group : gemmi.SpaceGroup
    wavelength : float
        A.
    meta : dict
        Provenance and parameters (JSON-compatible).
    """

    table: pd.DataFrame
    cell: gemmi.UnitCell
    space_group: gemmi.SpaceGroup
    wavelength: float
    meta: dict[str, Any] = field(default_factory=dict)


#: bitshuffle + LZ4: about ten times faster than gzip on these float columns and
#: readable wherever the frames are (h5py with ``hdf5plugin``).
_COMPRESSION: dict[str, Any] = dict(hdf5plugin.Bitshuffle(cname="lz4"))


def write_observations(
    data: ObservationFile, path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write ``data`` to ``path`` atomically (module docstring); return the path.

    Raises
    ------
    CrystalscopeError
        If ``path`` exists and ``overwrite`` is false, or its folder does not exist.
    FormatError
        If a column is not numeric.
    """
    target = Path(path)
    bad = [c for c in data.table.columns if not pd.api.types.is_numeric_dtype(data.table[c])]
    if bad:
        raise FormatError(
            f"observation columns must be numeric; {', '.join(map(str, bad))} is not",
            path=target, field=str(bad[0]),
        )  # fmt: skip
    with atomic_path(target, overwrite=overwrite) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["crystalscope_format"] = FORMAT
        group = f.create_group(_GROUP)
        for name in data.table.columns:
            values = data.table[name].to_numpy()
            chunks = (min(len(values), 65536),) if len(values) else None
            group.create_dataset(str(name), data=values, chunks=chunks, **_COMPRESSION)
        group.attrs["cell"] = np.array(data.cell.parameters, dtype=float)
        group.attrs["space_group"] = data.space_group.xhm()
        group.attrs["wavelength"] = float(data.wavelength)
        group.attrs["meta"] = json.dumps(data.meta, default=str)
        group.attrs["columns"] = json.dumps([str(c) for c in data.table.columns])
    return target


def read_observations(path: str | os.PathLike[str]) -> ObservationFile:
    """Read a file written by :func:`write_observations`.

    Raises
    ------
    FormatError
        If the file is missing, not HDF5, truncated, or lacks a field (the message
        names the file and the field).
    """
    source = Path(path)
    if not source.is_file():
        raise FormatError("observations file not found", path=source)
    try:
        with h5py.File(source, "r") as f:
            if f.attrs.get("crystalscope_format") != FORMAT or _GROUP not in f:
                raise FormatError(
                    "not a crystalscope observations file (write one with "
                    "`crystalscope serial integrate`)",
                    path=source, field="crystalscope_format",
                )  # fmt: skip
            group = f[_GROUP]
            return _read_group(group, source)
    except OSError as exc:
        raise FormatError(f"cannot read HDF5 file ({exc})", path=source) from None


def _attr(group: h5py.Group, name: str, source: Path) -> Any:
    if name not in group.attrs:
        raise FormatError("attribute missing", path=source, field=f"{_GROUP}@{name}")
    return group.attrs[name]


def _read_group(group: h5py.Group, source: Path) -> ObservationFile:
    names = json.loads(str(_attr(group, "columns", source)))
    columns: dict[str, np.ndarray] = {}
    for name in names:
        if name not in group:
            raise FormatError("column missing", path=source, field=f"{_GROUP}/{name}")
        columns[name] = group[name][()]
    cell_values = np.asarray(_attr(group, "cell", source), dtype=float)
    if cell_values.shape != (6,) or not np.all(np.isfinite(cell_values)):
        raise FormatError("cell must be six numbers", path=source, field=f"{_GROUP}@cell")
    try:
        sg = resolve_space_group(str(_attr(group, "space_group", source)))
    except DataError as exc:
        raise FormatError(exc.message, path=source, field=f"{_GROUP}@space_group") from None
    return ObservationFile(
        table=pd.DataFrame(columns),
        cell=gemmi.UnitCell(*cell_values),
        space_group=sg,
        wavelength=float(_attr(group, "wavelength", source)),
        meta=json.loads(str(_attr(group, "meta", source))),
    )


def concat_observations(parts: list[ObservationFile]) -> ObservationFile:
    """Observations of several files as one: ``crystal_id`` and ``frame`` are offset so
    that they stay unique, and a ``part`` column numbers the source.  The cell, space
    group and wavelength are the first part's (the parts must share a data set's cell).

    Raises
    ------
    DataError
        No parts, or parts of different space groups.
    """
    if not parts:
        raise DataError("no observations to combine", field="observations")
    first = parts[0]
    tables = []
    offsets = {"crystal_id": 0, "frame": 0}
    for number, part in enumerate(parts):
        if part.space_group.xhm() != first.space_group.xhm():
            raise DataError(
                f"space groups differ: {first.space_group.xhm()} and {part.space_group.xhm()}",
                field="space_group",
            )
        table = part.table.copy()
        for name, offset in offsets.items():
            if name in table and len(table):
                table[name] = table[name].to_numpy(np.int64) + offset
                offsets[name] = int(table[name].max()) + 1
        table["part"] = np.int64(number)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    meta = {"parts": [p.meta for p in parts]}
    return ObservationFile(table, first.cell, first.space_group, first.wavelength, meta)
