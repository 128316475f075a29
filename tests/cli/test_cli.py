"""The command line, run for real (in-process through ``main`` and once as a subprocess)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from crystalscope import __version__
from crystalscope.cli.main import EXIT_USER_ERROR, main


def _info_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    assert main(["info", "--json", str(path)]) == 0
    return json.loads(capsys.readouterr().out)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"crystalscope {__version__}"


def test_console_script_runs_and_reports_user_error(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("crystalscope")
    assert exe.exists(), "the console script is installed with the package"
    done = subprocess.run(
        [exe, "info", str(tmp_path / "missing.mtz")], capture_output=True, text=True
    )
    assert done.returncode == EXIT_USER_ERROR
    assert "missing.mtz" in done.stderr and "not found" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_info_mtz(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = _info_json(shared_data / "reciprocalspaceship" / "HEWL_SSAD_24IDC.mtz", capsys)
    assert rec["format"] == "mtz"
    assert rec["reflections"] == 12542
    assert rec["space group"] == "P 43 21 2 (No. 96)"
    assert str(rec["cell"]).startswith("79.344 79.344 37.810")


def test_info_stream_and_geom(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = _info_json(shared_data / "crystfel" / "test.stream", capsys)
    assert (rec["chunks"], rec["crystals"]) == (70, 32)
    assert rec["geometry"] == "64 panels"
    rec = _info_json(shared_data / "crystfel" / "cspad-single.geom", capsys)
    assert rec["panels"] == 64 and rec["raw data shape"] == [1480, 1552]


def test_info_other_formats(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rec = _info_json(shared_data / "cdtools" / "PETRAIII_P25_Near_Field_Ptycho.cxi", capsys)
    assert rec["frames shape"] == "(200, 100, 100) int32"
    rec = _info_json(shared_data / "gemmi" / "INTEGRATE-tiny.HKL", capsys)
    assert rec["format"] == "xds-integrate" and rec["reflections"] == 129
    rec = _info_json(shared_data / "crystfel" / "cell-example.cell", capsys)
    assert rec["lattice"] == "hexagonal H"
    rec = _info_json(shared_data / "gemmi" / "1lzh.pdb.gz", capsys)
    assert rec["format"] == "structure" and rec["space group"] == "P 1 21 1"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.mtz", b"MTZ \x00\x00"),
        ("broken.stream", b"CrystFEL stream format 2.3\n----- Begin chunk -----\nImage"),
        ("unknown.xyz", b"hello"),
        ("bad.yaml", b"beam:\n  voltge_kv: 200\n"),
    ],
)
def test_bad_input_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: bytes
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["info", str(path)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert name in err
    assert "Traceback" not in err


def test_debug_shows_traceback(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="not found"):
        main(["--debug", "info", str(tmp_path / "missing.mtz")])


def test_convert_mtz_to_hkl_and_back(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hkl = tmp_path / "hewl.hkl"
    src = shared_data / "reciprocalspaceship" / "HEWL_SSAD_24IDC.mtz"
    assert main(["convert", str(src), str(hkl)]) == 0
    assert "12542 reflections" in capsys.readouterr().out
    mtz = tmp_path / "hewl.mtz"
    # the CrystFEL list has no cell or space group: MTZ output asks for them
    assert main(["convert", str(hkl), str(mtz)]) == EXIT_USER_ERROR
    assert "--cell" in capsys.readouterr().err
    assert not mtz.exists()
    args = ["convert", str(hkl), str(mtz), "--cell", "79.344 79.344 37.81 90 90 90"]
    assert main([*args, "--space-group", "P 43 21 2"]) == 0
    capsys.readouterr()
    rec = _info_json(mtz, capsys)
    assert rec["reflections"] == 12542 and rec["space group"] == "P 43 21 2 (No. 96)"


def test_convert_never_overwrites_without_flag(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dst = tmp_path / "out.geom"
    dst.write_text("precious")
    src = shared_data / "crystfel" / "pilatus.geom"
    assert main(["convert", str(src), str(dst)]) == EXIT_USER_ERROR
    assert "exists" in capsys.readouterr().err
    assert dst.read_text() == "precious"
    assert main(["convert", str(src), str(dst), "--overwrite"]) == 0
    capsys.readouterr()
    rec = _info_json(dst, capsys)
    assert rec["panels"] == 1 and rec["bad regions"] == 16


def test_convert_cxi_frames_to_dataset_and_tiff(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = shared_data / "cdtools" / "PETRAIII_P25_Near_Field_Ptycho.cxi"
    h5 = tmp_path / "frames.h5"
    assert main(["convert", str(src), str(h5)]) == 0
    capsys.readouterr()
    rec = _info_json(h5, capsys)
    assert rec["format"] == "dataset" and rec["frames"] == 200
    tif = tmp_path / "frames.tif"
    assert main(["convert", str(h5), str(tif)]) == 0
    capsys.readouterr()
    rec = _info_json(tif, capsys)
    assert rec["frames"] == 200 and rec["frame shape"] == [100, 100]


def test_convert_rejects_cross_family(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = shared_data / "crystfel" / "pilatus.geom"
    assert main(["convert", str(src), str(tmp_path / "x.mtz")]) == EXIT_USER_ERROR
    assert "no conversion from geom to mtz" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The main job on few crystals: raw frames to a merged MTZ, statistics and report;
    run again, it reuses the simulation and every step."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--crystals", "24"]) == 0
    text = capsys.readouterr().out
    assert "simulating 24 lysozyme-sized crystals" in text
    assert "overall" in text and "CC1/2" in text  # the statistics table
    assert "CC of the merged intensities with the simulation's truth" in text
    run = out / "runs" / "run-001"
    for name in (
        "preprocessed/preprocessed.h5",
        "indexed/crystals.csv",
        "integrated/observations.h5",
        "merged/merged.mtz",
        "merged/statistics.png",
        "dose-series/dose_series.csv",
        "report.html",
    ):
        assert (run / name).is_file(), name  # fmt: skip
    assert str(run / "report.html") in text and str(run / "merged" / "merged.mtz") in text
    overall = pd.read_csv(run / "merged" / "statistics.csv").iloc[-1]
    assert overall["cc_half"] > 0.9, overall.to_dict()
    rec = _info_json(out / "sim" / "frames.h5", capsys)
    assert rec["format"] == "dataset" and rec["crystals"] == 24 * 3  # 3 dose fractions each
    assert main(["demo", "--out", str(out), "--crystals", "24"]) == 0
    again = capsys.readouterr().out
    assert "reusing the simulated data" in again and "computed" not in again
    assert not (out / "runs" / "run-002").exists()
    shutil.rmtree(out)
