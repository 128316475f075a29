"""End-to-end SerialED pre-processing against simulator truth (issue 4's numbers)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crystalscope.dataset import Dataset
from crystalscope.errors import ConfigError, DataError
from crystalscope.io.pixel_mask import write_pixel_map
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.inputs import open_input
from crystalscope.serial.output import run_preprocess
from crystalscope.serial.preprocess import preprocess
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation, read_truth, simulate_serial

SIM = {
    "n_crystals": 30,
    "seed": 11,
    "beam_effects": {
        "centre_jitter_px": 0.5,
        "ellipticity": 0.02,
        "ellipticity_angle_deg": 30.0,
        "dose_e_per_a2": 0.3,
    },
    "detector_effects": {
        "dead_pixel_fraction": 1e-3,
        "hot_pixel_fraction": 2e-4,
        "flat_field_rms": 0.03,
    },
}


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory):
    """A simulated run with a dead/hot pixel mask file and a flat-field file."""
    out = tmp_path_factory.mktemp("serial")
    cfg = SerialConfig.model_validate(SIM)
    simulate_serial(cfg, out)
    sim = SerialSimulation.build(cfg)
    write_pixel_map(out / "mask.h5", (sim.state.dead | sim.state.hot).astype(np.uint8))
    write_pixel_map(out / "flat.h5", sim.state.flat)
    return out


def _config(sim_dir, **sections) -> PreprocessConfig:
    data = {
        "input": {"files": [str(sim_dir / "frames.h5")]},
        "corrections": {
            "mask_file": str(sim_dir / "mask.h5"),
            "flat_field": str(sim_dir / "flat.h5"),
        },
        "compute": {"progress": False},
        "ellipticity": {"min_peaks": 200},
    }
    data.update(sections)
    return PreprocessConfig.model_validate(data)


@pytest.fixture(scope="module")
def result(simulated):
    cfg = _config(simulated)
    return preprocess(open_input(cfg.input), cfg)


def test_centre_accuracy(result) -> None:
    shots = result.dataset.shots
    hits = shots[shots["hit"]]
    assert len(hits) >= 25, result.summary()
    truth = hits[["true_centre_fs", "true_centre_ss"]].to_numpy()
    lor = hits[["lorentz_fs", "lorentz_ss"]].to_numpy()
    lor_rms = np.sqrt(np.nanmean(np.sum((lor - truth) ** 2, axis=1)))
    assert lor_rms <= 0.5, f"Lorentzian-only centre RMS error {lor_rms:.3f} px"
    friedel = hits[(hits["centre_method"] == "friedel") & (hits["friedel_pairs"] >= 10)]
    assert len(friedel) >= 0.8 * len(hits)
    err = (
        friedel[["centre_fs", "centre_ss"]].to_numpy()
        - friedel[["true_centre_fs", "true_centre_ss"]].to_numpy()
    )
    rms = np.sqrt(np.mean(np.sum(err**2, axis=1)))
    assert rms <= 0.1, f"Friedel-refined centre RMS error {rms:.3f} px on {len(friedel)} frames"


def test_peaks_match_truth(result, simulated) -> None:
    """Found peaks lie on true spots (precision) and catch the strong ones (recall)."""
    truth = read_truth(simulated / "truth.h5")
    peaks = result.dataset.peaks()
    strong = truth[truth["counts"] > 200]
    found, matched, hit_strong, n_strong = 0, 0, 0, 0
    for frame, pk in peaks.groupby("frame"):
        t = truth[truth["frame"] == frame]
        if not len(t):
            continue
        d = np.hypot(pk["fs"].to_numpy()[:, None] - t["fs"].to_numpy()[None],
                     pk["ss"].to_numpy()[:, None] - t["ss"].to_numpy()[None])  # fmt: skip
        found += len(pk)
        matched += int((d.min(axis=1) < 2.0).sum())
        s = strong[strong["frame"] == frame]
        ds_ = np.hypot(s["fs"].to_numpy()[:, None] - pk["fs"].to_numpy()[None],
                       s["ss"].to_numpy()[:, None] - pk["ss"].to_numpy()[None])  # fmt: skip
        n_strong += len(s)
        hit_strong += int((ds_.min(axis=1) < 2.0).sum()) if len(pk) else 0
    assert found > 1000
    assert matched / found >= 0.95, f"precision {matched / found:.3f}"
    assert hit_strong / n_strong >= 0.85, f"recall of strong spots {hit_strong / n_strong:.3f}"


def test_ellipticity_carried_into_detector(result) -> None:
    fit = result.ellipticity
    assert fit is not None, result.notes
    assert abs(fit.ratio / 1.02 - 1) <= 0.002, f"ratio {fit.ratio:.5f}"
    diff = (fit.angle_deg - 30.0 + 90) % 180 - 90
    assert abs(diff) <= 2.0, f"angle {fit.angle_deg:.2f}"
    assert result.detector.distortion == fit.distortion


def test_background_subtracted_frames(result) -> None:
    """Peak-free pixels of the output frames average to ~0 (the background is gone)."""
    ds = result.dataset
    frames = ds.data[:4].compute()
    masks = ds["mask"][:4].compute().astype(bool)
    raw = result.raw.data[:4].compute()
    for out, mask, before in zip(frames, masks, raw, strict=True):
        usable = ~mask
        level = np.median(before[usable])
        assert abs(np.median(out[usable])) < 0.05 * max(level, 1.0) + 0.5


def test_bad_frames_are_flagged_and_skipped(simulated, tmp_path) -> None:
    ds = Dataset.open(simulated / "frames.h5").select(slice(0, 6))
    frames = ds.data.compute()
    frames[1] = np.nan
    frames[3] = 0.0
    bad = Dataset.from_arrays(frames, ds.shots[["frame", "true_centre_fs", "true_centre_ss"]])
    bad.write(tmp_path / "bad.h5")
    cfg = _config(simulated, input={"files": [str(tmp_path / "bad.h5")],
                                    "geometry": str(simulated / "detector.geom")})  # fmt: skip
    res = preprocess(open_input(cfg.input), cfg)
    assert len(res.dataset.shots) == 4
    assert dict(zip(res.rejected["frame"], res.rejected["reason"], strict=True)) == {
        1: "non-finite values",
        3: "all pixels zero",
    }


def test_mask_of_wrong_shape(simulated, tmp_path) -> None:
    write_pixel_map(tmp_path / "small.h5", np.zeros((10, 10), np.uint8))
    cfg = _config(simulated, corrections={"mask_file": str(tmp_path / "small.h5")})
    with pytest.raises(DataError) as err:
        preprocess(open_input(cfg.input), cfg)
    assert "small.h5" in str(err.value) and err.value.field == "corrections.mask_file"


def test_missing_dead_time_parameter(simulated) -> None:
    cfg = _config(simulated, corrections={"dead_time_s": 1e-7})
    with pytest.raises(ConfigError) as err:
        preprocess(open_input(cfg.input), cfg, config_path="run.yaml")
    assert err.value.field == "corrections.exposure_s" and err.value.path == "run.yaml"


def test_outputs_written_and_never_overwritten(simulated, tmp_path) -> None:
    cfg = _config(simulated, output={"directory": str(tmp_path / "out")})
    res, paths = run_preprocess(cfg)
    for key in ("dataset", "hits", "geometry", "overview", "ellipticity", "config"):
        assert paths[key].stat().st_size > 0, key
    written = Dataset.open(paths["dataset"])
    assert len(written.shots) == len(res.dataset.shots)
    hits_lines = paths["hits"].read_text().splitlines()
    assert len(hits_lines) == int(res.dataset.shots["hit"].sum())
    stamp = paths["dataset"].stat().st_mtime_ns
    with pytest.raises(Exception, match="output exists"):
        run_preprocess(cfg)
    assert paths["dataset"].stat().st_mtime_ns == stamp


def test_peaks_only_output_points_at_raw_frames(simulated, tmp_path) -> None:
    cfg = _config(
        simulated, output={"directory": str(tmp_path / "virt"), "frames": False},
        ellipticity={"fit": False},
    )  # fmt: skip
    res, paths = run_preprocess(cfg)
    written = Dataset.open(paths["dataset"])
    raw = Dataset.open(simulated / "frames.h5")
    np.testing.assert_array_equal(written.data[0].compute(), raw.data[0].compute())
    pd.testing.assert_frame_equal(
        written.peaks().reset_index(drop=True), res.dataset.peaks().reset_index(drop=True),
        check_dtype=False,
    )  # fmt: skip


def test_friedel_refinement_never_jumps_to_a_half_lattice_point(shared_data, tmp_path) -> None:
    """Real lysozyme intensities (a few very strong low-order spots): pairs h, g - h
    cluster at half-lattice points about 3 px from the centre; the refinement must stay
    at the true centre (it used to jump there on half of the Friedel-refined frames)."""
    mtz = shared_data / "reciprocalspaceship" / "HEWL_SSAD_24IDC.mtz"
    sim = SerialConfig.model_validate(
        {
            "n_crystals": 40, "seed": 11,
            "source": {"structure": None, "mtz": str(mtz), "d_min": 2.2},
            "beam_effects": {"centre_jitter_px": 0.5},
        }
    )  # fmt: skip
    simulate_serial(sim, tmp_path / "sim")
    cfg = PreprocessConfig.model_validate(
        {"input": {"files": [str(tmp_path / "sim" / "frames.h5")]},
         "compute": {"progress": False}, "output": {"directory": str(tmp_path / "out")}}
    )  # fmt: skip
    shots = preprocess(open_input(cfg.input), cfg).dataset.shots
    err = np.hypot(shots["centre_fs"] - shots["true_centre_fs"],
                   shots["centre_ss"] - shots["true_centre_ss"])  # fmt: skip
    friedel = shots["centre_method"] == "friedel"
    assert friedel.sum() >= 5, shots["centre_method"].value_counts().to_dict()
    assert err.max() < 0.5, f"worst centre error {err.max():.2f} px"
    assert np.sqrt(np.mean(err[friedel] ** 2)) < 0.1, err[friedel].round(3).tolist()
