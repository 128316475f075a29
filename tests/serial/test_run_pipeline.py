"""``crystalscope serial run``: the whole chain, step skipping and reuse, kill-and-resume,
a real dask.distributed LocalCluster, and bad input among good files.

Data: three files of simulated 200 kV lysozyme-like stills (tests/serial/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (the frames are bitshuffle/LZ4-compressed)
import numpy as np
import pytest
import yaml
from smallsim import run_yaml

from crystalscope.cli.main import main
from crystalscope.io.mtz import read_mtz
from crystalscope.serial.pipeline import load_run_config, run_serial
from crystalscope.serial.rundir import read_record

pytestmark = pytest.mark.slow


def _quiet(_msg: str) -> None:
    return None


def _write_config(path: Path, data: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def _merged(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Miller indices and merged intensities of a run, sorted by hkl."""
    mtz = read_mtz(run_dir / "merged" / "merged.mtz")
    table = mtz.table.sort_values(["h", "k", "l"])
    return table[["h", "k", "l"]].to_numpy(), table["I"].to_numpy()


@pytest.fixture(scope="module")
def reference(small_files: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run on local threads; returns its run directory."""
    root = tmp_path_factory.mktemp("reference")
    cfg = load_run_config(_write_config(root / "run.yaml", run_yaml(small_files, root / "runs")))
    run = run_serial(cfg, say=_quiet)
    return run.directory


def test_run_writes_every_step_and_records_it(reference: Path) -> None:
    assert reference.name == "run-001"
    for step in ("preprocessed", "indexed", "integrated", "merged"):
        record = read_record(reference / step / "step.json")
        assert record is not None and len(record["fingerprint"]) == 16
    assert read_record(reference / "run.json")["complete"] is True
    assert (reference / "merged" / "merged.mtz").is_file()
    assert (reference / "merged" / "statistics.csv").is_file()
    hkl, intensity = _merged(reference)
    assert len(hkl) > 1000 and np.all(np.isfinite(intensity))
    config = yaml.safe_load((reference / "config.yaml").read_text())
    assert config["cell"]["space_group"] == "P 43 21 2"
    assert all(os.path.isabs(f) for f in config["input"]["files"])


def test_unchanged_run_is_skipped_and_changed_merge_reuses_earlier_steps(
    small_files: list[Path], tmp_path: Path
) -> None:
    cfg_path = _write_config(tmp_path / "run.yaml", run_yaml(small_files, tmp_path / "runs"))
    first = run_serial(load_run_config(cfg_path), say=_quiet)
    assert [s.status for s in first.steps] == ["computed"] * 4
    again = run_serial(load_run_config(cfg_path), say=_quiet)
    assert again.directory == first.directory
    assert [s.status for s in again.steps] == ["up to date"] * 4
    said: list[str] = []
    changed = run_serial(load_run_config(cfg_path, {"merging.n_cycles": 1}), say=said.append)
    assert changed.directory.name == "run-002"
    assert [s.status for s in changed.steps] == ["reused", "reused", "reused", "computed"]
    assert [m for m in said if m.endswith(": running")] == ["merged: running"]
    # the earlier run is untouched, the reused files are the same files (hard links)
    old = first.directory / "indexed" / "indexed.h5"
    assert os.path.samefile(old, changed.directory / "indexed" / "indexed.h5")
    before = _merged(changed.directory)[1]
    forced = run_serial(load_run_config(cfg_path, {"merging.n_cycles": 1}), force=True,
                        say=_quiet)  # fmt: skip
    assert forced.directory.name == "run-002"
    assert [s.status for s in forced.steps] == ["computed"] * 4
    np.testing.assert_array_equal(_merged(forced.directory)[1], before)
    assert not np.array_equal(_merged(first.directory)[1], before)  # n_cycles matters


def _start(cfg_path: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "crystalscope", "serial", "run", str(cfg_path)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen[bytes], path: Path, timeout: float = 300.0) -> bool:
    """SIGKILL ``proc`` as soon as ``path`` exists; False if it ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        if path.exists():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"{path} never appeared")


def test_killed_run_resumes_to_identical_results(
    small_files: list[Path], reference: Path, tmp_path: Path
) -> None:
    cfg_path = _write_config(tmp_path / "run.yaml", run_yaml(small_files, tmp_path / "runs"))
    run_dir = tmp_path / "runs" / "run-001"
    # killed during pre-processing (its directory exists, its record does not yet)
    assert _kill_when(_start(cfg_path), run_dir / "preprocessed")
    assert read_record(run_dir / "preprocessed" / "step.json") is None
    # killed during indexing, then during integration
    assert _kill_when(_start(cfg_path), run_dir / "indexed")
    assert _kill_when(_start(cfg_path), run_dir / "integrated")
    assert not (run_dir / "merged" / "merged.mtz").exists()
    proc = _start(cfg_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()
    assert read_record(run_dir / "run.json")["complete"] is True
    assert not list(run_dir.rglob("*.part")) and not list(run_dir.glob(".*partial"))
    hkl_ref, i_ref = _merged(reference)
    hkl, i = _merged(run_dir)
    np.testing.assert_array_equal(hkl, hkl_ref)
    np.testing.assert_array_equal(i, i_ref)


def test_local_cluster_gives_the_same_merged_intensities(
    small_files: list[Path], reference: Path, tmp_path: Path
) -> None:
    distributed = pytest.importorskip("distributed")
    cfg = load_run_config(None, run_yaml(small_files, tmp_path / "runs"))
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert len(client.scheduler_info()["workers"]) == 2
        run = run_serial(cfg, client=client, say=_quiet)
    hkl_ref, i_ref = _merged(reference)
    hkl, i = _merged(run.directory)
    np.testing.assert_array_equal(hkl, hkl_ref)
    np.testing.assert_allclose(i, i_ref, rtol=1e-9, atol=0)


def test_corrupt_file_and_nan_frame_are_skipped_not_fatal(
    small_files: list[Path], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    good = [shutil.copy(f, data / f.name) for f in small_files[:2]]
    shutil.copy(small_files[0].parent / "detector.geom", data)
    with h5py.File(good[1], "r+") as fh:
        frames = fh["entry/data/data"]
        frames[3] = np.full(frames.shape[1:], np.nan, dtype=frames.dtype)
    truncated = data / "truncated.h5"
    raw = small_files[2].read_bytes()
    truncated.write_bytes(raw[: len(raw) * 2 // 3])
    cfg = load_run_config(None, run_yaml([str(data / "*.h5")], tmp_path / "runs"))
    run = run_serial(cfg, say=_quiet)
    assert list(run.skipped_files) == [str(truncated)]
    assert "truncated" in run.skipped_files[str(truncated)]
    pre = read_record(run.directory / "preprocessed" / "step.json")
    assert pre["skipped_frames"] == 1
    rejected = (run.directory / "preprocessed" / "rejected_frames.csv").read_text()
    assert "non-finite" in rejected
    assert (run.directory / "merged" / "merged.mtz").is_file()


def test_wrong_geometry_is_one_clear_error(
    small_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    geom = tmp_path / "wrong.geom"
    geom.write_text(
        "clen = 1.1\nphoton_energy = 200000\nres = 18181.8\nadu_per_eV = 1\n"
        "p0/min_fs = 0\np0/max_fs = 1999\np0/min_ss = 0\np0/max_ss = 999\n"
        "p0/fs = x\np0/ss = y\np0/corner_x = -50\np0/corner_y = -50\n"
        "p0/data = /entry/data/data\n",
        encoding="utf-8",
    )
    cfg = _write_config(tmp_path / "run.yaml", run_yaml(small_files[:1], tmp_path / "runs"))
    code = main(["serial", "run", str(cfg), "--geometry", str(geom)])
    err = capsys.readouterr().err
    assert code != 0
    assert "wrong.geom" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "run-001" / "merged").exists()
