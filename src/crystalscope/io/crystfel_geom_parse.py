"""Line-by-line parser behind :func:`crystalscope.io.crystfel_geom.parse_geom`.

Each ``key = value`` line is checked and converted as soon as it is read, so that a
malformed value is reported at its own line even when no panel uses it.  Global panel
values are collected in a *defaults* draft that every panel copies when it is first
mentioned (CrystFEL's rule); :meth:`GeomParser.finish` turns the drafts into a
:class:`~crystalscope.model.detector.Detector`.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any

from crystalscope.errors import FormatError
from crystalscope.model.detector import Detector
from crystalscope.model.panel import (
    DEFAULT_DATA_PATH,
    DEFAULT_DIMS,
    BadRegion,
    MaskSpec,
    MetadataRef,
    Panel,
    PanelGroup,
    Vec3,
    WavelengthSource,
    length_mm,
)

__all__ = ["GeomParser"]

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TERM = re.compile(r"([+-]?)(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)?([xyz])")
_WORD = re.compile(r"[A-Za-z0-9_]+")
_MASK_KEY = re.compile(r"mask(\d+)_(data|file|goodbits|badbits)")
_DIM_KEY = re.compile(r"dim(\d+)")
_LEGACY_MASK = {"mask": "data", "mask_file": "file", "mask_good": "goodbits", "mask_bad": "badbits"}
_FLAGS = {"flag_lessthan": "lessthan", "flag_morethan": "morethan", "flag_equal": "equal"}
_MAX_INDEX = 2**31 - 1
_MAX_DIMS = 16
_REQUIRED = ("min_fs", "max_fs", "min_ss", "max_ss", "corner_x", "corner_y", "fs", "ss", "res")
_GROUP_PREFIXES = (
    ("rigid_group_collection_", "collection"),
    ("rigid_group_", "rigid"),
    ("group_", "group"),
)
_WAVELENGTH_UNITS = {
    "photon_energy": {"eV": 1.0, "keV": 1e3},
    "wavelength": {"A": 1.0, "m": 1e10},
    "electron_voltage": {"kV": 1.0, "V": 1e-3},
}


# ---------------------------------------------------------------------- value parsers
# Each takes the value text and returns the converted value or raises ValueError.


def parse_float(text: str) -> float:
    """A finite decimal number."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"'{text}' is not a number")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"'{text}' is not a finite number")
    return value


def parse_index(text: str) -> int:
    """A non-negative integral pixel index (``0`` or ``0.0``)."""
    value = parse_float(text)
    if value != int(value) or not 0 <= value <= _MAX_INDEX:
        raise ValueError(f"'{text}' is not a pixel index (integer 0..{_MAX_INDEX})")
    return int(value)


def parse_bits(text: str) -> int:
    """A bit pattern, hexadecimal (``0xffff``) or decimal."""
    low = text.lower()
    if re.fullmatch(r"0x[0-9a-f]+", low):
        value = int(low, 16)
    elif re.fullmatch(r"\d+", low):
        value = int(low)
    else:
        raise ValueError(f"'{text}' is not a bit pattern (e.g. 0x00ff)")
    if value >= 2**63:
        raise ValueError(f"bit pattern '{text}' is too large")
    return value


def parse_bool(text: str) -> bool:
    """``true``/``false`` (any case) or an integer, as CrystFEL's ``no_index``."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f"'{text}' is not true, false or an integer")
    return int(text) != 0


def parse_string(text: str) -> str:
    """A non-empty printable string (data locations, file names)."""
    if not text or not text.isprintable():
        raise ValueError("expected a non-empty printable string")
    return text


def parse_vector(text: str) -> Vec3:
    """A direction such as ``-0.0057x +0.99998y`` or ``0.5x+0.5y-0.0001z``."""
    s = re.sub(r"\s+", "", text)
    comps = {"x": 0.0, "y": 0.0, "z": 0.0}
    pos = 0
    while pos < len(s):
        m = _TERM.match(s, pos)
        if m is None or (pos > 0 and not m.group(1)):
            raise ValueError(f"'{text}' is not a direction like '0.5x +0.5y -0.1z'")
        coeff = float(m.group(2)) if m.group(2) else 1.0
        comps[m.group(3)] += -coeff if m.group(1) == "-" else coeff
        pos = m.end()
    vec = (comps["x"], comps["y"], comps["z"])
    if not s or not all(math.isfinite(v) for v in vec):
        raise ValueError(f"'{text}' is not a direction like '0.5x +0.5y -0.1z'")
    return vec


def parse_dim(text: str) -> str | int:
    """One axis of the data block: ``%``, ``ss``, ``fs`` or a fixed index."""
    if text in ("%", "ss", "fs"):
        return text
    if re.fullmatch(r"\d+", text) and int(text) <= _MAX_INDEX:
        return int(text)
    raise ValueError(f"'{text}' is not %, ss, fs or an index")


def parse_source(
    text: str, units: tuple[str, ...], literal_unit: str | None, path_unit: str | None
) -> tuple[float | str, str]:
    """``value [unit]`` or ``location [unit]``: the number or location and its unit.

    ``literal_unit``/``path_unit`` are CrystFEL's defaults when no unit is given (None
    when a unit is required).
    """
    tokens = text.split()
    if len(tokens) not in (1, 2):
        raise ValueError(f"expected 'value [unit]', got '{text}'")
    head = tokens[0]
    literal = _literal(head)
    unit = tokens[1] if len(tokens) == 2 else (literal_unit if literal is not None else path_unit)
    if unit is None:
        raise ValueError(f"a unit is required ({' or '.join(units)})")
    if unit not in units:
        raise ValueError(f"unknown unit '{unit}' (use {' or '.join(units)})")
    if literal is None and not head.isprintable():
        raise ValueError("invalid data location")
    return (head if literal is None else literal), unit


def _literal(token: str) -> float | None:
    """The number in ``token``, or None when it is a data location."""
    if _NUMBER.fullmatch(token):
        return parse_float(token)
    if token[0] in "0123456789+-." or token.lower() in ("nan", "inf", "infinity"):
        raise ValueError(f"'{token}' is not a finite number")
    return None


def parse_length(text: str, literal_unit: str, path_unit: str) -> float | MetadataRef:
    """A length in mm, or a :class:`MetadataRef` with the unit of the stored value."""
    value, unit = parse_source(text, ("m", "mm"), literal_unit, path_unit)
    if isinstance(value, str):
        return MetadataRef(value, unit)
    return length_mm(value, unit)


def parse_wavelength(kind: str, text: str) -> WavelengthSource:
    """``photon_energy`` (eV default), ``wavelength`` (m/A) or ``electron_voltage`` (V/kV)."""
    units = _WAVELENGTH_UNITS[kind]
    default = "eV" if kind == "photon_energy" else None
    value, unit = parse_source(text, tuple(units), default, default)
    if isinstance(value, str):
        return WavelengthSource(kind, MetadataRef(value, unit))  # type: ignore[arg-type]
    if value <= 0:
        raise ValueError(f"{kind} must be positive")
    return WavelengthSource(kind, value * units[unit])  # type: ignore[arg-type]


def parse_number_or_location(text: str) -> float | MetadataRef:
    """A dimensionless number or a data location (``bandwidth``)."""
    value, _ = parse_source(text, ("",), "", "")
    return MetadataRef(value) if isinstance(value, str) else value


# ---------------------------------------------------------------------- drafts


@dataclass
class _Draft:
    """Values given so far for one panel (or the global defaults), with their lines."""

    name: str
    line: int
    values: dict[str, tuple[Any, int]] = field(default_factory=dict)
    dims: dict[int, tuple[str | int, int]] = field(default_factory=dict)
    masks: dict[int, dict[str, tuple[Any, int]]] = field(default_factory=dict)
    flags: list[tuple[str, float]] = field(default_factory=list)
    extra: list[tuple[str, str]] = field(default_factory=list)

    def spawn(self, name: str, line: int) -> _Draft:
        """A new panel draft starting from these defaults."""
        return _Draft(
            name,
            line,
            dict(self.values),
            dict(self.dims),
            copy.deepcopy(self.masks),
            list(self.flags),
        )


_PANEL_VALUES: dict[str, Any] = {
    "min_fs": parse_index,
    "max_fs": parse_index,
    "min_ss": parse_index,
    "max_ss": parse_index,
    "corner_x": parse_float,
    "corner_y": parse_float,
    "fs": parse_vector,
    "ss": parse_vector,
    "res": parse_float,
    "coffset": parse_float,
    "clen": lambda t: parse_length(t, "m", "mm"),
    "adu_per_eV": parse_float,
    "adu_per_photon": parse_float,
    "max_adu": parse_float,
    "adu_bias": parse_float,
    "data": parse_string,
    "saturation_map": parse_string,
    "saturation_map_file": parse_string,
    "mask_edge_pixels": parse_index,
    "no_index": parse_bool,
}
_MASK_VALUES = {
    "data": parse_string,
    "file": parse_string,
    "goodbits": parse_bits,
    "badbits": parse_bits,
}
_REGION_VALUES: dict[str, Any] = {
    "min_x": parse_float,
    "max_x": parse_float,
    "min_y": parse_float,
    "max_y": parse_float,
    "min_fs": parse_index,
    "max_fs": parse_index,
    "min_ss": parse_index,
    "max_ss": parse_index,
    "panel": parse_string,
}


class GeomParser:
    """Collects the lines of one geometry file; :meth:`finish` builds the Detector."""

    def __init__(self, path: str | os.PathLike[str] | None, line_offset: int = 0) -> None:
        self.path = path
        self.offset = line_offset
        self.defaults = _Draft("", 0)
        self.panels: dict[str, _Draft] = {}
        self.regions: dict[str, _Draft] = {}
        self.top: dict[str, tuple[Any, int]] = {}
        self.groups: list[tuple[str, str, tuple[str, ...], int]] = []
        self.extra: list[tuple[str, str]] = []
        self.pending: list[tuple[str, int]] = []  # defaults not yet used by any panel
        self.notes: list[str] = []  # warnings for the caller

    # -------------------------------------------------------------- errors and notes

    def error(self, message: str, line: int | None, key: str | None = None) -> FormatError:
        return FormatError(
            message, path=self.path, line=None if line is None else line + self.offset, field=key
        )

    def note(self, message: str, line: int) -> None:
        where = f"{self.path}:{line + self.offset}" if self.path else f"line {line + self.offset}"
        self.notes.append(f"{where}: {message}")

    def convert(self, parse: Any, text: str, line: int, key: str) -> Any:
        """``parse(text)``; a ValueError becomes a FormatError at ``line`` for ``key``."""
        try:
            return parse(text)
        except ValueError as exc:
            raise self.error(str(exc), line, key) from None

    # -------------------------------------------------------------- lines

    def feed(self, raw: str, line: int) -> None:
        """Read one line of the file (1-based ``line``)."""
        text = raw.split(";", 1)[0].strip()
        if not text:
            return
        if "=" not in text:
            raise self.error(f"expected 'key = value', got '{text[:60]}'", line)
        key, value = (part.strip() for part in text.split("=", 1))
        if not key or not key.isprintable() or any(c.isspace() for c in key):
            raise self.error(f"malformed key '{key[:60]}'", line)
        if "/" not in key:
            self.top_level(key, value, line)
            return
        owner, sub = key.split("/", 1)
        if not owner or not _WORD.fullmatch(sub):
            raise self.error("malformed key (expected 'panel/key')", line, key)
        if owner.startswith("bad"):
            self.region_key(owner, sub, value, line)
        elif owner.startswith(("group", "rigid_group")):
            raise self.error("panel names must not start with 'group' or 'rigid_group'", line, key)
        else:
            draft = self.panels.get(owner)
            if draft is None:
                draft = self.panels[owner] = self.defaults.spawn(owner, line)
                self.pending.clear()
            if not self.panel_key(draft, sub, value, line, key):
                draft.extra.append((sub, value))
                self.note(f"unknown panel key '{key}' kept as is", line)

    def top_level(self, key: str, value: str, line: int) -> None:
        for prefix, kind in _GROUP_PREFIXES:
            if key.startswith(prefix):
                self.group(kind, key, key[len(prefix) :], value, line)
                return
        if not _WORD.fullmatch(key):
            raise self.error("malformed key", line, key)
        if key in ("clen", "detector_shift_x", "detector_shift_y"):
            unit = "mm" if key == "clen" else "m"
            self.top[key] = (
                self.convert(lambda t: parse_length(t, "m", unit), value, line, key),
                line,
            )
        elif key in _WAVELENGTH_UNITS:
            if "wavelength" in self.top and self.top["wavelength"][0].kind != key:
                self.note(
                    f"'{key}' replaces the wavelength given on line {self.top['wavelength'][1]}",
                    line,
                )
            self.top["wavelength"] = (
                self.convert(lambda t: parse_wavelength(key, t), value, line, key),
                line,
            )
        elif key == "bandwidth":
            self.top[key] = (self.convert(parse_number_or_location, value, line, key), line)
        elif key == "peak_list":
            self.top[key] = (self.convert(parse_string, value, line, key), line)
        elif key == "peak_list_type":
            if value not in ("auto", "cxi", "list3"):
                raise self.error(f"'{value}' is not auto, cxi or list3", line, key)
            self.top[key] = (value, line)
        elif self.panel_key(self.defaults, key, value, line, key):
            self.pending.append((key, line))
        else:
            self.extra.append((key, value))
            self.note(f"unknown key '{key}' kept as is", line)

    def group(self, kind: str, key: str, name: str, value: str, line: int) -> None:
        members = tuple(m.strip() for m in value.split(","))
        if not name or not name.isprintable() or "," in name:
            raise self.error("malformed group name", line, key)
        if not all(members) or not all(m.isprintable() and " " not in m for m in members):
            raise self.error("expected a comma-separated list of names", line, key)
        if len(set(members)) != len(members):
            raise self.error("a member is listed twice", line, key)
        self.groups.append((kind, name, members, line))

    def panel_key(self, d: _Draft, key: str, value: str, line: int, where: str) -> bool:
        """Apply ``key = value`` to draft ``d``; False if the key is not a panel key."""
        if key in _PANEL_VALUES:
            d.values[key] = (self.convert(_PANEL_VALUES[key], value, line, where), line)
            if key in ("adu_per_eV", "adu_per_photon"):  # one gain, the last one given
                d.values.pop("adu_per_photon" if key == "adu_per_eV" else "adu_per_eV", None)
        elif key in _FLAGS:
            d.flags.append((_FLAGS[key], self.convert(parse_float, value, line, where)))
        elif (m := _DIM_KEY.fullmatch(key)) is not None:
            if int(m.group(1)) >= _MAX_DIMS:
                raise self.error(f"at most {_MAX_DIMS} dimensions", line, where)
            d.dims[int(m.group(1))] = (self.convert(parse_dim, value, line, where), line)
        elif key in _LEGACY_MASK or _MASK_KEY.fullmatch(key):
            index, part = (0, _LEGACY_MASK[key]) if key in _LEGACY_MASK else _mask_key(key)
            if index > 7:
                raise self.error("mask numbers go from 0 to 7", line, where)
            parsed = self.convert(_MASK_VALUES[part], value, line, where)
            d.masks.setdefault(index, {})[part] = (parsed, line)
        else:
            return False
        return True

    def region_key(self, name: str, key: str, value: str, line: int) -> None:
        d = self.regions.setdefault(name, _Draft(name, line))
        where = f"{name}/{key}"
        if key not in _REGION_VALUES:
            d.extra.append((key, value))
            self.note(f"unknown bad-region key '{where}' kept as is", line)
            return
        d.values[key] = (self.convert(_REGION_VALUES[key], value, line, where), line)
        lab = {"min_x", "max_x", "min_y", "max_y"} & d.values.keys()
        raw = {"min_fs", "max_fs", "min_ss", "max_ss"} & d.values.keys()
        if lab and raw:
            raise self.error("x/y and fs/ss cannot be mixed in a bad region", line, where)

    # -------------------------------------------------------------- finish

    def finish(self) -> Detector:
        """Build the detector from everything read."""
        if not self.panels:
            raise self.error("no panel is defined (lines like 'p0/min_fs = 0')", None)
        for key, line in self.pending:
            self.note(f"'{key}' comes after the last panel and applies to no panel", line)
        panels = tuple(self.build_panel(d) for d in self.panels.values())
        regions = tuple(self.build_region(d, panels) for d in self.regions.values())
        groups = self.build_groups(panels)

        def top(key: str) -> Any:
            return self.top.get(key, (None, 0))[0]

        try:
            return Detector(
                panels=panels,
                clen=top("clen"),
                wavelength_source=top("wavelength"),
                bandwidth=top("bandwidth"),
                detector_shift_x=top("detector_shift_x"),
                detector_shift_y=top("detector_shift_y"),
                bad_regions=regions,
                groups=groups["group"],
                rigid_groups=groups["rigid"],
                rigid_group_collections=groups["collection"],
                peak_list=top("peak_list"),
                peak_list_type=top("peak_list_type"),
                extra=tuple(self.extra),
            )
        except ValueError as exc:
            raise self.error(str(exc), None) from None

    def build_panel(self, d: _Draft) -> Panel:
        v = {k: val for k, (val, _) in d.values.items()}
        for key in _REQUIRED:
            if key not in v:
                raise self.error(f"panel {d.name} has no '{key}'", d.line, f"{d.name}/{key}")
        for lo, hi in (("min_fs", "max_fs"), ("min_ss", "max_ss")):
            if v[lo] > v[hi]:
                raise self.error(f"{lo} > {hi}", d.values[hi][1], f"{d.name}/{hi}")
        if v["res"] <= 0:
            raise self.error("res must be positive", d.values["res"][1], f"{d.name}/res")
        dims = self.build_dims(d)
        masks = self.build_masks(d)
        try:
            return Panel(
                name=d.name,
                min_fs=v["min_fs"],
                max_fs=v["max_fs"],
                min_ss=v["min_ss"],
                max_ss=v["max_ss"],
                corner_x=v["corner_x"],
                corner_y=v["corner_y"],
                fs=v["fs"],
                ss=v["ss"],
                pixel_size_mm=res_to_pixel_size_mm(v["res"]),
                coffset_mm=coffset_to_mm(v.get("coffset", 0.0)),
                clen=v.get("clen"),
                adu_per_ev=v.get("adu_per_eV"),
                adu_per_photon=v.get("adu_per_photon"),
                max_adu=v.get("max_adu", math.inf),
                adu_bias=v.get("adu_bias"),
                data=v.get("data", DEFAULT_DATA_PATH),
                dims=dims,
                masks=masks,
                saturation_map=v.get("saturation_map"),
                saturation_map_file=v.get("saturation_map_file"),
                mask_edge_pixels=v.get("mask_edge_pixels", 0),
                flags=tuple(d.flags),  # type: ignore[arg-type]
                no_index=v.get("no_index", False),
                extra=tuple(d.extra),
            )
        except ValueError as exc:
            raise self.error(str(exc), d.line, d.name) from None

    def build_dims(self, d: _Draft) -> tuple[str | int, ...]:
        dims = dict(enumerate(DEFAULT_DIMS))
        lines = {}
        for n, (dim, line) in d.dims.items():
            dims[n] = dim
            lines[n] = line
        if sorted(dims) != list(range(len(dims))):
            line = max(lines.values(), default=d.line)
            raise self.error(
                "dimension numbers must run 0, 1, 2... without gaps", line, f"{d.name}/dim"
            )
        out = tuple(dims[n] for n in range(len(dims)))
        if out.count("fs") != 1 or out.count("ss") != 1 or out.index("ss") > out.index("fs"):
            line = max(lines.values(), default=d.line)
            raise self.error(f"dims {out}: need one 'ss' and one later 'fs'", line, f"{d.name}/dim")
        return out

    def build_masks(self, d: _Draft) -> tuple[MaskSpec, ...]:
        out = []
        for index in sorted(d.masks):
            parts = {k: v for k, (v, _) in d.masks[index].items()}
            out.append(
                MaskSpec(
                    index,
                    parts.get("data"),
                    parts.get("file"),
                    parts.get("goodbits", 0),
                    parts.get("badbits", 0),
                )
            )
        return tuple(out)

    def build_region(self, d: _Draft, panels: tuple[Panel, ...]) -> BadRegion:
        v = {k: val for k, (val, _) in d.values.items()}
        lab = ("min_x", "max_x", "min_y", "max_y")
        keys = lab if set(lab) & v.keys() else ("min_fs", "max_fs", "min_ss", "max_ss")
        missing = [k for k in keys if k not in v]
        if missing:
            raise self.error(
                f"bad region {d.name} has no '{missing[0]}'", d.line, f"{d.name}/{missing[0]}"
            )
        extra = list(d.extra)
        if "min_x" in keys and "panel" in v:  # CrystFEL ignores it; keep it for writing
            extra.append(("panel", v.pop("panel")))
            self.note(f"bad region {d.name} is in x/y: its panel is ignored", d.values["panel"][1])
        if v.get("panel") is not None:
            p = next((p for p in panels if p.name == v["panel"]), None)
            line = d.values["panel"][1]
            if p is None:
                raise self.error(f"no panel named '{v['panel']}'", line, f"{d.name}/panel")
            if not (
                p.min_fs <= v["min_fs"] <= v["max_fs"] <= p.max_fs
                and p.min_ss <= v["min_ss"] <= v["max_ss"] <= p.max_ss
            ):
                raise self.error(f"bad region lies outside panel {p.name}", line, d.name)
        try:
            return BadRegion(name=d.name, extra=tuple(extra), **v)
        except ValueError as exc:
            raise self.error(str(exc), d.line, d.name) from None

    def build_groups(self, panels: tuple[Panel, ...]) -> dict[str, tuple[PanelGroup, ...]]:
        names = {p.name for p in panels}
        known = set(names)  # CrystFEL 0.10: panels and groups defined earlier
        rigid = {name for kind, name, _, _ in self.groups if kind == "rigid"}
        seen: dict[str, set[str]] = {"group": set(), "rigid": set(), "collection": set()}
        out: dict[str, list[PanelGroup]] = {"group": [], "rigid": [], "collection": []}
        for kind, name, members, line in self.groups:
            key = {
                "group": "group_",
                "rigid": "rigid_group_",
                "collection": "rigid_group_collection_",
            }[kind] + name
            allowed = {"group": known, "rigid": names, "collection": rigid}[kind]
            if name in seen[kind] or (kind == "group" and name in names):
                raise self.error(f"'{name}' is defined twice", line, key)
            unknown = [m for m in members if m not in allowed]
            if unknown:
                what = {
                    "group": "panel or earlier group",
                    "rigid": "panel",
                    "collection": "rigid group",
                }[kind]
                raise self.error(f"'{unknown[0]}' is not a {what}", line, key)
            seen[kind].add(name)
            if kind == "group":
                known.add(name)
            out[kind].append(PanelGroup(name, members))
        return {k: tuple(v) for k, v in out.items()}


def _mask_key(key: str) -> tuple[int, str]:
    m = _MASK_KEY.fullmatch(key)
    assert m is not None
    return int(m.group(1)), m.group(2)


def res_to_pixel_size_mm(res: float) -> float:
    """CrystFEL ``res`` (pixels per metre) -> pixel size in mm."""
    return 1000.0 / res


def coffset_to_mm(coffset_m: float) -> float:
    """CrystFEL ``coffset`` (m) -> mm."""
    return coffset_m * 1000.0
