"""Serial data sets: plan, truth tables, dose fractionation, dataset output, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crystalscope.cli.main import EXIT_USER_ERROR, main
from crystalscope.dataset import Dataset
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import (
    SerialSimulation,
    plan_serial,
    read_truth,
    simulate_serial,
)


def _small(**changes: object) -> SerialConfig:
    data: dict[str, object] = {
        "n_crystals": 4,
        "seed": 3,
        "source": {"structure": "builtin:lysozyme-like", "d_min": 3.0},
        "detector": {"preset": "single", "distance_mm": 600.0},
    }
    for key, value in changes.items():
        node = data
        *path, last = key.split(".")
        for p in path:
            node = node.setdefault(p, {})  # type: ignore[assignment]
        node[last] = value  # type: ignore[index]
    return SerialConfig.model_validate(data)


def test_plan_is_deterministic_and_consistent() -> None:
    cfg = _small(n_crystals=30, hit_fraction=0.5, two_lattice_fraction=0.3)
    cfg.dose.frames_per_crystal = 3
    shots, crystals = plan_serial(cfg, 0.055)
    again, _ = plan_serial(cfg, 0.055)
    pd.testing.assert_frame_equal(shots, again)
    assert len(shots) == 60 * 3  # 30 hits at 50 % hit rate, 3 fractions each
    assert shots.groupby("shot")["hit"].first().sum() == 30
    # every fraction of a shot has the same crystals and orientation
    per_frame = crystals.groupby("frame")["crystal_id"].apply(tuple)
    for _, frames in shots.groupby("shot")["frame"]:
        assert len({per_frame.get(f, ()) for f in frames}) == 1
    assert set(shots["n_crystals"]) <= {0, 1, 2} and (shots["n_crystals"] == 2).any()
    u = crystals[[f"u{i}{j}" for i in range(3) for j in range(3)]].to_numpy().reshape(-1, 3, 3)
    np.testing.assert_allclose(np.linalg.det(u), 1.0, atol=1e-12)
    # accumulated dose grows by one frame's dose per fraction
    np.testing.assert_allclose(
        np.diff(shots["dose_e_per_a2"].to_numpy()[:3]), cfg.beam_effects.dose_e_per_a2
    )


def test_non_hit_frames_have_no_bragg_spots() -> None:
    sim = SerialSimulation.build(_small(n_crystals=2, hit_fraction=0.5))
    misses = np.flatnonzero(~sim.shots["hit"].to_numpy())
    assert len(misses) == 2
    assert len(sim.reflections(int(misses[0]))) == 0
    assert sim.inelastic_counts(int(misses[0])) == 0.0


def test_damage_fades_high_resolution_first() -> None:
    cfg = _small(n_crystals=1)
    cfg.dose.frames_per_crystal = 4
    cfg.dose.b_per_dose = 5.0
    cfg.beam_effects.dose_e_per_a2 = 2.0
    sim = SerialSimulation.build(cfg)
    first, last = sim.reflections(0), sim.reflections(3)
    merged = first.merge(last, on=["h", "k", "l"], suffixes=("_0", "_3"))
    ratio = merged["counts_3"] / merged["counts_0"]
    # B grows by b_per_dose * dose per frame: 3 frames * 2 e/A^2 * 5 A^2 = 30 A^2
    expected = np.exp(-30.0 / (2 * merged["d_0"] ** 2))
    np.testing.assert_allclose(ratio, expected, rtol=1e-9)
    assert ratio[merged["d_0"] < 4].mean() < ratio[merged["d_0"] > 8].mean()


def test_expected_total_counts_match_dose() -> None:
    cfg = _small(n_crystals=1)
    cfg.detector_effects.noise = False
    cfg.detector_effects.psf_sigma_px = 0.7
    cfg.beam_effects.inelastic_width_px = 10.0
    sim = SerialSimulation.build(cfg)
    image = sim.frame(0, expected_only=True)
    n_inc = cfg.beam_effects.dose_e_per_a2 * math.pi * (cfg.beam_effects.beam_diameter_a / 2) ** 2
    # Cauchy profiles lose g / sqrt(R^2 + g^2) outside a circle of radius R: the detector
    # square (half-width R around its centre) loses between the inscribed-circle value
    # and the circumscribed-circle value.
    half = min(sim.detector.raw_shape) / 2
    inel = sim.inelastic_counts(0)
    zero = n_inc - inel - sim.reflections(0)["counts"].sum()

    def lost(g: float, r: float) -> float:
        return g / math.sqrt(r * r + g * g)

    widths = (cfg.beam_effects.zero_order_width_px, cfg.beam_effects.inelastic_width_px)
    most = zero * lost(widths[0], half) + inel * lost(widths[1], half)
    least = zero * lost(widths[0], half * math.sqrt(2)) + inel * lost(
        widths[1], half * math.sqrt(2)
    )
    total = float(image.sum())
    assert n_inc - most * 1.02 <= total <= n_inc - least * 0.98


@pytest.mark.slow
def test_simulate_serial_writes_dataset_and_truth(tmp_path: Path) -> None:
    cfg = _small(n_crystals=3, hit_fraction=0.75)
    cfg.beam_effects.centre_jitter_px = 0.5
    result = simulate_serial(cfg, tmp_path / "sim")
    ds = Dataset.open(result.dataset)
    assert ds.n_frames == result.n_frames == 4
    assert ds.data.shape == (4, *SerialSimulation.build(cfg).detector.raw_shape)
    assert {"true_centre_fs", "true_centre_ss", "hit", "dose_e_per_a2"} <= set(ds.shots.columns)
    assert len(ds.crystals) == 3 and "astar_x" in ds.crystals
    truth = read_truth(result.truth)
    assert len(truth) == result.n_reflections > 0
    assert set(truth["frame"]) <= set(ds.shots.loc[ds.shots["hit"], "frame"])
    frames = np.asarray(ds.data.compute())
    assert np.isfinite(frames).all() and frames.sum() > 0
    # same seed, same data
    again = simulate_serial(cfg, tmp_path / "again")
    np.testing.assert_array_equal(np.asarray(Dataset.open(again.dataset).data.compute()), frames)
    with pytest.raises(Exception, match="overwrite"):
        simulate_serial(cfg, tmp_path / "sim")


@pytest.mark.slow
def test_cli_simulate_serial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["simulate", "serial", "--out", str(out), "--n-crystals", "2", "--d-min", "3"]
    args += ["--detector", "single", "--set", "beam_effects.zero_order=false", "--seed", "1"]
    assert main(args) == 0
    assert "frames" in capsys.readouterr().out
    assert (out / "frames.h5").is_file() and (out / "config.resolved.yaml").is_file()
    text = (out / "config.resolved.yaml").read_text()
    assert "zero_order: false" in text
    assert (
        main([*args[:3], str(tmp_path / "x"), "--set", "beam_effects.zero_ordr=false"])
        == EXIT_USER_ERROR
    )
    assert "zero_ordr" in capsys.readouterr().err


def test_given_orientations_are_used_in_order(tmp_path: Path) -> None:
    from scipy.spatial.transform import Rotation

    from crystalscope.errors import ConfigError, FormatError
    from crystalscope.simulate.serial import load_orientations

    u = Rotation.from_euler("zyx", [[10, 20, 30], [-40, 5, 70], [0, 0, 0]], degrees=True)
    path = tmp_path / "u.txt"
    lines = [" ".join(f"{v:.15f}" for v in m.ravel()) for m in u.as_matrix()]
    path.write_text("# U row by row\n" + "\n".join(lines) + "\n")
    cfg = _small(n_crystals=3)
    cfg.crystal.orientations = path
    _, crystals = plan_serial(cfg, 0.055)
    got = crystals[[f"u{i}{j}" for i in range(3) for j in range(3)]].to_numpy().reshape(-1, 3, 3)
    np.testing.assert_allclose(got, u.as_matrix(), atol=1e-12)
    cfg.n_crystals = 4
    with pytest.raises(ConfigError, match="needs 4"):
        plan_serial(cfg, 0.055)
    path.write_text(lines[0] + "\n1 0 0 0 1 0 0 0 2\n")
    with pytest.raises(FormatError) as info:
        load_orientations(path)
    assert info.value.line == 2 and "u.txt" in str(info.value)


def test_isolated_spot_sums_reproduce_kinematic_intensity() -> None:
    """Pixel sums of isolated spots, averaged over noise realisations, equal
    N_x (lambda gamma F t / V)^2 p (written out here) within Poisson error."""
    from scipy import constants as const

    from crystalscope.simulate.render import render_frame

    small_cell = {"source.structure": "builtin:corundum", "source.d_min": 0.8}
    cfg = _small(n_crystals=1, seed=0, **small_cell, **{"crystal.thickness_a": 150.0})
    cfg.beam_effects.zero_order = False
    cfg.beam_effects.inelastic = False
    cfg.beam_effects.dose_e_per_a2 = 1e-2
    sim = SerialSimulation.build(cfg)
    spots = sim.reflections(0)
    beam, xtal = sim.beam, cfg.crystal
    gamma = 1 + beam.voltage_kv * 1e3 / (const.m_e * const.c**2 / const.e)
    f = np.sqrt(sim.sf.lookup(spots[["h", "k", "l"]].to_numpy()))
    expected = (
        sim.n_on_crystal
        * (beam.wavelength * gamma * f * xtal.thickness_a / sim.sf.cell.volume) ** 2
        * spots["partiality"].to_numpy()
    )
    xy = spots[["fs", "ss"]].to_numpy()
    dist = np.hypot(*(xy[:, None, :] - xy[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(dist, np.inf)
    n_ss, n_fs = sim.detector.raw_shape
    inside = (xy[:, 0] > 8) & (xy[:, 0] < n_fs - 9) & (xy[:, 1] > 8) & (xy[:, 1] < n_ss - 9)
    isolated = np.flatnonzero((dist.min(axis=1) > 10) & inside & (expected > 5))
    assert len(isolated) >= 5
    sums = np.zeros((40, len(isolated)))
    for r in range(40):
        image = render_frame(
            spots, sim.detector, cfg.beam_effects, cfg.detector_effects, sim.state,
            shift_mm=sim._shift(0), rng=np.random.default_rng(r),
        )  # fmt: skip
        for j, i in enumerate(isolated):
            fs, ss = np.rint(xy[i]).astype(int)
            sums[r, j] = image[ss - 4 : ss + 5, fs - 4 : fs + 5].sum()
    mean = sums.mean(axis=0)
    err = np.sqrt(expected[isolated] / 40)  # Poisson error of the mean
    z = (mean - expected[isolated]) / err
    assert np.all(np.abs(z) < 5), z
    assert abs(z.mean()) < 5 / np.sqrt(len(z))
