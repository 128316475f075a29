"""Orientation comparison modulo the lattice holohedry (index.compare)."""

from __future__ import annotations

import gemmi
import numpy as np
import pytest

from crystalscope.errors import DataError
from crystalscope.index.compare import (
    BRAVAIS_SPACE_GROUPS,
    bravais_symbol,
    lattice_space_group,
    lattice_symmetry_ops,
    misorientation_deg,
)
from crystalscope.model.crystal import Crystal
from crystalscope.model.orientation import random_rotations, rotation_matrix

#: Order of the holohedry of each Bravais lattice.
ORDERS = {
    "aP": 2, "mP": 4, "mC": 4, "oP": 8, "oC": 8, "oI": 8, "oF": 8, "tP": 16, "tI": 16,
    "hP": 24, "hR": 12, "cP": 48, "cI": 48, "cF": 48,
}  # fmt: skip

#: A cell of each crystal family, in the standard setting.
CELLS = {
    "a": (5.1, 6.2, 7.3, 81.0, 95.0, 103.0),
    "m": (5.1, 6.2, 7.3, 90.0, 104.0, 90.0),
    "o": (5.1, 6.2, 7.3, 90.0, 90.0, 90.0),
    "t": (5.1, 5.1, 7.3, 90.0, 90.0, 90.0),
    "h": (5.1, 5.1, 7.3, 90.0, 90.0, 120.0),
    "c": (5.1, 5.1, 5.1, 90.0, 90.0, 90.0),
}


@pytest.mark.parametrize("symbol", sorted(ORDERS))
def test_holohedry_is_a_group_that_keeps_the_metric(symbol: str) -> None:
    ops = lattice_symmetry_ops(symbol)
    assert ops.shape == (ORDERS[symbol], 3, 3)
    assert ops.dtype == np.int64 and not ops.flags.writeable
    assert np.array_equal(ops[0], np.eye(3, dtype=np.int64))
    half = len(ops) // 2
    assert np.all(np.round(np.linalg.det(ops[:half])) == 1)
    assert np.array_equal(ops[half:], -ops[:half])
    keys = {m.tobytes() for m in ops}
    assert len(keys) == len(ops)
    assert all((a @ b).tobytes() in keys for a in ops for b in ops)  # closed
    # h' = M h keeps |B h| for every h: M^T G* M = G*
    b = np.array(gemmi.UnitCell(*CELLS[symbol[0]]).frac.mat).T
    g = b.T @ b
    for m in ops:
        np.testing.assert_allclose(m.T @ g @ m, g, atol=1e-12)


def test_holohedry_follows_the_setting_of_the_space_group() -> None:
    # P 1 1 21: monoclinic with unique axis c -> the 2-fold flips h and k
    ops = lattice_symmetry_ops("P 1 1 21")
    assert {tuple(np.diag(m)) for m in ops[:2]} == {(1, 1, 1), (-1, -1, 1)}
    assert bravais_symbol("P 1 1 21") == "mP"
    # point group 422 and 4: both in the tetragonal holohedry 4/mmm
    assert len(lattice_symmetry_ops("P 43 21 2")) == len(lattice_symmetry_ops("P 4")) == 16
    assert len(lattice_symmetry_ops("P 63")) == 24  # 6/m point group, 6/mmm lattice
    assert len(lattice_symmetry_ops("R 3:R")) == 12  # rhombohedral axes
    assert bravais_symbol("R 3:R") == bravais_symbol("R 3:H") == "hR"
    assert bravais_symbol("C 1 2/c 1") == "mC" and bravais_symbol("I 2 3") == "cI"
    assert bravais_symbol(96) == "tP"
    for symbol, name in BRAVAIS_SPACE_GROUPS.items():
        assert bravais_symbol(symbol) == symbol
        assert lattice_space_group(symbol).xhm() == gemmi.SpaceGroup(name).xhm()


def test_unknown_lattice_is_a_data_error() -> None:
    with pytest.raises(DataError) as info:
        lattice_symmetry_ops("tX")
    assert info.value.field == "lattice"


def test_misorientation_of_known_rotations() -> None:
    crystal = Crystal.from_parameters(79.1, 79.1, 37.9, space_group="P 43 21 2")
    ub = crystal.UB
    for angle in (0.0, 0.05, 1.0, 12.5, 40.0):
        turned = rotation_matrix([0.3, -0.5, 0.8], angle) @ ub
        assert misorientation_deg(turned, ub, "P 43 21 2") == pytest.approx(angle, abs=1e-6)
    # the 4-fold about c and the 2-fold about a index the same lattice
    for op in lattice_symmetry_ops("tP")[:8]:
        assert misorientation_deg(ub @ op, ub, "tP") == pytest.approx(0.0, abs=1e-6)
    # ... a 90-degree turn about a does not (for c != a)
    turned = rotation_matrix([1, 0, 0], 90.0) @ ub
    assert misorientation_deg(turned, ub, "tP") == pytest.approx(90.0, abs=1e-6)


def test_misorientation_is_at_most_the_largest_disorientation() -> None:
    """Over random pairs the angle never exceeds the cubic/tetragonal maxima."""
    rots = random_rotations(300, 4)
    ub_c = rots @ Crystal.from_parameters(5.0, 5.0, 5.0, space_group="P 2 3").UB
    ub_t = rots @ Crystal.from_parameters(5.0, 5.0, 7.0, space_group="P 4").UB
    cubic = misorientation_deg(ub_c[:150], ub_c[150:], "cP")
    tetra = misorientation_deg(ub_t[:150], ub_t[150:], "tP")
    triclinic = misorientation_deg(ub_t[:150], ub_t[150:], "aP")
    assert isinstance(cubic, np.ndarray) and cubic.shape == (150,)
    assert np.max(cubic) <= 62.8 + 1e-6  # Mackenzie: 62.8 degrees for 432
    assert np.max(tetra) <= 98.4 + 1e-6  # 422
    assert np.all(triclinic >= tetra - 1e-9) and np.max(triclinic) > 120


def test_misorientation_ignores_small_cell_differences_and_handedness() -> None:
    ub = Crystal.from_parameters(79.1, 79.1, 37.9, space_group="P 43 21 2").UB
    other = Crystal.from_parameters(79.5, 79.5, 37.7, space_group="P 43 21 2").UB
    turned = rotation_matrix([0, 0, 1], 0.5) @ other
    assert misorientation_deg(turned, ub, "tP") == pytest.approx(0.5, abs=1e-6)
    # -UB (all indices inverted, a left-handed basis) is the same lattice orientation
    assert misorientation_deg(-ub, ub, "tP") == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    ("a", "b", "field"),
    [
        (np.zeros((2, 2)), np.eye(3), "UB_a"),
        (np.eye(3), np.full((3, 3), np.nan), "UB_b"),
        (np.eye(3), np.zeros((3, 3)), "UB_b"),
        (np.eye(3), "abc", "UB_b"),
    ],
)
def test_bad_matrices_are_data_errors(a: object, b: object, field: str) -> None:
    with pytest.raises(DataError) as info:
        misorientation_deg(a, b, "tP")  # type: ignore[arg-type]
    assert info.value.field == field
