"""End to end: a simulated cRED series with defocus gaps, written as an Instamatic-style
directory, imported, and processed by the full DIALS chain.

The frames come from crystalscope's rotation simulator, not from DIALS's predictions, so
agreement checks the geometry conventions (axis, beam centre, camera length, frame
angles, the Timepix cross) end to end.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from credtools import needs_dials

CELL = (7.92, 10.61, 13.84, 90.0, 104.5, 90.0)  # builtin:monoclinic-organic, P 1 21/c 1


def _same_cell(found: tuple[float, ...], true: tuple[float, ...], rel: float) -> bool:
    """Equal up to the choice of axes: edges sorted, obtuse/acute angle pairs mapped."""
    edges = sorted(found[:3]), sorted(true[:3])
    angles = sorted(min(a, 180.0 - a) for a in found[3:]), sorted(min(a, 180 - a) for a in true[3:])
    return all(abs(f - t) <= rel * t for f, t in zip(*edges, strict=True)) and all(
        abs(f - t) <= rel * t for f, t in zip(*angles, strict=True)
    )


@pytest.mark.slow
@needs_dials
def test_dials_chain_on_a_simulated_cred_experiment(tmp_path: Path) -> None:
    from crystalscope.rotation.cred_import import cred_import, simulated_series
    from crystalscope.rotation.dials_script import DialsOptions
    from crystalscope.rotation.instamatic import new_experiment_directory, write_cred_directory
    from crystalscope.rotation.process import run_dials
    from crystalscope.simulate.config import RotationConfig
    from crystalscope.simulate.rotation_output import simulate_rotation

    config = RotationConfig(
        n_frames=80,
        oscillation_deg=0.8,
        start_deg=-32.0,
        axis=(0.6, -0.8, 0.0),
        defocus_every=10,
        source={"structure": "builtin:monoclinic-organic", "d_min": 0.9},
        detector={"preset": "timepix-quad", "distance_mm": 500.0},
        detector_effects={"exposure_s": 0.5},
        beam_effects={"dose_e_per_a2": 0.5},
        seed=3,
    )
    simulate_rotation(config, tmp_path / "sim", progress=False)
    series = simulated_series(tmp_path / "sim")
    assert len(series.scan.excluded_frames) == 8
    experiment = new_experiment_directory(tmp_path / "data")
    write_cred_directory(experiment, series.frames, series.scan, defocused=series.defocused,
                         handoff=())  # fmt: skip
    imported = cred_import(experiment, tmp_path / "handoff", formats=("smv",),
                           dials=DialsOptions(nproc=2))  # fmt: skip
    assert imported.scan.excluded_frames == series.scan.excluded_frames
    assert imported.scan.beam_centre_px == pytest.approx(series.scan.beam_centre_px, abs=1e-6)
    result = run_dials(tmp_path / "handoff", say=lambda line: None)
    print(result.summary())
    assert result.indexed_fraction is not None and result.indexed_fraction >= 0.90
    assert result.cell is not None and _same_cell(result.cell, CELL, 0.01), result.cell
    assert result.laue_group == "2/m"
    assert result.mtz is not None and result.mtz.stat().st_size > 0
    assert len(result.shelx) == 2
    assert result.merging is not None and result.merging.n_unique > 500


def test_cell_comparison() -> None:
    assert _same_cell((10.61, 7.92, 13.84, 90.0, 75.5, 90.0), CELL, 0.01)
    assert not _same_cell((7.92, 10.61, 14.2, 90.0, 104.5, 90.0), CELL, 0.01)
    assert not _same_cell((7.92, 10.61, 13.84, 90.0, 100.0, 90.0), CELL, 0.01)
