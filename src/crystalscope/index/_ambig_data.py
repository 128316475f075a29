"""Input checking and preparation of unmerged intensities for :mod:`.ambiguity`.

The prepared observations are grouped per crystal, with one value per reflection class
(symmetry-equivalent observations of a crystal averaged), normalised by the mean
intensity of their resolution shell, and with the class index under each reindexing
operator precomputed (see :mod:`._ambig_kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gemmi
import numpy as np
import pandas as pd

from crystalscope.errors import DataError
from crystalscope.model.crystal import Crystal

__all__ = [
    "REQUIRED_COLUMNS",
    "Observations",
    "check_table",
    "crystal_index",
    "group_index",
    "prepare",
    "unique_inverse",
]

REQUIRED_COLUMNS = ("frame", "crystal", "h", "k", "l", "intensity")
_MAX_INDEX = 10_000  # |h|, |k|, |l| above this are not Miller indices of a real data set


@dataclass
class Observations:
    """Observations of all crystals, ready for the correlation kernel."""

    offsets: np.ndarray  # (n_crystals + 1,) CSR offsets into keys/values
    keys: np.ndarray  # (n_ops, n_obs) int32 class index after each operator
    values: np.ndarray  # (n_obs,) normalised intensity
    n_vocab: int
    notes: list[str] = field(default_factory=list)

    @property
    def n_reflections(self) -> np.ndarray:
        """Merged observations per crystal."""
        return np.diff(self.offsets)


def _integers(table: pd.DataFrame, name: str) -> np.ndarray:
    try:
        values = table[name].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"column {name!r} is not numeric", field=name) from None
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise DataError(f"column {name!r} must hold integers", field=name)
    return values.astype(np.int64)


def check_table(intensities: pd.DataFrame) -> dict[str, np.ndarray]:
    """The needed columns as arrays: frame, crystal, hkl ``(n, 3)``, intensity.

    Raises
    ------
    DataError
        Not a DataFrame, a missing or non-numeric column, no rows, indices that are not
        integers.
    """
    if not isinstance(intensities, pd.DataFrame):
        raise DataError(
            f"intensities must be a pandas DataFrame, got {type(intensities).__name__}",
            field="intensities",
        )
    for name in REQUIRED_COLUMNS:
        if name not in intensities:
            raise DataError(
                f"intensity table lacks column {name!r} (needs {', '.join(REQUIRED_COLUMNS)})",
                field=name,
            )
    if not len(intensities):
        raise DataError("the intensity table is empty: nothing to resolve", field="intensity")
    hkl = np.column_stack([_integers(intensities, c) for c in ("h", "k", "l")])
    if np.abs(hkl).max() > _MAX_INDEX:
        raise DataError("Miller indices are implausibly large", field="h")
    try:
        intensity = intensities["intensity"].to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise DataError("column 'intensity' is not numeric", field="intensity") from None
    return {
        "frame": _integers(intensities, "frame"),
        "crystal": _integers(intensities, "crystal"),
        "hkl": hkl,
        "intensity": intensity,
    }


def crystal_index(frame: np.ndarray, crystal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crystals ``(n, 2)`` (frame, crystal) sorted, and each row's crystal index.

    Rows of one crystal usually come together: the unique keys are found among the
    first rows of runs, which keeps this fast for millions of observations.
    """
    f0, c0 = int(frame.min()), int(crystal.min())
    span = int(crystal.max()) - c0 + 1
    key = (frame - f0) * span + (crystal - c0)
    starts = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    unique, run_index = unique_inverse(key[starts])
    index = np.repeat(run_index, np.diff(np.append(starts, len(key))))
    return np.column_stack([unique // span + f0, unique % span + c0]), index


def unique_inverse(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and the index of each value among them.

    ``numpy.unique`` (hash based in numpy 2.3+) is slow for millions of integers; a sort
    and a binary search are fast when the distinct values are few (< 1e5).
    """
    ordered = np.sort(values)
    unique = ordered[np.concatenate([[True], ordered[1:] != ordered[:-1]])]
    return unique, np.searchsorted(unique, values)


def group_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique values and each value's index among them, for many distinct values."""
    order = np.argsort(values)
    ordered = values[order]
    head = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    inverse = np.empty(len(values), dtype=np.int64)
    inverse[order] = np.cumsum(head) - 1
    return ordered[head], inverse


_BASE = 2 * _MAX_INDEX * 4 + 1  # images under operators can grow up to 4x


def _encode(hkl: np.ndarray) -> np.ndarray:
    shifted = hkl.astype(np.int64) + _BASE // 2
    return (shifted[:, 0] * _BASE + shifted[:, 1]) * _BASE + shifted[:, 2]


def _decode(codes: np.ndarray) -> np.ndarray:
    out = np.empty((len(codes), 3), dtype=np.int64)
    rest = codes.copy()
    for axis in (2, 1, 0):
        out[:, axis] = rest % _BASE - _BASE // 2
        rest //= _BASE
    return out


def _class_keys(
    unique_hkl: np.ndarray, cell: gemmi.UnitCell, sg: gemmi.SpaceGroup, reps: np.ndarray
) -> tuple[np.ndarray, int]:
    """Class index ``(n_ops, n_unique)`` of each unique hkl after each operator."""
    xtal = Crystal(cell, sg)
    codes = [_encode(xtal.to_asu(unique_hkl @ k.T)[0]) for k in reps]
    vocab, inverse = unique_inverse(np.concatenate(codes))
    return inverse.reshape(len(reps), len(unique_hkl)).astype(np.int64), len(vocab)


def _shell_means(s2: np.ndarray, intensity: np.ndarray, n_shells: int) -> np.ndarray:
    """Mean intensity of each observation's resolution shell (equal-count shells)."""
    n = max(1, min(n_shells, len(s2) // 20))
    edges = np.quantile(s2, np.linspace(0.0, 1.0, n + 1))
    shell = np.clip(np.searchsorted(edges, s2, side="right") - 1, 0, n - 1)
    mean = np.bincount(shell, intensity, n) / np.maximum(np.bincount(shell, minlength=n), 1)
    return mean[shell]


def prepare(
    table: dict[str, np.ndarray],
    index: np.ndarray,
    n_crystals: int,
    cell: gemmi.UnitCell,
    sg: gemmi.SpaceGroup,
    reps: np.ndarray,
    *,
    d_min: float | None,
    d_max: float | None,
    n_shells: int,
) -> Observations:
    """Filter, normalise, merge and key the observations (see the module docstring)."""
    notes: list[str] = []
    hkl, intensity = table["hkl"], table["intensity"]
    keep = np.isfinite(intensity) & np.any(hkl != 0, axis=1)
    if (~keep).sum():
        notes.append(f"{int((~keep).sum())} observations without a finite intensity or at 000")
    codes, inverse = unique_inverse(_encode(hkl))
    unique_hkl = _decode(codes)
    inv_d2 = np.asarray(cell.calculate_1_d2_array(unique_hkl.astype(np.int32)))[inverse]
    if d_min is not None:
        keep &= inv_d2 <= 1.0 / d_min**2
    if d_max is not None:
        keep &= inv_d2 > 1.0 / d_max**2
    if not keep.any():
        raise DataError("no observations left after the resolution limits", field="d_min")
    class_keys, n_vocab = _class_keys(unique_hkl, cell, sg, reps)
    obs_unique = inverse[keep]
    mean = _shell_means(inv_d2[keep], intensity[keep], n_shells)
    usable = mean > 0
    if not usable.all():
        notes.append(
            f"{int((~usable).sum())} observations in resolution shells of non-positive "
            "mean intensity left out"
        )
    values = intensity[keep][usable] / mean[usable]
    obs_unique, xtal = obs_unique[usable], index[keep][usable]
    key0 = class_keys[0, obs_unique]
    merged, where = group_index(xtal * n_vocab + key0)
    values = np.bincount(where, values) / np.bincount(where)
    owner, merged_key0 = merged // n_vocab, merged % n_vocab
    class_map = np.full((len(reps), n_vocab), -1, dtype=np.int64)
    for k in range(len(reps)):
        class_map[k, class_keys[0]] = class_keys[k]
    keys = np.ascontiguousarray(class_map[:, merged_key0], dtype=np.int32)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=n_crystals))])
    return Observations(offsets.astype(np.int64), keys, values, int(n_vocab), notes)
