"""Observation tables from the serial simulator's truth, without rendering frames.

For every crystal of a :class:`~crystalscope.simulate.serial.SerialSimulation` the
"indexed" orientation is the true one turned by a small error rotation (in-plane about
the beam, and two out-of-plane tilts, as an indexer on a flat Ewald sphere gets them
wrong).  All reflections of the simulation's P1 table whose excitation error under the
*indexed* orientation is within the prediction radius are "integrated": their expected
counts are the simulator's (``n_on_crystal * reflection_scale * F2 * p_true(s_true) *
polarisation``, with the true excitation error), times a per-crystal scale ``G`` and
``exp(-B / (2 d^2))``; the summed intensity is ``Poisson(counts + n_peak * bg) - n_peak *
bg_est`` with the background estimated from ``Poisson(n_bg * bg) / n_bg``.  ``qx, qy, qz``,
``excitation_error``, ``d`` and the detector position come from the indexed orientation
(as an integration program would store them).

Used by the merging tests and benchmark, and reusable for end-to-end tests::

    sim = hewl_simulation(2000)
    data = simulate_observations(sim, bad_crystals=(5,))
    result = merge_observations(data.observations, data.cell, data.space_group,
                                wavelength=data.wavelength)
    truth = true_intensities(sim)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import gemmi
import numpy as np
import pandas as pd

from crystalscope.integrate.observations import make_observations
from crystalscope.integrate.partiality import partiality as model_partiality
from crystalscope.model.orientation import rotation_matrix
from crystalscope.model.projection import project_rays
from crystalscope.simulate import kinematics as kin
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation

HEWL = (
    Path(__file__).resolve().parents[2].parent
    / "shared" / "data" / "reciprocalspaceship" / "HEWL_SSAD_24IDC.mtz"
)  # fmt: skip

_BATCH = 64  # crystals whose predictions are pre-selected in one matrix product


@dataclass
class SimulatedObservations:
    """An observation table and the truth behind it."""

    observations: pd.DataFrame
    crystals: pd.DataFrame  # crystal_id, frame, crystal, scale, b_factor, err_*_deg, bad
    cell: gemmi.UnitCell
    space_group: gemmi.SpaceGroup
    wavelength: float
    true_radius: float  # R of the xsphere / gaussian model with the truth's second moment


def hewl_simulation(
    n_crystals: int, *, seed: int = 1, d_min: float = 2.5, thickness_a: float = 1000.0
) -> SerialSimulation:
    """200 kV lysozyme stills from the real HEWL intensities (Gaussian rel-point profile)."""
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": n_crystals,
            "seed": seed,
            "source": {"structure": None, "mtz": str(HEWL), "d_min": d_min},
            "crystal": {"thickness_a": thickness_a, "profile": "gaussian", "mosaicity_deg": 0.0},
        }
    )
    return SerialSimulation.build(cfg)


def true_radius(sim: SerialSimulation) -> float:
    """Profile radius ``R`` whose models match the truth: ``R = sqrt(5) sigma_0``."""
    sigma0 = 1.0 / (sim.config.crystal.thickness_a * np.sqrt(2.0 * np.pi))
    return float(np.sqrt(5.0) * sigma0)


def true_intensities(sim: SerialSimulation, d_min: float | None = None) -> pd.DataFrame:
    """True ``F2`` in gemmi's ASU (mean over the P1 mates): ``h, k, l, F2, d``."""
    table = sim.sf.table
    if d_min is not None:
        table = table[table["d"] >= d_min]
    hkl = table[["h", "k", "l"]].to_numpy(np.int32)
    asu, _ = sim.base.to_asu(hkl)
    frame = pd.DataFrame({"h": asu[:, 0], "k": asu[:, 1], "l": asu[:, 2]})
    frame["F2"] = table["F2"].to_numpy(float)
    frame["d"] = table["d"].to_numpy(float)
    return frame.groupby(["h", "k", "l"], as_index=False).mean()


def _error_rotation(rng: np.random.Generator, tilt: float, inplane: float) -> tuple:
    ex, ey, ez = rng.normal(0.0, tilt), rng.normal(0.0, tilt), rng.normal(0.0, inplane)
    rot = rotation_matrix((0, 0, 1), ez) @ rotation_matrix((0, 1, 0), ey)
    return rot @ rotation_matrix((1, 0, 0), ex), (ex, ey, ez)


def _noisy(
    counts: np.ndarray, rng: np.random.Generator, bg: float, n_peak: int, n_bg: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Summation integration of Poisson counts: ``I``, ``sigma`` and the background."""
    total = rng.poisson(counts + n_peak * bg).astype(float)
    bg_est = rng.poisson(n_bg * bg, size=len(counts)) / n_bg
    intensity = total - n_peak * bg_est
    sigma = np.sqrt(np.maximum(total, 1.0) + n_peak**2 * bg_est / n_bg)
    return intensity, sigma, bg_est


def simulate_observations(
    sim: SerialSimulation,
    *,
    tilt_sigma_deg: float = 0.15,
    inplane_sigma_deg: float = 0.02,
    prediction_radius: float | None = None,
    scale_sigma: float = 0.3,
    b_sigma: float = 4.0,
    background: float = 1.0,
    n_peak: int = 29,
    n_bg: int = 80,
    bad_crystals: tuple[int, ...] = (),
    seed: int = 0,
    noise: bool = True,
) -> SimulatedObservations:
    """Observation table of every crystal in ``sim`` (module docstring).

    Parameters
    ----------
    tilt_sigma_deg, inplane_sigma_deg : float
        RMS indexing error of the tilts about lab x and y, and about the beam (degrees).
    prediction_radius : float, optional
        Reflections with ``|s_indexed|`` up to this (1/A) are integrated and it is stored
        as ``profile_radius``; default twice :func:`true_radius`.
    scale_sigma, b_sigma : float
        Per-crystal ``ln G ~ N(0, scale_sigma)`` and ``B ~ N(0, b_sigma)`` (A^2).
    background : float
        Background counts per pixel; ``n_peak``, ``n_bg`` pixels in peak and annulus.
    bad_crystals : tuple of int
        ``crystal_id`` values whose intensities are shuffled among their reflections.
    noise : bool
        Without noise ``I`` is the expected counts (no background) and ``sigma`` 1.

    The returned ``crystals`` table has the truth (``scale``, ``b_factor``, the error
    rotation ``err_x_deg, err_y_deg, err_z_deg`` applied to the true orientation, ``bad``)
    and the indexed orientation as ``astar_x ... cstar_z`` (columns of ``UB``, 1/A) with
    the stored ``profile_radius``, as in a crystals table.
    """
    rng = np.random.default_rng(seed)
    radius = 2.0 * true_radius(sim) if prediction_radius is None else prediction_radius
    n = len(sim.crystals)
    truth = pd.DataFrame(
        {
            "crystal_id": sim.crystals["crystal_id"].to_numpy(np.int64),
            "frame": sim.crystals["frame"].to_numpy(np.int64),
            "crystal": sim.crystals["crystal"].to_numpy(np.int64),
            "scale": np.exp(rng.normal(0.0, scale_sigma, n)),
            "b_factor": rng.normal(0.0, b_sigma, n),
            "bad": sim.crystals["crystal_id"].isin(bad_crystals).to_numpy(),
        }
    )
    errors = [_error_rotation(rng, tilt_sigma_deg, inplane_sigma_deg) for _ in range(n)]
    for i, name in enumerate(("err_x_deg", "err_y_deg", "err_z_deg")):
        truth[name] = [e[1][i] for e in errors]
    u_true = sim.crystals[[f"u{i}{j}" for i in range(3) for j in range(3)]].to_numpy(float)
    u_true = u_true.reshape(-1, 3, 3)
    u_idx = np.stack([e[0] for e in errors]) @ u_true
    table = _Table.of(sim)
    ub = u_idx @ table.b
    for i, v in enumerate("abc"):
        for j, e in enumerate("xyz"):
            truth[f"{v}star_{e}"] = ub[:, j, i]
    truth["profile_radius"] = radius
    shot_shift = sim.shots.set_index("frame")[["shift_x_mm", "shift_y_mm"]]
    shifts = [tuple(v) for v in shot_shift.loc[truth["frame"]].to_numpy(float)]
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n, _BATCH):
        batch = range(start, min(n, start + _BATCH))
        candidates = _preselect(table, u_idx[batch.start : batch.stop], radius)
        for c, rows in zip(batch, candidates, strict=True):
            part = _crystal_observations(
                sim, table, truth.iloc[c], u_true[c], u_idx[c], rows, radius, shifts[c]
            )
            if part is not None:
                parts.append(part)
    obs = pd.DataFrame({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
    counts = obs.pop("counts").to_numpy()
    if noise:
        intensity, sigma, bg = _noisy(counts, rng, background, n_peak, n_bg)
    else:
        intensity, sigma, bg = counts, np.ones(len(counts)), np.zeros(len(counts))
    obs["I"], obs["sigma"], obs["background"] = intensity, sigma, bg
    _shuffle_bad(obs, truth, rng)
    obs["bg_sigma"] = np.sqrt(background)
    obs["n_peak"], obs["n_bg"], obs["flags"] = n_peak, n_bg, 0
    obs["peak"] = obs["I"] / n_peak * 4.0 + obs["background"]
    return SimulatedObservations(
        observations=make_observations(obs.to_dict("series")),
        crystals=truth,
        cell=sim.sf.cell,
        space_group=sim.sf.space_group,
        wavelength=float(sim.beam.wavelength),
        true_radius=true_radius(sim),
    )


@dataclass
class _Table:
    """The simulation's P1 reflections as arrays."""

    hkl: np.ndarray  # (N, 3) float
    f2: np.ndarray
    q2: np.ndarray  # |B h|^2
    b: np.ndarray  # B matrix
    k: float

    @classmethod
    def of(cls, sim: SerialSimulation) -> _Table:
        hkl = sim.sf.table[["h", "k", "l"]].to_numpy(float)
        b = np.asarray(sim.base.B)
        qc = hkl @ b.T
        q2 = np.einsum("ij,ij->i", qc, qc)
        return cls(hkl, sim.sf.table["F2"].to_numpy(float), q2, b, 1.0 / sim.beam.wavelength)


def _excitation(q: np.ndarray, k: float) -> np.ndarray:
    """``s = k - |q + k0|`` (cancellation-free)."""
    a = np.einsum("ij,ij->i", q, q) + 2.0 * k * q[:, 2]
    return -a / (k + np.sqrt(k * k + a))


def _preselect(table: _Table, u_idx: np.ndarray, radius: float) -> list[np.ndarray]:
    """Candidate rows (a superset of ``|s_indexed| <= radius``) per crystal of a batch.

    ``|s| = |A| / (k + |q + k0|) >= |A| / (2k + q_max)`` with ``A = |q|^2 + 2 k q_z``.
    """
    k = table.k
    cut = radius * (2.0 * k + np.sqrt(table.q2.max())) * (1.0 + 1e-9)
    z_rows = np.stack([(u @ table.b)[2] for u in u_idx])  # (batch, 3)
    a = (2.0 * k * z_rows) @ table.hkl.T
    a += table.q2
    near = np.abs(a) <= cut
    return [np.flatnonzero(row) for row in near]


def _crystal_observations(
    sim: SerialSimulation,
    table: _Table,
    truth: pd.Series,
    u_true: np.ndarray,
    u_idx: np.ndarray,
    rows: np.ndarray,
    radius: float,
    shift: tuple[float, float],
) -> dict[str, np.ndarray] | None:
    """Predicted observations of one crystal with their expected counts (no noise)."""
    hkl = table.hkl[rows]
    q = hkl @ (u_idx @ table.b).T
    s_idx = _excitation(q, table.k)
    keep = np.abs(s_idx) <= radius
    rows, hkl, q, s_idx = rows[keep], hkl[keep], q[keep], s_idx[keep]
    lam = sim.beam.wavelength
    dirs = q * lam
    dirs[:, 2] += 1.0
    frame = int(truth["frame"])
    panel, fs, ss = project_rays(dirs, sim.detector, shift, sim.distortion)
    on = panel >= 0
    if not np.any(on):
        return None
    rows, hkl, q, s_idx, dirs, panel = rows[on], hkl[on], q[on], s_idx[on], dirs[on], panel[on]
    fs_raw, ss_raw = sim.detector.panel_to_raw(panel, fs[on], ss[on])
    q_true = hkl @ (u_true @ table.b).T
    s_true = _excitation(q_true, table.k)
    d = 1.0 / np.sqrt(table.q2[rows])
    p_true = kin.partiality(s_true, 1.0 / d, sim.config.crystal, sim.config.beam_effects)
    two_theta = np.arctan2(np.hypot(dirs[:, 0], dirs[:, 1]), dirs[:, 2])
    counts = sim.n_on_crystal * kin.reflection_scale(sim.beam, sim.sf, sim.config.crystal)
    counts = counts * table.f2[rows] * p_true
    counts *= kin.polarisation_factor(two_theta, sim.beam.radiation)
    counts *= truth["scale"] * np.exp(-truth["b_factor"] / (2.0 * d**2))
    n = len(rows)
    ints = hkl.astype(np.int32)
    return {
        "h": ints[:, 0], "k": ints[:, 1], "l": ints[:, 2], "frame": np.full(n, frame),
        "crystal": np.full(n, int(truth["crystal"])),
        "crystal_id": np.full(n, int(truth["crystal_id"])),
        "panel": panel, "fs": fs_raw, "ss": ss_raw, "d": d,
        "qx": q[:, 0], "qy": q[:, 1], "qz": q[:, 2], "excitation_error": s_idx,
        "profile_radius": np.full(n, radius), "partiality": model_partiality(s_idx, radius),
        "counts": counts,
    }  # fmt: skip


def _shuffle_bad(obs: pd.DataFrame, truth: pd.DataFrame, rng: np.random.Generator) -> None:
    """Give the bad crystals random intensities: their own values, shuffled."""
    for cid in truth.loc[truth["bad"], "crystal_id"]:
        rows = np.flatnonzero(obs["crystal_id"].to_numpy() == cid)
        perm = rng.permutation(rows)
        obs.loc[obs.index[rows], ["I", "sigma"]] = obs.loc[
            obs.index[perm], ["I", "sigma"]
        ].to_numpy()
