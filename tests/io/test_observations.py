"""Round trip and bad input of the observations file (crystalscope.io.observations)."""

from __future__ import annotations

from pathlib import Path

import gemmi
import h5py
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import CrystalscopeError, FormatError
from crystalscope.io.observations import ObservationFile, read_observations, write_observations


def _data(n: int = 50) -> ObservationFile:
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "h": rng.integers(-20, 20, n).astype(np.int32),
            "k": rng.integers(-20, 20, n).astype(np.int32),
            "l": rng.integers(-9, 9, n).astype(np.int32),
            "I": rng.normal(100, 30, n),
            "sigma": rng.uniform(1, 5, n),
            "crystal_id": np.repeat(np.arange(5), n // 5).astype(np.int64),
            "flags": np.zeros(n, np.int32),
        }
    )
    return ObservationFile(
        table, gemmi.UnitCell(79.1, 79.1, 37.9, 90, 90, 90), gemmi.SpaceGroup("R 3:H"),
        0.02508, {"source": "sim/frames.h5", "r_peak_px": 3.0},
    )  # fmt: skip


def test_round_trip_keeps_columns_dtypes_and_metadata(tmp_path: Path) -> None:
    data = _data()
    path = write_observations(data, tmp_path / "obs.h5")
    back = read_observations(path)
    pd.testing.assert_frame_equal(back.table, data.table)
    assert back.cell.parameters == pytest.approx(data.cell.parameters)
    assert back.space_group.xhm() == "R 3:H"
    assert back.wavelength == pytest.approx(0.02508)
    assert back.meta == data.meta


def test_empty_table_round_trips(tmp_path: Path) -> None:
    data = _data()
    data.table = data.table.iloc[:0]
    back = read_observations(write_observations(data, tmp_path / "obs.h5"))
    assert len(back.table) == 0 and list(back.table.columns) == list(data.table.columns)


def test_existing_file_is_not_overwritten(tmp_path: Path) -> None:
    path = write_observations(_data(), tmp_path / "obs.h5")
    before = path.read_bytes()
    with pytest.raises(CrystalscopeError, match="exists"):
        write_observations(_data(10), path)
    assert path.read_bytes() == before
    write_observations(_data(10), path, overwrite=True)
    assert len(read_observations(path).table) == 10


def test_bad_files_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not found"):
        read_observations(tmp_path / "missing.h5")
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    with pytest.raises(FormatError, match="cannot read HDF5") as err:
        read_observations(text)
    assert err.value.path == str(text)
    path = write_observations(_data(), tmp_path / "obs.h5")
    with h5py.File(path, "a") as f:
        del f["observations/I"]
    with pytest.raises(FormatError, match="column missing") as err:
        read_observations(path)
    assert err.value.field == "observations/I"
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(write_observations(_data(), tmp_path / "b.h5").read_bytes()[:2000])
    with pytest.raises(FormatError):
        read_observations(truncated)


def test_non_numeric_columns_are_refused(tmp_path: Path) -> None:
    data = _data()
    data.table["panel"] = "q0"
    with pytest.raises(FormatError, match="numeric") as err:
        write_observations(data, tmp_path / "obs.h5")
    assert err.value.field == "panel" and not (tmp_path / "obs.h5").exists()
