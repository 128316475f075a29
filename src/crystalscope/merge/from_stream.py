"""Observation tables from CrystFEL streams, so that ``crystalscope merge`` takes them.

A stream written by ``indexamajig`` (or by ``crystalscope serial integrate``) holds, per
crystal, the reciprocal basis ``a*, b*, c*`` in the lab frame, the profile radius and the
integrated reflections.  Each reflection becomes one observation with

* ``q = UB h`` (1/A) and the excitation error ``s = 1/lambda - |q + k0|`` at the chunk's
  wavelength (``k0 = (0, 0, 1/lambda)``), so the partiality models and the
  post-refinement of :mod:`crystalscope.merge.merging` work as on our own files;
* ``d = 1/|q|``, the crystal's ``profile_radius``, the chunk number as ``frame`` and the
  stream's global crystal number as ``crystal_id``;
* the partiality estimate of the ``xsphere`` model and no flags (CrystFEL drops what it
  could not integrate).

CrystFEL's lab frame (+z along the beam, +y up) is the NeXus/McStas frame used here, and
the stream reader has already converted nm^-1 to 1/A.
"""

from __future__ import annotations

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.index.assign import ub_matrices
from crystalscope.integrate.observations import OBSERVATION_COLUMNS
from crystalscope.integrate.partiality import partiality
from crystalscope.io.crystfel_cell import parse_cell
from crystalscope.io.crystfel_stream import Stream
from crystalscope.io.observations import ObservationFile
from crystalscope.model.crystal import SpaceGroupLike, resolve_space_group

__all__ = ["observations_from_stream"]

_DEFAULT_RADIUS = 0.005  # 1/A, used where a crystal has no profile radius


def _stream_cell(stream: Stream, crystals: pd.DataFrame) -> gemmi.UnitCell:
    if stream.cell_text:
        cell_file = parse_cell(stream.cell_text, path=stream.path)
        if cell_file.has_parameters:
            return cell_file.cell
    median = crystals[["a", "b", "c", "alpha", "beta", "gamma"]].median()
    return gemmi.UnitCell(*median.to_numpy(float))


def _wavelengths(stream: Stream, chunk: np.ndarray) -> np.ndarray:
    lookup = stream.chunks.set_index("chunk")["wavelength_A"]
    values = lookup.reindex(chunk).to_numpy(float)
    if not np.all(np.isfinite(values) & (values > 0)):
        raise DataError(
            "a chunk with integrated reflections has no wavelength",
            path=stream.path, field="wavelength",
        )  # fmt: skip
    return values


def observations_from_stream(
    stream: Stream, space_group: SpaceGroupLike, *, cell: gemmi.UnitCell | None = None
) -> ObservationFile:
    """The integrated reflections of ``stream`` as an observation table (module doc).

    Parameters
    ----------
    stream : Stream
        From :func:`crystalscope.io.crystfel_stream.read_stream`.
    space_group : str or int or gemmi.SpaceGroup
        Streams carry a lattice, not a space group: give the one to merge in.
    cell : gemmi.UnitCell, optional
        Default: the stream's target cell, else the median of the crystals' cells.

    Raises
    ------
    DataError
        If the stream has no integrated reflections or a chunk lacks its wavelength.
    """
    refl = stream.reflections
    if refl is None or len(refl) == 0:
        raise DataError(
            "the stream has no integrated reflections (run indexamajig with integration)",
            path=stream.path, field="reflections",
        )  # fmt: skip
    crystals = stream.crystals.set_index("crystal")
    rows = crystals.loc[refl["crystal"].to_numpy()]
    ub = ub_matrices(rows.reset_index())
    hkl = refl[["h", "k", "l"]].to_numpy(float)
    q = np.einsum("nij,nj->ni", ub, hkl)
    wavelength = _wavelengths(stream, rows["chunk"].to_numpy())
    k = 1.0 / wavelength
    s = k - np.sqrt(q[:, 0] ** 2 + q[:, 1] ** 2 + (q[:, 2] + k) ** 2)
    radius = rows["profile_radius"].to_numpy(float)
    radius = np.where(np.isfinite(radius) & (radius > 0), radius, _DEFAULT_RADIUS)
    panels = {name: i for i, name in enumerate(pd.unique(refl["panel"].astype(str)))}
    table = pd.DataFrame(
        {
            "h": refl["h"], "k": refl["k"], "l": refl["l"], "I": refl["I"],
            "sigma": refl["sigma"], "frame": rows["chunk"].to_numpy(),
            "crystal": refl["crystal"].to_numpy(), "crystal_id": refl["crystal"].to_numpy(),
            "panel": refl["panel"].astype(str).map(panels).to_numpy(),
            "fs": refl["fs"], "ss": refl["ss"], "d": 1.0 / np.linalg.norm(q, axis=1),
            "qx": q[:, 0], "qy": q[:, 1], "qz": q[:, 2], "excitation_error": s,
            "profile_radius": radius, "partiality": partiality(s, radius, "xsphere"),
            "background": refl["background"], "bg_sigma": np.nan, "n_peak": 0, "n_bg": 0,
            "peak": refl["peak"], "flags": 0,
        }
    )  # fmt: skip
    table = table.astype({c: t for c, t in OBSERVATION_COLUMNS.items() if c in table})
    return ObservationFile(
        table.reset_index(drop=True),
        cell if cell is not None else _stream_cell(stream, stream.crystals),
        resolve_space_group(space_group),
        float(np.median(wavelength)),
        {"source": str(stream.path) if stream.path else "stream", "panels": list(panels)},
    )
