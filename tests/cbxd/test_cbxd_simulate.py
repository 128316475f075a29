"""The CBXD rotation-series simulator: files, reproducibility, truth against frames."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from crystalscope.cli.cbxd import app
from crystalscope.config import parse_config
from crystalscope.errors import ConfigError, CrystalscopeError, FormatError
from crystalscope.simulate.cbxd import (
    STREAK_COLUMNS,
    CbxdSimulation,
    read_cbxd_truth,
    simulate_cbxd,
)
from crystalscope.simulate.cbxd_config import CbxdConfig

SMALL: dict[str, Any] = {
    "sample": {"orientation_deg": (10.0, 20.0, 5.0), "voxel_um": 1.0, "d_min": 1.2},
    "detector": {"shape": (128, 128), "pixel_mm": 0.5, "distance_mm": 60.0,
                 "hot_fraction": 0.0, "dead_fraction": 0.0},
    "scan": {"n_frames": 6, "step_deg": 1.0, "start_deg": 0.0, "substeps": 3},
    "lens": {"photons_per_frame": 1e9},
    "seed": 7,
}  # fmt: skip


def _config(**changes: Any) -> CbxdConfig:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in SMALL.items()}
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    return parse_config(data, CbxdConfig)


def test_small_series_runs_and_is_reproducible(tmp_path: Path) -> None:
    res = simulate_cbxd(_config(), tmp_path / "a")
    assert res.n_frames == 6 and res.n_streaks > 3
    assert res.config.exists()
    from crystalscope.dataset import Dataset

    ds = Dataset.open(res.dataset)
    frames = np.asarray(ds.data.compute())
    assert frames.shape == (6, 128, 128) and frames.dtype == np.uint32
    assert ds.shots["omega_deg"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    again = simulate_cbxd(_config(), tmp_path / "b")
    np.testing.assert_array_equal(np.asarray(Dataset.open(again.dataset).data.compute()), frames)
    t1, shape, extra = read_cbxd_truth(res.truth)
    t2, _, _ = read_cbxd_truth(again.truth)
    assert list(t1.columns) == list(STREAK_COLUMNS)
    assert all(t1[c].dtype.kind == "i" for c in ("frame", "h", "k", "l", "component"))
    np.testing.assert_allclose(t1["counts"], t2["counts"])
    assert shape.values.shape == (10, 20, 10) and shape.voxel_um == 1.0
    assert extra["ub"].shape == (3, 3) and extra["wavelength_a"] == pytest.approx(0.70848, 1e-4)
    with pytest.raises(FormatError, match="not a CBXD truth file"):
        read_cbxd_truth(res.dataset)
    with pytest.raises(FormatError):
        read_cbxd_truth(res.config)
    other = simulate_cbxd(_config(seed=8), tmp_path / "c")
    assert not np.array_equal(np.asarray(Dataset.open(other.dataset).data.compute()), frames)
    with pytest.raises(CrystalscopeError, match="output exists"):
        simulate_cbxd(_config(), tmp_path / "a")


def test_truth_matches_the_frames() -> None:
    sim = CbxdSimulation.build(_config())
    seen = 0
    for j in range(6):
        frame, table = sim.frame(j)
        expected, _ = sim.expected_frame(j)
        bg = sim.config.detector.background
        mask = expected > 0
        signal = frame[mask].sum() - bg * mask.sum()
        assert signal == pytest.approx(expected.sum(), abs=6 * np.sqrt(expected.sum() + 1e-9) + 1)
        assert expected.sum() == pytest.approx(
            table["counts"][(table["fs"] > 1) & (table["fs"] < 126) & (table["ss"] > 1)
                            & (table["ss"] < 126)].sum(), rel=0.05, abs=1.0
        )  # fmt: skip
        for row in table[table["counts"] > 500].itertuples():
            f0, s0 = round(row.fs), round(row.ss)
            if not (3 <= f0 < 125 and 3 <= s0 < 125):
                continue
            win = frame[s0 - 3 : s0 + 4, f0 - 3 : f0 + 4].astype(float) - bg
            assert win.sum() > 0.5 * row.counts  # streak pixels where predicted
            seen += 1
        # away from predicted streaks there is only background
        quiet = ~np.isin(np.arange(frame.size), np.flatnonzero(mask)).reshape(frame.shape)
        assert frame[quiet].mean() == pytest.approx(bg, rel=0.1)
    assert seen >= 2


def test_defects_and_saturation() -> None:
    cfg = _config(detector__hot_fraction=0.01, detector__dead_fraction=0.01,
                  detector__saturation=40)  # fmt: skip
    sim = CbxdSimulation.build(cfg)
    frame, _ = sim.frame(0)
    assert sim.hot.sum() > 50 and sim.dead.sum() > 50
    assert np.all(frame[sim.hot] == 40) and np.all(frame[sim.dead] == 0)
    assert frame.max() == 40


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"lens": {"na_x": -1}}, CbxdConfig, source="cbxd.yaml")
    assert err.value.field == "lens.na_x" and err.value.path == "cbxd.yaml"
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config({"sample": {"shap": "si-lamella"}}, CbxdConfig)
    with pytest.raises(ConfigError):
        parse_config({"sample": {"shape": "cube"}}, CbxdConfig)


def test_other_shapes_and_an_on_axis_lens() -> None:
    cfg = _config(
        sample={"shape": "b12-prism", "structure": "b12-like", "voxel_um": 5.0, "d_min": 2.5,
                "defocus_mm": 3.5, "orientation_deg": (5.0, 10.0, 0.0)},
        lens={"kind": "on_axis", "na_x": 0.021, "na_y": 0.015},
    )  # fmt: skip
    sim = CbxdSimulation.build(cfg)
    image, table = sim.still(0.0)
    assert len(table) > 5  # many streaks from the large cell (seed Fig. 2a)
    assert np.all(sim.pupil.contains(table["phi_x"], table["phi_y"]))
    assert image.sum() > 0


def test_cli_simulate(tmp_path: Path) -> None:
    cfg = tmp_path / "cbxd.yaml"
    cfg.write_text(
        "detector: {shape: [64, 64], pixel_mm: 1.0, distance_mm: 60.0}\n"
        "sample: {orientation_deg: [10, 20, 5], voxel_um: 2.0, d_min: 1.5}\n"
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["simulate", "-c", str(cfg), "-o", str(out), "--n-frames", "2",
              "--set", "scan.substeps=1", "--seed", "3"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (out / "cbxd.h5").exists() and (out / "truth.h5").exists()
    assert "2 frames" in result.output
    bad = CliRunner().invoke(app, ["simulate", "-o", str(out), "--set", "lens.na_x=2"])
    assert bad.exit_code != 0
    assert isinstance(bad.exception, ConfigError)


@pytest.mark.parametrize("kind", ["off_axis", "on_axis"])
def test_line_foci_hit_the_crystal_only_for_on_axis_lenses(kind: str) -> None:
    cfg = _config(lens={"kind": kind, "efficiency_x": 0.7, "efficiency_y": 0.7,
                        "photons_per_frame": 1e9})  # fmt: skip
    sim = CbxdSimulation.build(cfg)
    lines = 0
    for j in range(10):
        _, table = sim.expected_frame(j)
        spots = table[table["component"] > 0]
        lines += len(spots)
        for row in spots.itertuples():  # each fiducial sits on its reflection's streak
            streak = table[(table["h"] == row.h) & (table["k"] == row.k)
                           & (table["l"] == row.l) & (table["component"] == 0)]  # fmt: skip
            assert len(streak) == 1
            assert abs(row.phi_x) < 1e-12 or abs(row.phi_y) < 1e-12
    assert (lines > 0) == (kind == "on_axis")


def test_direct_beam_is_the_projected_pupil_with_the_crystal_shadow() -> None:
    cfg = _config(
        lens={"kind": "on_axis", "na_x": 0.01, "na_y": 0.01, "photons_per_frame": 1e9},
        detector={"shape": (128, 128), "pixel_mm": 0.1, "distance_mm": 300.0,
                  "direct_beam": True, "hot_fraction": 0.0, "dead_fraction": 0.0},
        sample={"defocus_mm": 1.0, "mu_per_mm": 50.0, "voxel_um": 1.0},
    )  # fmt: skip
    sim = CbxdSimulation.build(cfg)
    beam = sim.direct_beam(0.0)
    clear = CbxdSimulation.build(_config(**{**cfg.model_dump(), "sample": {"defocus_mm": 1.0}}))
    free = clear.direct_beam(0.0)
    # the whole pupil (6 x 6 mm at 300 mm) lies on the 12.8 mm detector: all photons arrive
    assert free.sum() == pytest.approx(1e9, rel=0.02)
    # the 10 x 20 um crystal magnified 300 x casts a 3 x 6 mm shadow inside the pupil
    ratio = beam[free > 0] / free[free > 0]
    assert ratio.min() == pytest.approx(np.exp(-50 * 0.010), rel=0.05)
    assert ratio.max() == pytest.approx(1.0)
    shadow = (ratio < 0.99).sum() * 0.1**2  # mm^2 on the detector
    assert shadow == pytest.approx(3.0 * 6.0, rel=0.1)
    frame, _ = sim.frame(0)
    assert frame.max() > 1e4
