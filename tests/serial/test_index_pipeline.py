"""``crystalscope serial index`` and ``crystalscope cell refine`` end to end: simulated
frames -> pre-processing -> cell refinement, indexing, stream and indexamajig input."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from crystalscope.cli.main import main
from crystalscope.dataset import Dataset
from crystalscope.index.assign import ub_matrices
from crystalscope.index.compare import misorientation_deg
from crystalscope.io.crystfel_cell import UnitCellFile, read_cell, write_cell
from crystalscope.io.crystfel_geom import read_geom
from crystalscope.io.crystfel_stream import read_stream
from crystalscope.io.lst import read_lst
from crystalscope.serial.config import PreprocessConfig
from crystalscope.serial.output import run_preprocess
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation, simulate_serial

SIM = {
    "n_crystals": 40,
    "seed": 5,
    "source": {"d_min": 2.5},
    "beam_effects": {
        "centre_jitter_px": 0.5, "ellipticity": 0.015, "ellipticity_angle_deg": 20.0,
        "dose_e_per_a2": 0.3,
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Simulated frames, pre-processed, then indexed through the command line."""
    root = tmp_path_factory.mktemp("index")
    cfg = SerialConfig.model_validate(SIM)
    simulate_serial(cfg, root / "sim")
    pre = PreprocessConfig.model_validate(
        {
            "input": {"files": [str(root / "sim" / "frames.h5")]},
            "compute": {"progress": False}, "ellipticity": {"min_peaks": 200},
            "output": {"directory": str(root / "pre"), "frames": False},
        }
    )  # fmt: skip
    run_preprocess(pre)
    start = UnitCellFile("tetragonal", "P", "c", (80.0, 80.0, 37.5, 90.0, 90.0, 90.0))
    write_cell(start, root / "start.cell")
    code = main(
        [
            "serial", "index", "-i", str(root / "pre" / "preprocessed.h5"),
            "--cell", str(root / "start.cell"), "--space-group", "P 43 21 2",
            "-o", str(root / "idx"), "--set", "compute.progress=false",
        ]
    )  # fmt: skip
    assert code == 0
    return {"root": root, "idx": root / "idx", "pre": root / "pre"}


def test_indexing_finds_the_true_orientations(run: dict[str, Path]) -> None:
    crystals = pd.read_csv(run["idx"] / "crystals.csv")
    sim = SerialSimulation.build(SerialConfig.model_validate(SIM))
    truth = sim.crystals.set_index("frame")
    assert len(crystals) >= 0.85 * len(truth), f"{len(crystals)} of {len(truth)} indexed"
    ub = ub_matrices(crystals)
    errors = []
    for i, frame in enumerate(crystals["frame"]):
        u = truth.loc[frame, [f"u{a}{b}" for a in range(3) for b in range(3)]]
        ub_true = sim.base.with_orientation(u.to_numpy(float).reshape(3, 3)).UB
        errors.append(misorientation_deg(ub[i], ub_true, "P 43 21 2"))
    assert np.median(errors) < 0.5 and np.max(errors) < 2.0, np.round(errors, 2)
    cell = read_cell(run["idx"] / "cell.cell").cell
    assert abs(cell.a / 79.1 - 1) < 0.005 and abs(cell.c / 37.9 - 1) < 0.005, cell


def test_stream_and_tables_agree(run: dict[str, Path]) -> None:
    stream = read_stream(run["idx"] / "indexed.stream")
    crystals = pd.read_csv(run["idx"] / "crystals.csv")
    assert len(stream.crystals) == len(crystals)
    np.testing.assert_allclose(stream.ub_matrices(), ub_matrices(crystals), atol=2e-8)
    ds = Dataset.open(run["idx"] / "indexed.h5")
    assert len(ds.crystals) == len(crystals)
    lst = read_lst(run["idx"] / "indexed.lst")
    assert len(lst) == crystals["frame"].nunique()
    assert (run["idx"] / "indexing.png").stat().st_size > 10_000
    assert (run["idx"] / "cell.png").stat().st_size > 10_000


def test_indexamajig_input_has_corrected_peaks(run: dict[str, Path]) -> None:
    """Peaks in peaks.cxi on the nominal geometry give the q of the full model."""
    from crystalscope.index.peaks import peak_vectors
    from crystalscope.serial.preprocess import load_preprocessed_detector

    geom = read_geom(run["idx"] / "indexamajig" / "peaks.geom")
    assert geom.peak_list == "/entry_1/result_1" and geom.peak_list_type == "cxi"
    pre = Dataset.open(run["pre"] / "preprocessed.h5")
    full = load_preprocessed_detector(pre, read_geom(run["pre"] / "detector.geom"))
    with h5py.File(run["idx"] / "indexamajig" / "peaks.cxi", "r") as fh:
        frames = fh["/entry_1/frame"][()]
        n = fh["/entry_1/result_1/nPeaks"][()]
        x = fh["/entry_1/result_1/peakXPosRaw"][()]
        y = fh["/entry_1/result_1/peakYPosRaw"][()]
        assert fh["/entry_1/data_1/data"].shape[0] == len(frames)
    i = int(np.argmax(n))
    virtual = pd.DataFrame({"frame": frames[i], "fs": x[i, : n[i]], "ss": y[i, : n[i]]})
    q_virtual = peak_vectors(virtual, geom)[["qx", "qy", "qz"]].to_numpy()
    peaks = pre.peaks()
    peaks = peaks[peaks["frame"] == frames[i]]
    q_full = peak_vectors(peaks, full, shots=pre.shots)[["qx", "qy", "qz"]].to_numpy()
    assert len(q_full) == n[i]
    np.testing.assert_allclose(q_virtual, q_full, atol=2e-6)
    lst = read_lst(run["idx"] / "indexamajig" / "peaks.lst")
    assert len(lst) == len(frames)


def test_cell_refine_command(run: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = run["root"] / "refined.cell"
    code = main(
        [
            "cell", "refine", str(run["pre"] / "preprocessed.h5"), "--parameters",
            "78.5 78.5 38.2 90 90 90", "--lattice", "tP", "-o", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    cell = read_cell(out).cell
    assert abs(cell.a / 79.1 - 1) < 0.005 and abs(cell.c / 37.9 - 1) < 0.005
    assert "79." in capsys.readouterr().out


def test_index_refuses_to_overwrite_and_bad_cells(run: dict[str, Path], capsys) -> None:
    args = ["serial", "index", "-i", str(run["pre"] / "preprocessed.h5"),
            "--cell", str(run["root"] / "start.cell"), "-o", str(run["idx"])]  # fmt: skip
    assert main(args) == 2
    assert "output exists" in capsys.readouterr().err
    code = main(["cell", "refine", str(run["pre"] / "preprocessed.h5"), "--parameters", "1 2 3"])
    assert code == 2 and "six cell parameters" in capsys.readouterr().err
    bad = ["--parameters", "79 79 38 90 90 90", "--lattice", "xQ"]
    code = main(["cell", "refine", str(run["pre"] / "preprocessed.h5"), *bad])
    assert code == 2 and "xQ" in capsys.readouterr().err
    raw = str(run["root"] / "sim" / "frames.h5")  # frames without peak lists
    assert main(["cell", "find", raw]) == 2
    err = capsys.readouterr().err
    assert "frames.h5" in err and "serial preprocess" in err


@pytest.mark.slow
def test_p63_data_end_up_in_one_setting(tmp_path: Path) -> None:
    """P 63 (ambiguity k,h,-l): after `serial index` every crystal's UB relates to the
    truth by an operator of one coset (l -> l for all, or l -> -l for all)."""
    sim_cfg = {
        "n_crystals": 120, "seed": 8,
        "source": {"structure": "builtin:p63-protein", "d_min": 2.5},
        "beam_effects": {"centre_jitter_px": 0.5, "dose_e_per_a2": 0.3},
    }  # fmt: skip
    cfg = SerialConfig.model_validate(sim_cfg)
    simulate_serial(cfg, tmp_path / "sim")
    pre = PreprocessConfig.model_validate(
        {
            "input": {"files": [str(tmp_path / "sim" / "frames.h5")]},
            "compute": {"progress": False}, "ellipticity": {"fit": False},
            "output": {"directory": str(tmp_path / "pre"), "frames": False},
        }
    )  # fmt: skip
    run_preprocess(pre)
    code = main(
        [
            "serial", "index", "-i", str(tmp_path / "pre" / "preprocessed.h5"),
            "--set", "cell.parameters=[58.3, 58.3, 71.6, 90, 90, 120]",
            "--space-group", "P 63", "-o", str(tmp_path / "idx"),
            "--set", "compute.progress=false",
        ]
    )  # fmt: skip
    assert code == 0
    crystals = pd.read_csv(tmp_path / "idx" / "crystals.csv")
    sim = SerialSimulation.build(cfg)
    truth = sim.crystals.set_index("frame")
    assert len(crystals) >= 0.85 * len(truth)
    signs = []
    for ub, frame in zip(ub_matrices(crystals), crystals["frame"], strict=True):
        u = truth.loc[frame, [f"u{a}{b}" for a in range(3) for b in range(3)]]
        ub_true = sim.base.with_orientation(u.to_numpy(float).reshape(3, 3)).UB
        op = np.linalg.solve(ub_true, ub)
        assert np.allclose(op, np.rint(op), atol=0.05), op
        signs.append(np.rint(op[2, 2]))
    signs_arr = np.array(signs)
    same = max(np.mean(signs_arr > 0), np.mean(signs_arr < 0))
    assert same >= 0.95, f"{100 * same:.1f} % in the majority setting"


def test_cell_find_command(run: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = run["root"] / "found.cell"
    assert main(["cell", "find", str(run["pre"] / "preprocessed.h5"), "-o", str(out)]) == 0
    found = read_cell(out)
    assert found.lattice_type == "tetragonal" and found.centering == "P"
    cell = found.cell
    assert abs(cell.a / 79.1 - 1) < 0.01 and abs(cell.c / 37.9 - 1) < 0.01, cell
    assert "tP" in capsys.readouterr().out


def test_residual_histogram_counts_every_crystal() -> None:
    from crystalscope.serial.indexing import residual_histogram

    res = np.array([1e-4, 2e-4, 2e-4, 3e-4, np.nan])
    lines = residual_histogram(res, n_bins=2, width=10)
    assert lines[0].startswith("residuals") and len(lines) == 3
    assert [int(line.split()[-1]) for line in lines[1:]] == [1, 3]
    assert lines[2].count("#") == 10 and residual_histogram(np.array([np.nan])) == []


@pytest.mark.parametrize(
    "bravais", ["aP", "mP", "mC", "oP", "oC", "oI", "oF", "tP", "tI", "hP", "hR", "cP", "cI", "cF"]
)
def test_cell_files_round_trip_every_bravais_lattice(bravais: str, tmp_path: Path) -> None:
    """A .cell written for a Bravais lattice is read back as the same lattice (hR on
    hexagonal axes is CrystFEL's `hexagonal` with centring `H`)."""
    import gemmi

    from crystalscope.serial.index_config import CellConfig
    from crystalscope.serial.indexing import cell_file, starting_cell

    params = {
        "a": (10, 11, 12, 80, 100, 95), "m": (10, 11, 12, 90, 100, 90),
        "o": (10, 11, 12, 90, 90, 90), "t": (10, 10, 12, 90, 90, 90),
        "h": (10, 10, 12, 90, 90, 120), "c": (10, 10, 10, 90, 90, 90),
    }[bravais[0]]  # fmt: skip
    write_cell(cell_file(gemmi.UnitCell(*params), bravais), tmp_path / "x.cell")
    _, symbol = starting_cell(CellConfig(file=tmp_path / "x.cell"))
    assert symbol == bravais
