import numpy as np
import pandas as pd
import pytest

from crystalscope.errors import DataError
from crystalscope.model.reflections import (
    REQUIRED_COLUMNS,
    empty_reflections,
    make_reflections,
    validate_reflections,
)


def test_make_reflections_types() -> None:
    t = make_reflections([[1, 2, 3], [-1, 0, 4]], [10.0, 20.0], [1.0, 2.0], nobs=[3.0, 4.0])
    assert list(t.columns[:5]) == list(REQUIRED_COLUMNS)
    for name, dtype in REQUIRED_COLUMNS.items():
        assert str(t[name].dtype) == dtype
    assert str(t["nobs"].dtype) == "int32"
    assert t.loc[1, "h"] == -1


def test_missing_required_column_named() -> None:
    df = pd.DataFrame({"h": [1], "k": [1], "l": [1], "I": [1.0]})
    with pytest.raises(DataError, match="sigma") as info:
        validate_reflections(df, source="x.hkl")
    assert info.value.field == "sigma"
    assert "x.hkl" in str(info.value)


def test_non_integer_indices_rejected() -> None:
    df = pd.DataFrame({"h": [1.5], "k": [1], "l": [1], "I": [1.0], "sigma": [1.0]})
    with pytest.raises(DataError, match="integers"):
        validate_reflections(df)
    df["h"] = [np.nan]
    with pytest.raises(DataError):
        validate_reflections(df)


def test_non_numeric_column_rejected() -> None:
    df = pd.DataFrame({"h": [1], "k": [1], "l": [1], "I": ["abc"], "sigma": [1.0]})
    with pytest.raises(DataError, match="not numeric") as info:
        validate_reflections(df)
    assert info.value.field == "I"


def test_bad_hkl_shape() -> None:
    with pytest.raises(DataError, match=r"\(N, 3\)"):
        make_reflections([1, 2, 3], [1.0], [1.0])


def test_empty_table() -> None:
    t = empty_reflections(["nobs", "custom"])
    assert len(t) == 0
    assert str(t["nobs"].dtype) == "int32" and str(t["custom"].dtype) == "float64"
    assert validate_reflections(t).shape == (0, 7)
