"""Scaling and post-refinement kernels (crystalscope.merge.scaling, merge._kernels).

Unit checks against hand-computed and finite-difference values, the delta-CC1/2 update
against a brute-force recomputation, and recovery of known per-crystal parameters from
observations made with the model itself.
"""

from __future__ import annotations

import math

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import ConfigError
from crystalscope.integrate.observations import make_observations
from crystalscope.integrate.partiality import partiality
from crystalscope.merge import _kernels as kern
from crystalscope.merge.merging import MergeParams, merge_observations
from crystalscope.model.crystal import Crystal
from crystalscope.model.orientation import random_rotations, rotation_matrix

WAVELENGTH = 0.02508
K = 1.0 / WAVELENGTH
R = 1.2e-3
CELL = gemmi.UnitCell(79.1, 79.1, 37.9, 90, 90, 90)
SG = "P 43 21 2"


# ------------------------------------------------------------------------ kernels


@pytest.mark.parametrize(
    ("model", "bandwidth"),
    [("unity", 0.0), ("xsphere", 0.0), ("xsphere", 3e-4), ("gaussian", 0.0)],
)
def test_kernel_partiality_matches_the_library_and_its_derivatives(
    model: str, bandwidth: float
) -> None:
    s = np.linspace(-1.3 * R, 1.3 * R, 52)  # avoids the kinks of xsphere at +-R
    code = kern.MODEL_CODES[model]
    got = np.array([kern.partiality_derivatives(x, R, code, bandwidth) for x in s])
    np.testing.assert_allclose(got[:, 0], partiality(s, R, model, bandwidth=bandwidth), atol=1e-12)
    h = 1e-9
    for x, (_, dp_ds, dp_dlnr) in zip(s, got, strict=True):
        num_s = (
            kern.partiality_derivatives(x + h, R, code, bandwidth)[0]
            - kern.partiality_derivatives(x - h, R, code, bandwidth)[0]
        ) / (2 * h)
        e = 1e-7
        num_r = (
            kern.partiality_derivatives(x, R * math.exp(e), code, bandwidth)[0]
            - kern.partiality_derivatives(x, R * math.exp(-e), code, bandwidth)[0]
        ) / (2 * e)
        assert dp_ds == pytest.approx(num_s, rel=1e-4, abs=1e-3 / R * 1e-3), (model, x)
        assert dp_dlnr == pytest.approx(num_r, rel=1e-4, abs=1e-6), (model, x)


def test_tilted_excitation_error_is_the_rotated_vector_and_its_derivatives() -> None:
    rng = np.random.default_rng(3)
    q = rng.normal(0.0, 0.2, size=(20, 3))
    q[:, 2] = -0.5 * np.einsum("ij,ij->i", q[:, :2], q[:, :2]) / K  # near the sphere
    alpha, beta = math.radians(0.3), math.radians(-0.2)
    rot = np.array([math.cos(alpha), math.sin(alpha), math.cos(beta), math.sin(beta)])
    turned = q @ (rotation_matrix((0, 1, 0), -0.2) @ rotation_matrix((1, 0, 0), 0.3)).T
    expected = K - np.linalg.norm(turned + np.array([0.0, 0.0, K]), axis=1)
    e = 1e-7

    def s_at(j: int, a: float, b: float) -> float:
        turn = np.array([math.cos(a), math.sin(a), math.cos(b), math.sin(b)])
        return float(kern._tilted(q[j, 0], q[j, 1], q[j, 2], float(q[j] @ q[j]), K, turn)[0])

    for j in range(len(q)):
        s, ds_da, ds_db = kern._tilted(q[j, 0], q[j, 1], q[j, 2], float(q[j] @ q[j]), K, rot)
        assert s == pytest.approx(expected[j], abs=1e-12)
        num_a = (s_at(j, alpha + e, beta) - s_at(j, alpha - e, beta)) / (2 * e)
        num_b = (s_at(j, alpha, beta + e) - s_at(j, alpha, beta - e)) / (2 * e)
        assert ds_da == pytest.approx(num_a, rel=1e-5, abs=1e-9)
        assert ds_db == pytest.approx(num_b, rel=1e-5, abs=1e-9)
        # flat Ewald sphere: ds ~ beta qx - alpha qy per radian
        assert ds_da == pytest.approx(-q[j, 1], rel=0.05, abs=5e-3)
        assert ds_db == pytest.approx(q[j, 0], rel=0.05, abs=5e-3)


def _sigma_tau(x: np.ndarray, w: np.ndarray, hkl: np.ndarray) -> float:
    """CC1/2 by the sigma-tau formula, written out in numpy (reflections with n >= 2)."""
    ys, vs = [], []
    for h in np.unique(hkl):
        sel = hkl == h
        n = sel.sum()
        if n < 2:
            continue
        ww, xx = w[sel], x[sel]
        y = np.sum(ww * xx) / np.sum(ww)
        var = (np.sum(ww * xx**2) / np.sum(ww) - y**2) * n / (n - 1)
        ys.append(y)
        vs.append(2 * var * np.sum(ww**2) / np.sum(ww) ** 2)
    var_y, var_e = np.var(ys), np.mean(vs)
    return float((var_y - var_e / 2) / (var_y + var_e / 2))


def test_delta_cc_half_equals_brute_force_leave_one_out() -> None:
    rng = np.random.default_rng(5)
    n_cr, n_h = 12, 40
    truth = rng.exponential(100.0, n_h)
    crystal, hkl, x, w = [], [], [], []
    for c in range(n_cr):
        seen = rng.choice(n_h, size=25, replace=False)
        seen = np.sort(np.concatenate([seen, seen[:2]]))  # a reflection twice in a crystal
        noise = 40.0 if c == 7 else 10.0
        crystal += [c] * len(seen)
        hkl += list(seen)
        x += list(truth[seen] + rng.normal(0, noise, len(seen)))
        w += list(rng.uniform(0.3, 1.0, len(seen)))
    crystal_a, hkl_a, x_a, w_a = (np.array(v) for v in (crystal, hkl, x, w))
    sums = np.zeros((n_h, 5))
    np.add.at(
        sums, hkl_a, np.column_stack([w_a, w_a * x_a, w_a * x_a**2, w_a**2, np.ones_like(x_a)])
    )
    key = crystal_a * n_h + hkl_a
    runs, run_id = np.unique(key, return_inverse=True)
    run_sums = np.zeros((len(runs), 5))
    np.add.at(
        run_sums, run_id, np.column_stack([w_a, w_a * x_a, w_a * x_a**2, w_a**2, np.ones_like(x_a)])
    )
    crystal_runs = np.searchsorted(runs // n_h, np.arange(n_cr + 1))
    cc_all, delta = kern.delta_cc_half(sums, runs % n_h, run_sums, crystal_runs)
    assert cc_all == pytest.approx(_sigma_tau(x_a, w_a, hkl_a), abs=1e-12)
    for c in range(n_cr):
        keep = crystal_a != c
        expected = cc_all - _sigma_tau(x_a[keep], w_a[keep], hkl_a[keep])
        assert delta[c] == pytest.approx(expected, abs=1e-12), c
    assert np.argmin(delta) == 7, f"the noisy crystal should harm CC1/2 most: {delta}"


# ------------------------------------------------------- recovery from model data


def _exact_observations(
    model: str, n_crystals: int = 120, seed: int = 2, d_min: float = 3.0
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Noise-free observations made with the merging model itself.

    Each crystal's indexed orientation is the true one turned by ``Rx(-alpha) Ry(-beta)``
    so that the model's correction ``Ry(beta) Rx(alpha)`` undoes it exactly.
    """
    rng = np.random.default_rng(seed)
    base = Crystal(CELL, SG)
    refl = base.enumerate_reflections(d_min, unique=False)
    hkl = refl[["h", "k", "l"]].to_numpy()
    truth_i = pd.DataFrame(refl[["h_asu", "k_asu", "l_asu"]].drop_duplicates())
    truth_i["I_true"] = rng.exponential(1000.0, len(truth_i)) + 50.0
    lookup = refl.merge(truth_i, on=["h_asu", "k_asu", "l_asu"], how="left")["I_true"].to_numpy()
    params = pd.DataFrame(
        {
            "crystal_id": np.arange(n_crystals),
            "scale": np.exp(rng.normal(0, 0.3, n_crystals)),
            "b_factor": rng.normal(0, 5.0, n_crystals),
            "tilt_x": np.clip(rng.normal(0, 0.15, n_crystals), -0.4, 0.4),  # degrees
            "tilt_y": np.clip(rng.normal(0, 0.15, n_crystals), -0.4, 0.4),
            "radius": R * rng.uniform(0.8, 1.2, n_crystals),
        }
    )
    rows = []
    for c, u in enumerate(random_rotations(n_crystals, rng)):
        t = params.iloc[c]
        error = rotation_matrix((1, 0, 0), -t.tilt_x) @ rotation_matrix((0, 1, 0), -t.tilt_y)
        s_true = base.with_orientation(u).excitation_error(hkl, WAVELENGTH)
        indexed = base.with_orientation(error @ u)
        s_idx = indexed.excitation_error(hkl, WAVELENGTH)
        near = np.abs(s_idx) <= 2.0 * R
        q = indexed.q_lab(hkl[near])
        p = partiality(s_true[near], t.radius, model)
        d = refl["d"].to_numpy()[near]
        i_obs = t.scale * np.exp(-t.b_factor / (2 * d**2)) * p * lookup[near]
        rows.append(
            {
                "h": hkl[near, 0], "k": hkl[near, 1], "l": hkl[near, 2], "I": i_obs,
                "sigma": np.full(near.sum(), 1.0), "frame": np.full(near.sum(), c),
                "crystal": 0, "crystal_id": np.full(near.sum(), c), "panel": 0, "fs": 0.0,
                "ss": 0.0, "d": d, "qx": q[:, 0], "qy": q[:, 1], "qz": q[:, 2],
                "excitation_error": s_idx[near], "profile_radius": 2.0 * R,
                "partiality": partiality(s_idx[near], 2.0 * R), "background": 0.0,
                "bg_sigma": 0.0, "n_peak": 29, "n_bg": 80, "peak": 0.0, "flags": 0,
            }
        )  # fmt: skip
    table = pd.concat([make_observations(r) for r in rows], ignore_index=True)
    truth_i = truth_i.rename(columns={"h_asu": "h", "k_asu": "k", "l_asu": "l"})
    return table, params, truth_i


@pytest.mark.parametrize("model", ["xsphere", "gaussian"])
def test_post_refinement_recovers_the_parameters_of_model_data(model: str) -> None:
    table, truth, truth_i = _exact_observations(model)
    params = MergeParams(partiality=model, n_cycles=4, reject_delta_cc=None)
    result = merge_observations(table, CELL, SG, params, wavelength=WAVELENGTH)
    got = result.crystals.merge(truth, on="crystal_id")
    assert not got["rejected"].any(), got.loc[got["rejected"], "reason"].tolist()
    ln_g = np.log(got["scale_y"]) - np.mean(np.log(got["scale_y"]))
    b_true = got["b_factor_y"] - got["b_factor_y"].mean()
    err = {
        "tilt_x (deg)": np.abs(got["tilt_x_deg"] - got["tilt_x"]).max(),
        "tilt_y (deg)": np.abs(got["tilt_y_deg"] - got["tilt_y"]).max(),
        "ln G": np.abs(np.log(got["scale_x"]) - ln_g).max(),
        "B (A^2)": np.abs(got["b_factor_x"] - b_true).max(),
        "R (rel)": np.abs(got["profile_radius"] / got["radius"] - 1).max(),
    }
    limits = {"tilt_x (deg)": 1e-3, "tilt_y (deg)": 1e-3, "ln G": 0.03, "B (A^2)": 0.5,
              "R (rel)": 0.005}  # fmt: skip
    assert all(err[k] < limits[k] for k in err), f"max errors {err}"
    merged = result.merged.merge(truth_i, on=["h", "k", "l"])
    cc = np.corrcoef(merged["I"], merged["I_true"])[0, 1]
    assert cc > 0.9999, f"CC(merged, truth) = {cc:.6f} on {len(merged)} reflections"
    # input summary, screening, one line per cycle, final summary
    assert len(result.log) == 1 + 1 + params.n_cycles + 1


def test_unity_merging_of_exact_data_is_biased_by_partiality() -> None:
    """Plain averaging of partials cannot reach what the partiality model reaches."""
    table, _, truth_i = _exact_observations("xsphere", n_crystals=60)
    ccs = {}
    for model in ("unity", "xsphere"):
        params = MergeParams(partiality=model, reject_delta_cc=None)
        result = merge_observations(table, CELL, SG, params, wavelength=WAVELENGTH)
        merged = result.merged.merge(truth_i, on=["h", "k", "l"])
        ccs[model] = np.corrcoef(merged["I"], merged["I_true"])[0, 1]
    assert ccs["xsphere"] > 0.9999 > ccs["unity"], ccs


def test_scaling_switches_fix_the_parameters() -> None:
    table, _, _ = _exact_observations("xsphere", n_crystals=30)
    params = MergeParams(scale=False, b_factor=False, post_refine=False, n_cycles=2)
    result = merge_observations(table, CELL, SG, params, wavelength=WAVELENGTH)
    kept = result.crystals[~result.crystals["rejected"]]
    np.testing.assert_allclose(kept["scale"], 1.0)
    np.testing.assert_allclose(kept["b_factor"], 0.0)
    np.testing.assert_allclose(kept[["tilt_x_deg", "tilt_y_deg"]], 0.0)
    np.testing.assert_allclose(kept["profile_radius"], 2.0 * R)
    only_g = MergeParams(b_factor=False, post_refine=False, reject_delta_cc=None)
    result = merge_observations(table, CELL, SG, only_g, wavelength=WAVELENGTH)
    assert result.crystals["scale"].std() > 0.05
    np.testing.assert_allclose(result.crystals["b_factor"], 0.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("partiality", "lorentzian"), ("n_cycles", -1), ("n_cycles", 1.5),
        ("min_partiality", 1.5), ("bandwidth", -1e-4), ("reject_delta_cc", 0.0),
        ("min_observations", 0), ("max_abs_b", float("nan")), ("max_tilt_deg", 0.0),
        ("d_min", -2.0), ("max_radius_factor", 0.5), ("error_fraction", -0.1),
    ],
)  # fmt: skip
def test_invalid_parameters_raise_config_errors_naming_the_field(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        MergeParams(**{name: value})  # type: ignore[arg-type]
    assert info.value.field == name


def test_inverted_resolution_limits_raise() -> None:
    with pytest.raises(ConfigError) as info:
        MergeParams(d_min=3.0, d_max=2.0)
    assert info.value.field == "d_max"
