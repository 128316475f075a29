"""Pre-processing inputs and modes: foreign HDF5 + geometry, TIFF, dose fractions, on-line,
distributed, and the CLI."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from crystalscope.cli.main import main
from crystalscope.dataset import Dataset
from crystalscope.errors import FormatError
from crystalscope.io.crystfel_geom import read_geom, write_geom
from crystalscope.io.images import write_image
from crystalscope.model.panel import MetadataRef
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.inputs import frame_detector, open_input
from crystalscope.serial.online import watch
from crystalscope.serial.preprocess import preprocess
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import simulate_serial

QUICK = {"compute": {"progress": False}, "ellipticity": {"fit": False}}


@pytest.fixture(scope="module")
def movie(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 crystals x 3 dose fractions on the single-panel preset."""
    out = tmp_path_factory.mktemp("movie")
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": 8,
            "seed": 5,
            "detector": {"preset": "single"},
            "dose": {"frames_per_crystal": 3},
            "beam_effects": {"dose_e_per_a2": 0.2, "centre_jitter_px": 0.5},
        }
    )
    simulate_serial(cfg, out)
    return out


def _cfg(**sections) -> PreprocessConfig:
    data = dict(QUICK)
    data.update(sections)
    return PreprocessConfig.model_validate(data)


def test_dose_fractions_aggregated(movie: Path) -> None:
    cfg = _cfg(
        input={"files": [str(movie / "frames.h5")]},
        aggregate={"enabled": True, "by": ["shot"], "first": 0, "n_frames": 2},
    )
    res = preprocess(open_input(cfg.input), cfg)
    assert len(res.dataset.shots) == 8
    assert set(res.dataset.shots["frame_count"]) == {2}
    raw = Dataset.open(movie / "frames.h5")
    first = raw.select("shot == 0 and fraction < 2").data.compute().sum(axis=0)
    np.testing.assert_allclose(res.raw.data[0].compute(), first, rtol=1e-6)


def _cheetah_file(src: Path, target: Path, clen_mm: float) -> None:
    """The frames in a foreign layout with a per-file camera length."""
    frames = Dataset.open(src).data[:4].compute()
    with h5py.File(target, "w") as f:
        f.create_dataset("/entry_1/data_1/data", data=frames)
        f["/LCLS/detector_1/EncoderValue"] = clen_mm


def test_foreign_hdf5_described_by_geometry(movie: Path, tmp_path: Path) -> None:
    det = read_geom(movie / "detector.geom")
    panels = tuple(
        dataclasses.replace(p, data="/entry_1/data_1/data", dims=("%", "ss", "fs"))
        for p in det.panels
    )
    det = dataclasses.replace(
        det, panels=panels, clen=MetadataRef("/LCLS/detector_1/EncoderValue", "mm")
    )
    write_geom(det, tmp_path / "cheetah.geom")
    _cheetah_file(movie / "frames.h5", tmp_path / "a.h5", 1100.0)
    _cheetah_file(movie / "frames.h5", tmp_path / "b.h5", 1250.0)
    cfg = _cfg(
        input={"files": [str(tmp_path / "*.h5")], "geometry": str(tmp_path / "cheetah.geom")}
    )
    raw = open_input(cfg.input)
    assert len(raw.dataset.shots) == 8
    assert list(raw.dataset.shots["clen"]) == [1100.0] * 4 + [1250.0] * 4
    assert frame_detector(raw.detector, raw.dataset.shots.iloc[5]).clen == pytest.approx(1250.0)
    res = preprocess(raw, cfg)
    assert res.dataset.shots["num_peaks"].max() > 10
    raw.dataset.close()
    with h5py.File(tmp_path / "b.h5", "a") as f:
        del f["/LCLS/detector_1/EncoderValue"]
    with pytest.raises(FormatError) as err:
        open_input(cfg.input)
    assert "b.h5" in str(err.value) and err.value.field == "/LCLS/detector_1/EncoderValue"


def test_tiff_frames(movie: Path, tmp_path: Path) -> None:
    frames = Dataset.open(movie / "frames.h5").data[:3].compute()
    for i, frame in enumerate(frames):
        write_image(tmp_path / f"frame_{i:03d}.tif", frame, {})
    cfg = _cfg(input={"files": [str(tmp_path / "frame_*.tif")],
                      "geometry": str(movie / "detector.geom")})  # fmt: skip
    res = preprocess(open_input(cfg.input), cfg)
    assert len(res.dataset.shots) == 3
    assert (res.dataset.shots["num_peaks"] > 10).all()


def test_missing_geometry_is_said_in_the_summary(movie: Path, tmp_path: Path) -> None:
    """Without a geometry a flat panel is assumed; the summary must say so (a moved frames
    file otherwise gives silently wrong resolutions: a 71.9 A cell for 79.1 A)."""
    frames = Dataset.open(movie / "frames.h5").data[:2].compute()
    for i, frame in enumerate(frames):
        write_image(tmp_path / f"frame_{i:03d}.tif", frame, {})
    cfg = _cfg(input={"files": [str(tmp_path / "frame_*.tif")]})
    res = preprocess(open_input(cfg.input), cfg)
    assert "no geometry file" in res.summary()
    with_geom = _cfg(input={"files": [str(tmp_path / "frame_*.tif")],
                            "geometry": str(movie / "detector.geom")})  # fmt: skip
    assert "no geometry file" not in preprocess(open_input(with_geom.input), with_geom).summary()


def test_distributed_cluster_gives_the_same_results(movie: Path) -> None:
    distributed = pytest.importorskip("distributed")
    cfg = _cfg(input={"files": [f"{movie / 'frames.h5'}"]})
    raw = open_input(cfg.input)
    sub = dataclasses.replace(raw, dataset=raw.dataset.select(slice(0, 6)))
    local = preprocess(sub, cfg)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        with distributed.Client(cluster) as client:
            remote = preprocess(sub, cfg, client=client)
    cols = ["centre_fs", "centre_ss", "num_peaks"]
    np.testing.assert_array_equal(remote.dataset.shots[cols], local.dataset.shots[cols])


_WRITE_IN_PLACE = """
import sys, time
import h5py, numpy as np
frames = np.load(sys.argv[1])
with h5py.File(sys.argv[2], "w") as f:
    dset = f.create_dataset("/data/data", shape=(0, *frames.shape[1:]),
                            maxshape=(None, *frames.shape[1:]), dtype=frames.dtype)
    for frame in frames:
        time.sleep(0.6)
        dset.resize(len(dset) + 1, axis=0)
        dset[-1] = frame
        f.flush()
"""


def _write_slowly(src: Path, folder: Path) -> None:
    """run_0 and run_2 appear complete (renamed); run_1 is written in place, frame by
    frame, by another process (as a detector's writer does), which holds the file open
    (HDF5-locked, growing) while the watcher looks at it."""
    frames = Dataset.open(src).data[:6].compute()
    for k in range(3):
        if k == 1:
            np.save(folder.parent / "run_1.npy", frames[2:4])
            subprocess.run(
                [sys.executable, "-c", _WRITE_IN_PLACE, str(folder.parent / "run_1.npy"),
                 str(folder / "run_1.h5")], check=True,
            )  # fmt: skip
            continue
        part = folder / f"run_{k}.h5.part"
        with h5py.File(part, "w") as f:
            f.create_dataset("/data/data", data=frames[2 * k : 2 * k + 2])
        part.rename(folder / f"run_{k}.h5")
        time.sleep(0.4)


def test_online_mode_processes_each_file_once(movie: Path, tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    cfg = _cfg(
        input={"geometry": str(movie / "detector.geom"), "data_path": "/data/data"},
        watch={"settle_s": 0.3, "poll_s": 0.1, "idle_timeout_s": 2.0},
        output={"directory": str(tmp_path / "out")},
        hits={"min_peaks": 5},
    )
    writer = threading.Thread(target=_write_slowly, args=(movie / "frames.h5", incoming))
    writer.start()
    state = watch(cfg, incoming)
    writer.join()
    assert sorted(state.done) == ["run_0.h5", "run_1.h5", "run_2.h5"], state.failed
    assert state.done["run_1.h5"]["frames"] == 2  # processed only once complete
    lines = (tmp_path / "out" / "preprocessed.lst").read_text().splitlines()
    assert len(lines) == sum(v["hits"] for v in state.done.values()) > 0
    assert lines[0].startswith("run_0/preprocessed.h5 //")
    # a restarted watcher finds nothing new to do
    again = watch(cfg.model_copy(update={"watch": cfg.watch.model_copy(
        update={"idle_timeout_s": 0.5})}), incoming)  # fmt: skip
    assert again.done == state.done
    assert len((tmp_path / "out" / "preprocessed.lst").read_text().splitlines()) == len(lines)


def test_cli_preprocess(movie: Path, tmp_path: Path) -> None:
    config = tmp_path / "pre.yaml"
    config.write_text(
        f"input:\n  files: ['{movie / 'frames.h5'}']\nellipticity:\n  fit: false\n"
        f"compute:\n  progress: false\n"
    )
    out = tmp_path / "cli-out"
    assert main(["serial", "preprocess", str(config), "--out", str(out)]) == 0
    assert (out / "preprocessed.h5").exists() and (out / "hits.lst").exists()
    assert main(["serial", "preprocess", str(config), "--out", str(out)]) == 2
    assert main(["serial", "preprocess", str(config), "--set", "peaks.min_snr=-1"]) == 2
    config.write_text("input:\n  files: []\n")
    assert main(["serial", "preprocess", str(config), "--out", str(tmp_path / "x")]) == 2
