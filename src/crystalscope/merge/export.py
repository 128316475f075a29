"""Export of merged data: MTZ, SHELX, CrystFEL files and merging statistics.

:func:`write_merged` writes, into one directory, for a merge result (anything with
``merged``, ``half1``, ``half2``, ``observations``, ``cell``, ``space_group`` and
``wavelength``, e.g. :class:`crystalscope.merge.merging.MergeResult` or
:class:`MergedSet`):

* ``<stem>.mtz``: merged ``H K L IMEAN SIGIMEAN nmeas`` (CCP4 asymmetric unit);
* ``unmerged.mtz`` (``<stem>_unmerged.mtz`` for a stem without "merged" in it): the
  observations merged, original ``H K L`` mapped to the ASU with ``M/ISYM``, ``BATCH``
  (= crystal_id + 1), ``I SIGI`` (the scaled, partiality-corrected full-intensity
  estimates ``I_full``, ``sigma_full``), ``XDET YDET`` (raw pixel position),
  ``FRACTIONCALC`` (model partiality); rejected crystals left out;
* ``<stem>.hkl``: CrystFEL reflection list, with the ``.hkl1``/``.hkl2`` half-sets;
* ``<stem>_shelx.hkl``: SHELX HKLF 4 (scaled to fit F8.2), and ``<stem>_shelx.ins``;
* ``<stem>_stats.csv/.txt/.png`` with ``statistics=``: one row per shell + overall, the
  terminal table, the plots.

Every file is written atomically; nothing is written when any target exists and
``overwrite`` is false.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.io.atomic import atomic_write, check_writable
from crystalscope.io.crystfel_hkl import write_hkl, write_hkl_halves
from crystalscope.io.mtz import write_mtz
from crystalscope.io.shelx import write_shelx_hkl
from crystalscope.io.shelx_ins import write_shelx_ins
from crystalscope.merge.plots import plot_statistics
from crystalscope.merge.stats import MergeStatistics, merge_statistics, write_statistics_csv
from crystalscope.merge.symmetry import point_group_of_space_group
from crystalscope.model.crystal import resolve_space_group

__all__ = [
    "MergedLike",
    "MergedSet",
    "write_merged",
]


class MergedLike(Protocol):
    """What :func:`write_merged` needs of a merge result."""

    merged: pd.DataFrame
    half1: pd.DataFrame | None
    half2: pd.DataFrame | None
    observations: pd.DataFrame | None
    cell: gemmi.UnitCell
    space_group: gemmi.SpaceGroup
    wavelength: float


@dataclass
class MergedSet:
    """Merged intensities with their half-sets and crystal, for export.

    ``merged``, ``half1``, ``half2``: reflection tables ``h, k, l, I, sigma, nobs``;
    ``observations``: optional unmerged observations (``h, k, l``, ``I_full``/
    ``sigma_full`` or ``I``/``sigma``, ``crystal_id`` ...); ``crystals``: optional
    per-crystal table with ``crystal_id`` and ``rejected``.
    """

    merged: pd.DataFrame
    cell: gemmi.UnitCell
    space_group: gemmi.SpaceGroup
    wavelength: float
    half1: pd.DataFrame | None = None
    half2: pd.DataFrame | None = None
    observations: pd.DataFrame | None = None
    crystals: pd.DataFrame | None = None


def _finite(table: pd.DataFrame) -> pd.DataFrame:
    ok = np.isfinite(table["I"].to_numpy(dtype=float)) & np.isfinite(
        table["sigma"].to_numpy(dtype=float)
    )
    return table.loc[ok]


def _merged_for_mtz(merged: pd.DataFrame, sg: gemmi.SpaceGroup) -> pd.DataFrame:
    table = _finite(merged)
    hkl = table[["h", "k", "l"]].to_numpy(dtype=np.int64)
    asu = gemmi.ReciprocalAsu(sg)
    ops = sg.operations()
    mapped = np.array([asu.to_asu(row, ops)[0] for row in hkl.tolist()], dtype=np.int32)
    out = pd.DataFrame(
        {
            "h": mapped[:, 0] if len(mapped) else np.zeros(0, np.int32),
            "k": mapped[:, 1] if len(mapped) else np.zeros(0, np.int32),
            "l": mapped[:, 2] if len(mapped) else np.zeros(0, np.int32),
            "I": table["I"].to_numpy(dtype=float),
            "sigma": table["sigma"].to_numpy(dtype=float),
        }
    )
    nobs = table["nobs"].to_numpy() if "nobs" in table else np.ones(len(table))
    out["nobs"] = np.asarray(nobs, dtype=np.int32)
    return out.sort_values(["h", "k", "l"], ignore_index=True)


def _unmerged_for_mtz(result: Any) -> pd.DataFrame | None:
    obs = getattr(result, "observations", None)
    if obs is None or len(obs) == 0:
        return None
    i_col, s_col = ("I_full", "sigma_full") if "I_full" in obs else ("I", "sigma")
    batch_src = "crystal_id" if "crystal_id" in obs else "frame" if "frame" in obs else None
    keep = np.isfinite(obs[i_col].to_numpy(dtype=float)) & np.isfinite(
        obs[s_col].to_numpy(dtype=float)
    )
    crystals = getattr(result, "crystals", None)
    if crystals is not None and "rejected" in crystals and batch_src == "crystal_id":
        bad = crystals.loc[crystals["rejected"].astype(bool), "crystal_id"].to_numpy()
        keep &= ~np.isin(obs["crystal_id"].to_numpy(), bad)
    rows = obs.loc[keep]
    out = pd.DataFrame(
        {
            "h": rows["h"].to_numpy(dtype=np.int32),
            "k": rows["k"].to_numpy(dtype=np.int32),
            "l": rows["l"].to_numpy(dtype=np.int32),
            "I": rows[i_col].to_numpy(dtype=float),
            "sigma": rows[s_col].to_numpy(dtype=float),
            "batch": (rows[batch_src].to_numpy(dtype=np.int64) + 1 if batch_src else 1),
        }
    )
    for src, name in (("fs", "XDET"), ("ss", "YDET")):
        if src in rows:
            out[name] = rows[src].to_numpy(dtype=float)
    part = "partiality_model" if "partiality_model" in rows else "partiality"
    if part in rows:
        out["FRACTIONCALC"] = rows[part].to_numpy(dtype=float)
    if len(out) and out["batch"].max() >= 2**24:
        raise DataError("crystal_id too large for an MTZ batch number", field="crystal_id")
    return out.astype({"batch": np.int32})


def _targets(directory: Path, stem: str, unmerged: bool, statistics: bool) -> dict[str, Path]:
    names = {
        "merged_mtz": f"{stem}.mtz",
        "crystfel_hkl": f"{stem}.hkl",
        "crystfel_hkl1": f"{stem}.hkl1",
        "crystfel_hkl2": f"{stem}.hkl2",
        "shelx_hkl": f"{stem}_shelx.hkl",
        "shelx_ins": f"{stem}_shelx.ins",
    }
    if unmerged:  # merged -> unmerged.mtz, lyso_merged -> lyso_unmerged.mtz, lyso -> lyso_unmerged
        unmerged_stem = (
            stem.replace("merged", "unmerged") if "merged" in stem else f"{stem}_unmerged"
        )
        names["unmerged_mtz"] = f"{unmerged_stem}.mtz"
    if statistics:
        names |= {"stats_csv": f"{stem}_stats.csv", "stats_txt": f"{stem}_stats.txt",
                  "stats_png": f"{stem}_stats.png"}  # fmt: skip
    return {key: directory / name for key, name in names.items()}


def write_merged(
    result: MergedLike,
    directory: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    stem: str = "merged",
    statistics: bool | MergeStatistics = False,
    n_shells: int = 10,
    title: str | None = None,
) -> dict[str, Path]:
    """Write a merge result as MTZ (merged, unmerged), CrystFEL, SHELX and statistics files.

    Parameters
    ----------
    result : MergeResult or MergedSet
        Anything with ``merged``, ``half1``, ``half2``, ``observations``, ``cell``,
        ``space_group``, ``wavelength`` (and optionally ``crystals``).
    directory : str or os.PathLike
        Output directory (created if missing).
    overwrite : bool
        Replace existing files; otherwise nothing is written if any target exists.
    stem : str
        File name stem.
    statistics : bool or MergeStatistics
        Also write ``<stem>_stats.csv/.txt/.png`` (computed here with ``n_shells`` shells,
        or the statistics given); off by default.
    n_shells : int
        Resolution shells of the statistics.
    title : str, optional
        Title for the MTZ, ``.ins`` and plot (default: the stem).

    Returns
    -------
    dict of str to Path
        ``merged_mtz``, ``unmerged_mtz`` (when there are observations),
        ``crystfel_hkl``, ``crystfel_hkl1``/``2`` (when there are half-sets),
        ``shelx_hkl``, ``shelx_ins`` and, with ``statistics``, ``stats_csv``,
        ``stats_txt``, ``stats_png``.

    Raises
    ------
    CrystalscopeError
        If a target exists and ``overwrite`` is false.
    DataError
        If the data cannot be written (no reflections, no wavelength, ...).
    """
    sg = resolve_space_group(result.space_group)
    wavelength = float(result.wavelength) if result.wavelength is not None else math.nan
    if not (math.isfinite(wavelength) and wavelength > 0):
        raise DataError(f"a positive wavelength is needed, got {result.wavelength}",
                        field="wavelength")  # fmt: skip
    merged = _finite(result.merged)
    if len(merged) == 0:
        raise DataError("no merged reflections with finite I and sigma", field="I")
    halves = result.half1 is not None and result.half2 is not None
    unmerged = _unmerged_for_mtz(result)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    targets = _targets(out, stem, unmerged is not None, statistics is not False)
    if not halves:
        del targets["crystfel_hkl1"], targets["crystfel_hkl2"]
    for target in targets.values():
        check_writable(target, overwrite=overwrite)
    text = title or stem
    _write_reflections(result, merged, sg, wavelength, unmerged, targets, overwrite, text)
    if statistics is not False:
        stats = (
            statistics
            if isinstance(statistics, MergeStatistics)
            else merge_statistics(
                merged, result.half1, result.half2, result.cell, sg, n_shells=n_shells
            )
        )
        write_statistics_csv(stats, targets["stats_csv"], overwrite=overwrite)
        with atomic_write(targets["stats_txt"], overwrite=overwrite) as fh:
            fh.write(stats.table() + "\n")
        plot_statistics(stats, targets["stats_png"], title=text, overwrite=overwrite)
    return targets


def _write_reflections(
    result: MergedLike,
    merged: pd.DataFrame,
    sg: gemmi.SpaceGroup,
    wavelength: float,
    unmerged: pd.DataFrame | None,
    targets: dict[str, Path],
    overwrite: bool,
    title: str,
) -> None:
    cell = result.cell
    write_mtz(_merged_for_mtz(merged, sg), targets["merged_mtz"], cell, sg, merged=True,
              wavelength=wavelength, labels={"nobs": "nmeas"}, title=title,
              overwrite=overwrite)  # fmt: skip
    if unmerged is not None:
        write_mtz(unmerged, targets["unmerged_mtz"], cell, sg, merged=False,
                  wavelength=wavelength, title=title, overwrite=overwrite)  # fmt: skip
    symmetry = point_group_of_space_group(sg, laue=True)
    notes = f"Written by crystalscope; space group {sg.xhm()}"
    write_hkl(merged, targets["crystfel_hkl"], symmetry=symmetry, notes=notes,
              overwrite=overwrite)  # fmt: skip
    if "crystfel_hkl1" in targets and result.half1 is not None and result.half2 is not None:
        write_hkl_halves(_finite(result.half1), _finite(result.half2), targets["crystfel_hkl"],
                         symmetry=symmetry, overwrite=overwrite)  # fmt: skip
    write_shelx_hkl(merged, targets["shelx_hkl"], overwrite=overwrite)
    write_shelx_ins(targets["shelx_ins"], cell, sg, wavelength, title=title, overwrite=overwrite)
