"""CrystFEL list files: CrystFEL's parsing rules, round trips, path resolution, fuzzing."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given

from crystalscope.errors import CrystalscopeError, DataError, FormatError
from crystalscope.io.lst import (
    event_frame,
    format_event,
    read_lst,
    read_lst_entries,
    resolve_listed_path,
    write_lst,
)
from fuzzing import FUZZ_SETTINGS, assert_only_format_errors, mutations

SEED = """\
run01.h5
run02.h5 //0
run02.h5 //17
/data/serial/run03.cxi //5
file with spaces.h5
spaced name.h5 //3
r0012/data.h5 r0012//4/2
\r
lysozyme_0001.h5 //2048
"""


def test_read_follows_crystfel_rules(tmp_path: Path) -> None:
    path = tmp_path / "files.lst"
    path.write_text(SEED, encoding="utf-8")
    table = read_lst(path)
    assert list(table.columns) == ["file", "event"]
    assert table["file"].tolist() == [
        "run01.h5",
        "run02.h5",
        "run02.h5",
        "/data/serial/run03.cxi",
        "file with spaces.h5",
        "spaced name.h5",
        "r0012/data.h5",
        "lysozyme_0001.h5",
    ]
    assert table["event"].tolist() == [
        None,
        "//0",
        "//17",
        "//5",
        None,
        "//3",
        "r0012//4/2",
        "//2048",
    ]


def test_line_numbers_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "dos.lst"
    path.write_bytes(b"a.h5 //1\r\n\r\n\nb.h5\r\n")
    entries = read_lst_entries(path)
    assert [(e.file, e.event, e.line) for e in entries] == [
        ("a.h5", "//1", 1),
        ("b.h5", None, 4),
    ]


def test_last_token_without_slashes_is_part_of_the_name(tmp_path: Path) -> None:
    path = tmp_path / "x.lst"
    path.write_text("my file 3\nab //2\n", encoding="utf-8")
    table = read_lst(path)
    # CrystFEL only splits at a space beyond the third character.
    assert table["file"].tolist() == ["my file 3", "ab //2"]
    assert table["event"].tolist() == [None, None]


@pytest.mark.parametrize(
    "line, field",
    [
        ("run.h5 //x", "event"),
        ("run.h5 //1//2", "event"),
        ("run.h5 a//b//", "event"),
        ("run.h5 //-1", "event"),
        ("run.h5 ab//1/", "event"),
    ],
)
def test_malformed_event_names_file_line_and_field(tmp_path: Path, line: str, field: str) -> None:
    path = tmp_path / "bad.lst"
    path.write_text("ok.h5 //0\n" + line + "\n", encoding="utf-8")
    with pytest.raises(FormatError) as err:
        read_lst(path)
    assert err.value.line == 2
    assert err.value.field == field
    assert "bad.lst:2" in str(err.value)


def test_not_utf8_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "bin.lst"
    path.write_bytes(b"a.h5\n\xff\xfe.h5 //1\n")
    with pytest.raises(FormatError, match=r"bin\.lst:2.*UTF-8"):
        read_lst(path)
    with pytest.raises(FormatError, match="not found"):
        read_lst(tmp_path / "absent.lst")


def test_round_trip_from_table_and_pairs(tmp_path: Path) -> None:
    table = pd.DataFrame(
        {"file": ["a.h5", "dir/b.h5", "c d.h5", "e.h5"], "event": [0, 12, None, "x//3/1"]}
    )
    path = write_lst(tmp_path / "out.lst", table)
    assert path.read_text(encoding="utf-8") == "a.h5 //0\ndir/b.h5 //12\nc d.h5\ne.h5 x//3/1\n"
    back = read_lst(path)
    assert back["file"].tolist() == table["file"].tolist()
    assert back["event"].tolist() == ["//0", "//12", None, "x//3/1"]
    again = write_lst(tmp_path / "again.lst", back)
    assert again.read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    pairs = write_lst(tmp_path / "pairs.lst", [("a.h5", 3), Path("b.h5"), "c.h5"])
    assert read_lst(pairs)["event"].tolist() == ["//3", None, None]


def test_write_refuses_to_overwrite_and_bad_names(tmp_path: Path) -> None:
    path = write_lst(tmp_path / "out.lst", ["a.h5"])
    with pytest.raises(CrystalscopeError, match="exists"):
        write_lst(path, ["b.h5"])
    write_lst(path, ["b.h5"], overwrite=True)
    assert read_lst(path)["file"].tolist() == ["b.h5"]
    for bad in (["a\nb.h5"], [("a.h5", -1)], [("a.h5", 1.5)], ["name x//1"], [""]):
        with pytest.raises(DataError):
            write_lst(tmp_path / "bad.lst", bad)
    assert not (tmp_path / "bad.lst").exists()
    with pytest.raises(DataError, match="file"):
        write_lst(tmp_path / "bad.lst", pd.DataFrame({"name": ["a"]}))


def test_event_helpers() -> None:
    assert event_frame("//7") == 7
    assert event_frame(None) is None
    for bad in ("//", "x//1", "//1/2", "7"):
        with pytest.raises(ValueError):
            event_frame(bad)
    assert format_event(4) == "//4"
    assert format_event("a//1") == "a//1"
    assert format_event(None) is None
    with pytest.raises(FormatError):
        format_event("no-slashes")


def test_resolve_cwd_first_then_list_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lst_dir = tmp_path / "lists"
    lst_dir.mkdir()
    (lst_dir / "only_beside.h5").write_bytes(b"")
    (lst_dir / "both.h5").write_bytes(b"")
    work = tmp_path / "work"
    work.mkdir()
    (work / "both.h5").write_bytes(b"")
    monkeypatch.chdir(work)
    listed = lst_dir / "f.lst"
    assert resolve_listed_path("both.h5", listed) == Path("both.h5")
    assert resolve_listed_path("only_beside.h5", listed) == lst_dir / "only_beside.h5"
    assert resolve_listed_path("nowhere.h5", listed) is None
    absolute = str(lst_dir / "both.h5")
    assert resolve_listed_path(absolute, listed) == Path(absolute)
    assert os.path.exists(resolve_listed_path("both.h5", listed) or "")


def test_seed_is_small() -> None:
    assert len(SEED.encode()) < 5000


@FUZZ_SETTINGS
@given(text=mutations(SEED))
def test_fuzzed_lists_raise_only_format_errors(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.mktemp("lst") / "fuzz.lst"
    assert_only_format_errors(read_lst, text, path)
