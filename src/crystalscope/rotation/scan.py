"""The geometry of a continuous-rotation series and its conversions to other programs.

:class:`RotationScanInfo` holds everything the processing programs need: wavelength,
camera length, pixel size and shape of the (uniform, single-panel) detector, beam centre,
rotation axis, start angle, oscillation, exposure, the frames that hold no diffraction
pattern (defocused images for crystal tracking, frames lost) and the untrusted detector
regions, with an optional elliptical lens distortion.

Conventions (docs/conventions.md)
---------------------------------
* Frames are numbered ``1 .. n_frames`` (as XDS, DIALS and Instamatic's file names);
  frame ``i`` is exposed while the goniometer turns from
  ``start_angle_deg + (i - 1) * oscillation_deg`` by ``oscillation_deg`` (> 0).  A
  rotation that runs towards smaller stage angles is described by the opposite axis
  and positive steps.
* Pixel positions are crystalscope's ``(fs, ss)`` with the centre of the first pixel at
  ``(0, 0)``.  The detector is flat, perpendicular to the beam, its fast-scan direction
  along lab ``+x`` and slow-scan direction along lab ``+y``, ``camera_length_mm`` from
  the sample (the crystalscope detector presets).
* The rotation axis is a unit vector in the NeXus/McStas lab frame (``+z`` along the
  beam, ``+y`` up), right-handed.

Conversions
-----------
==============================  ==============================================================
XDS (``XDS.INP``)               lab frame = crystalscope's with DIRECTION_OF_DETECTOR_X-AXIS =
                                ``1 0 0``, Y-AXIS = ``0 1 0``, INCIDENT_BEAM_DIRECTION = ``0 0
                                1``: ROTATION_AXIS = ``(ex, ey, ez)``; pixel ``IX`` counts from
                                1 with the centre of the first pixel at 1.0, so ``ORGX = fs +
                                1``, ``ORGY = ss + 1``
DIALS, SMV/ADSC images          dxtbx's frame has the fast axis ``(1, 0, 0)``, the slow axis
                                ``(0, -1, 0)`` and the beam along ``-z``: a 180 degree turn
                                about ``x``, so the goniometer axis is ``(ex, -ey, -ez)``;
                                beam centre in mm from the first pixel's corner
DIALS, NXmx                     dxtbx converts McStas to imgCIF with ``diag(-1, 1, -1)``: the
                                file holds ``(ex, ey, ez)``, DIALS shows ``(-ex, ey, -ez)``
Instamatic / REDp               in-plane angle ``a`` (radians in ``cRED_log.txt``, degrees in
                                ``.ed3d``) with ``e = (cos a, -sin a, 0)`` (Instamatic writes
                                ``(cos a, -sin a, 0)`` to XDS and ``(cos a, sin a, 0)`` to
                                DIALS)
==============================  ==============================================================

The reciprocal pixel size Instamatic and REDp use ("pixelsize", 1/A per pixel) is
``pixel_size_mm / (wavelength_a * camera_length_mm)`` (small-angle approximation).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, fields, replace
from typing import Any, Literal

import numpy as np

from crystalscope.errors import DataError
from crystalscope.model.distortion import EllipticalDistortion

__all__ = [
    "Rectangle",
    "RotationScanInfo",
    "axis_from_instamatic",
    "contiguous_ranges",
]

Rectangle = tuple[int, int, int, int]
"""Untrusted rectangle ``(fs_min, fs_max, ss_min, ss_max)``: 0-based, inclusive."""


def contiguous_ranges(numbers: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted unique integers as inclusive ``(first, last)`` runs: 1,2,3,7,8 -> (1,3),(7,8)."""
    values = sorted({int(v) for v in numbers})
    runs: list[tuple[int, int]] = []
    for v in values:
        if runs and v == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    return runs


def axis_from_instamatic(angle_rad: float) -> tuple[float, float, float]:
    """Lab-frame rotation axis of Instamatic's in-plane angle ``a``: ``(cos a, -sin a, 0)``."""
    return (math.cos(angle_rad), -math.sin(angle_rad), 0.0)


def _positive(value: float, name: str) -> float:
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise DataError(f"must be a positive number, got {value!r}", field=name)
    return v


def _finite(value: float, name: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise DataError(f"must be a finite number, got {value!r}", field=name)
    return v


@dataclass(frozen=True)
class RotationScanInfo:
    """A continuous-rotation series on a flat single-panel detector (module docstring).

    Attributes
    ----------
    wavelength_a : float
        Wavelength, A (relativistic for electrons).
    camera_length_mm : float
        Effective sample-to-detector distance, mm.
    pixel_size_mm : float
        Square pixel size, mm.
    detector_shape : (int, int)
        Frame shape ``(ss, fs)`` = ``(ny, nx)``.
    beam_centre_px : (float, float)
        Direct-beam position ``(fs, ss)``, pixel-centre convention.
    rotation_axis : (float, float, float)
        Unit vector, lab frame (normalised on construction).
    start_angle_deg : float
        Goniometer angle at the start of frame 1.
    oscillation_deg : float
        Rotation per frame (> 0).
    n_frames : int
        Number of frame slots, diffraction frames and gaps together.
    exposure_s : float
        Exposure time of a diffraction frame, s.
    excluded_frames : tuple of int
        1-based numbers of the frames without a diffraction pattern (defocused images,
        lost frames); sorted on construction.
    untrusted_rectangles : tuple of Rectangle
        ``(fs_min, fs_max, ss_min, ss_max)``, 0-based inclusive.
    distortion : EllipticalDistortion or None
        Elliptical distortion of the patterns about the beam centre.
    saturation : float
        Highest trusted pixel value (counts).
    radiation : {"electron", "xray"}
        The probe.
    """

    wavelength_a: float
    camera_length_mm: float
    pixel_size_mm: float
    detector_shape: tuple[int, int]
    beam_centre_px: tuple[float, float]
    rotation_axis: tuple[float, float, float]
    start_angle_deg: float
    oscillation_deg: float
    n_frames: int
    exposure_s: float = 0.0
    excluded_frames: tuple[int, ...] = ()
    untrusted_rectangles: tuple[Rectangle, ...] = ()
    distortion: EllipticalDistortion | None = None
    saturation: float = 65535.0
    radiation: Literal["electron", "xray"] = "electron"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "wavelength_a", _positive(self.wavelength_a, "wavelength_a"))
        set_(self, "camera_length_mm", _positive(self.camera_length_mm, "camera_length_mm"))
        set_(self, "pixel_size_mm", _positive(self.pixel_size_mm, "pixel_size_mm"))
        set_(self, "oscillation_deg", _positive(self.oscillation_deg, "oscillation_deg"))
        set_(self, "start_angle_deg", _finite(self.start_angle_deg, "start_angle_deg"))
        set_(self, "saturation", _positive(self.saturation, "saturation"))
        exposure = _finite(self.exposure_s, "exposure_s")
        if exposure < 0:
            raise DataError(f"must not be negative, got {exposure}", field="exposure_s")
        set_(self, "exposure_s", exposure)
        set_(self, "detector_shape", self._shape())
        set_(self, "beam_centre_px", tuple(_finite(v, "beam_centre_px") for v in self._pair()))
        set_(self, "rotation_axis", self._axis())
        set_(self, "n_frames", self._count())
        set_(self, "excluded_frames", self._excluded())
        set_(self, "untrusted_rectangles", self._rectangles())
        if self.radiation not in ("electron", "xray"):
            raise DataError(f"must be electron or xray, got {self.radiation!r}", field="radiation")
        if self.distortion is not None and not isinstance(self.distortion, EllipticalDistortion):
            raise DataError("must be an EllipticalDistortion or None", field="distortion")

    def _shape(self) -> tuple[int, int]:
        try:
            ny, nx = (int(v) for v in self.detector_shape)
        except (TypeError, ValueError):
            raise DataError(f"must be (ny, nx), got {self.detector_shape!r}",
                            field="detector_shape") from None  # fmt: skip
        if ny < 1 or nx < 1:
            raise DataError(f"must be positive, got {self.detector_shape}", field="detector_shape")
        return ny, nx

    def _pair(self) -> tuple[float, float]:
        try:
            fs, ss = (float(v) for v in self.beam_centre_px)
        except (TypeError, ValueError):
            raise DataError(f"must be (fs, ss), got {self.beam_centre_px!r}",
                            field="beam_centre_px") from None  # fmt: skip
        return fs, ss

    def _axis(self) -> tuple[float, float, float]:
        try:
            v = np.asarray([float(x) for x in self.rotation_axis], dtype=float)
        except (TypeError, ValueError):
            v = np.zeros(0)
        norm = float(np.linalg.norm(v)) if v.shape == (3,) else 0.0
        if not (math.isfinite(norm) and norm > 1e-9):
            raise DataError(f"must be a non-zero 3-vector, got {self.rotation_axis!r}",
                            field="rotation_axis")  # fmt: skip
        x, y, z = (float(c) for c in v / norm)
        return x, y, z

    def _count(self) -> int:
        n = int(self.n_frames)
        if n < 1 or n != self.n_frames:
            raise DataError(f"must be a positive integer, got {self.n_frames!r}", field="n_frames")
        return n

    def _excluded(self) -> tuple[int, ...]:
        frames = tuple(sorted({int(v) for v in self.excluded_frames}))
        bad = [v for v in frames if not 1 <= v <= self.n_frames]
        if bad:
            raise DataError(f"frame numbers must lie in 1..{self.n_frames}, got {bad[:5]}",
                            field="excluded_frames")  # fmt: skip
        if len(frames) >= self.n_frames:
            raise DataError("every frame is excluded: no diffraction data", field="excluded_frames")
        return frames

    def _rectangles(self) -> tuple[Rectangle, ...]:
        ny, nx = self.detector_shape
        out: list[Rectangle] = []
        for rect in self.untrusted_rectangles:
            try:
                f0, f1, s0, s1 = (int(v) for v in rect)
            except (TypeError, ValueError):
                raise DataError(f"need (fs_min, fs_max, ss_min, ss_max), got {rect!r}",
                                field="untrusted_rectangles") from None  # fmt: skip
            if not (0 <= f0 <= f1 < nx and 0 <= s0 <= s1 < ny):
                raise DataError(f"rectangle {rect} is not inside the {nx} x {ny} detector",
                                field="untrusted_rectangles")  # fmt: skip
            out.append((f0, f1, s0, s1))
        return tuple(out)

    # ------------------------------------------------------------------ frames

    @property
    def data_frames(self) -> tuple[int, ...]:
        """1-based numbers of the frames holding diffraction patterns."""
        excluded = set(self.excluded_frames)
        return tuple(i for i in range(1, self.n_frames + 1) if i not in excluded)

    def data_ranges(self) -> list[tuple[int, int]]:
        """Inclusive runs of diffraction frames."""
        return contiguous_ranges(self.data_frames)

    def excluded_ranges(self, *, inner: bool = False) -> list[tuple[int, int]]:
        """Inclusive runs of excluded frames (only those inside :attr:`data_range` with
        ``inner``)."""
        return contiguous_ranges(self.inner_excluded_frames if inner else self.excluded_frames)

    @property
    def data_range(self) -> tuple[int, int]:
        """First and last diffraction frame: the range handed to XDS and DIALS (excluded
        frames before the first or after the last are left out altogether)."""
        frames = self.data_frames
        return frames[0], frames[-1]

    @property
    def inner_excluded_frames(self) -> tuple[int, ...]:
        """Excluded frames between the first and the last diffraction frame."""
        first, last = self.data_range
        return tuple(i for i in self.excluded_frames if first < i < last)

    def frame_start_deg(self, frame: int) -> float:
        """Goniometer angle at the start of 1-based ``frame``."""
        return self.start_angle_deg + (frame - 1) * self.oscillation_deg

    @property
    def end_angle_deg(self) -> float:
        """Goniometer angle at the end of the last frame."""
        return self.start_angle_deg + self.n_frames * self.oscillation_deg

    # ------------------------------------------------------------ conversions

    @property
    def reciprocal_pixel_size(self) -> float:
        """Instamatic's and REDp's "pixelsize": 1/A per pixel at the detector centre."""
        return self.pixel_size_mm / (self.wavelength_a * self.camera_length_mm)

    def xds_origin(self) -> tuple[float, float]:
        """``(ORGX, ORGY)``: the beam centre in XDS pixels (first pixel's centre = 1.0)."""
        return self.beam_centre_px[0] + 1.0, self.beam_centre_px[1] + 1.0

    def xds_rotation_axis(self) -> tuple[float, float, float]:
        """ROTATION_AXIS in the XDS frame of :mod:`~crystalscope.rotation.xds_input`."""
        return self.rotation_axis

    def dials_smv_axis(self) -> tuple[float, float, float]:
        """Goniometer axis in dxtbx's frame for SMV (ADSC) images: ``(ex, -ey, -ez)``."""
        x, y, z = self.rotation_axis
        return x, -y + 0.0, -z + 0.0

    def dials_nxmx_axis(self) -> tuple[float, float, float]:
        """The axis as DIALS shows it after reading our NXmx file: ``(-ex, ey, -ez)``."""
        x, y, z = self.rotation_axis
        return -x + 0.0, y, -z + 0.0

    def beam_centre_mm(self) -> tuple[float, float]:
        """Beam centre ``(fast, slow)`` in mm from the corner of the first pixel."""
        return (
            (self.beam_centre_px[0] + 0.5) * self.pixel_size_mm,
            (self.beam_centre_px[1] + 0.5) * self.pixel_size_mm,
        )

    def instamatic_axis_angle_rad(self) -> float:
        """Instamatic's in-plane angle ``a`` with ``axis = (cos a, -sin a, 0)``.

        Raises
        ------
        DataError
            If the axis is not perpendicular to the beam (Instamatic and REDp cannot
            describe it).
        """
        x, y, z = self.rotation_axis
        if abs(z) > 1e-6:
            raise DataError(f"the rotation axis {self.rotation_axis} is not perpendicular to "
                            "the beam; Instamatic/REDp describe in-plane axes only",
                            field="rotation_axis")  # fmt: skip
        return math.atan2(-y, x)

    # ----------------------------------------------------------- dictionaries

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-serialisable dictionary (:meth:`from_dict` inverts it)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "distortion":
                value = None if value is None else {"ratio": value.ratio,
                                                    "angle_deg": value.angle_deg}  # fmt: skip
            elif f.name == "untrusted_rectangles":
                value = [list(r) for r in value]
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | None = None) -> RotationScanInfo:
        """Build from :meth:`to_dict` output; DataError names the missing or bad key."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DataError(f"unknown key {unknown[0]!r}", path=source, field=unknown[0])
        required = [f.name for f in fields(cls) if f.default is MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise DataError("required key missing", path=source, field=missing[0])
        values = dict(data)
        dist = values.get("distortion")
        try:
            if dist is not None:
                values["distortion"] = EllipticalDistortion(float(dist["ratio"]),
                                                            float(dist["angle_deg"]))  # fmt: skip
            rects = values.get("untrusted_rectangles", ())
            values["untrusted_rectangles"] = tuple(tuple(r) for r in rects)
            values["excluded_frames"] = tuple(values.get("excluded_frames", ()))
            return cls(**values)
        except DataError as exc:
            raise DataError(exc.message, path=source, field=exc.field) from None
        except (TypeError, KeyError, ValueError) as exc:
            raise DataError(f"invalid scan description: {exc}", path=source) from None

    def replace(self, **changes: Any) -> RotationScanInfo:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)
