"""Pattern I/O, the sampling calculator and the ``cdi`` command line."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from crystalscope.cdi.io import read_pattern, write_pattern, write_reconstruction
from crystalscope.cdi.plan import plan_sampling, wavelength_from_kev
from crystalscope.cdi.simulate import detector_mask, octahedral_cluster, oversampling_ratio
from crystalscope.cli.cdi import app
from crystalscope.errors import ConfigError, CrystalscopeError, DataError, FormatError


def test_plan_reproduces_seed_002_section_4() -> None:
    # 2048 x 2048 detector, 75 um pixels, 30 m, 8 keV: samples up to ~20 um at ~30 nm
    p = plan_sampling(
        distance_mm=30_000, pixel_size_um=75, n_pixels=2048, sample_size_um=20, energy_kev=8
    )
    assert wavelength_from_kev(8) == pytest.approx(1.5498, abs=1e-4)
    assert p.max_sample_um == pytest.approx(20.66, abs=0.01)
    assert p.oversampling == pytest.approx(3.0996, abs=1e-3) and p.ok
    assert p.resolution_at_sigma3_nm == pytest.approx(3 * 20_000 / 2048, rel=1e-9)
    dr_a = 3 * 20e4 / 2048
    assert p.depth_of_field_um == pytest.approx(2 * dr_a**2 / 1.5498 / 1e4, rel=1e-3)
    assert "oversampling" in p.table() and "depth of field" in p.table()
    with pytest.raises(ConfigError):
        plan_sampling(distance_mm=1, pixel_size_um=1, n_pixels=1, sample_size_um=1)
    with pytest.raises(ConfigError):
        plan_sampling(distance_mm=-1, pixel_size_um=1, n_pixels=1, sample_size_um=1, wavelength_a=1)


@pytest.mark.parametrize("suffix", [".cxi", ".npz"])
def test_pattern_round_trip(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.poisson(5.0, (32, 32)).astype(np.float32)
    mask = detector_mask((32, 32), 2.0, gap_px=2, module_px=16)
    path = write_pattern(tmp_path / f"p{suffix}", np.where(mask, 0, data), mask)
    back, m = read_pattern(path)
    np.testing.assert_array_equal(m, mask)
    np.testing.assert_array_equal(back[~mask], data[~mask])
    with pytest.raises(CrystalscopeError):
        write_pattern(path, data, mask)  # exists, no overwrite


def test_npy_tiff_and_separate_mask(tmp_path: Path) -> None:
    import tifffile

    data = np.arange(64, dtype=np.float32).reshape(8, 8)
    data[0, 0] = np.nan
    np.save(tmp_path / "p.npy", data)
    tifffile.imwrite(tmp_path / "p.tif", np.nan_to_num(data))
    mask = np.zeros((8, 8), np.uint8)
    mask[3, 4] = 1
    np.save(tmp_path / "m.npy", mask)
    i1, m1 = read_pattern(tmp_path / "p.npy", mask_path=tmp_path / "m.npy")
    assert m1[0, 0] and m1[3, 4] and m1.sum() == 2 and i1[0, 0] == 0
    i2, _m2 = read_pattern(tmp_path / "p.tif")
    np.testing.assert_array_equal(i2[1:], data[1:])
    np.save(tmp_path / "bad.npy", np.zeros((4, 4)))
    with pytest.raises(DataError, match="mask"):
        read_pattern(tmp_path / "p.npy", mask_path=tmp_path / "bad.npy")


def test_bad_files_name_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as err:
        read_pattern(tmp_path / "missing.cxi")
    assert "missing.cxi" in str(err.value)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["other"] = np.zeros((4, 4))
    with pytest.raises(FormatError, match="entry_1/data_1/data"):
        read_pattern(tmp_path / "x.h5")
    (tmp_path / "x.txt").write_text("1 2 3")
    with pytest.raises(FormatError, match="unknown pattern format"):
        read_pattern(tmp_path / "x.txt")
    np.save(tmp_path / "one.npy", np.zeros(5))
    with pytest.raises(DataError):
        read_pattern(tmp_path / "one.npy")
    path = write_reconstruction(tmp_path / "r.h5", np.ones((4, 4), complex))
    with h5py.File(path) as f:
        assert f["entry_1/image_1/object"].shape == (4, 4)


def test_octahedral_cluster_is_compact() -> None:
    obj = octahedral_cluster((96, 96), 30, n_particles=5)
    assert obj.min() >= 0 and obj.max() == pytest.approx(1)
    assert oversampling_ratio(obj, level=1e-2) >= 2.5


def test_cli_simulate_reconstruct_plan(tmp_path: Path) -> None:
    runner = CliRunner()
    pattern = tmp_path / "p.cxi"
    r = runner.invoke(app, ["simulate", "-o", str(pattern), "--size", "64", "--photons", "1e7"])
    assert r.exit_code == 0, r.output
    assert pattern.exists() and (tmp_path / "p.truth.npz").exists()
    out = tmp_path / "rec"
    args = ["reconstruct", str(pattern), "-o", str(out), "--runs", "2", "--keep", "1"]
    r = runner.invoke(
        app, [*args, "--positivity", "--algorithm", "AutoSupport,InitObj,HIO**50,ER**20"]
    )
    assert r.exit_code == 0, r.output
    for name in ("object.npz", "runs.csv", "object.png", "prtf.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "runs.csv").read_text().count("\n") == 3
    r = runner.invoke(app, args)  # outputs exist, no --overwrite
    assert isinstance(r.exception, CrystalscopeError)
    r = runner.invoke(app, ["reconstruct", str(pattern), "-o", str(out), "--keep", "9"])
    assert isinstance(r.exception, ConfigError)
    r = runner.invoke(
        app,
        [
            "plan",
            "--distance-mm",
            "30000",
            "--pixel-um",
            "75",
            "--n-pixels",
            "2048",
            "--sample-um",
            "20",
            "--energy-kev",
            "8",
        ],
    )
    assert r.exit_code == 0 and "3.10" in r.output
