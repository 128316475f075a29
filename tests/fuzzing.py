"""Property-based fuzzing of text readers.

``mutations(text)`` is a hypothesis strategy that returns ``text`` damaged in the ways
real files get damaged: truncated, lines dropped or duplicated, characters replaced by
junk (digits, letters, signs, NaN/inf, binary bytes), numbers replaced by words and
tokens swapped.  :func:`assert_only_format_errors` runs a reader on each mutant and lets
only :class:`crystalscope.errors.CrystalscopeError` (or success) through.

Each text reader gets a test decorated with ``FUZZ_SETTINGS`` (>= 1000 mutants).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from crystalscope.errors import CrystalscopeError

FUZZ_SETTINGS = settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

_JUNK = st.sampled_from(
    [
        "",
        " ",
        "\t",
        "=",
        ";",
        "nan",
        "inf",
        "-",
        "1e999",
        "x",
        "0",
        "-1",
        "\x00",
        "\xff",
        "??",
        "/",
        "1.2.3",
        "999999999999999999999",
        "----",
        "=",
        "\n",
        "[",
        "]",
        "é",
    ]
)


@st.composite
def mutations(draw: st.DrawFn, text: str) -> str:
    """Strategy: ``text`` with 1-4 random damages applied."""
    lines = text.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "drop", "dup", "replace", "insert", "token"]))
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if kind == "truncate":
            joined = "".join(lines)
            cut = draw(st.integers(0, len(joined)))
            lines = joined[:cut].splitlines(keepends=True)
        elif kind == "drop":
            del lines[i]
        elif kind == "dup":
            lines.insert(i, lines[i])
        elif kind == "replace" and lines[i]:
            j = draw(st.integers(0, len(lines[i]) - 1))
            n = draw(st.integers(1, 8))
            lines[i] = lines[i][:j] + draw(_JUNK) + lines[i][j + n :]
        elif kind == "insert":
            lines.insert(i, draw(st.text(max_size=40)) + "\n")
        elif kind == "token":
            toks = lines[i].split()
            if toks:
                toks[draw(st.integers(0, len(toks) - 1))] = draw(_JUNK)
                lines[i] = " ".join(toks) + "\n"
    return "".join(lines)


def assert_only_format_errors(
    reader: Callable[[Path], Any], text: str, path: Path, *, encoding: str = "utf-8"
) -> None:
    """Write ``text`` to ``path`` and read it back; only CrystalscopeError may escape."""
    path.write_bytes(text.encode(encoding, errors="surrogateescape"))
    try:
        reader(path)
    except CrystalscopeError as err:
        assert str(err), "error message must not be empty"
        assert str(path.name) in str(err), f"error must name the file: {err}"
