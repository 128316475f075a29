"""A reflection table together with the crystal information read from the same file.

Reflection-file readers (:mod:`crystalscope.io.mtz`, :mod:`crystalscope.io.shelx`,
:mod:`crystalscope.io.xds`) return a :class:`ReflectionData`: the reflection table (a
:class:`pandas.DataFrame` with the columns of :mod:`crystalscope.model.reflections`), the
unit cell and space group as gemmi objects where the file gives them, whether the data are
merged, and the remaining header items in ``metadata``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gemmi
import pandas as pd

__all__ = ["ReflectionData"]


@dataclass
class ReflectionData:
    """Reflections read from a file, with their crystal and file metadata.

    Attributes
    ----------
    table : pandas.DataFrame
        Reflection table: ``h, k, l, I, sigma`` and further columns.
    cell : gemmi.UnitCell or None
        Unit cell (edges in A, angles in degrees), ``None`` where the file has none.
    space_group : gemmi.SpaceGroup or None
        Space group, ``None`` where the file has none.
    merged : bool
        ``True`` for one record per unique reflection, ``False`` for individual
        observations (unmerged MTZ, SHELX HKLF 4, XDS INTEGRATE.HKL).
    wavelength : float or None
        Wavelength in A where the file gives one.
    metadata : dict
        Further header items of the format (documented per reader).
    source : str or None
        The file the data were read from.
    """

    table: pd.DataFrame
    cell: gemmi.UnitCell | None = None
    space_group: gemmi.SpaceGroup | None = None
    merged: bool = True
    wavelength: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = None

    def __len__(self) -> int:
        return len(self.table)

    def __repr__(self) -> str:
        sg = self.space_group.hm if self.space_group is not None else "?"
        cell = self.cell.parameters if self.cell is not None else "?"
        kind = "merged" if self.merged else "unmerged"
        return (
            f"ReflectionData({len(self.table)} {kind} reflections, {sg}, cell={cell}, "
            f"source={self.source!r})"
        )
