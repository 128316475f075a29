"""Text of a CrystFEL geometry file for a :class:`~crystalscope.model.detector.Detector`.

Layout of the output: detector-wide values, then the panel values shared by all panels
(written once, before any panel, so that CrystFEL's default rule gives them to every
panel), bad regions, panels with their own values, and panel groups.  Numbers are
written in positional notation (CrystFEL's direction parser does not read exponents)
with the shortest digits that read back to the same float after the unit conversion.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from importlib import metadata

import numpy as np

from crystalscope.errors import FormatError
from crystalscope.io.crystfel_geom_parse import coffset_to_mm, res_to_pixel_size_mm
from crystalscope.model.detector import Detector
from crystalscope.model.panel import (
    DEFAULT_DATA_PATH,
    DEFAULT_DIMS,
    BadRegion,
    MaskSpec,
    MetadataRef,
    Panel,
)

__all__ = ["format_geom"]

Lines = list[tuple[str, str]]
_PATH_DEFAULT_UNIT = {"clen": "mm", "detector_shift_x": "m", "detector_shift_y": "m"}


def fmt(x: float) -> str:
    """Shortest positional decimal that reads back as ``x``."""
    return str(np.format_float_positional(float(x), unique=True, trim="-"))


def fmt_exact(
    x: float, to_file: Callable[[float], float], from_file: Callable[[float], float]
) -> str:
    """``to_file(x)`` written so that ``from_file(float(text)) == x`` whenever possible.

    Unit conversions round; trying the neighbouring floats of ``to_file(x)`` finds, in
    practice always, one that converts back to exactly ``x``.
    """
    y = to_file(x)
    candidates = [y]
    lo = hi = y
    for _ in range(16):
        lo, hi = float(np.nextafter(lo, -math.inf)), float(np.nextafter(hi, math.inf))
        candidates += [lo, hi]
    for c in candidates:
        text = fmt(c)
        if from_file(float(text)) == x:
            return text
    return fmt(y)


def _mm_to_m(x: float) -> str:
    return fmt_exact(x, lambda v: v / 1000.0, coffset_to_mm)


def _length(value: float | MetadataRef, key: str) -> str:
    if isinstance(value, MetadataRef):
        return value.path if value.unit == _PATH_DEFAULT_UNIT[key] else f"{value.path} {value.unit}"
    return f"{_mm_to_m(value)} m"


def _vector(v: tuple[float, float, float]) -> str:
    terms = [f"{fmt(v[0])}x", f"{'+' if math.copysign(1, v[1]) > 0 else ''}{fmt(v[1])}y"]
    if v[2] != 0:
        terms.append(f"{'+' if v[2] > 0 else ''}{fmt(v[2])}z")
    return " ".join(terms)


def _top_lines(det: Detector) -> Lines:
    out: Lines = []
    src = det.wavelength_source
    if src is not None:
        if isinstance(src.value, MetadataRef):
            ref = src.value
            plain = src.kind == "photon_energy" and ref.unit == "eV"
            out.append((src.kind, ref.path if plain else f"{ref.path} {ref.unit}"))
        else:
            unit = {"photon_energy": "eV", "wavelength": "A", "electron_voltage": "kV"}[src.kind]
            out.append((src.kind, f"{fmt(src.value)} {unit}"))
    for key in ("clen", "detector_shift_x", "detector_shift_y"):
        value = getattr(det, key)
        if value is not None:
            out.append((key, _length(value, key)))
    if det.bandwidth is not None:
        bw = det.bandwidth
        out.append(("bandwidth", bw.path if isinstance(bw, MetadataRef) else fmt(bw)))
    if det.peak_list is not None:
        out.append(("peak_list", det.peak_list))
    if det.peak_list_type is not None:
        out.append(("peak_list_type", det.peak_list_type))
    return out + list(det.extra)


def _mask_lines(m: MaskSpec) -> Lines:
    """Mask ``m``; number 0 with the legacy keys that every CrystFEL version reads."""
    names = (
        ("mask", "mask_file", "mask_good", "mask_bad")
        if m.index == 0
        else tuple(f"mask{m.index}_{k}" for k in ("data", "file", "goodbits", "badbits"))
    )
    out: Lines = []
    if m.data is not None:
        out.append((names[0], m.data))
    if m.file is not None:
        out.append((names[1], m.file))
    return [*out, (names[2], f"0x{m.goodbits:x}"), (names[3], f"0x{m.badbits:x}")]


def _shared_fields(p: Panel) -> dict[str, Lines]:
    """Panel values that may be written once for all panels, by group of keys."""
    out: dict[str, Lines] = {
        "res": [("res", fmt_exact(p.pixel_size_mm, res_to_pixel_size_mm, res_to_pixel_size_mm))],
        "coffset": [("coffset", _mm_to_m(p.coffset_mm))] if p.coffset_mm != 0 else [],
        "data": [("data", p.data)] if p.data != DEFAULT_DATA_PATH else [],
        "dims": [(f"dim{i}", str(d)) for i, d in enumerate(p.dims)]
        if p.dims != DEFAULT_DIMS
        else [],
        "flags": [(f"flag_{kind}", fmt(v)) for kind, v in p.flags],
        "no_index": [("no_index", "1")] if p.no_index else [],
    }
    if p.adu_per_ev is not None:
        out["adu"] = [("adu_per_eV", fmt(p.adu_per_ev))]
    elif p.adu_per_photon is not None:
        out["adu"] = [("adu_per_photon", fmt(p.adu_per_photon))]
    for key, value in (
        ("max_adu", p.max_adu if math.isfinite(p.max_adu) else None),
        ("adu_bias", p.adu_bias),
        ("mask_edge_pixels", p.mask_edge_pixels or None),
    ):
        out[key] = [] if value is None else [(key, fmt(value))]
    for key, text in (
        ("saturation_map", p.saturation_map),
        ("saturation_map_file", p.saturation_map_file),
    ):
        out[key] = [] if text is None else [(key, text)]
    for m in p.masks:
        out[f"mask{m.index}"] = _mask_lines(m)
    return out


def _panel_geometry(p: Panel) -> Lines:
    out: Lines = [
        ("min_fs", str(p.min_fs)),
        ("max_fs", str(p.max_fs)),
        ("min_ss", str(p.min_ss)),
        ("max_ss", str(p.max_ss)),
        ("corner_x", fmt(p.corner_x)),
        ("corner_y", fmt(p.corner_y)),
        ("fs", _vector(p.fs)),
        ("ss", _vector(p.ss)),
    ]
    if p.clen is not None:
        out.append(("clen", _length(p.clen, "clen")))
    return out


def _region_lines(r: BadRegion) -> Lines:
    if r.is_lab:
        out = [(k, fmt(getattr(r, k))) for k in ("min_x", "max_x", "min_y", "max_y")]
    else:
        out = [(k, str(getattr(r, k))) for k in ("min_fs", "max_fs", "min_ss", "max_ss")]
        if r.panel is not None:
            out.append(("panel", r.panel))
    return out + list(r.extra)


def _check(key: str, value: str, path: str | os.PathLike[str] | None) -> str:
    if ";" in value or "\n" in value or "\r" in value or (value and value != value.strip()):
        raise FormatError(
            f"value {value!r} cannot be written in a .geom file", path=path, field=key
        )
    return f"{key} = {value}"


def format_geom(detector: Detector, *, path: str | os.PathLike[str] | None = None) -> str:
    """The text of a CrystFEL geometry file describing ``detector``.

    Raises
    ------
    FormatError
        If a string holds a ``;`` or a line break (a comment or a new line in a .geom).
    """
    try:
        version = metadata.version("crystalscope")
    except metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        version = "unknown"
    out = [f"; CrystFEL geometry file written by crystalscope {version}", ""]
    out += [_check(k, v, path) for k, v in _top_lines(detector)]
    fields = [_shared_fields(p) for p in detector.panels]
    groups = sorted({g for f in fields for g in f}, key=lambda g: (g.startswith("mask"), g))
    shared = [g for g in groups if all(f.get(g) == fields[0].get(g) for f in fields)]
    out.append("")
    out += [_check(k, v, path) for g in shared for k, v in fields[0].get(g, [])]
    for region in detector.bad_regions:
        out.append("")
        out += [_check(f"{region.name}/{k}", v, path) for k, v in _region_lines(region)]
    for p, f in zip(detector.panels, fields, strict=True):
        own = [kv for g in groups if g not in shared for kv in f.get(g, [])]
        out.append("")
        out += [
            _check(f"{p.name}/{k}", v, path) for k, v in _panel_geometry(p) + own + list(p.extra)
        ]
    out.append("")
    for prefix, items in (
        ("group_", detector.groups),
        ("rigid_group_", detector.rigid_groups),
        ("rigid_group_collection_", detector.rigid_group_collections),
    ):
        out += [_check(prefix + g.name, ",".join(g.members), path) for g in items]
    return "\n".join(out).rstrip("\n") + "\n"
