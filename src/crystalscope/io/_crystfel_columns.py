"""Fast parsing of the whitespace-separated tables in CrystFEL text files.

Peak lists and reflection lists of streams and ``.hkl`` files are blocks of lines with a
fixed number of columns.  :func:`read_blocks` reads all blocks of a kind at once:

1. fast path: pandas' C parser on the joined lines, accepted only when every line has
   the right number of tokens and every value converts exactly as Python converts it;
2. otherwise each block is split in one go (with a separator token between lines that
   proves every line has the right width) and each column converted in one numpy call;
   only when that fails are the lines or values scanned one by one to name the
   offending line and column in the :class:`~crystalscope.errors.FormatError`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import warnings
from collections.abc import Sequence
from itertools import chain

import numpy as np
import pandas as pd

from crystalscope.errors import FormatError

__all__ = ["convert_blocks", "read_blocks", "split_columns"]

_INT32 = np.iinfo(np.int32)
_SEP = "\x00"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Integers are converted by Python (the C parser would take "25.0" as 25), floats by the
# C parser's round-trip converter (identical to Python's float()).
_FAST_DTYPES = {"i": object, "f": np.float64, "s": object, "p": object}


def read_blocks(
    lines: Sequence[str],
    ranges: Sequence[tuple[int, int]],
    kinds: str,
    names: Sequence[str],
    *,
    path: str | os.PathLike[str] | None,
    fill_last: bool = False,
) -> dict[str, np.ndarray]:
    """Convert the table lines ``lines[a:b]`` of every range into typed columns.

    Parameters
    ----------
    lines : sequence of str
        All lines of the file.
    ranges : sequence of (int, int)
        0-based ``(start, stop)`` of each block of data lines (no header, no marker).
    kinds : str
        One letter per column: ``i`` (int32), ``f`` (float64), ``s`` (str, object array)
        or ``p`` (float64 where ``-`` means missing, NaN).
    names : sequence of str
        Column names, also named in errors.
    path : str or os.PathLike or None
        File named in errors.
    fill_last : bool
        Accept blocks whose lines all lack the last column (stream format 2.2 without
        panel names); that column is filled with ``""``.

    Returns
    -------
    dict of str to numpy.ndarray
    """
    fast = _read_fast(lines, ranges, kinds, names)
    if fast is not None:
        return fast
    blocks = [
        split_columns(lines[a:b], a + 1, len(kinds), path=path, fill_last=fill_last)
        for a, b in ranges
    ]
    return convert_blocks(blocks, kinds, names, path=path)


def _read_fast(
    lines: Sequence[str], ranges: Sequence[tuple[int, int]], kinds: str, names: Sequence[str]
) -> dict[str, np.ndarray] | None:
    """pandas' C parser on all blocks at once; None whenever anything is unusual.

    Plain ASCII tables without control characters, with exactly ``len(kinds)`` tokens
    on every line, numbers that the round-trip float converter reads as Python does and
    non-empty strings are accepted; anything else (including ``nan`` or ``inf``, which
    the C parser does not take) goes to the line-by-line path, which also names errors.
    """
    n = sum(b - a for a, b in ranges)
    if n == 0:
        return None
    text = "\n".join(chain.from_iterable(lines[a:b] for a, b in ranges))
    if not text.isascii() or _CONTROL.search(text):
        return None
    dtypes = {j: _FAST_DTYPES[k] for j, k in enumerate(kinds)}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = pd.read_csv(
                io.StringIO(text),
                sep=r"\s+",
                header=None,
                index_col=False,
                dtype=dtypes,
                engine="c",
                quoting=csv.QUOTE_NONE,
                skip_blank_lines=False,
                na_filter=False,
                float_precision="round_trip",
            )
        if table.shape != (n, len(kinds)):
            return None
        out: dict[str, np.ndarray] = {}
        for j, kind in enumerate(kinds):
            values = table[j].to_numpy()
            if kind == "s" and (values == "").any():
                return None  # a short line: the last column is missing
            out[names[j]] = _convert(values.tolist(), kind) if kind in "ip" else values
        return out
    except (ValueError, OverflowError, TypeError, pd.errors.ParserError):
        return None


def split_columns(
    lines: Sequence[str],
    first_line: int,
    ncol: int,
    *,
    path: str | os.PathLike[str] | None,
    fill_last: bool = False,
) -> tuple[int, list[list[str]]]:
    """Split a block of table lines into columns of tokens, checking every line's width.

    With ``fill_last``, a block whose lines all lack the last column (stream format 2.2
    without panel names) is accepted and that column is filled with ``""``.

    Returns
    -------
    (first_line, columns)
        The block, ready for :func:`convert_blocks`.
    """
    columns = _split_fast(lines, ncol)
    if columns is None and fill_last:
        columns = _split_fast(lines, ncol - 1)
        if columns is not None:
            columns.append([""] * len(lines))
    if columns is None:
        _raise_bad_count(lines, first_line, ncol, path)
        return first_line, []  # unreachable: _raise_bad_count always raises
    return first_line, columns


def convert_blocks(
    blocks: Sequence[tuple[int, list[list[str]]]],
    kinds: str,
    names: Sequence[str],
    *,
    path: str | os.PathLike[str] | None,
) -> dict[str, np.ndarray]:
    """Convert the columns of many blocks at once (one numpy call per column).

    Only when a conversion fails are the blocks converted one by one, to name the line
    and the column in the :class:`~crystalscope.errors.FormatError`.
    """
    out: dict[str, np.ndarray] = {}
    for j, kind in enumerate(kinds):
        tokens = [t for _, cols in blocks for t in cols[j]] if len(blocks) != 1 else blocks[0][1][j]
        try:
            out[names[j]] = _convert(tokens, kind)
        except (ValueError, OverflowError, TypeError):
            for first_line, cols in blocks:
                _raise_bad_value(cols[j], kind, first_line, names[j], path)
            raise FormatError("invalid value", path=path, field=names[j]) from None
    return out


def _split_fast(lines: Sequence[str], ncol: int) -> list[list[str]] | None:
    """Columns of ``lines`` if every line has ``ncol`` tokens, else None.

    The lines are joined with a separator token and split once (much faster than
    splitting line by line); the separators must then sit exactly every ``ncol + 1``
    tokens, which proves that every line has ``ncol`` tokens.
    """
    n = len(lines)
    if n == 0:
        return [[] for _ in range(ncol)]
    joined = f" {_SEP} ".join(lines)
    if joined.count(_SEP) != n - 1:  # a line holds the separator itself
        return None
    tokens = joined.split()
    if len(tokens) != n * (ncol + 1) - 1:
        return None
    seps = tokens[ncol :: ncol + 1]
    if seps.count(_SEP) != n - 1:
        return None
    return [tokens[j :: ncol + 1] for j in range(ncol)]


def _convert(column: list[str], kind: str) -> np.ndarray:
    if kind == "s":
        return np.array(column, dtype=object)
    if kind == "p":
        column = ["nan" if t == "-" else t for t in column]
    if kind == "i":
        values = np.array(column, dtype=np.int64)
        if values.size and (values.min() < _INT32.min or values.max() > _INT32.max):
            raise OverflowError("integer out of range")
        return values.astype(np.int32)
    return np.array(column, dtype=np.float64)


def _raise_bad_count(
    lines: Sequence[str], first_line: int, ncol: int, path: str | os.PathLike[str] | None
) -> None:
    for i, line in enumerate(lines):
        got = len(line.split())
        if got != ncol:
            raise FormatError(
                f"expected {ncol} columns, got {got}: '{line.strip()[:60]}'",
                path=path,
                line=first_line + i,
            )
    bad = next((i for i, line in enumerate(lines) if _SEP in line), 0)
    raise FormatError("NUL character in table line", path=path, line=first_line + bad)


def _raise_bad_value(
    column: list[str], kind: str, first_line: int, name: str, path: str | os.PathLike[str] | None
) -> None:
    for i, token in enumerate(column):
        try:
            _convert([token], kind)
        except (ValueError, OverflowError, TypeError):
            what = "an integer (int32)" if kind == "i" else "a number"
            raise FormatError(
                f"'{token[:40]}' is not {what}", path=path, line=first_line + i, field=name
            ) from None
