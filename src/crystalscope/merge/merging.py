"""Scaling, post-refinement and merging of still observations into unique intensities.

:func:`merge_observations` takes an observation table (one row per integrated
reflection observation, :mod:`crystalscope.integrate.observations`) and returns merged
intensities in the asymmetric unit, two half-sets and per-crystal parameters.

Procedure (``docs/algorithms/merging.md``)
------------------------------------------
1. Observations flagged with ``exclude_flags``, non-finite ones, systematic absences and
   those outside ``d_min .. d_max`` are dropped.  Indices are mapped to gemmi's
   reciprocal ASU (Friedel mates merged); ``isym`` is kept as in MTZ ``M/ISYM``.
2. Each cycle (``n_cycles``): a reference is merged from all kept crystals with the
   current parameters; every crystal's ``G``, ``B``, tilts and ``R`` are refined against
   the reference built from the *other* crystals (:mod:`crystalscope.merge.scaling`);
   the overall ``ln G`` and ``B`` are fixed to mean 0; crystals are rejected by
   delta-CC1/2.
3. The final merge uses every kept crystal's observations with model partiality
   ``p >= min_partiality``.  With ``f_j = G e^{-B/2d^2} p_j`` the full intensity is the
   least-squares solution of ``I_j = f_j I_h`` (CrystFEL partialator's estimator),

   .. math::

       I_h = \\frac{\\sum_j f_j I_j}{\\sum_j f_j^2}
           = \\frac{\\sum_j w_j x_j}{\\sum_j w_j},\\qquad x_j = I_j / f_j,\\ w_j = f_j^2 ,

   and its standard error comes from the spread of the ``x_j``:
   ``sigma_h^2 = s_w^2 / n_eff`` with the weighted variance
   ``s_w^2 = n/(n-1) (sum w x^2 / sum w - I_h^2)`` and ``n_eff = (sum w)^2 / sum w^2``.
   A reflection seen once gets the propagated ``sigma_j / f_j``.
4. Half-sets: the kept crystals in ``crystal_id`` order, even ranks in ``half1``, odd
   ranks in ``half2``, merged in the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.merge import _kernels as kern
from crystalscope.merge._params import MergeParams
from crystalscope.merge._prepare import Prepared, check_wavelength_value, prepare
from crystalscope.merge.scaling import (
    CrystalState,
    accumulate,
    correlation_rejection,
    crystal_correlations,
    delta_cc_rejection,
    fit_crystals,
    initial_state,
    normalise,
    observation_model,
    reference_intensities,
)
from crystalscope.model.crystal import SpaceGroupLike, make_cell, resolve_space_group

__all__ = ["MERGED_COLUMNS", "MergeParams", "MergeResult", "merge_observations", "merge_unity"]

#: Columns and dtypes of :attr:`MergeResult.merged` and the half-sets.
MERGED_COLUMNS: dict[str, str] = {
    "h": "int32",
    "k": "int32",
    "l": "int32",
    "I": "float64",
    "sigma": "float64",
    "nobs": "int32",
    "d": "float64",
}

#: Columns of :attr:`MergeResult.crystals`.
CRYSTAL_COLUMNS = (
    "crystal_id", "frame", "crystal", "scale", "b_factor", "profile_radius", "tilt_x_deg",
    "tilt_y_deg", "n_obs", "cc_ref", "delta_cc_half", "rejected", "reason",
)  # fmt: skip


@dataclass
class MergeResult:
    """Merged intensities, half-sets, per-crystal parameters and the observations used.

    Attributes
    ----------
    merged : pandas.DataFrame
        :data:`MERGED_COLUMNS`: ASU ``h, k, l`` (gemmi), ``I``, ``sigma``, ``nobs``,
        ``d`` (A); sorted by ``h, k, l``.
    half1, half2 : pandas.DataFrame
        The same from the kept crystals of even / odd rank in ``crystal_id`` order.
    crystals : pandas.DataFrame
        One row per ``crystal_id`` of the input (:data:`CRYSTAL_COLUMNS`): ``scale`` (G),
        ``b_factor`` (A^2), ``profile_radius`` (1/A), ``tilt_x_deg``, ``tilt_y_deg``,
        ``n_obs`` (usable observations), ``cc_ref`` (CC of observed and modelled
        intensities), ``delta_cc_half``, ``rejected`` and ``reason``.
    observations : pandas.DataFrame
        The input rows merged (input order), with ``h_asu, k_asu, l_asu``, ``isym``,
        ``partiality_model`` (refined), ``I_full = I / (G e^{-B/2d^2} p)`` and
        ``sigma_full``.
    """

    merged: pd.DataFrame
    half1: pd.DataFrame
    half2: pd.DataFrame
    crystals: pd.DataFrame
    observations: pd.DataFrame
    cell: gemmi.UnitCell
    space_group: gemmi.SpaceGroup
    wavelength: float
    params: MergeParams
    log: list[str] = field(default_factory=list)


def _merge_mask(
    prep: Prepared, state: CrystalState, p: np.ndarray, g: np.ndarray, params: MergeParams
) -> np.ndarray:
    """Observations merged: of kept crystals, with a partiality ``p`` and a model fraction
    ``p exp(-B/2d^2)`` of the full intensity (partiality times the crystal's relative B
    attenuation) of at least ``min_partiality``.  A crystal fitted with a large B
    otherwise contributes its high-resolution observations divided by a factor near 0: a
    reflection seen once merges to an intensity of 1e7."""
    kept = ~state.rejected[prep.obs_crystal]
    scale = np.exp(state.x[prep.obs_crystal, kern.LN_G])
    fraction = p * np.where(np.isfinite(g), g, 0.0) / scale
    enough = (p >= params.min_partiality) & (fraction >= params.min_partiality)
    return kept & enough & (p > 0) & np.isfinite(g) & (g > 0)


def merged_table(asu: np.ndarray, d: np.ndarray, sums: np.ndarray) -> pd.DataFrame:
    """The merged table (:data:`MERGED_COLUMNS`) from :func:`~.scaling.accumulate` sums."""
    n = sums[:, 4]
    have = n > 0
    s0, s1, s2, s3, s5 = (sums[have, i] for i in (0, 1, 2, 3, 5))
    n = n[have]
    mean = s1 / s0
    several = n >= 2
    factor = np.where(several, n / np.maximum(n - 1, 1), 0.0)
    spread = np.maximum(s2 / s0 - mean * mean, 0.0) * factor
    sigma = np.where(several, np.sqrt(spread * s3 / (s0 * s0)), np.sqrt(s5) / s0)
    columns = {
        "h": asu[have, 0], "k": asu[have, 1], "l": asu[have, 2], "I": mean, "sigma": sigma,
        "nobs": n, "d": d[have],
    }  # fmt: skip
    return pd.DataFrame({c: np.asarray(columns[c], dtype=t) for c, t in MERGED_COLUMNS.items()})


def _half_sets(
    prep: Prepared, state: CrystalState, factor: np.ndarray, mask: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    rank = np.cumsum(~state.rejected) - 1  # crystal_ids are ascending
    even = (rank % 2 == 0)[prep.obs_crystal]
    out = []
    for part in (mask & even, mask & ~even):
        sums = accumulate(prep.hkl_index, prep.n_hkl, prep.intensity, prep.sigma, factor, part)
        out.append(merged_table(prep.asu, prep.d_hkl, sums))
    return out[0], out[1]


def _half_cc(half1: pd.DataFrame, half2: pd.DataFrame) -> float:
    both = half1.merge(half2, on=["h", "k", "l"])
    if len(both) < 3:
        return float("nan")
    return float(np.corrcoef(both["I_x"], both["I_y"])[0, 1])


def _crystal_table(prep: Prepared, state: CrystalState, params: MergeParams) -> pd.DataFrame:
    x = state.x
    radius = np.exp(x[:, kern.LN_R]) if params.partiality != "unity" else state.r0
    return pd.DataFrame(
        {
            "crystal_id": prep.crystal_ids.astype(np.int64),
            "frame": prep.frames.astype(np.int64),
            "crystal": prep.crystal_numbers.astype(np.int64),
            "scale": np.exp(x[:, kern.LN_G]),
            "b_factor": x[:, kern.B],
            "profile_radius": radius,
            "tilt_x_deg": np.degrees(x[:, kern.TILT_X]),
            "tilt_y_deg": np.degrees(x[:, kern.TILT_Y]),
            "n_obs": state.n_obs.astype(np.int64),
            "cc_ref": state.cc_ref,
            "delta_cc_half": state.delta_cc,
            "rejected": state.rejected.copy(),
            "reason": state.reason.astype(str),
        }
    )


def _observation_table(
    observations: pd.DataFrame, prep: Prepared, p: np.ndarray, g: np.ndarray, mask: np.ndarray
) -> pd.DataFrame:
    order = np.argsort(prep.rows[mask], kind="stable")
    rows = prep.rows[mask][order]
    f = (g * p)[mask][order]
    hkl = prep.asu[prep.hkl_index[mask][order]]
    out = observations.iloc[rows].reset_index(drop=True)
    out["h_asu"] = hkl[:, 0].astype(np.int32)
    out["k_asu"] = hkl[:, 1].astype(np.int32)
    out["l_asu"] = hkl[:, 2].astype(np.int32)
    out["isym"] = prep.isym[mask][order].astype(np.int32)
    out["partiality_model"] = p[mask][order]
    out["I_full"] = prep.intensity[mask][order] / f
    out["sigma_full"] = prep.sigma[mask][order] / f
    return out


def _cycle(
    prep: Prepared, state: CrystalState, params: MergeParams, wavelength: float, cycle: int
) -> str:
    """One scaling / post-refinement / rejection cycle; returns its log line."""
    _, p, g = observation_model(prep, state, params, wavelength)
    mask = _merge_mask(prep, state, p, g, params)
    ref, usable, _ = reference_intensities(prep, g * p, mask)
    n_before = int(np.count_nonzero(state.rejected))
    fit_crystals(prep, state, ref, usable, params, wavelength, grid=cycle == 1)
    normalise(state)
    _, p, g = observation_model(prep, state, params, wavelength)
    state.cc_ref = crystal_correlations(prep, prep.intensity, g * p * ref, usable)
    correlation_rejection(prep, state, usable, params)
    mask = _merge_mask(prep, state, p, g, params)
    cc, _ = delta_cc_rejection(prep, state, g * p, mask, params)
    kept = ~state.rejected
    n_new = int(np.count_nonzero(state.rejected)) - n_before
    tilt = np.degrees(np.hypot(state.x[kept, kern.TILT_X], state.x[kept, kern.TILT_Y]))
    return (
        f"cycle {cycle}: CC1/2 (sigma-tau) {cc:.4f}; {int(np.count_nonzero(kept))} crystals "
        f"kept, {n_new} rejected; median CC(obs, model) {_median(state.cc_ref[kept]):.3f}; "
        f"median tilt {_median(tilt):.3f} deg; median R "
        f"{_median(np.exp(state.x[kept, kern.LN_R])):.3g} 1/A; "
        f"{int(np.count_nonzero(mask))} observations merged"
    )


def _screen(prep: Prepared, state: CrystalState, params: MergeParams, wavelength: float) -> str:
    """Before any fit: reject crystals that do not correlate with the others (false
    lattices), so that they never enter a reference."""
    _, p, g = observation_model(prep, state, params, wavelength)
    mask = _merge_mask(prep, state, p, g, params)
    ref, usable, _ = reference_intensities(prep, g * p, mask)
    state.cc_ref = crystal_correlations(prep, prep.intensity, g * p * ref, usable)
    n = correlation_rejection(prep, state, usable, params)
    kept = ~state.rejected
    return (
        f"screening: median CC with the other crystals {_median(state.cc_ref[kept]):.3f}; "
        f"{n} crystals without correlation rejected"
    )


def _median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if len(values) else float("nan")


def merge_observations(
    observations: pd.DataFrame,
    cell: gemmi.UnitCell,
    space_group: SpaceGroupLike,
    params: MergeParams = MergeParams(),  # noqa: B008 - frozen dataclass
    *,
    wavelength: float,
    progress: Callable[[str], None] | None = None,
) -> MergeResult:
    """Scale, post-refine and merge observations (module docstring).

    Parameters
    ----------
    observations : pandas.DataFrame
        Observation table; reads ``h, k, l, I, sigma, frame, crystal, crystal_id, qx, qy,
        qz, excitation_error, profile_radius, flags``.
    cell : gemmi.UnitCell
        Cell of the merged data (A, degrees): resolution of each reflection.
    space_group : gemmi.SpaceGroup or str or int
        Space group whose point group (with Friedel's law) defines the ASU.
    params : MergeParams
    wavelength : float
        A; must be the one the excitation errors were computed with.
    progress : callable, optional
        Receives each log line as it is produced.

    Returns
    -------
    MergeResult

    Raises
    ------
    DataError
        Missing columns, an invalid cell or wavelength, excitation errors inconsistent
        with ``wavelength``, or no crystal left to merge.
    """
    if not isinstance(cell, gemmi.UnitCell):
        raise DataError(f"cell must be a gemmi.UnitCell, got {type(cell).__name__}", field="cell")
    cell = make_cell(*cell.parameters)
    sg = resolve_space_group(space_group)
    lam = check_wavelength_value(wavelength)
    log: list[str] = []

    def say(line: str) -> None:
        log.append(line)
        if progress is not None:
            progress(line)

    prep = prepare(observations, cell, sg, params, lam)
    dropped = ", ".join(f"{v} {k}" for k, v in prep.n_dropped.items() if v)
    say(
        f"{len(prep.rows)} of {len(observations)} observations usable"
        f"{f' (dropped: {dropped})' if dropped else ''}; {prep.n_crystals} crystals, "
        f"{prep.n_hkl} unique reflections; model {params.partiality}"
    )
    state = initial_state(prep, params)
    if params.min_cc_z is not None:
        say(_screen(prep, state, params, lam))
    for cycle in range(1, params.n_cycles + 1):
        say(_cycle(prep, state, params, lam, cycle))
    if np.all(state.rejected):
        raise DataError("no crystal is left to merge (all were rejected)", field="crystal_id")
    return _finish(observations, prep, state, params, cell, sg, lam, say, log)


def _finish(
    observations: pd.DataFrame, prep: Prepared, state: CrystalState, params: MergeParams,
    cell: gemmi.UnitCell, sg: gemmi.SpaceGroup, lam: float, say: Callable[[str], None],
    log: list[str],
) -> MergeResult:  # fmt: skip
    _, p, g = observation_model(prep, state, params, lam)
    mask = _merge_mask(prep, state, p, g, params)
    sums = accumulate(prep.hkl_index, prep.n_hkl, prep.intensity, prep.sigma, g * p, mask)
    merged = merged_table(prep.asu, prep.d_hkl, sums)
    half1, half2 = _half_sets(prep, state, g * p, mask)
    say(
        f"merged {int(np.count_nonzero(mask))} observations of "
        f"{int(np.count_nonzero(~state.rejected))} crystals into {len(merged)} reflections; "
        f"CC1/2 (half-sets) {_half_cc(half1, half2):.4f}"
    )
    return MergeResult(
        merged=merged,
        half1=half1,
        half2=half2,
        crystals=_crystal_table(prep, state, params),
        observations=_observation_table(observations, prep, p, g, mask),
        cell=cell,
        space_group=sg,
        wavelength=lam,
        params=params,
        log=log,
    )


def merge_unity(
    observations: pd.DataFrame,
    cell: gemmi.UnitCell,
    space_group: SpaceGroupLike,
    params: MergeParams = MergeParams(),  # noqa: B008 - frozen dataclass
    *,
    wavelength: float,
    progress: Callable[[str], None] | None = None,
) -> MergeResult:
    """Plain (Monte-Carlo) averaging: :func:`merge_observations` with ``partiality="unity"``."""
    unity = dataclasses.replace(params, partiality="unity", post_refine=False)
    return merge_observations(
        observations, cell, space_group, unity, wavelength=wavelength, progress=progress
    )
