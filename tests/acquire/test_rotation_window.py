"""Rotation windows: partials of arbitrary exposures agree with rotations and stills."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import DataError
from crystalscope.model.beam import Beam
from crystalscope.model.crystal import Crystal
from crystalscope.model.orientation import random_rotation, rotation_matrix
from crystalscope.simulate.config import BeamEffects, CrystalConfig, SourceConfig
from crystalscope.simulate.kinematics import predict_still
from crystalscope.simulate.presets import detector_preset
from crystalscope.simulate.rotation_window import MIN_WINDOW_DEG, WindowCrossings, locate_spots
from crystalscope.simulate.structure_factors import load_structure_factors

BEAM = Beam.from_voltage_kv(200.0)
CRYSTAL = CrystalConfig(thickness_a=1000.0, profile="gaussian", mosaicity_deg=0.05)
BEAM_FX = BeamEffects(divergence_mrad=0.2)


@pytest.fixture(scope="module")
def window() -> WindowCrossings:
    sf = load_structure_factors(
        SourceConfig(structure="builtin:monoclinic-organic", d_min=1.0), "electron"
    )
    return WindowCrossings.build(
        sf, random_rotation(3), (1.0, 0.0, 0.0), BEAM, CRYSTAL, BEAM_FX, (-30.0, 30.0)
    )


def test_consecutive_windows_record_whole_rocking_curves(window: WindowCrossings) -> None:
    edges = np.arange(-20.0, 20.0 + 1e-9, 0.25)
    parts = pd.concat([window.partials(a, b, 1000.0) for a, b in itertools.pairwise(edges)])
    total = parts.groupby("crossing")["fraction"].sum()
    x = window.crossings.loc[total.index]
    inner = (x["phi0_deg"] > -15.0) & (x["phi0_deg"] < 15.0) & (x["window_deg"] < 2.0)
    assert inner.sum() > 100
    assert np.allclose(total[inner.to_numpy()], 1.0, atol=1e-6)
    # counts of a window are electrons per radian times unit counts times the fraction
    one = window.partials(0.0, 0.5, 1000.0)
    unit = window.crossings["unit_counts"].to_numpy()[one["crossing"]]
    n_rad = 1000.0 / np.radians(0.5)
    assert np.allclose(one["counts"], n_rad * unit * one["fraction"])


def test_direction_does_not_matter(window: WindowCrossings) -> None:
    a = window.partials(3.0, 3.4, 500.0)
    b = window.partials(3.4, 3.0, 500.0)
    pd.testing.assert_frame_equal(a, b)


def test_a_stationary_crystal_gives_the_still_intensities(window: WindowCrossings) -> None:
    phi = 7.3
    sf = load_structure_factors(
        SourceConfig(structure="builtin:monoclinic-organic", d_min=1.0), "electron"
    )
    u = rotation_matrix((1.0, 0.0, 0.0), phi) @ random_rotation(3)
    detector = detector_preset("single", 1000.0, BEAM)
    still = predict_still(
        Crystal(sf.cell, sf.space_group, u), sf, BEAM, detector, CRYSTAL, BEAM_FX, n_on_crystal=1e5
    )
    ours = locate_spots(window.partials(phi, phi, 1e5), detector, BEAM.wavelength)
    # near-excited reflections (the rotation model records Ewald crossings; a reflection
    # that only grazes the sphere far out in its profile's tail is not one)
    strong = still[still["partiality"] > 0.01].nlargest(8, "counts")
    merged = pd.merge(strong, ours, on=["h", "k", "l"], suffixes=("_still", ""))
    assert len(merged) == 8
    assert np.allclose(merged["counts"], merged["counts_still"], rtol=0.01)
    # the ray of the crossing and the still's ray land within a fraction of a pixel
    assert np.allclose(merged["fs"], merged["fs_still"], atol=0.5)
    assert np.allclose(merged["ss"], merged["ss_still"], atol=0.5)
    assert MIN_WINDOW_DEG < 0.01


def test_bad_windows(window: WindowCrossings) -> None:
    with pytest.raises(DataError, match="outside"):
        window.partials(25.0, 35.0, 10.0)
    with pytest.raises(DataError, match="electrons"):
        window.partials(0.0, 1.0, -1.0)
    with pytest.raises(DataError, match="lo < hi"):
        WindowCrossings.build(
            load_structure_factors(SourceConfig(structure="builtin:silicon"), "electron"),
            np.eye(3),
            (1, 0, 0),
            BEAM,
            CRYSTAL,
            BEAM_FX,
            (5.0, 5.0),
        )
