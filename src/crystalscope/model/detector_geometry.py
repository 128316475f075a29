"""Numerical helpers and consistency checks behind :class:`~crystalscope.model.detector.Detector`.

Ray casting onto panels, q from lab positions, metadata look-up, approximate equality
and the validation of a detector's panels, bad regions and groups.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import DataError
from crystalscope.model.panel import MetadataRef, Panel, length_mm

if TYPE_CHECKING:
    from crystalscope.model.detector import Detector

__all__ = ["PixelHits"]

RESERVED_PREFIXES = ("bad", "group", "rigid_group")


class PixelHits(NamedTuple):
    """Where rays hit the detector: panel index (-1 for a miss) and pixel-centre fs, ss."""

    panel: np.ndarray
    fs: np.ndarray
    ss: np.ndarray


class Frame(NamedTuple):
    """Per-panel lab geometry in mm (rows follow ``Detector.panels``)."""

    origin: np.ndarray  # (P, 3) lab position of corner-convention point (0, 0)
    fs_vec: np.ndarray  # (P, 3) lab step of one pixel along fs
    ss_vec: np.ndarray  # (P, 3) lab step of one pixel along ss
    n_fs: np.ndarray  # (P,)
    n_ss: np.ndarray  # (P,)


def floats(a: ArrayLike) -> np.ndarray:
    try:
        return np.asarray(a, dtype=float)
    except (TypeError, ValueError) as exc:
        raise DataError(f"expected numbers ({exc})") from None


def shift3(shift_mm: ArrayLike) -> np.ndarray:
    """Lateral shifts ``(..., 2)`` in mm as lab vectors ``(..., 3)``."""
    shift = floats(shift_mm)
    if shift.shape[-1:] != (2,):
        raise DataError(f"shifts need shape (..., 2), got {shift.shape}", field="shift_mm")
    return np.concatenate([shift, np.zeros_like(shift[..., :1])], axis=-1)


def lab_to_q(r: np.ndarray, wavelength: float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = r / np.linalg.norm(r, axis=-1, keepdims=True)
    unit[..., 2] -= 1.0
    return unit / wavelength


def plane_coords(a: np.ndarray, b: np.ndarray, x: np.ndarray) -> tuple[Any, Any]:
    """Coefficients ``(u, v)`` with ``u a + v b`` the projection of ``x`` (..., 3) on the plane."""
    aa, ab, bb = a @ a, a @ b, b @ b
    det = aa * bb - ab * ab
    xa, xb = x @ a, x @ b
    return (bb * xa - ab * xb) / det, (aa * xb - ab * xa) / det


def ray_cast(frame: Frame, d: np.ndarray, shift: np.ndarray | None) -> PixelHits:
    """Intersect rays ``t d`` (t > 0) with every panel; keep the nearest hit."""
    shape = d.shape[:-1]
    d = d.reshape(-1, 3)
    s = None if shift is None else shift.reshape(-1, 3)
    best_t = np.full(len(d), np.inf)
    panel = np.full(len(d), -1, dtype=np.intp)
    fs = np.full(len(d), np.nan)
    ss = np.full(len(d), np.nan)
    for i in range(len(frame.origin)):
        a, b = frame.fs_vec[i], frame.ss_vec[i]
        o = frame.origin[i] if s is None else frame.origin[i] + s
        n = np.cross(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (o @ n) / (d @ n)
            u, v = plane_coords(a, b, t[:, None] * d - o)
        hit = (
            (t > 0) & (t < best_t) & (u >= 0) & (u < frame.n_fs[i]) & (v >= 0) & (v < frame.n_ss[i])
        )
        best_t[hit] = t[hit]
        panel[hit] = i
        fs[hit] = u[hit] - 0.5
        ss[hit] = v[hit] - 0.5
    return PixelHits(panel.reshape(shape), fs.reshape(shape), ss.reshape(shape))


def resolved_length(det: Detector, name: str) -> float:
    value = getattr(det, name)
    if value is None:
        return 0.0
    if isinstance(value, MetadataRef):
        raise DataError(
            f"{name} is read per file from {value.path}; call resolve() first", field=name
        )
    return float(value)


def metadata_value(values: Mapping[str, Any], ref: MetadataRef, key: str) -> float:
    if ref.path not in values:
        raise DataError(
            f"the geometry reads this value from '{ref.path}', which was not given", field=key
        )
    try:
        arr = np.asarray(values[ref.path], dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"value of '{ref.path}' is not a number", field=key) from None
    if arr.size != 1 or not np.isfinite(arr).all():
        raise DataError(
            f"value of '{ref.path}' must be one finite number, got shape {arr.shape}", field=key
        )
    return float(arr.reshape(()))


def close(a: Any, b: Any, rel_tol: float, abs_tol: float) -> bool:
    """Recursive equality of detector parts with ``math.isclose`` for numbers."""
    numbers = (int, float, np.integer, np.floating)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool | np.bool_):
        return a == b or math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)
    if type(a) is not type(b):
        return False
    if isinstance(a, tuple):
        return len(a) == len(b) and all(
            close(x, y, rel_tol, abs_tol) for x, y in zip(a, b, strict=True)
        )
    if dataclasses.is_dataclass(a):
        return all(
            close(getattr(a, f.name), getattr(b, f.name), rel_tol, abs_tol)
            for f in dataclasses.fields(a)
        )
    return bool(a == b)


def detector_problems(det: Detector) -> Iterator[str]:
    """Reasons why ``det`` is not a consistent detector."""
    if not det.panels:
        yield "a detector needs at least one panel"
    names = [p.name for p in det.panels]
    if len(set(names)) != len(names):
        yield "panel names must be unique"
    for name in names:
        if not _writable_name(name) or name.startswith(RESERVED_PREFIXES):
            yield f"invalid panel name {name!r} (empty, reserved prefix or special characters)"
    for key, value in det._scalar_fields():
        if isinstance(value, float | int) and not math.isfinite(value):
            yield f"{key} must be finite"
    if det.peak_list_type not in (None, "auto", "cxi", "list3"):
        yield f"peak_list_type must be auto, cxi or list3, got {det.peak_list_type!r}"
    yield from _region_problems(det)
    yield from _group_problems(det)


def _writable_name(name: str) -> bool:
    """True for names that can stand before ``/`` or ``=`` in a geometry file."""
    return bool(name) and name.isprintable() and not any(c.isspace() or c in "/;=" for c in name)


def _region_problems(det: Detector) -> Iterator[str]:
    panels = {p.name: p for p in det.panels}
    names = [r.name for r in det.bad_regions]
    if len(set(names)) != len(names):
        yield "bad region names must be unique"
    for r in det.bad_regions:
        if not r.name.startswith("bad") or not _writable_name(r.name):
            yield f"bad region name {r.name!r} must start with 'bad' (no special characters)"
        if r.panel is None:
            continue
        p = panels.get(r.panel)
        if p is None:
            yield f"bad region {r.name} refers to unknown panel {r.panel!r}"
        elif not (
            p.min_fs <= r.min_fs <= r.max_fs <= p.max_fs  # type: ignore[operator]
            and p.min_ss <= r.min_ss <= r.max_ss <= p.max_ss  # type: ignore[operator]
        ):
            yield f"bad region {r.name} is outside panel {p.name} (raw fs/ss coordinates)"


def _group_problems(det: Detector) -> Iterator[str]:
    panels = set(det.panel_names)
    known = set(panels)
    for g in det.groups:  # CrystFEL 0.10: members are panels or groups defined before
        if g.name in known:
            yield f"group {g.name} duplicates a panel or group name"
        for m in g.members:
            if m not in known:
                yield f"group {g.name}: unknown member {m!r} (panels or earlier groups only)"
        known.add(g.name)
    rigid = set()
    for g in det.rigid_groups:
        if g.name in rigid:
            yield f"rigid group {g.name} is defined twice"
        rigid.add(g.name)
        for m in g.members:
            if m not in panels:
                yield f"rigid group {g.name}: unknown panel {m!r}"
    collections = set()
    for g in det.rigid_group_collections:
        if g.name in collections:
            yield f"rigid group collection {g.name} is defined twice"
        collections.add(g.name)
        for m in g.members:
            if m not in rigid:
                yield f"rigid group collection {g.name}: unknown rigid group {m!r}"


def build_frame(det: Detector) -> Frame:
    """Lab geometry of every panel in mm (needs a resolved camera length and shift)."""
    shift = [resolved_length(det, "detector_shift_x"), resolved_length(det, "detector_shift_y")]
    origin = np.empty((len(det.panels), 3))
    fs_vec = np.empty((len(det.panels), 3))
    ss_vec = np.empty((len(det.panels), 3))
    for i, p in enumerate(det.panels):
        clen = det.clen if p.clen is None else p.clen
        key = "clen" if p.clen is None else f"{p.name}/clen"
        if clen is None:
            raise DataError("the geometry gives no camera length", field=key)
        if isinstance(clen, MetadataRef):
            raise DataError(
                f"camera length is read per file from {clen.path}; call resolve() first",
                field=key,
            )
        px = p.pixel_size_mm
        origin[i] = (p.corner_x * px + shift[0], p.corner_y * px + shift[1], clen + p.coffset_mm)
        fs_vec[i] = np.multiply(p.fs, px)
        ss_vec[i] = np.multiply(p.ss, px)
    n_fs = np.array([p.n_fs for p in det.panels])
    n_ss = np.array([p.n_ss for p in det.panels])
    for arr in (origin, fs_vec, ss_vec, n_fs, n_ss):
        arr.setflags(write=False)
    return Frame(origin, fs_vec, ss_vec, n_fs, n_ss)


def resolve_detector(det: Detector, values: Mapping[str, Any]) -> Detector:
    """``det`` with every :class:`MetadataRef` replaced by its value from ``values``."""

    def get(ref: MetadataRef, key: str) -> float:
        return metadata_value(values, ref, key)

    def length(value: float | MetadataRef | None, key: str) -> float | None:
        if isinstance(value, MetadataRef):
            return length_mm(get(value, key), value.unit)
        return value

    src = det.wavelength_source
    if src is not None and isinstance(src.value, MetadataRef):
        src = src.resolved_with(get(src.value, src.kind))
    bandwidth = det.bandwidth
    if isinstance(bandwidth, MetadataRef):
        bandwidth = get(bandwidth, "bandwidth")
    panels = tuple(
        dataclasses.replace(p, clen=length(p.clen, f"{p.name}/clen"))
        if isinstance(p.clen, MetadataRef)
        else p
        for p in det.panels
    )
    return dataclasses.replace(
        det,
        panels=panels,
        clen=length(det.clen, "clen"),
        wavelength_source=src,
        bandwidth=bandwidth,
        detector_shift_x=length(det.detector_shift_x, "detector_shift_x"),
        detector_shift_y=length(det.detector_shift_y, "detector_shift_y"),
    )


def _layout(p: Panel) -> list[str]:
    return [d if isinstance(d, str) else "#" for d in p.dims]


def raw_frame_shape(panels: tuple[Panel, ...]) -> tuple[int, ...]:
    """Shape of the one raw array (per event) holding all ``panels``; see ``Detector.raw_shape``."""
    first = panels[0]
    size = [0] * len(first.dims)
    for p in panels:
        if p.data != first.data or _layout(p) != _layout(first):
            raise DataError(
                f"panels {first.name} and {p.name} are stored in different data blocks or "
                "layouts; there is no single raw frame",
                field="data",
            )
        for k, d in enumerate(p.dims):
            extent = (
                d + 1 if isinstance(d, int) else {"fs": p.max_fs + 1, "ss": p.max_ss + 1}.get(d, 1)
            )
            size[k] = max(size[k], extent)
    return tuple(s for s, d in zip(size, first.dims, strict=True) if d != "%")


def raw_box(p: Panel, fs0: int, fs1: int, ss0: int, ss1: int) -> tuple[int | slice, ...]:
    """Raw-frame index of the inclusive raw box ``fs0..fs1`` x ``ss0..ss1`` of panel ``p``."""
    out: list[int | slice] = []
    for d in p.dims:
        if d == "fs":
            out.append(slice(fs0, fs1 + 1))
        elif d == "ss":
            out.append(slice(ss0, ss1 + 1))
        elif isinstance(d, int):
            out.append(d)
    return tuple(out)
