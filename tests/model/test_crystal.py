"""Tests of the crystal model, with gemmi as the ground truth."""

from __future__ import annotations

import copy
import math
import pickle
import re
from pathlib import Path

import gemmi
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from crystalscope.errors import DataError
from crystalscope.model.crystal import (
    REFLECTION_COLUMNS,
    Crystal,
    crystfel_lattice,
    make_cell,
    resolve_space_group,
)
from crystalscope.model.orientation import random_rotations, rotation_matrix

LYSOZYME = (79.1, 79.1, 37.9, 90.0, 90.0, 90.0)

# (space group, cell) pairs covering every crystal system, centrings and settings
CASES = [
    ("P 1", (31.0, 42.0, 53.0, 81.0, 95.0, 103.0)),
    ("P -1", (30.0, 40.0, 50.0, 80.0, 95.0, 100.0)),
    ("P 1 21 1", (40.0, 50.0, 60.0, 90.0, 104.0, 90.0)),
    ("P 1 1 21", (30.0, 40.0, 50.0, 90.0, 90.0, 100.0)),
    ("C 1 2/c 1", (60.0, 40.0, 50.0, 90.0, 110.0, 90.0)),
    ("P 21 21 21", (40.0, 50.0, 60.0, 90.0, 90.0, 90.0)),
    ("C 2 2 21", (61.4, 122.6, 168.0, 90.0, 90.0, 90.0)),
    ("F d d 2", (50.0, 60.0, 40.0, 90.0, 90.0, 90.0)),
    ("P 43 21 2", LYSOZYME),
    ("I 41/a", (40.0, 40.0, 60.0, 90.0, 90.0, 90.0)),
    ("P 31 2 1", (50.0, 50.0, 70.0, 90.0, 90.0, 120.0)),
    ("R 3:H", (50.0, 50.0, 70.0, 90.0, 90.0, 120.0)),
    ("R 3 2:R", (40.0, 40.0, 40.0, 80.0, 80.0, 80.0)),
    ("P 61 2 2", (50.0, 50.0, 100.0, 90.0, 90.0, 120.0)),
    ("P 4 3 2", (40.0, 40.0, 40.0, 90.0, 90.0, 90.0)),
    ("F d -3 m", (30.0, 30.0, 30.0, 90.0, 90.0, 90.0)),
]


def crystal_case(name: str, cell: tuple[float, ...], seed: int = 0) -> Crystal:
    return Crystal.from_parameters(*cell, space_group=name).with_random_orientation(seed)


def hkl_of(table) -> np.ndarray:  # type: ignore[no-untyped-def]
    return table[["h", "k", "l"]].to_numpy()


# ---------------------------------------------------------------- construction


def test_b_matrix_is_gemmi_fractionalisation_transposed() -> None:
    for name, cell in CASES:
        crystal = Crystal.from_parameters(*cell, space_group=name)
        gcell = gemmi.UnitCell(*cell)
        np.testing.assert_allclose(crystal.B, np.array(gcell.frac.mat).T, rtol=0, atol=1e-15)
        rcell = gcell.reciprocal()  # a*, b*, c* lengths (1/A) and angles
        np.testing.assert_allclose(
            np.linalg.norm(crystal.B, axis=0), [rcell.a, rcell.b, rcell.c], rtol=1e-12
        )
        # c* along z, a along x (gemmi/PDB frame)
        np.testing.assert_allclose(crystal.B[:2, 2], 0.0, atol=1e-15)
        np.testing.assert_allclose(crystal.real_space_vectors[0, 1:], 0.0, atol=1e-12)


def test_ub_is_u_times_b_and_real_reciprocal_are_dual() -> None:
    for i, (name, cell) in enumerate(CASES):
        crystal = crystal_case(name, cell, seed=i)
        np.testing.assert_allclose(crystal.UB, crystal.U @ crystal.B, atol=1e-15)
        np.testing.assert_allclose(crystal.reciprocal_vectors, crystal.UB.T, atol=0)
        dots = crystal.real_space_vectors @ crystal.reciprocal_vectors.T
        np.testing.assert_allclose(dots, np.eye(3), atol=1e-12)  # no 2 pi
        a, b, c = crystal.real_space_vectors
        assert np.dot(np.cross(a, b), c) == pytest.approx(crystal.volume, rel=1e-10)
        assert crystal.volume == pytest.approx(gemmi.UnitCell(*cell).volume, rel=1e-12)


def test_from_ub_round_trip() -> None:
    for i, (name, cell) in enumerate(CASES):
        crystal = crystal_case(name, cell, seed=100 + i)
        back = Crystal.from_ub(crystal.UB, name)
        np.testing.assert_allclose(back.parameters, cell, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(back.U, crystal.U, atol=1e-12)
        np.testing.assert_allclose(back.UB, crystal.UB, atol=1e-14)
        assert back.space_group.hall == crystal.space_group.hall


@st.composite
def cells(draw: st.DrawFn) -> tuple[float, ...]:
    lengths = [draw(st.floats(2.0, 500.0)) for _ in range(3)]
    angles = [draw(st.floats(45.0, 135.0)) for _ in range(3)]
    return (*lengths, *angles)


@settings(max_examples=300, deadline=None)
@given(cell=cells(), seed=st.integers(0, 2**32 - 1))
def test_from_ub_round_trip_any_cell(cell: tuple[float, ...], seed: int) -> None:
    try:
        crystal = Crystal.from_parameters(*cell).with_random_orientation(seed)
    except DataError:
        return  # the three angles do not form a cell
    back = Crystal.from_ub(crystal.UB)
    np.testing.assert_allclose(back.parameters, cell, rtol=1e-8)
    np.testing.assert_allclose(back.U, crystal.U, atol=1e-8)


def test_from_reciprocal_vectors_matches_columns_of_ub() -> None:
    crystal = crystal_case("P 43 21 2", LYSOZYME, seed=3)
    astar, bstar, cstar = crystal.reciprocal_vectors
    back = Crystal.from_reciprocal_vectors(astar, bstar, cstar, "P 43 21 2")
    np.testing.assert_allclose(back.UB, crystal.UB, atol=1e-15)


def test_from_ub_rejects_unusable_matrices() -> None:
    crystal = crystal_case("P 1", CASES[0][1])
    left_handed = crystal.UB * np.array([1.0, 1.0, -1.0])
    with pytest.raises(DataError, match="left-handed") as info:
        Crystal.from_ub(left_handed)
    assert info.value.field == "UB"
    singular = crystal.UB.copy()
    singular[:, 2] = singular[:, 0] + singular[:, 1]
    with pytest.raises(DataError, match="singular"):
        Crystal.from_ub(singular)
    with pytest.raises(DataError, match="finite 3x3"):
        Crystal.from_ub(np.full((3, 3), np.nan))
    with pytest.raises(DataError, match="finite 3x3"):
        Crystal.from_ub(np.eye(2))
    with pytest.raises(DataError, match="3-vector"):
        Crystal.from_reciprocal_vectors([1, 0], [0, 1, 0], [0, 0, 1])


def test_orientation_must_be_a_proper_rotation() -> None:
    cell = gemmi.UnitCell(*LYSOZYME)
    with pytest.raises(DataError, match="orthonormal") as info:
        Crystal(cell, "P 43 21 2", np.diag([1.0, 1.0, 1.01]))
    assert info.value.field == "U"
    with pytest.raises(DataError, match="proper rotation"):
        Crystal(cell, "P 43 21 2", np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(DataError, match="3x3"):
        Crystal(cell, "P 43 21 2", np.eye(4))
    with pytest.raises(DataError, match="NaN"):
        Crystal(cell, "P 43 21 2", np.full((3, 3), np.nan))
    crystal = Crystal(cell, "P 43 21 2")
    with pytest.raises(DataError):
        crystal.with_orientation(2 * np.eye(3))
    assert not crystal.U.flags.writeable and not crystal.UB.flags.writeable


def test_invalid_cells_and_space_groups() -> None:
    with pytest.raises(DataError) as info:
        make_cell(-1, 2, 3, 90, 90, 90)
    assert info.value.field == "a"
    with pytest.raises(DataError) as info:
        make_cell(1, 2, 3, 90, 180, 90)
    assert info.value.field == "beta"
    with pytest.raises(DataError, match="do not form a cell"):
        make_cell(10, 10, 10, 170, 170, 170)
    with pytest.raises(DataError, match="not a number"):
        make_cell("x", 2, 3, 90, 90, 90)  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"gemmi\.UnitCell"):
        Crystal((10, 10, 10, 90, 90, 90), "P 1")  # type: ignore[arg-type]
    for bad in ("P 5", "", "Q 1 2 3", 0, 231, 3.5, None):
        with pytest.raises(DataError) as info:
            resolve_space_group(bad)  # type: ignore[arg-type]
        assert info.value.field == "space_group"


def test_space_group_from_name_number_hall_or_object() -> None:
    ref = gemmi.SpaceGroup("P 43 21 2")
    for given_sg in ("P 43 21 2", "P43212", " P 43 21 2 ", 96, "96", np.int64(96), ref):
        assert resolve_space_group(given_sg).hall == ref.hall
    assert resolve_space_group("P 4nw 2abw").hall == ref.hall  # Hall symbol
    assert resolve_space_group("R 3").xhm() == "R 3:H"
    assert resolve_space_group("P 1 1 21").xhm() == "P 1 1 21"
    # every setting in gemmi's table survives its extended H-M name (used by pickle)
    for sg in gemmi.spacegroup_table():
        assert resolve_space_group(sg.xhm()).hall == sg.hall


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("P 1", ("triclinic", "P", "*")),
        ("P -1", ("triclinic", "P", "*")),
        ("C 2", ("monoclinic", "C", "b")),
        ("P 1 1 21", ("monoclinic", "P", "c")),
        ("P 21 21 21", ("orthorhombic", "P", "*")),
        ("C 2 2 21", ("orthorhombic", "C", "*")),
        ("F d d 2", ("orthorhombic", "F", "*")),
        ("P 43 21 2", ("tetragonal", "P", "c")),
        ("I 41/a", ("tetragonal", "I", "c")),
        ("P 31 2 1", ("hexagonal", "P", "c")),
        ("P 63", ("hexagonal", "P", "c")),
        ("R 3:H", ("hexagonal", "H", "c")),
        ("R 3 2:R", ("rhombohedral", "R", "*")),
        ("I 2 3", ("cubic", "I", "*")),
        ("F d -3 m", ("cubic", "F", "*")),
    ],
)
def test_crystfel_lattice_names(name: str, expected: tuple[str, str, str]) -> None:
    sg = resolve_space_group(name)
    assert crystfel_lattice(sg) == expected
    crystal = Crystal.from_parameters(50, 50, 50, space_group=name)
    assert (crystal.lattice_type, crystal.centring, crystal.unique_axis) == expected


def test_symmetry_names() -> None:
    crystal = Crystal.from_parameters(*LYSOZYME, space_group="P 43 21 2")
    assert crystal.point_group == "422"
    assert crystal.laue_group == "4/mmm"
    assert crystal.crystal_system == "tetragonal"
    assert crystal.is_cell_compatible()
    assert not Crystal.from_parameters(79, 70, 38, space_group=96).is_cell_compatible()


# ------------------------------------------------------------------ orientation


def test_rotated_is_right_handed_about_a_lab_axis() -> None:
    crystal = Crystal.from_parameters(10, 10, 10)  # a along x
    turned = crystal.rotated([0, 0, 2], 90.0)
    np.testing.assert_allclose(turned.real_space_vectors[0], [0, 10, 0], atol=1e-12)
    back = turned.rotated([0, 0, 1], -90.0)
    np.testing.assert_allclose(back.U, np.eye(3), atol=1e-14)
    twice = crystal.rotated([1, 1, 1], 50).rotated([1, 1, 1], 70)
    np.testing.assert_allclose(twice.U, rotation_matrix([1, 1, 1], 120), atol=1e-14)
    # 120 deg about the body diagonal permutes x -> y -> z
    np.testing.assert_allclose(twice.U @ [1, 0, 0], [0, 1, 0], atol=1e-14)


def test_random_orientation_is_seeded_and_proper() -> None:
    crystal = Crystal.from_parameters(*LYSOZYME, space_group="P 43 21 2")
    first = crystal.with_random_orientation(42)
    assert first == crystal.with_random_orientation(42)
    assert first != crystal.with_random_orientation(43)
    rng = np.random.default_rng(7)
    one, two = crystal.with_random_orientation(rng), crystal.with_random_orientation(rng)
    assert one != two
    for c in (first, one, two):
        np.testing.assert_allclose(c.U.T @ c.U, np.eye(3), atol=1e-12)
        assert np.linalg.det(c.U) == pytest.approx(1.0, abs=1e-12)


# ------------------------------------------------------------------ reflections


def test_d_spacing_matches_gemmi_and_q() -> None:
    for i, (name, cell) in enumerate(CASES):
        crystal = crystal_case(name, cell, seed=i)
        table = crystal.enumerate_reflections(4.0)
        hkl = hkl_of(table)
        gcell = gemmi.UnitCell(*cell)
        expected = np.array([gcell.calculate_d(list(map(int, h))) for h in hkl[::7]])
        np.testing.assert_allclose(table["d"].to_numpy()[::7], expected, rtol=1e-12)
        np.testing.assert_allclose(crystal.d_spacing(hkl), table["d"], rtol=1e-12)
        np.testing.assert_allclose(table["s"], 1.0 / table["d"], rtol=1e-15)
        q = np.linalg.norm(crystal.q_lab(hkl), axis=1)
        np.testing.assert_allclose(q, table["s"], rtol=1e-10)  # |UB h| = 1/d
        assert table["d"].min() >= 4.0
    assert crystal.d_spacing([1, 0, 0]).shape == ()


def test_table_columns_and_dtypes() -> None:
    crystal = Crystal.from_parameters(*LYSOZYME, space_group="P 43 21 2")
    table = crystal.enumerate_reflections(5.0, 20.0)
    assert list(table.columns) == list(REFLECTION_COLUMNS)
    assert {c: str(t) for c, t in table.dtypes.items()} == REFLECTION_COLUMNS
    assert table["d"].min() >= 5.0 and table["d"].max() < 20.0
    assert not ((table["h"] == 0) & (table["k"] == 0) & (table["l"] == 0)).any()
    empty = crystal.enumerate_reflections(5.0, 5.001, unique=True)
    assert list(empty.columns) == list(REFLECTION_COLUMNS)


def test_enumeration_matches_gemmi_miller_arrays() -> None:
    for name, cell in CASES:
        crystal = Crystal.from_parameters(*cell, space_group=name)
        for unique in (False, True):
            ours = hkl_of(crystal.enumerate_reflections(3.5, 30.0, unique=unique))
            ref = gemmi.make_miller_array(crystal.cell, crystal.space_group, 3.5, 30.0, unique)
            np.testing.assert_array_equal(ours, ref)  # same reflections, same order


def test_unique_count_lysozyme_against_brute_force() -> None:
    """Unique reflections to 2.0 A counted by an independent loop over gemmi's to_asu."""
    crystal = Crystal.from_parameters(*LYSOZYME, space_group="P 43 21 2")
    table = crystal.enumerate_reflections(2.0, unique=True)
    cell, sg = crystal.cell, crystal.space_group
    ops, asu = sg.operations(), gemmi.ReciprocalAsu(sg)
    hmax = [int(79.1 / 2.0) + 1, int(79.1 / 2.0) + 1, int(37.9 / 2.0) + 1]
    reps = set()
    friedel = set()
    for h in range(-hmax[0], hmax[0] + 1):
        for k in range(-hmax[1], hmax[1] + 1):
            for l in range(0, hmax[2] + 1):  # noqa: E741 - half sphere suffices
                if (h, k, l) == (0, 0, 0) or cell.calculate_d([h, k, l]) < 2.0:
                    continue
                if ops.is_systematically_absent([h, k, l]):
                    continue
                rep, isym = asu.to_asu([h, k, l], ops)
                reps.add(tuple(rep))
                if not ops.is_reflection_centric([h, k, l]):
                    friedel.add((*rep, isym % 2))
    assert len(table) == len(reps) == gemmi.count_reflections(cell, sg, 2.0)
    assert len(table) == 8554  # lysozyme P43212 a = 79.1 c = 37.9 to 2.0 A
    anomalous = crystal.enumerate_reflections(2.0, unique=True, anomalous=True)
    n_centric = int(table["centric"].sum())
    assert len(anomalous) == 2 * len(table) - n_centric
    assert len(friedel) == 2 * (len(table) - n_centric)


def test_unique_rows_are_their_own_representatives() -> None:
    crystal = Crystal.from_parameters(*LYSOZYME, space_group="P 43 21 2")
    unique = crystal.enumerate_reflections(3.0, unique=True)
    np.testing.assert_array_equal(hkl_of(unique), unique[["h_asu", "k_asu", "l_asu"]])
    assert (unique["isym"] == 1).all()
    anomalous = crystal.enumerate_reflections(3.0, unique=True, anomalous=True)
    minus = anomalous[anomalous["isym"] == 2]
    assert not minus["centric"].any()
    np.testing.assert_array_equal(hkl_of(minus), -minus[["h_asu", "k_asu", "l_asu"]].to_numpy())
    keys = set(map(tuple, anomalous[["h_asu", "k_asu", "l_asu", "isym"]].to_numpy().tolist()))
    assert len(keys) == len(anomalous)
    # the full sphere holds every unique reflection and nothing else
    full = crystal.enumerate_reflections(3.0)
    reps = set(map(tuple, full[["h_asu", "k_asu", "l_asu"]].to_numpy().tolist()))
    assert reps == set(map(tuple, hkl_of(unique).tolist()))


def test_systematic_absences_screw_axes() -> None:
    crystal = Crystal.from_parameters(40, 50, 60, space_group="P 21 21 21")
    table = crystal.enumerate_reflections(2.0, include_absent=True)
    h, k, l = (table[c].to_numpy() for c in "hkl")  # noqa: E741
    axial = {
        "h00": (k == 0) & (l == 0) & (h != 0),
        "0k0": (h == 0) & (l == 0) & (k != 0),
        "00l": (h == 0) & (k == 0) & (l != 0),
    }
    index = {"h00": h, "0k0": k, "00l": l}
    for axis, on_axis in axial.items():
        odd = on_axis & (index[axis] % 2 == 1)
        assert odd.sum() > 5
        assert table["absent"][odd].all(), axis
        assert not table["absent"][on_axis & ~odd].any(), axis
    off_axis = ~(axial["h00"] | axial["0k0"] | axial["00l"])
    assert not table["absent"][off_axis].any()
    present = crystal.enumerate_reflections(2.0)
    assert len(present) == int((~table["absent"]).sum())
    assert not present["absent"].any()
    assert crystal.is_absent([3, 0, 0]) and not crystal.is_absent([4, 0, 0])


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("I 2 2 2", lambda h, k, ell: (h + k + ell) % 2 == 1),
        ("C 2 2 2", lambda h, k, ell: (h + k) % 2 == 1),
        ("F 2 2 2", lambda h, k, ell: ~((h % 2 == k % 2) & (k % 2 == ell % 2))),
        ("R 3:H", lambda h, k, ell: (-h + k + ell) % 3 != 0),
    ],
)
def test_centring_absences(name: str, rule) -> None:  # type: ignore[no-untyped-def]
    cell = (50, 50, 70, 90, 90, 120) if name.startswith("R") else (40, 50, 60, 90, 90, 90)
    crystal = Crystal.from_parameters(*cell, space_group=name)
    table = crystal.enumerate_reflections(3.0, include_absent=True)
    h, k, l = (table[c].to_numpy() for c in "hkl")  # noqa: E741
    expected = rule(h, k, l)
    assert 0.3 < expected.mean() < 0.9
    np.testing.assert_array_equal(table["absent"].to_numpy(), expected)


@pytest.mark.parametrize(("name", "cell"), CASES)
def test_symmetry_equivalents_share_the_asu_representative(
    name: str, cell: tuple[float, ...]
) -> None:
    crystal = Crystal.from_parameters(*cell, space_group=name)
    ops = crystal.group_ops
    rng = np.random.default_rng(1)
    base = rng.integers(-9, 10, size=(40, 3))
    base = base[np.any(base != 0, axis=1)]
    for hkl in base.tolist():
        images = [op.apply_to_hkl(hkl) for op in ops.sym_ops]
        images += [[-x for x in image] for image in images]
        asu, isym = crystal.to_asu(images)
        assert len({tuple(row) for row in asu.tolist()}) == 1
        # isym names the operator that takes each image onto the representative
        for image, rep, n in zip(images, asu.tolist(), isym.tolist(), strict=True):
            mapped = ops.sym_ops[(n - 1) // 2].apply_to_hkl(image)
            assert (mapped if n % 2 else [-x for x in mapped]) == rep


@pytest.mark.parametrize(("name", "cell"), CASES)
def test_vectorised_asu_equals_gemmi_loop(name: str, cell: tuple[float, ...]) -> None:
    crystal = Crystal.from_parameters(*cell, space_group=name)
    table = crystal.enumerate_reflections(4.0, include_absent=True)
    asu_ref, ops = gemmi.ReciprocalAsu(crystal.space_group), crystal.group_ops
    expected = [asu_ref.to_asu(row, ops) for row in hkl_of(table).tolist()]
    np.testing.assert_array_equal(
        table[["h_asu", "k_asu", "l_asu"]].to_numpy(), [list(rep) for rep, _ in expected]
    )
    np.testing.assert_array_equal(table["isym"].to_numpy(), [isym for _, isym in expected])
    np.testing.assert_array_equal(table["centric"], ops.centric_flag_array(hkl_of(table)))
    eps = ops.epsilon_factor_without_centering_array(hkl_of(table))
    np.testing.assert_array_equal(table["epsilon"], eps)


def test_to_asu_single_and_invalid_indices() -> None:
    crystal = Crystal.from_parameters(*LYSOZYME, space_group="P 43 21 2")
    rep, isym = crystal.to_asu([-3, 2, -1])
    assert rep.shape == (3,) and isym.shape == ()
    assert tuple(rep) == tuple(
        gemmi.ReciprocalAsu(crystal.space_group).to_asu([-3, 2, -1], crystal.group_ops)[0]
    )
    empty_rep, empty_isym = crystal.to_asu(np.zeros((0, 3), dtype=int))
    assert empty_rep.shape == (0, 3) and empty_isym.shape == (0,)
    for bad in ([1.5, 0, 0], [[1, 2]], [np.nan, 0, 0], "abc", [[10**9, 0, 0]]):
        with pytest.raises(DataError) as info:
            crystal.to_asu(bad)
        assert info.value.field == "hkl"
    assert crystal.is_centric([1, 1, 0]) and not crystal.is_centric([1, 2, 3])
    assert crystal.epsilon([0, 0, 4]) == 4


def test_enumeration_limits_are_checked() -> None:
    crystal = Crystal.from_parameters(*LYSOZYME, space_group="P 43 21 2")
    for d_min, d_max in ((0.0, math.inf), (-1.0, math.inf), (math.nan, math.inf), (3.0, 2.0)):
        with pytest.raises(DataError):
            crystal.enumerate_reflections(d_min, d_max)
    with pytest.raises(DataError, match="too many"):
        crystal.enumerate_reflections(0.01)


def test_shared_mtz_reflections_lie_in_our_asu(shared_data: Path) -> None:
    """Real merged data (HEWL P43212, a P21 protein) are in gemmi's ASU: our mapping agrees."""
    paths = [
        shared_data / "reciprocalspaceship" / "HEWL_SSAD_24IDC.mtz",
        shared_data / "gemmi" / "5e5z.mtz",
    ]
    for path in paths:
        mtz = gemmi.read_mtz_file(str(path))
        hkl = np.asarray(mtz.make_miller_array())
        crystal = Crystal(mtz.cell, mtz.spacegroup)
        rep, isym = crystal.to_asu(hkl)
        np.testing.assert_array_equal(rep, hkl)
        assert (isym == 1).all()
        assert not crystal.is_absent(hkl).any()
        unique = crystal.enumerate_reflections(mtz.resolution_high() * (1 - 1e-9), unique=True)
        assert set(map(tuple, hkl.tolist())) <= set(map(tuple, hkl_of(unique).tolist()))
        assert len(hkl) / len(unique) > 0.9  # both files are nearly complete


# ---------------------------------------------------------------- Ewald sphere


def test_excitation_error_zero_on_the_ewald_sphere() -> None:
    wavelength = 0.025079  # 200 kV electrons
    k = 1.0 / wavelength
    crystal = Crystal.from_parameters(*LYSOZYME, space_group="P 43 21 2")
    for hkl, azimuth in (([3, 5, 2], 0.3), ([10, -4, 7], 2.0), ([1, 0, 0], 4.0)):
        q = 1.0 / float(crystal.d_spacing(hkl))
        qz = -q * q / (2 * k)  # |q + k0| = k  <=>  q_z = -|q|^2 / (2k)
        qr = math.sqrt(q * q - qz * qz)
        target = np.array([qr * math.cos(azimuth), qr * math.sin(azimuth), qz])
        rot, _ = Rotation.align_vectors([target], [crystal.B @ hkl])
        on_sphere = crystal.with_orientation(rot.as_matrix())
        np.testing.assert_allclose(on_sphere.q_lab(hkl), target, atol=1e-13)
        assert abs(on_sphere.excitation_error(hkl, wavelength)) < 1e-12
        # moving the point towards the sphere centre (-k0) puts it inside: s > 0
        inside = np.linalg.solve(on_sphere.UB, target + np.array([0, 0, -1e-3]))
        assert on_sphere.excitation_error(inside, wavelength) > 0
        outside = np.linalg.solve(on_sphere.UB, target * 1.01)
        assert on_sphere.excitation_error(outside, wavelength) < 0


def test_excitation_error_formula() -> None:
    crystal = crystal_case("P 1 21 1", CASES[2][1], seed=5)
    hkl = hkl_of(crystal.enumerate_reflections(2.0))
    for wavelength in (1.0, 0.0197):
        q = crystal.q_lab(hkl)
        naive = 1 / wavelength - np.linalg.norm(q + np.array([0, 0, 1 / wavelength]), axis=1)
        s = crystal.excitation_error(hkl, wavelength)
        np.testing.assert_allclose(s, naive, rtol=0, atol=1e-11)
        assert s.shape == (len(hkl),)
    with pytest.raises(DataError):
        crystal.excitation_error([1, 0, 0], 0.0)
    with pytest.raises(DataError):
        crystal.q_lab([[1, 2]])


# -------------------------------------------------------------------- pickling


def test_pickle_and_copy_round_trip() -> None:
    for i, (name, cell) in enumerate(CASES):
        crystal = crystal_case(name, cell, seed=i)
        for clone in (pickle.loads(pickle.dumps(crystal)), copy.deepcopy(crystal)):
            assert clone == crystal
            assert clone.space_group.xhm() == crystal.space_group.xhm()
            np.testing.assert_array_equal(clone.UB, crystal.UB)
    lyso = crystal_case("P 43 21 2", LYSOZYME, seed=9)
    clone = pickle.loads(pickle.dumps(lyso, protocol=pickle.HIGHEST_PROTOCOL))
    assert clone.enumerate_reflections(3.0).equals(lyso.enumerate_reflections(3.0))
    assert "P 43 21 2" in repr(lyso)
    assert lyso != "not a crystal"


# ----------------------------------------------------------------- CrystFEL data

_STREAM_CRYSTAL = re.compile(
    r"Cell parameters ([-\d.]+) ([-\d.]+) ([-\d.]+) nm, ([-\d.]+) ([-\d.]+) ([-\d.]+) deg\n"
    r"astar = ([-+\d.]+) ([-+\d.]+) ([-+\d.]+) nm\^-1\n"
    r"bstar = ([-+\d.]+) ([-+\d.]+) ([-+\d.]+) nm\^-1\n"
    r"cstar = ([-+\d.]+) ([-+\d.]+) ([-+\d.]+) nm\^-1\n"
    r"lattice_type = (\w+)\ncentering = (\w)\nunique_axis = (.)"
)


@pytest.mark.parametrize(
    ("stream", "space_group", "count"),
    [("crystfel/test.stream", "C 2 2 2", 32), ("reciprocalspaceship/crystfel.stream", 96, 3)],
)
def test_crystfel_stream_vectors_give_the_stream_cell(
    shared_data: Path, stream: str, space_group: str | int, count: int
) -> None:
    """Real streams: our cell from astar/bstar/cstar equals CrystFEL's printed cell."""
    text = (shared_data / stream).read_text(errors="replace")
    matches = _STREAM_CRYSTAL.findall(text)
    assert len(matches) == count
    for match in matches:
        numbers = [float(x) for x in match[:15]]
        cell_nm, vectors = numbers[:6], np.array(numbers[6:15]).reshape(3, 3) / 10.0
        crystal = Crystal.from_reciprocal_vectors(*vectors, space_group=space_group)
        np.testing.assert_allclose(crystal.parameters[:3], np.array(cell_nm[:3]) * 10, atol=2e-3)
        np.testing.assert_allclose(crystal.parameters[3:], cell_nm[3:], atol=2e-3)
        np.testing.assert_allclose(crystal.reciprocal_vectors, vectors, atol=1e-15)
        assert (crystal.lattice_type, crystal.centring) == (match[15], match[16])
        if match[17] != "?":
            assert crystal.unique_axis == match[17]


def test_random_rotations_feed_crystals() -> None:
    crystal = Crystal.from_parameters(*LYSOZYME, space_group="P 43 21 2")
    rotations = random_rotations(5, 11)
    crystals = [crystal.with_orientation(u) for u in rotations]
    assert len({c.U.tobytes() for c in crystals}) == 5
