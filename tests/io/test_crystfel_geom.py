"""CrystFEL .geom reader and writer: real files, semantics, round trips, errors, fuzzing."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

from crystalscope.errors import CrystalscopeError, FormatError
from crystalscope.io.crystfel_geom import (
    GeometryWarning,
    format_geom,
    parse_geom,
    read_geom,
    write_geom,
)
from crystalscope.model.detector import Detector
from crystalscope.model.panel import MaskSpec, MetadataRef, WavelengthSource
from fuzzing import FUZZ_SETTINGS, assert_only_format_errors, mutations

GEOM_FILES = [
    "cspad-single.geom",
    "jf-swissfel-16M.geom",
    "Eiger16M-binning2-nativefiles.geom",
    "pilatus.geom",
]

# A small geometry that uses most of the syntax: units, paths, defaults before and
# between panels, masks, flags, dims, tilted panels, both kinds of bad regions, groups.
SEED = """\
; test geometry
photon_energy = 9.5 keV
clen = /LCLS/detectorPosition
bandwidth = 0.001
detector_shift_x = /shots/dx mm
detector_shift_y = 0.0001 m
peak_list = /entry/result_1
peak_list_type = cxi
adu_per_eV = 0.00338   ; gain
res = 10000
coffset = 0.5
data = /entry/data/%/raw
dim0 = %
dim1 = ss
dim2 = fs
mask = /entry/mask
mask_file = masks.h5
mask_good = 0x0001
mask_bad = 0xfffe
mask1_data = /entry/mask2
mask1_goodbits = 0x0
mask1_badbits = 0x1
flag_lessthan = -10
max_adu = 60000
mystery_key = 42

bad_corner/min_x = -60.5
bad_corner/max_x = -50
bad_corner/min_y = 10
bad_corner/max_y = 20

bad_strip/min_fs = 0
bad_strip/max_fs = 3
bad_strip/min_ss = 42
bad_strip/max_ss = 44
bad_strip/panel = p1

p0/min_fs = 0
p0/max_fs = 63
p0/min_ss = 0
p0/max_ss = 31
p0/corner_x = -64.5
p0/corner_y = 1.5
p0/fs = 1x +0.0y
p0/ss = 0x +1y
p0/mask_edge_pixels = 2

mask_edge_pixels = 1
flag_morethan = 1e5

p1/min_fs = 0
p1/max_fs = 63
p1/min_ss = 32
p1/max_ss = 63
p1/corner_x = 0.25
p1/corner_y = -33.0
p1/fs = -0.0057225772x +0.9999836087y -0.01z
p1/ss = -0.9999836087x -0.0057225772y
p1/coffset = 0.501
p1/no_index = false
p1/weird_thing = yes

p2/min_fs = 64
p2/max_fs = 127
p2/min_ss = 0
p2/max_ss = 63
p2/corner_x = 10
p2/corner_y = 10
p2/fs = +x
p2/ss = -y
p2/adu_per_photon = 2.5
p2/no_index = 1

group_top = p0,p1
group_all = top,p2
rigid_group_a = p0,p1
rigid_group_b = p2
rigid_group_collection_c = a,b
"""


@pytest.fixture
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        yield


def _stream_geometry(shared_data: Path) -> tuple[str, int]:
    """The geometry embedded in test.stream and the line number before it."""
    lines = (shared_data / "crystfel" / "test.stream").read_text().splitlines(keepends=True)
    start = next(i for i, s in enumerate(lines) if "Begin geometry file" in s)
    end = next(i for i, s in enumerate(lines) if "End geometry file" in s)
    return "".join(lines[start + 1 : end]), start + 1


# ---------------------------------------------------------------------- real files


def test_cspad_values(shared_data: Path) -> None:
    det = read_geom(shared_data / "crystfel" / "cspad-single.geom")
    assert len(det.panels) == 64 and det.n_pixels == 2_296_960
    q0a0 = det.panel("q0a0")
    assert q0a0.pixel_size_mm == pytest.approx(0.11)  # res = 9090.91 px/m
    assert q0a0.coffset_mm == pytest.approx(573.224)
    assert q0a0.fs == (-0.0057225772, 0.9999836087, 0.0)
    assert (q0a0.corner_x, q0a0.corner_y) == (424.384, -10.6473)
    assert q0a0.adu_per_ev == 0.00105 and q0a0.data == "/data/rawdata"
    assert q0a0.masks == (MaskSpec(0, "/processing/hitfinder/pixelmasks", None, 0, 0xFFFF),)
    assert det.clen == MetadataRef("/LCLS/detectorPosition", "mm")
    assert det.wavelength_source == WavelengthSource(
        "photon_energy", MetadataRef("/LCLS/photon_energy_eV", "eV")
    )
    assert len(det.groups) == 37 and det.groups[-1].members == ("q0", "q1", "q2", "q3")


def test_jungfrau_units_dims_and_panel_regions(shared_data: Path) -> None:
    det = read_geom(shared_data / "crystfel" / "jf-swissfel-16M.geom")
    assert det.clen == pytest.approx(95.3)  # "95.3 mm"
    assert det.wavelength == pytest.approx(12398.42 / 4570.0, rel=1e-6)  # "4570 eV"
    assert len(det.panels) == 32 and det.raw_shape == (16448, 1030)
    p = det.panel("m0")
    assert p.dims == ("%", "ss", "fs") and p.coffset_mm == pytest.approx(-0.085)
    assert p.masks == (MaskSpec(0, "/mask", "run47.JF06T32V01.mask.h5", 1, 0),)
    assert p.pixel_size_mm == pytest.approx(0.075, rel=1e-5)
    assert [r.panel for r in det.bad_regions] == ["m15", "m11", "m12", "m16"]
    mask = det.bad_pixel_mask()
    assert mask.sum() == (140 * 61) + (73 * 118) + (136 * 51) + (61 * 128)
    assert mask[7710:7771, 890:1030].all()


def test_eiger_and_pilatus(shared_data: Path) -> None:
    eiger = read_geom(shared_data / "crystfel" / "Eiger16M-binning2-nativefiles.geom")
    assert eiger.clen == 100.0 and eiger.panels[0].adu_per_photon == 1.0
    assert eiger.raw_shape == (2167, 2070) and eiger.panels[0].masks == ()
    assert eiger.wavelength == pytest.approx(12398.42 / 22000, rel=1e-6)
    assert len(eiger.bad_regions) == 4 and eiger.bad_regions[0].panel is None
    pilatus = read_geom(shared_data / "crystfel" / "pilatus.geom")
    assert pilatus.panels[0].coffset_mm == pytest.approx(-0.64)
    assert pilatus.bad_regions[0].is_lab and pilatus.bad_regions[0].min_x == -2000.0


def test_stream_geometry_with_rigid_groups(shared_data: Path) -> None:
    text, before = _stream_geometry(shared_data)
    det = parse_geom(text, shared_data / "crystfel" / "test.stream", line_offset=before)
    assert len(det.panels) == 64
    assert len(det.rigid_groups) == 36 and len(det.rigid_group_collections) == 2
    assert det.rigid_group_collections[0].members == ("q0", "q1", "q2", "q3")
    assert det.group_panels("quadrants") == det.panel_names
    assert det.clen == MetadataRef("/LCLS/detector0-EncoderValue", "mm")
    assert det.panels[0].coffset_mm == pytest.approx(582.0)
    assert det.peak_list == "/processing/hitfinder/peakinfo-raw"
    assert len(det.bad_regions) == 3
    with pytest.raises(FormatError) as err:
        parse_geom(text.replace("q0a5/max_fs = 387", "q0a5/max_fs = x"), "s.stream", line_offset=4)
    line = text.splitlines().index("q0a5/max_fs = 387") + 1
    assert err.value.line == line + 4 and err.value.field == "q0a5/max_fs"


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", GEOM_FILES)
def test_real_files_round_trip_exactly(shared_data: Path, tmp_path: Path, name: str) -> None:
    det = read_geom(shared_data / "crystfel" / name)
    out = tmp_path / name
    write_geom(det, out)
    again = read_geom(out)
    assert again == det
    assert again.isclose(det, rel_tol=0.0, abs_tol=0.0)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_stream_geometry_round_trips(shared_data: Path, tmp_path: Path) -> None:
    det = parse_geom(_stream_geometry(shared_data)[0])
    write_geom(det, tmp_path / "s.geom")
    assert read_geom(tmp_path / "s.geom") == det


def test_seed_round_trips_and_keeps_unknown_keys(tmp_path: Path, quiet: None) -> None:
    det = parse_geom(SEED)
    assert det.extra == (("mystery_key", "42"),)
    assert det.panel("p1").extra == (("weird_thing", "yes"),)
    write_geom(det, tmp_path / "x.geom")
    text = (tmp_path / "x.geom").read_text()
    assert "mystery_key = 42" in text and "p1/weird_thing = yes" in text
    assert read_geom(tmp_path / "x.geom") == det


def test_written_numbers_are_crystfel_readable(tmp_path: Path) -> None:
    det = Detector.single_panel(100, 50, 0.075, 123.456, (49.5, 20.25), photon_energy_ev=8e3)
    tilted = dataclasses.replace(det.panels[0], fs=(1.0, 1e-17, -1e-9), coffset_mm=1e-7)
    det = Detector((tilted,), clen=det.clen, wavelength_source=det.wavelength_source)
    text = format_geom(det)
    vectors = [line for line in text.splitlines() if re.match(r"p0/(fs|ss) =", line)]
    assert vectors and not any("e" in line.split("=")[1] for line in vectors)
    assert "p0/fs = 1x +0.00000000000000001y -0.000000001z" in text
    assert "clen = 0.123456 m" in text and "photon_energy = 8000 eV" in text
    write_geom(det, tmp_path / "t.geom")
    assert read_geom(tmp_path / "t.geom") == det


def test_write_is_atomic_and_respects_overwrite(tmp_path: Path) -> None:
    det = Detector.single_panel(10, 10, 0.1, 100.0, (5, 5), wavelength=0.02)
    target = tmp_path / "d.geom"
    write_geom(det, target)
    with pytest.raises(CrystalscopeError, match="exists"):
        write_geom(det, target, overwrite=False)
    with pytest.raises(CrystalscopeError, match="does not exist"):
        write_geom(det, tmp_path / "missing" / "d.geom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.geom"]
    assert "wavelength = 0.02 A" in target.read_text()


# ---------------------------------------------------------------------- semantics


def test_defaults_apply_to_panels_mentioned_later(quiet: None) -> None:
    det = parse_geom(SEED)
    p0, p1, p2 = det.panels
    assert p0.mask_edge_pixels == 2 and p1.mask_edge_pixels == 1  # default set between panels
    assert p0.flags == (("lessthan", -10.0),)
    assert p1.flags == (("lessthan", -10.0), ("morethan", 1e5))
    assert p0.coffset_mm == 500.0 and p1.coffset_mm == 501.0  # panel value wins
    assert p0.adu_per_ev == 0.00338 and p2.adu_per_photon == 2.5 and p2.adu_per_ev is None
    assert p1.fs == (-0.0057225772, 0.9999836087, -0.01) and p2.ss == (0.0, -1.0, 0.0)
    assert [m.index for m in p0.masks] == [0, 1] and p0.masks[0].file == "masks.h5"
    assert p0.dims == ("%", "ss", "fs") and p0.data == "/entry/data/%/raw"
    assert (p1.no_index, p2.no_index) == (False, True)
    assert det.wavelength == pytest.approx(12.39842 / 9.5, rel=1e-6)
    assert det.detector_shift_x == MetadataRef("/shots/dx", "mm")
    assert det.detector_shift_y == pytest.approx(0.1)
    assert det.bandwidth == 0.001 and det.peak_list_type == "cxi"
    assert [g.name for g in det.groups] == ["top", "all"]
    assert det.group_panels("c") == ("p0", "p1", "p2")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("clen = 0.1", 100.0),
        ("clen = 0.1 m", 100.0),
        ("clen = 95 mm", 95.0),
        ("clen = /a/b", MetadataRef("/a/b", "mm")),
        ("clen = /a/b m", MetadataRef("/a/b", "m")),
    ],
)
def test_camera_length_units(line: str, expected: object) -> None:
    det = parse_geom(line + "\n" + SINGLE)
    assert det.clen == (pytest.approx(expected) if isinstance(expected, float) else expected)


@pytest.mark.parametrize(
    ("line", "wavelength"),
    [
        ("photon_energy = 12398.42", 1.0),
        ("photon_energy = 12.39842 keV", 1.0),
        ("wavelength = 1.5 A", 1.5),
        ("wavelength = 1.5e-10 m", 1.5),
        ("electron_voltage = 200 kV", 0.0250793),
        ("electron_voltage = 300000 V", 0.0196875),
    ],
)
def test_wavelength_forms(line: str, wavelength: float) -> None:
    det = parse_geom(line + "\n" + SINGLE)
    assert det.wavelength == pytest.approx(wavelength, rel=2e-6)
    assert parse_geom(format_geom(det)) == det


SINGLE = """res = 5000
p/min_fs = 0
p/max_fs = 9
p/min_ss = 0
p/max_ss = 9
p/corner_x = -5
p/corner_y = -5
p/fs = x
p/ss = y
"""


def test_unknown_keys_warn_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "u.geom"
    path.write_text("foo_bar = 3\n" + SINGLE + "p/zap = 1\nbad_x/min_x = 0\nbad_x/max_x = 1\n"
                    "bad_x/min_y = 0\nbad_x/max_y = 1\nbad_x/colour = red\n")  # fmt: skip
    with pytest.warns(GeometryWarning) as record:
        det = read_geom(path)
    messages = [str(w.message) for w in record]
    assert f"{path}:1: unknown key 'foo_bar'" in messages[0]
    assert f"{path}:11: unknown panel key 'p/zap'" in messages[1]
    assert f"{path}:16: unknown bad-region key 'bad_x/colour'" in messages[2]
    assert det.bad_regions[0].extra == (("colour", "red"),)


def test_trailing_defaults_warn() -> None:
    with pytest.warns(GeometryWarning, match="applies to no panel"):
        det = parse_geom(SINGLE + "adu_per_photon = 3\n")
    assert det.panels[0].adu_per_photon is None


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        ("clen = 0.1\np/min_fs = zero\n", 2, "p/min_fs", "not a number"),
        ("p/min_fs = -1\n", 1, "p/min_fs", "pixel index"),
        ("p/min_fs = 1.5\n", 1, "p/min_fs", "pixel index"),
        ("p/fs = 1x 2y\n", 1, "p/fs", "direction"),
        ("p/fs = 1q\n", 1, "p/fs", "direction"),
        ("res = nan\n", 1, "res", "not a number"),
        ("res = 1e999\n", 1, "res", "finite"),
        ("clen = 0.1 inch\n", 1, "clen", "unknown unit"),
        ("clen = 1.2.3\n", 1, "clen", "finite number"),
        ("wavelength = 1.5\n", 1, "wavelength", "unit is required"),
        ("photon_energy = -5\n", 1, "photon_energy", "positive"),
        ("mask_good = 0xzz\n", 1, "mask_good", "bit pattern"),
        ("mask9_data = /m\n", 1, "mask9_data", "0 to 7"),
        ("dim0 = xs\n", 1, "dim0", "%, ss, fs"),
        ("no_index = maybe\n", 1, "no_index", "true, false"),
        ("peak_list_type = csv\n", 1, "peak_list_type", "auto, cxi or list3"),
        ("just some words\n", 1, None, "key = value"),
        ("my key = 3\n", 1, None, "malformed key"),
        ("p/a/b = 3\n", 1, "p/a/b", "malformed key"),
        ("group_x/min_fs = 3\n", 1, "group_x/min_fs", "must not start"),
        ("group_g = p,p\n", 1, "group_g", "twice"),
        ("bad_r/min_x = 0\nbad_r/min_fs = 1\n", 2, "bad_r/min_fs", "mixed"),
    ],
)
def test_malformed_values_name_path_line_and_key(
    tmp_path: Path, text: str, line: int, field: str | None, message: str
) -> None:
    path = tmp_path / "m.geom"
    path.write_text(text + SINGLE)
    with pytest.raises(FormatError, match=re.escape(message)) as err:
        read_geom(path)
    assert (err.value.path, err.value.line, err.value.field) == (str(path), line, field)


@pytest.mark.parametrize(
    ("text", "field", "message"),
    [
        ("p/max_fs = 9\n", "p/min_fs", "has no 'min_fs'"),
        (SINGLE.replace("p/ss = y", "p/ss = 2x"), "p", "parallel"),
        (
            SINGLE.replace("p/max_ss = 9", "p/max_ss = 9\np/min_ss = 12"),
            "p/max_ss",
            "min_ss > max_ss",
        ),
        (SINGLE + "dim3 = fs\n" + SINGLE.replace("p/", "q/"), "q/dim", "without gaps"),
        (SINGLE + "dim2 = fs\n" + SINGLE.replace("p/", "q/"), "q/dim", "one later 'fs'"),
        (
            SINGLE + "bad_b/min_fs = 0\nbad_b/max_fs = 20\nbad_b/min_ss = 0\nbad_b/max_ss = 1\n"
            "bad_b/panel = p\n",
            "bad_b",
            "outside panel",
        ),
        (SINGLE + "bad_b/min_x = 0\n", "bad_b/max_x", "has no 'max_x'"),
        (
            SINGLE + "bad_b/min_fs = 0\nbad_b/max_fs = 0\nbad_b/min_ss = 0\nbad_b/max_ss = 0\n"
            "bad_b/panel = q\n",
            "bad_b/panel",
            "no panel named 'q'",
        ),
        (SINGLE + "group_g = p,nope\n", "group_g", "'nope' is not a panel"),
        (SINGLE + "rigid_group_collection_c = nope\n", "rigid_group_collection_c", "rigid group"),
        ("res = 1\n", None, "no panel is defined"),
    ],
)
def test_incomplete_or_inconsistent_geometry(text: str, field: str | None, message: str) -> None:
    with pytest.raises(FormatError, match=re.escape(message)) as err:
        parse_geom(text, "g.geom")
    assert err.value.field == field and err.value.path == "g.geom"


def test_read_errors(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not found"):
        read_geom(tmp_path / "none.geom")
    with pytest.raises(FormatError, match="is a directory"):
        read_geom(tmp_path)
    latin = tmp_path / "l.geom"
    latin.write_bytes(b"; caf\xe9\n" + SINGLE.encode())
    assert len(read_geom(latin).panels) == 1


def test_writer_refuses_unwritable_strings() -> None:
    det = Detector.single_panel(10, 10, 0.1, 100.0, (5, 5), data="/data;x")
    with pytest.raises(FormatError, match="cannot be written"):
        format_geom(det)


def test_mask_built_from_read_geometry_matches_regions(quiet: None) -> None:
    det = parse_geom(SEED).resolve({"/LCLS/detectorPosition": 100.0, "/shots/dx": 0.0})
    expected = np.zeros((64, 128), dtype=bool)
    expected[:, 64:] = True  # p2: no_index
    p0 = expected[0:32, 0:64]
    p0[:2, :] = p0[-2:, :] = p0[:, :2] = p0[:, -2:] = True  # p0/mask_edge_pixels = 2
    # bad_corner: -60.5 < -64.5 + fs < -50 and 10 < 1.5 + 1 + ss < 20, where the 1 is the
    # detector_shift_y of 0.1 mm (one pixel) that moves the panels, not the region
    p0[8:18, 5:15] = True
    p1 = expected[32:64, 0:64]
    p1[0, :] = p1[-1, :] = p1[:, 0] = p1[:, -1] = True  # global mask_edge_pixels = 1
    expected[42:45, 0:4] = True  # bad_strip on p1, raw coordinates
    assert np.array_equal(det.bad_pixel_mask(), expected)
    data = np.zeros((64, 128))
    data[10, 20], data[40, 20], data[41, 20] = -11.0, 2e5, 9e4
    flagged = det.bad_pixel_mask(data=data) & ~expected
    assert np.argwhere(flagged).tolist() == [[10, 20], [40, 20]]  # flag_lessthan, flag_morethan


# ---------------------------------------------------------------------- fuzzing


def test_seed_is_small_and_valid(quiet: None) -> None:
    assert len(SEED.encode()) < 5000
    parse_geom(SEED)


@FUZZ_SETTINGS
@given(text=mutations(SEED))
def test_fuzzed_geometry_raises_only_format_errors(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz.geom"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeometryWarning)
        assert_only_format_errors(read_geom, text, path)
