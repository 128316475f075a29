"""Spot prediction: exact enumeration, agreement with the simulator, absences, speed."""

from __future__ import annotations

import dataclasses
import itertools

import gemmi
import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import ConfigError, DataError
from crystalscope.integrate.predict import (
    PREDICTION_COLUMNS,
    _candidates,
    centring_absent,
    predict_spots,
)
from crystalscope.model.beam import Beam
from crystalscope.model.crystal import Crystal, make_cell
from crystalscope.model.detector import Detector
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.simulate.config import SerialConfig
from crystalscope.simulate.serial import SerialSimulation

LYSO = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)


def brute_force(ub: np.ndarray, k: float, s_max: float, q_max: float) -> set[tuple[int, ...]]:
    """All h with |s| <= s_max and |q| <= q_max, by scanning the whole index box."""
    bounds = np.floor(np.linalg.norm(np.linalg.inv(ub), axis=1) * q_max).astype(int)
    grid = np.array(list(itertools.product(*[range(-b, b + 1) for b in bounds])))
    q = grid @ ub.T
    s = k - np.linalg.norm(q + np.array([0.0, 0.0, k]), axis=1)
    sel = (np.abs(s) <= s_max) & (np.einsum("ij,ij->i", q, q) <= q_max**2)
    return set(map(tuple, grid[sel]))


def test_enumeration_is_exact_for_random_cells_and_wavelengths() -> None:
    """Electrons (flat sphere), X-rays (curved), tiny and wide shells, skewed cells."""
    rng = np.random.default_rng(0)
    checked = 0
    while checked < 40:
        edges = rng.uniform(4.0, 40.0, 3)
        angles = rng.uniform(65.0, 120.0, 3)
        try:
            cell = make_cell(*edges, *angles)
        except DataError:
            continue
        ub = Crystal(cell, "P 1").with_random_orientation(rng).UB
        k = 1.0 / float(rng.choice([0.0197, 0.0251, 0.8, 1.5, 2.5]))
        q_max = min(1.0 / rng.uniform(0.8, 4.0), 1.9 * k)
        s_max = float(rng.uniform(1e-4, 2e-2))
        got = _candidates(ub, k, s_max, q_max)
        q = got @ ub.T
        s = k - np.linalg.norm(q + np.array([0.0, 0.0, k]), axis=1)
        inside = got[(np.abs(s) <= s_max) & (np.einsum("ij,ij->i", q, q) <= q_max**2)]
        want = brute_force(ub, k, s_max, q_max)
        assert len(set(map(tuple, inside))) == len(inside), "duplicates"
        assert set(map(tuple, inside)) == want, (cell, k, s_max, q_max)
        checked += 1


def detector_lambda() -> Detector:
    return Detector.single_panel(1556, 516, 0.055, 1100.0, (778.0, 258.0))


def test_columns_are_consistent_with_the_crystal_model() -> None:
    beam = Beam.from_voltage_kv(200.0)
    xt = Crystal(make_cell(*LYSO), "P 43 21 2").with_random_orientation(3)
    det = detector_lambda()
    pred = predict_spots(xt.UB, beam.wavelength, det, profile_radius=2e-3, d_min=2.0)
    assert list(pred.columns) == list(PREDICTION_COLUMNS)
    assert {c: str(t) for c, t in pred.dtypes.items()} == PREDICTION_COLUMNS
    hkl = pred[["h", "k", "l"]].to_numpy()
    np.testing.assert_allclose(pred[["qx", "qy", "qz"]], xt.q_lab(hkl), atol=1e-14)
    np.testing.assert_allclose(pred["d"], xt.d_spacing(hkl), rtol=1e-12)
    np.testing.assert_allclose(
        pred["excitation_error"], xt.excitation_error(hkl, beam.wavelength), atol=1e-12
    )
    assert (pred["excitation_error"].abs() <= 2e-3).all() and (pred["d"] >= 2.0).all()
    hits = det.q_to_pixel(pred[["qx", "qy", "qz"]].to_numpy(), wavelength=beam.wavelength)
    np.testing.assert_allclose(pred["fs"], hits.fs, atol=1e-9)
    np.testing.assert_allclose(pred["ss"], hits.ss, atol=1e-9)
    sorted_hkl = pred.sort_values(["h", "k", "l"])[["h", "k", "l"]].to_numpy()
    np.testing.assert_array_equal(hkl, sorted_hkl)


@pytest.fixture(scope="module")
def sim() -> SerialSimulation:
    cfg = SerialConfig.model_validate(
        {
            "n_crystals": 6,
            "seed": 4,
            "two_lattice_fraction": 0.5,
            "source": {"structure": "builtin:lysozyme-like", "d_min": 2.0},
            "beam_effects": {
                "centre_jitter_px": 6.0,
                "ellipticity": 0.03,
                "ellipticity_angle_deg": 25.0,
            },
        }
    )
    return SerialSimulation.build(cfg)


def test_positions_match_the_simulator_truth_with_shift_and_distortion(
    sim: SerialSimulation,
) -> None:
    """Every truth reflection (|s| within the Gaussian profile's 1e-3 cut) is predicted at
    its truth position; the frame shift and elliptical distortion are applied."""
    worst = 0.0
    n = 0
    for i in range(len(sim.shots)):
        truth = sim.reflections(i)
        assert np.hypot(*sim._shift(i)) > 0
        for c, xt in sim.crystals[sim.crystals["frame"] == i].iterrows():
            u = xt[[f"u{a}{b}" for a in range(3) for b in range(3)]].to_numpy(float)
            ub = sim.base.with_orientation(u.reshape(3, 3)).UB
            pred = predict_spots(
                ub,
                sim.beam.wavelength,
                sim.detector,
                profile_radius=1.5e-3,
                d_min=2.0,
                shift_mm=sim._shift(i),
                distortion=sim.distortion,
            )
            mine = truth[truth["crystal"] == xt["crystal"]]
            m = mine.merge(pred, on=["h", "k", "l"], how="left")
            assert m["fs_y"].notna().all(), f"frame {i} crystal {c}: missed reflections"
            assert (m["panel_x"] == m["panel_y"]).all()
            worst = max(worst, float(np.hypot(m["fs_x"] - m["fs_y"], m["ss_x"] - m["ss_y"]).max()))
            np.testing.assert_allclose(m["s"], m["excitation_error"], atol=1e-12)
            n += len(m)
    assert n > 2000
    assert worst < 0.05, f"largest position difference {worst:.2e} px over {n} reflections"


def test_shift_and_distortion_move_the_spots() -> None:
    beam = Beam.from_voltage_kv(200.0)
    ub = Crystal(make_cell(*LYSO), "P 1").with_random_orientation(8).UB
    det = detector_lambda()
    kw = {"profile_radius": 2e-3, "d_min": 2.5}
    base = predict_spots(ub, beam.wavelength, det, **kw)
    moved = predict_spots(ub, beam.wavelength, det, shift_mm=(0.11, -0.055), **kw)
    m = base.merge(moved, on=["h", "k", "l"])
    np.testing.assert_allclose(m["fs_y"] - m["fs_x"], -2.0, atol=1e-9)
    np.testing.assert_allclose(m["ss_y"] - m["ss_x"], 1.0, atol=1e-9)
    dist = EllipticalDistortion(1.05, 0.0)
    warped = predict_spots(ub, beam.wavelength, det, distortion=dist, **kw)
    w = base.merge(warped, on=["h", "k", "l"])
    # stretched by sqrt(1.05) along fs and compressed along ss about the centre (778, 258)
    np.testing.assert_allclose(w["fs_y"] - 778.0, (w["fs_x"] - 778.0) * 1.05**0.5, atol=1e-6)
    np.testing.assert_allclose(w["ss_y"] - 258.0, (w["ss_x"] - 258.0) / 1.05**0.5, atol=1e-6)


def test_a_distortion_carried_by_the_detector_is_applied_once_about_the_shifted_centre() -> None:
    beam = Beam.from_voltage_kv(200.0)
    ub = Crystal(make_cell(*LYSO), "P 1").with_random_orientation(3).UB
    dist = EllipticalDistortion(1.05, 30.0)
    det = detector_lambda()
    carrying = dataclasses.replace(det, distortion=dist)
    kw = {"profile_radius": 1e-3, "d_min": 2.0, "shift_mm": (0.55, -0.3)}
    given = predict_spots(ub, beam.wavelength, det, distortion=dist, **kw)
    own = predict_spots(ub, beam.wavelength, carrying, **kw)
    both = predict_spots(ub, beam.wavelength, carrying, distortion=dist, **kw)
    hits = carrying.q_to_pixel(
        given[["qx", "qy", "qz"]].to_numpy(), wavelength=beam.wavelength, shift_mm=(0.55, -0.3)
    )
    np.testing.assert_allclose(given["fs"], hits.fs, atol=1e-9)
    np.testing.assert_allclose(given["ss"], hits.ss, atol=1e-9)
    for table in (own, both):
        pd.testing.assert_frame_equal(table, given)
    with pytest.raises(DataError) as info:
        predict_spots(ub, beam.wavelength, carrying, distortion=EllipticalDistortion(1.02), **kw)
    assert info.value.field == "distortion"


@pytest.mark.parametrize(
    ("space_group", "rule"),
    [
        ("C 1 2 1", lambda x: (x[:, 0] + x[:, 1]) % 2 == 0),
        ("I 2 2 2", lambda x: x.sum(axis=1) % 2 == 0),
        ("F 2 2 2", lambda x: ((x[:, 0] + x[:, 1]) % 2 == 0) & ((x[:, 1] + x[:, 2]) % 2 == 0)),
        ("R 3:H", lambda x: (-x[:, 0] + x[:, 1] + x[:, 2]) % 3 == 0),
        ("P 43 21 2", lambda x: np.ones(len(x), dtype=bool)),  # screw absences kept
    ],
)
def test_lattice_centring_absences_are_removed(space_group: str, rule: object) -> None:
    beam = Beam.from_voltage_kv(200.0)
    sg = gemmi.SpaceGroup(space_group)
    cell = {"C": (30, 40, 35, 90, 100, 90), "R": (40, 40, 60, 90, 90, 120)}.get(
        space_group[0], (30, 40, 35, 90, 90, 90)
    )
    ub = Crystal(make_cell(*cell), sg).with_random_orientation(1).UB
    det = detector_lambda()
    every = predict_spots(ub, beam.wavelength, det, profile_radius=3e-3, d_min=1.5)
    allowed = predict_spots(
        ub, beam.wavelength, det, profile_radius=3e-3, d_min=1.5, space_group=space_group
    )
    keep = rule(every[["h", "k", "l"]].to_numpy())  # type: ignore[operator]
    assert len(allowed) == int(keep.sum()) > 50
    np.testing.assert_array_equal(allowed[["h", "k", "l"]].to_numpy(), every[keep][["h", "k", "l"]])
    hkl = every[["h", "k", "l"]].to_numpy()
    np.testing.assert_array_equal(centring_absent(hkl, sg), ~keep)


def test_resolution_range_and_prediction_factor() -> None:
    beam = Beam.from_voltage_kv(200.0)
    ub = Crystal(make_cell(*LYSO), "P 1").with_random_orientation(5).UB
    det = detector_lambda()
    full = predict_spots(ub, beam.wavelength, det, profile_radius=1e-3, d_min=2.0)
    band = predict_spots(ub, beam.wavelength, det, profile_radius=1e-3, d_min=3.0, d_max=8.0)
    assert band["d"].between(3.0, 8.0).all()
    expect = full[full["d"].between(3.0, 8.0)]
    np.testing.assert_array_equal(band[["h", "k", "l"]], expect[["h", "k", "l"]])
    wide = predict_spots(
        ub, beam.wavelength, det, profile_radius=1e-3, d_min=2.0, prediction_factor=2.0
    )
    assert wide["excitation_error"].abs().max() <= 2e-3
    assert len(wide) > 1.2 * len(full)
    inner = wide[wide["excitation_error"].abs() <= 1e-3]
    np.testing.assert_array_equal(inner[["h", "k", "l"]], full[["h", "k", "l"]])


def test_nothing_on_the_detector_gives_an_empty_typed_table() -> None:
    beam = Beam.from_voltage_kv(200.0)
    ub = Crystal(make_cell(*LYSO), "P 1").UB
    far = Detector.single_panel(10, 10, 0.055, 1100.0, (-5000.0, -5000.0))
    pred = predict_spots(ub, beam.wavelength, far, profile_radius=1e-3, d_min=2.0)
    assert pred.empty
    assert {c: str(t) for c, t in pred.dtypes.items()} == PREDICTION_COLUMNS


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"UB": np.zeros((3, 3))}, DataError, "UB"),
        ({"UB": np.eye(2)}, DataError, "UB"),
        ({"UB": np.full((3, 3), np.nan)}, DataError, "UB"),
        ({"UB": "abc"}, DataError, "UB"),
        ({"wavelength": 0.0}, DataError, "wavelength"),
        ({"profile_radius": -1e-3}, DataError, "profile_radius"),
        ({"d_min": 0.0}, ConfigError, "d_min"),
        ({"d_max": 1.0}, ConfigError, "d_max"),
        ({"prediction_factor": 0.0}, ConfigError, "prediction_factor"),
        ({"shift_mm": (np.nan, 0.0)}, DataError, "shift_mm"),
        ({"space_group": "Q 7"}, DataError, "space_group"),
        ({"d_min": 1e-4}, DataError, "d_min"),
    ],
)
def test_invalid_inputs(kwargs: dict, error: type, field: str) -> None:
    args = {"UB": np.eye(3) * 0.02, "wavelength": 0.025, "profile_radius": 1e-3, "d_min": 2.0}
    args.update(kwargs)
    ub, wavelength = args.pop("UB"), args.pop("wavelength")
    with pytest.raises(error) as info:
        predict_spots(ub, wavelength, detector_lambda(), **args)
    assert info.value.field == field


def test_prediction_for_lysozyme_to_2a() -> None:
    """Many orientations of a lysozyme crystal to 2 A (speed: benchmarks)."""
    beam = Beam.from_voltage_kv(200.0)
    sim_det = SerialSimulation.build(SerialConfig.model_validate({"n_crystals": 1})).detector
    counts = []
    for seed in range(11):
        ub = Crystal(make_cell(*LYSO), "P 43 21 2").with_random_orientation(seed).UB
        pred = predict_spots(
            ub,
            beam.wavelength,
            sim_det,
            profile_radius=1e-3,
            d_min=2.0,
            shift_mm=(0.1, 0.05),
            space_group="P 43 21 2",
        )
        counts.append(len(pred))
    assert min(counts) > 150


def test_frame_and_table_types_are_plain() -> None:
    beam = Beam.from_voltage_kv(200.0)
    ub = Crystal(make_cell(*LYSO), "P 1").with_random_orientation(2).UB
    pred = predict_spots(
        pd.DataFrame(ub).to_numpy(),
        beam.wavelength,
        detector_lambda(),
        profile_radius=1e-3,
        d_min=2.0,
    )
    assert isinstance(pred, pd.DataFrame) and pred.index.equals(pd.RangeIndex(len(pred)))
