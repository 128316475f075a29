"""``crystalscope serial run --watch``: files arriving while the watcher runs are each
processed once, when complete, and the merged data and report follow them."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
from smallsim import run_yaml

from crystalscope.io.mtz import read_mtz
from crystalscope.serial.pipeline import load_run_config
from crystalscope.serial.rundir import read_record
from crystalscope.serial.watch_run import watch_serial

pytestmark = pytest.mark.slow


def _write_slowly(src: Path, dst: Path, pause_s: float) -> None:
    """Write ``dst`` in two halves with a pause, as a detector writing a file does."""
    data = src.read_bytes()
    with open(dst, "wb") as fh:
        fh.write(data[: len(data) // 2])
        fh.flush()
        time.sleep(pause_s)
        fh.write(data[len(data) // 2 :])


def _collect(files: list[Path], folder: Path, log: list[str]) -> None:
    shutil.copy(files[0].parent / "detector.geom", folder / "detector.geom")
    shutil.copy(files[0], folder / files[0].name)
    while not any("1 files processed" in m for m in log):
        time.sleep(0.1)
    _write_slowly(files[1], folder / files[1].name, pause_s=1.0)
    (folder / "broken.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(4096))
    shutil.copy(files[2], folder / files[2].name)


def test_watch_processes_each_file_once_and_updates_merged_data(
    small_files: list[Path], tmp_path: Path
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    settings = run_yaml([str(folder / "*.h5")], tmp_path / "runs")
    settings["input"]["geometry"] = str(folder / "detector.geom")  # type: ignore[index]
    settings["watch"] = {"settle_s": 0.3, "poll_s": 0.2, "idle_timeout_s": 8.0}
    cfg = load_run_config(None, settings)
    log: list[str] = []
    writer = threading.Thread(target=_collect, args=(small_files, folder, log), daemon=True)
    writer.start()
    run = watch_serial(cfg, folder, say=log.append)
    writer.join(timeout=5)
    updates = [m for m in log if "files processed" in m]
    assert updates[0].startswith("1 files processed") and updates[-1].startswith("3 files")
    state = read_record(run.directory / "watch-state.json")
    assert sorted(state["done"]) == sorted(f.name for f in small_files)
    assert list(state["failed"]) == ["broken.h5"]
    for f in small_files:  # each file once, complete (the half-written one too)
        record = read_record(run.directory / "files" / f.stem / "preprocessed" / "step.json")
        assert record["frames"] == 14
    merged = read_record(run.directory / "merged" / "step.json")
    assert merged["crystals_merged"] + merged["crystals_rejected"] >= 40
    assert len(read_mtz(run.directory / "merged" / "merged.mtz").table) > 1000
    assert (run.directory / "report.html").is_file()
    # a restarted watcher finds everything done and processes nothing again
    log.clear()
    cfg.watch.idle_timeout_s = 1.0
    again = watch_serial(cfg, folder, say=log.append)
    assert again.directory == run.directory
    assert not any("files processed" in m for m in log)
