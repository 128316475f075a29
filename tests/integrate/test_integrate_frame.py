"""integrate_frame against simulator truth: positions, bias, z-scores, flags, speed."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import erf

from crystalscope.errors import DataError
from crystalscope.image.background import peak_exclusion_mask, subtract_radial_background
from crystalscope.integrate.frame import integrate_frame
from crystalscope.integrate.observations import (
    FLAG_EDGE,
    FLAG_MASKED,
    FLAG_NEAR_BEAM,
    FLAG_OVERLAP,
    FLAG_SATURATED,
    FLAGS_EXCLUDED_BY_DEFAULT,
    OBSERVATION_COLUMNS,
)
from crystalscope.integrate.partiality import partiality
from crystalscope.integrate.summation import IntegrationParams
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.kinematics import centre_px
from crystalscope.simulate.render import render_expected
from crystalscope.simulate.serial import SerialSimulation

R_PROFILE = 1.5e-3  # 1/A: covers the simulator's |s| cut (p >= 1e-3) of 1000 A crystals
D_MIN = 2.0
STAR = [f"{v}star_{x}" for v in "abc" for x in "xyz"]


@dataclass
class Shot:
    frame: np.ndarray  # raw frame (ADU)
    background: np.ndarray  # expected zero-order + inelastic background, no Bragg spots
    truth: pd.DataFrame  # sim.reflections(i)
    crystals: pd.DataFrame  # crystals-table rows with the truth UB and shift


def crystals_table(sim: SerialSimulation, i: int) -> pd.DataFrame:
    """The frame's crystals-table rows, as `serial index` writes them, from the truth."""
    xt = sim.crystals[sim.crystals["frame"] == i]
    u = xt[[f"u{a}{b}" for a in range(3) for b in range(3)]].to_numpy(float).reshape(-1, 3, 3)
    ub = u @ sim.base.B
    table = pd.DataFrame(
        {"frame": xt["frame"].to_numpy(), "crystal": xt["crystal"].to_numpy()},
        index=xt["crystal_id"].to_numpy(),
    )
    for n, name in enumerate(STAR):
        table[name] = ub[:, n % 3, n // 3]
    table["profile_radius"] = R_PROFILE
    table["det_shift_x_mm"], table["det_shift_y_mm"] = sim._shift(i)
    return table


def expected_background(sim: SerialSimulation, i: int, truth: pd.DataFrame) -> np.ndarray:
    """The noise-free zero-order beam and inelastic background of frame i (as sim.frame)."""
    inelastic = sim.inelastic_counts(i)
    zero = sim.n_incident - float(truth["counts"].sum()) - inelastic
    none = pd.DataFrame({"panel": [], "fs": [], "ss": [], "counts": []})
    return render_expected(
        none,
        sim.detector,
        sim.config.beam_effects,
        sim.config.detector_effects,
        shift_mm=sim._shift(i),
        zero_order_counts=zero,
        inelastic_counts=inelastic,
        distortion=sim.distortion,
    )


def make_shots(config: dict, n: int) -> tuple[SerialSimulation, list[Shot]]:
    sim = SerialSimulation.build(SerialConfig.model_validate(config))
    shots = []
    for i in range(n):
        truth = sim.reflections(i)
        shots.append(
            Shot(sim.frame(i), expected_background(sim, i, truth), truth, crystals_table(sim, i))
        )
    return sim, shots


BEAM_FX = {"centre_jitter_px": 5.0, "ellipticity": 0.02, "ellipticity_angle_deg": 40.0}


@pytest.fixture(scope="module")
def single() -> tuple[SerialSimulation, list[Shot]]:
    """Six frames of one lysozyme-like crystal each (jittered centre, elliptical)."""
    config = {
        "n_crystals": 6,
        "seed": 7,
        "beam_effects": BEAM_FX,
        "source": {"structure": "builtin:lysozyme-like", "d_min": D_MIN},
    }
    return make_shots(config, 6)


@pytest.fixture(scope="module")
def double() -> tuple[SerialSimulation, list[Shot]]:
    """Two frames with two crystals each."""
    config = {
        "n_crystals": 2,
        "seed": 9,
        "two_lattice_fraction": 1.0,
        "beam_effects": BEAM_FX,
        "source": {"structure": "builtin:lysozyme-like", "d_min": D_MIN},
    }
    return make_shots(config, 2)


def psf_enclosed(fs: np.ndarray, ss: np.ndarray, r_peak: float, sigma: float = 0.7) -> np.ndarray:
    """Fraction of a pixel-integrated Gaussian spot (the renderer's PSF) in the peak disk."""
    out = np.empty(len(fs))
    c = sigma * math.sqrt(2.0)
    for n, (f0, s0) in enumerate(zip(fs, ss, strict=True)):
        j = np.arange(round(f0) - 5, round(f0) + 6)
        i = np.arange(round(s0) - 5, round(s0) + 6)
        wj = 0.5 * (erf((j + 0.5 - f0) / c) - erf((j - 0.5 - f0) / c))
        wi = 0.5 * (erf((i + 0.5 - s0) / c) - erf((i - 0.5 - s0) / c))
        disk = (j[None, :] - f0) ** 2 + (i[:, None] - s0) ** 2 <= r_peak**2
        out[n] = (np.outer(wi, wj) * disk).sum()
    return out


def integrate_all(
    sim: SerialSimulation, shots: list[Shot], params: IntegrationParams, *, subtract: bool = False
) -> pd.DataFrame:
    """Observations of all shots joined to the truth (counts; 0 where not excited)."""
    mask = sim.detector.bad_pixel_mask(sim.detector.raw_shape)
    tables = []
    for shot in shots:
        frame = shot.frame - shot.background if subtract else shot.frame
        obs = integrate_frame(
            frame,
            shot.crystals,
            sim.beam.wavelength,
            sim.detector,
            params,
            d_min=D_MIN,
            mask=mask,
            distortion=sim.distortion,
            space_group=sim.base.space_group,
        )
        truth = shot.truth[["crystal", "h", "k", "l", "counts", "fs", "ss"]]
        tables.append(
            obs.merge(truth, on=["crystal", "h", "k", "l"], how="left", suffixes=("", "_true"))
        )
    out = pd.concat(tables, ignore_index=True)
    out["counts"] = out["counts"].fillna(0.0)
    out["truth"] = out["counts"] * psf_enclosed(
        out["fs"].to_numpy(), out["ss"].to_numpy(), params.r_peak_px
    )
    out["z"] = (out["I"] - out["truth"]) / out["sigma"]
    return out


def test_predicted_positions_agree_with_the_truth(single: tuple) -> None:
    sim, shots = single
    obs = integrate_all(sim, shots, IntegrationParams())
    n_truth = sum(len(s.truth) for s in shots)
    found = obs["fs_true"].notna()
    assert int(found.sum()) == n_truth, "every excited reflection is predicted"
    err = np.hypot(obs["fs"] - obs["fs_true"], obs["ss"] - obs["ss_true"])[found]
    assert err.max() < 0.05, f"largest position error {err.max():.2e} px over {n_truth} spots"


def _ok(obs: pd.DataFrame) -> pd.DataFrame:
    return obs[(obs["flags"] & FLAGS_EXCLUDED_BY_DEFAULT) == 0]


def test_raw_frames_with_plane_background_are_unbiased_beyond_6a(single: tuple) -> None:
    """Strong spots (> 300 counts): sum I / sum truth within 2 % of 1, where the truth is
    the PSF-enclosed part of the expected counts (~0.9997 for sigma 0.7 px, r 3 px)."""
    sim, shots = single
    obs = _ok(integrate_all(sim, shots, IntegrationParams(background="plane")))
    obs = obs[obs["d"] < 6.0]
    strong = obs[obs["counts"] > 300]
    enclosed = (strong["truth"] / strong["counts"]).mean()
    ratio = strong["I"].sum() / strong["truth"].sum()
    weak = obs[obs["counts"] <= 300]
    msg = (
        f"strong: {len(strong)} spots, enclosed {enclosed:.4f}, ratio {ratio:.4f}; "
        f"weak/medium: {len(weak)} spots, <z> {weak['z'].mean():.3f}, "
        f"std {weak['z'].std():.3f}"
    )
    print(msg)
    assert len(strong) > 300 and len(weak) > 300, msg
    assert 0.9990 < enclosed < 1.0, msg
    assert abs(ratio - 1.0) < 0.02, msg
    assert abs(weak["z"].mean()) < 0.15, msg
    assert 0.8 < weak["z"].std() < 1.3, msg
    assert 0.8 < strong["z"].std() < 1.3, msg


def test_mean_background_on_subtracted_frames_is_unbiased_at_all_resolutions(
    single: tuple,
) -> None:
    """Frames minus the expected background (noise kept): ``mean`` background."""
    sim, shots = single
    obs = _ok(integrate_all(sim, shots, IntegrationParams(background="mean"), subtract=True))
    lines = []
    for lo, hi in ((D_MIN, 3.0), (3.0, 6.0), (6.0, 100.0)):
        shell = obs[obs["d"].between(lo, hi)]
        diff = shell["I"] - shell["truth"]
        t = diff.mean() / (diff.std() / math.sqrt(len(diff)))
        z = shell["z"]
        lines.append(
            f"d {lo:g}-{hi:g} A: n {len(shell)}, <I - truth> {diff.mean():.2f} (t = {t:.2f}), "
            f"<z> {z.mean():.3f}, std {z.std():.3f}"
        )
        assert abs(t) < 3.5, lines[-1]
        assert abs(z.mean()) < 0.2 and 0.8 < z.std() < 1.3, lines[-1]
    strong = obs[obs["counts"] > 300]
    ratio = strong["I"].sum() / strong["truth"].sum()
    lines.append(f"strong: ratio {ratio:.4f}; mean background {obs['background'].mean():.3f}")
    print("\n".join(lines))
    assert abs(ratio - 1.0) < 0.02, lines[-1]


def test_radial_background_subtraction_then_mean_is_unbiased_to_10a(single: tuple) -> None:
    """The SerialED route: subtract the radial background estimated from the frame itself
    (``image.background``, predicted spots excluded), then integrate with ``mean``."""
    sim, shots = single
    y, x = np.mgrid[0:516, 0:1556].astype(float)
    estimated = []
    for n, shot in enumerate(shots):
        centre = centre_px(sim.detector, sim.beam, sim._shift(n))
        radius = np.hypot(x - centre[0], y - centre[1])
        obs = integrate_frame(
            shot.frame,
            shot.crystals,
            sim.beam.wavelength,
            sim.detector,
            IntegrationParams(),
            d_min=D_MIN,
            distortion=sim.distortion,
        )
        exclude = peak_exclusion_mask(shot.frame.shape, obs["fs"], obs["ss"], 4.0)
        mask = sim.detector.bad_pixel_mask(sim.detector.raw_shape)
        subtracted, _ = subtract_radial_background(shot.frame, radius, mask, exclude=exclude)
        estimated.append(Shot(shot.frame, shot.frame - subtracted, shot.truth, shot.crystals))
    obs = _ok(integrate_all(sim, estimated, IntegrationParams(background="mean"), subtract=True))
    obs = obs[obs["d"] < 10.0]
    strong = obs[obs["counts"] > 300]
    ratio = strong["I"].sum() / strong["truth"].sum()
    msg = f"n {len(obs)}: ratio {ratio:.4f}, <z> {obs['z'].mean():.3f}, std {obs['z'].std():.3f}"
    print(msg)
    assert abs(ratio - 1.0) < 0.02, msg
    assert abs(obs["z"].mean()) < 0.15 and 0.8 < obs["z"].std() < 1.3, msg


def _brute_force_flags(obs: pd.DataFrame, mask: np.ndarray, pmap: np.ndarray, r: float) -> tuple:
    """Which spots' peak disks touch masked pixels / leave their panel (pixel by pixel)."""
    masked = np.zeros(len(obs), bool)
    edge = np.zeros(len(obs), bool)
    n_ss, n_fs = mask.shape
    for n, (f0, s0) in enumerate(zip(obs["fs"], obs["ss"], strict=True)):
        ci, cj = math.floor(s0 + 0.5), math.floor(f0 + 0.5)
        panel = pmap[ci, cj]
        for i in range(ci - 4, ci + 5):
            for j in range(cj - 4, cj + 5):
                if (j - f0) ** 2 + (i - s0) ** 2 > r * r:
                    continue
                if not (0 <= i < n_ss and 0 <= j < n_fs) or pmap[i, j] != panel:
                    edge[n] = True
                elif mask[i, j]:
                    masked[n] = True
    return masked, edge


def test_masked_edge_and_saturated_flags_on_simulated_frames(single: tuple) -> None:
    sim, shots = single
    shot = shots[0]
    mask = sim.detector.bad_pixel_mask(sim.detector.raw_shape)
    mask[200:260, 700:760] = True  # and a user mask region
    kwargs = {"d_min": D_MIN, "mask": mask, "distortion": sim.distortion}
    args = (shot.frame, shot.crystals, sim.beam.wavelength, sim.detector)
    plain = integrate_frame(*args, IntegrationParams(), **kwargs)
    assert (plain["flags"] & FLAG_SATURATED == 0).all()
    sat = float(plain["peak"].quantile(0.9))  # the brightest tenth of the spots saturate
    params = IntegrationParams(saturation_adu=sat)
    obs = integrate_frame(*args, params, **kwargs)
    masked, edge = _brute_force_flags(obs, mask, sim.detector.panel_map(), params.r_peak_px)
    flags = obs["flags"].to_numpy()
    assert masked.sum() > 5 and edge.sum() > 5
    np.testing.assert_array_equal((flags & FLAG_MASKED) > 0, masked)
    np.testing.assert_array_equal((flags & FLAG_EDGE) > 0, edge)
    saturated = (flags & FLAG_SATURATED) > 0
    assert saturated.sum() > 0
    np.testing.assert_array_equal(saturated, obs["peak"].to_numpy() >= sat)


def test_two_crystals_per_frame_and_overlaps(double: tuple) -> None:
    sim, shots = double
    params = IntegrationParams()
    for shot in shots:
        obs = integrate_frame(
            shot.frame,
            shot.crystals,
            sim.beam.wavelength,
            sim.detector,
            params,
            d_min=D_MIN,
            distortion=sim.distortion,
        )
        assert sorted(obs["crystal"].unique()) == [0, 1]
        assert set(obs["crystal_id"]) == set(shot.crystals.index)
        for c, group in obs.groupby("crystal"):
            truth = shot.truth[shot.truth["crystal"] == c]
            assert len(group.merge(truth, on=["h", "k", "l"])) == len(truth)
        xy = obs[["fs", "ss"]].to_numpy()
        dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(dist, np.inf)
        nearest = dist.min(axis=1)
        overlap = (obs["flags"].to_numpy() & FLAG_OVERLAP) > 0
        r = params.r_peak_px
        # disks closer than 2 r - sqrt(2) must share a pixel centre; beyond 2 r they cannot
        assert overlap[nearest <= 2 * r - math.sqrt(2)].all()
        assert not overlap[nearest > 2 * r].any()
        assert overlap.sum() > 0
        cross = obs[overlap]
        assert cross["crystal"].nunique() == 2


def test_observation_table_columns_and_partiality(single: tuple) -> None:
    sim, shots = single
    shot = shots[1]
    params = IntegrationParams(partiality="gaussian")
    obs = integrate_frame(
        shot.frame,
        shot.crystals,
        sim.beam.wavelength,
        sim.detector,
        params,
        d_min=D_MIN,
        d_max=20.0,
        distortion=sim.distortion,
    )
    assert list(obs.columns) == list(OBSERVATION_COLUMNS)
    assert {c: str(t) for c, t in obs.dtypes.items()} == OBSERVATION_COLUMNS
    assert obs["d"].between(D_MIN, 20.0).all()
    assert (obs["profile_radius"] == R_PROFILE).all()
    assert (obs["crystal_id"] == shot.crystals.index[0]).all()
    assert (obs["frame"] == shot.crystals["frame"].iloc[0]).all()
    np.testing.assert_allclose(
        obs["partiality"], partiality(obs["excitation_error"], R_PROFILE, "gaussian")
    )
    default_id = integrate_frame(
        shot.frame,
        shot.crystals.reset_index(drop=True),
        sim.beam.wavelength,
        sim.detector,
        params,
        d_min=D_MIN,
    )
    assert (default_id["crystal_id"] == 0).all()


def test_empty_frames_and_crystal_tables_give_empty_tables(single: tuple) -> None:
    sim, shots = single
    shot = shots[0]
    p = IntegrationParams()
    nan_frame = np.full(shot.frame.shape, np.nan, dtype=np.float32)
    cases = [
        integrate_frame(
            nan_frame, shot.crystals, sim.beam.wavelength, sim.detector, p, d_min=D_MIN
        ),
        integrate_frame(
            shot.frame, shot.crystals.iloc[:0], sim.beam.wavelength, sim.detector, p, d_min=D_MIN
        ),
        integrate_frame(
            shot.frame,
            shot.crystals,
            sim.beam.wavelength,
            sim.detector,
            p,
            d_min=D_MIN,
            d_max=D_MIN + 1e-6,
        ),
    ]
    for obs in cases:
        assert obs.empty
        assert {c: str(t) for c, t in obs.dtypes.items()} == OBSERVATION_COLUMNS
    partial_nan = shot.frame.copy()
    partial_nan[:, :700] = np.nan
    obs = integrate_frame(
        partial_nan, shot.crystals, sim.beam.wavelength, sim.detector, p, d_min=D_MIN
    )
    left = obs["fs"] < 690
    assert left.any() and ((obs["flags"][left] & FLAG_MASKED) > 0).all()
    assert obs["I"][left].isna().all()


def test_invalid_inputs_raise_data_errors(single: tuple) -> None:
    sim, shots = single
    shot = shots[0]
    p = IntegrationParams()
    lam, det = sim.beam.wavelength, sim.detector
    with pytest.raises(DataError) as info:
        integrate_frame(shot.frame[:, :100], shot.crystals, lam, det, p, d_min=D_MIN)
    assert info.value.field == "frame"
    with pytest.raises(DataError) as info:
        integrate_frame(shot.frame, shot.crystals.drop(columns="bstar_y"), lam, det, p, d_min=D_MIN)
    assert info.value.field == "bstar_y"
    with pytest.raises(DataError) as info:
        integrate_frame(shot.frame, shot.crystals.assign(frame=np.nan), lam, det, p, d_min=D_MIN)
    assert info.value.field == "frame"
    bad = shot.crystals.assign(profile_radius=np.nan)
    with pytest.raises(DataError) as info:
        integrate_frame(shot.frame, bad, lam, det, p, d_min=D_MIN)
    assert info.value.field == "profile_radius"
    with pytest.raises(DataError) as info:
        integrate_frame(
            shot.frame, shot.crystals, lam, det, p, d_min=D_MIN, mask=np.zeros((3, 3), bool)
        )
    assert info.value.field == "mask"


def test_integrate_frame_is_repeatable(single: tuple) -> None:
    """One lysozyme crystal (~500 spots) on a 516 x 1556 frame: the same observations
    from repeated calls (speed: benchmarks)."""
    sim, shots = single
    shot = shots[2]
    mask = sim.detector.bad_pixel_mask(sim.detector.raw_shape)
    p = IntegrationParams()
    args = (shot.frame, shot.crystals, sim.beam.wavelength, sim.detector, p)
    kwargs = {
        "d_min": D_MIN,
        "mask": mask,
        "distortion": sim.distortion,
        "space_group": sim.base.space_group,
    }
    obs = integrate_frame(*args, **kwargs)
    assert len(obs) > 300
    pd.testing.assert_frame_equal(obs, integrate_frame(*args, **kwargs))


@pytest.mark.shared
def test_real_lysozyme_intensities(shared_data: Path) -> None:
    """HEWL intensities (weaker spots): bias and z-scores, raw/plane and subtracted/mean."""
    mtz = shared_data / "reciprocalspaceship" / "HEWL_SSAD_24IDC.mtz"
    config = {
        "n_crystals": 4,
        "seed": 1,
        "beam_effects": BEAM_FX,
        "source": {"structure": None, "mtz": str(mtz), "d_min": D_MIN},
    }
    sim, shots = make_shots(config, 4)
    lines = []
    for background, subtract in (("plane", False), ("mean", True)):
        obs = _ok(
            integrate_all(
                sim,
                shots,
                IntegrationParams(background=background),  # type: ignore[arg-type]
                subtract=subtract,
            )
        )
        obs = obs[obs["d"] < 6.0]
        strong = obs[obs["counts"] > 200]
        ratio = strong["I"].sum() / strong["truth"].sum()
        lines.append(
            f"{background}: n {len(obs)}, strong ratio {ratio:.4f}, "
            f"<z> {obs['z'].mean():.3f}, std {obs['z'].std():.3f}"
        )
        assert abs(ratio - 1.0) < 0.03, lines[-1]
        assert abs(obs["z"].mean()) < 0.15 and 0.8 < obs["z"].std() < 1.3, lines[-1]
    print("\n".join(lines))


def test_spots_in_the_zero_order_halo_are_flagged(single: tuple) -> None:
    """FLAG_NEAR_BEAM marks exactly the spots within min_beam_distance_px of the true
    beam centre, and 0 switches it off."""
    sim, shots = single
    for radius in (20.0, 60.0):
        obs = integrate_all(sim, shots[:3], IntegrationParams(min_beam_distance_px=radius))
        centres = np.array([centre_px(sim.detector, sim.beam, sim._shift(i)) for i in obs["frame"]])
        distance = np.hypot(obs["fs"] - centres[:, 0], obs["ss"] - centres[:, 1])
        near = (obs["flags"] & FLAG_NEAR_BEAM) != 0
        # the truth centre is the shifted beam without distortion; the distortion moves
        # spots by up to 2 % of their radius, so compare away from the boundary
        clear = np.abs(distance - radius) > 0.03 * radius
        assert near[clear].equals(distance[clear] < radius), radius
        assert near.any() and not near.all()
    off = integrate_all(sim, shots[:3], IntegrationParams(min_beam_distance_px=0.0))
    assert not ((off["flags"] & FLAG_NEAR_BEAM) != 0).any()
