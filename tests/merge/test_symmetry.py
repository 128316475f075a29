"""CrystFEL point-group names <-> gemmi space groups (crystalscope.merge.symmetry)."""

from __future__ import annotations

import gemmi
import pytest

from crystalscope.errors import ConfigError
from crystalscope.merge.symmetry import point_group_of_space_group, space_group_of_point_group


@pytest.mark.parametrize(
    ("point_group", "centring", "expected"),
    [
        ("422", "P", "P 4 2 2"), ("4/mmm", "I", "I 4/m m m"), ("2/m_uab", "C", "C 1 2/m 1"),
        ("2", "P", "P 1 1 2"), ("321_H", "P", "P 3 2 1"), ("-31m_H", "P", "P -3 1 m"),
        ("-3m_R", "R", "R -3 m:R"), ("32_H", "H", "R 3 2:H"), ("m-3m", "F", "F m -3 m"),
        ("-4m2", "P", "P -4 m 2"), ("-1", "P", "P -1"), ("6/mmm", "P", "P 6/m m m"),
    ],
)  # fmt: skip
def test_symmorphic_space_group_of_a_crystfel_point_group(
    point_group: str, centring: str, expected: str
) -> None:
    assert space_group_of_point_group(point_group, centring).xhm() == expected


@pytest.mark.parametrize(
    ("space_group", "point_group", "laue"),
    [
        ("P 43 21 2", "422", "4/mmm"), ("C 1 2 1", "2_uab", "2/m_uab"),
        ("P 31 2 1", "321_H", "-3m1_H"), ("P 32 1 2", "312_H", "-31m_H"),
        ("R 3 2:H", "321_H", "-3m1_H"), ("R 3:R", "3_R", "-3_R"), ("P 21 21 21", "222", "mmm"),
        ("P -4 m 2", "-4m2", "4/mmm"), ("P -6 m 2", "-6m2", "6/mmm"),
        ("P 3 m 1", "3m1_H", "-3m1_H"), ("R 3 2:R", "32_R", "-3m_R"),
        ("P 2/m 1 1", "2/m_uaa", "2/m_uaa"),
    ],
)  # fmt: skip
def test_crystfel_name_of_a_space_group(space_group: str, point_group: str, laue: str) -> None:
    sg = gemmi.SpaceGroup(space_group)
    assert point_group_of_space_group(sg) == point_group
    assert point_group_of_space_group(sg, laue=True) == laue
    back = space_group_of_point_group(laue, "R" if space_group[0] == "R" else sg.centring_type())
    assert back.laue_str() == sg.laue_str()


def test_unknown_names_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="point group"):
        space_group_of_point_group("4/mnm")
    with pytest.raises(ConfigError, match="unique axis"):
        space_group_of_point_group("2/m_uaz")
    with pytest.raises(ConfigError, match="no space group"):
        space_group_of_point_group("m-3m", "C")
