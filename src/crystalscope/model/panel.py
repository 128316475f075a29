"""Building blocks of a detector model: panels, bad regions, masks, metadata references.

These are the frozen value objects that :class:`crystalscope.model.detector.Detector`
is made of.  They carry CrystFEL's semantics (see ``crystfel_geometry(5)``) in the
library's own units:

* lengths in the lab frame are millimetres (``pixel_size_mm``, ``coffset_mm``,
  ``clen``); CrystFEL's ``res`` (pixels per metre) and ``coffset`` (m) are converted by
  the ``.geom`` reader and writer;
* ``corner_x``/``corner_y`` and the ``fs``/``ss`` direction vectors stay in pixel units
  of the panel, exactly as in CrystFEL: the corner is the *outer corner* of the panel's
  first pixel.  :class:`~crystalscope.model.detector.Detector` converts to the
  pixel-centre convention of the library (centre of the first pixel = ``(0, 0)``);
* ``min_fs``/``max_fs``/``min_ss``/``max_ss`` are inclusive integer indices of the panel
  in the raw data array, as in CrystFEL.

Everything here is immutable and made of plain Python values, so that detectors compare
with ``==``, hash, and pickle cheaply (dask workers receive copies).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "DEFAULT_DATA_PATH",
    "DEFAULT_DIMS",
    "BadRegion",
    "FlagKind",
    "MaskSpec",
    "MetadataRef",
    "Panel",
    "PanelGroup",
    "Vec3",
    "WavelengthSource",
]

Vec3 = tuple[float, float, float]
FlagKind = Literal["lessthan", "morethan", "equal"]
Dim = str | int  # "%", "ss", "fs" or a fixed index

#: CrystFEL's default location of the image data in an HDF5 file.
DEFAULT_DATA_PATH = "/data/data"
#: CrystFEL's default data layout: a 2D array, slow scan first.
DEFAULT_DIMS: tuple[Dim, ...] = ("ss", "fs")

_LENGTH_UNITS = {"mm": 1.0, "m": 1000.0}
_WAVELENGTH_UNITS = {
    "photon_energy": ("eV", "keV"),
    "wavelength": ("A", "m"),
    "electron_voltage": ("kV", "V"),
}


@dataclass(frozen=True)
class MetadataRef:
    """A value that is read per file or per event (an HDF5 path or a header name).

    Attributes
    ----------
    path : str
        Location of the value in the data file, e.g. ``"/LCLS/detectorPosition"``.
    unit : str
        Unit of the stored value: ``"mm"`` or ``"m"`` for lengths, ``"eV"``/``"keV"``
        for photon energies, ``"A"``/``"m"`` for wavelengths, ``"V"``/``"kV"`` for
        accelerating voltages, ``""`` for dimensionless values.
    """

    path: str
    unit: str = ""

    def __post_init__(self) -> None:
        if not self.path or any(c.isspace() for c in self.path):
            raise ValueError(f"invalid metadata location {self.path!r}")

    def __str__(self) -> str:
        return f"{self.path} [{self.unit}]" if self.unit else self.path


def length_mm(value: float, unit: str) -> float:
    """Convert a length in ``unit`` (``"mm"`` or ``"m"``) to millimetres."""
    try:
        return float(value) * _LENGTH_UNITS[unit]
    except KeyError:
        raise ValueError(f"unknown length unit {unit!r} (use 'mm' or 'm')") from None


@dataclass(frozen=True)
class WavelengthSource:
    """How the incident wavelength is given: photon energy, wavelength or voltage.

    Attributes
    ----------
    kind : {"photon_energy", "wavelength", "electron_voltage"}
        Which quantity is given (CrystFEL keys of the same names).
    value : float or MetadataRef
        Literal values are in eV (photon energy), Angstrom (wavelength) or kV
        (accelerating voltage); a :class:`MetadataRef` names where to read it and the
        unit of the stored number.
    """

    kind: Literal["photon_energy", "wavelength", "electron_voltage"]
    value: float | MetadataRef

    def __post_init__(self) -> None:
        if self.kind not in _WAVELENGTH_UNITS:
            raise ValueError(f"unknown wavelength kind {self.kind!r}")
        if isinstance(self.value, MetadataRef):
            if self.value.unit not in _WAVELENGTH_UNITS[self.kind]:
                raise ValueError(f"unit {self.value.unit!r} is not valid for {self.kind}")
        elif not (math.isfinite(self.value) and self.value > 0):
            raise ValueError(f"{self.kind} must be a positive number, got {self.value}")

    @property
    def is_resolved(self) -> bool:
        """True when the value is a number rather than a metadata location."""
        return not isinstance(self.value, MetadataRef)

    def wavelength(self) -> float:
        """Wavelength in Angstrom (relativistic for electrons).

        Raises
        ------
        ValueError
            If the value is still a metadata location (see ``Detector.resolve``).
        """
        from crystalscope.model.beam import electron_wavelength, photon_wavelength

        if isinstance(self.value, MetadataRef):
            raise ValueError(f"{self.kind} is read from {self.value.path}; resolve it first")
        if self.kind == "photon_energy":
            return photon_wavelength(self.value)
        if self.kind == "electron_voltage":
            return electron_wavelength(self.value)
        return float(self.value)

    def resolved_with(self, raw: float) -> WavelengthSource:
        """A copy with the metadata value ``raw`` (in the reference's unit) filled in."""
        assert isinstance(self.value, MetadataRef)
        scale = {"eV": 1.0, "keV": 1e3, "A": 1.0, "m": 1e10, "kV": 1.0, "V": 1e-3}
        return WavelengthSource(self.kind, float(raw) * scale[self.value.unit])


@dataclass(frozen=True)
class MaskSpec:
    """One of CrystFEL's bad-pixel masks (``maskN_data``/``_file``/``_goodbits``/``_badbits``).

    A pixel is bad unless all bits of ``goodbits`` are set in the mask value, and bad if
    any bit of ``badbits`` is set.  The legacy keys ``mask``, ``mask_file``,
    ``mask_good`` and ``mask_bad`` are mask number 0.

    Attributes
    ----------
    index : int
        Mask number, 0 to 7.
    data : str or None
        Location of the mask array (HDF5 path, may contain ``%`` placeholders).
    file : str or None
        File holding the mask; None means the file of the image data.
    goodbits, badbits : int
        Bit patterns as above.
    """

    index: int
    data: str | None = None
    file: str | None = None
    goodbits: int = 0
    badbits: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.index <= 7:
            raise ValueError(f"mask number must be 0..7, got {self.index}")
        if self.goodbits < 0 or self.badbits < 0:
            raise ValueError("mask bits must be non-negative")

    def bad_pixels(self, values: np.ndarray) -> np.ndarray:
        """Boolean array: True where ``values`` (the mask array) marks a pixel bad."""
        bits = np.asarray(values)
        if not np.issubdtype(bits.dtype, np.integer):
            bits = np.nan_to_num(bits.astype(float), nan=0.0).astype(np.int64)
        bits = bits.astype(np.int64, copy=False)
        good = np.int64(self.goodbits)
        bad = np.int64(self.badbits)
        return ((bits & good) != good) | ((bits & bad) != 0)


@dataclass(frozen=True)
class BadRegion:
    """A region CrystFEL ignores: a box in lab pixel coordinates or in raw fs/ss.

    Give either all of ``min_x, max_x, min_y, max_y`` (lab frame, in pixel units of
    each panel, compared with the *corner* of every pixel as CrystFEL does, strict
    inequalities) or all of ``min_fs, max_fs, min_ss, max_ss`` (inclusive raw data
    indices).  ``panel`` names the panel an fs/ss region belongs to; without it the
    region applies to every panel that covers those raw indices.

    Attributes
    ----------
    name : str
        Name as in the file, including its ``bad`` prefix (``"bad_beamstop"``).
    extra : tuple of (key, value)
        Keys of this region the reader did not know, kept for writing.
    """

    name: str
    min_x: float | None = None
    max_x: float | None = None
    min_y: float | None = None
    max_y: float | None = None
    min_fs: int | None = None
    max_fs: int | None = None
    min_ss: int | None = None
    max_ss: int | None = None
    panel: str | None = None
    extra: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        xy = (self.min_x, self.max_x, self.min_y, self.max_y)
        fsss = (self.min_fs, self.max_fs, self.min_ss, self.max_ss)
        has_xy = [v is not None for v in xy]
        has_fsss = [v is not None for v in fsss]
        if any(has_xy) and any(has_fsss):
            raise ValueError(f"bad region {self.name}: x/y and fs/ss cannot be mixed")
        if not (all(has_xy) or all(has_fsss)):
            raise ValueError(f"bad region {self.name}: give all four bounds")
        if all(has_xy) and self.panel is not None:
            raise ValueError(f"bad region {self.name}: a panel only goes with fs/ss bounds")

    @property
    def is_lab(self) -> bool:
        """True for a region in lab x/y pixel coordinates, False for raw fs/ss."""
        return self.min_x is not None


@dataclass(frozen=True)
class PanelGroup:
    """A named group of panels (or of other groups), for geometry refinement.

    Attributes
    ----------
    name : str
        Group name without its ``group_``/``rigid_group_``/``rigid_group_collection_``
        prefix.
    members : tuple of str
        Names of the panels or groups it contains, in file order.
    """

    name: str
    members: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError(f"group {self.name} has no members")
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"group {self.name} lists a member twice")


@dataclass(frozen=True)
class Panel:
    """One flat detector panel (a rectangle of pixels in the raw data).

    The lab position of the *corner-convention* point ``(u, v)`` of the panel (``u``,
    ``v`` in pixels from the outer corner of the first pixel) is, in pixels::

        x = corner_x + u * fs[0] + v * ss[0]
        y = corner_y + u * fs[1] + v * ss[1]
        z = (clen + coffset) / pixel_size + u * fs[2] + v * ss[2]

    and in mm, times ``pixel_size_mm``.  The library's pixel-centre position ``fs`` is
    ``u - 0.5``; :class:`~crystalscope.model.detector.Detector` does that shift.

    Attributes
    ----------
    name : str
        Panel name, unique in the detector.
    min_fs, max_fs, min_ss, max_ss : int
        Inclusive index range of the panel in the raw data array.
    corner_x, corner_y : float
        Lab x and y of the outer corner of the first pixel, in pixels.
    fs, ss : tuple of 3 floats
        Lab-frame directions of the fast- and slow-scan axes, in pixels per pixel
        (unit vectors for square pixels; z components tilt the panel).
    pixel_size_mm : float
        Pixel size in mm (CrystFEL ``res`` is ``1000 / pixel_size_mm`` pixels per metre).
    coffset_mm : float
        Offset along z added to the camera length, mm.
    clen : float, MetadataRef or None
        Per-panel camera length in mm (CrystFEL <= 0.9 only); None uses the detector's.
    adu_per_ev, adu_per_photon : float or None
        Detector gain; CrystFEL wants one of the two.
    max_adu : float
        Saturation value (``inf`` when not set).
    adu_bias : float or None
        Dark value in ADU (older CrystFEL ``adu_bias``).
    data : str
        Location of the data block (``%`` is the event placeholder).
    dims : tuple
        Meaning of each axis of the data block: ``"%"`` (event), ``"ss"``, ``"fs"`` or an
        int (fixed index).
    masks : tuple of MaskSpec
        Bad-pixel masks, sorted by mask number.
    saturation_map, saturation_map_file : str or None
        Per-pixel saturation values and the file holding them.
    mask_edge_pixels : int
        Number of pixels at the panel edges marked bad.
    flags : tuple of (kind, value)
        ``flag_lessthan``/``flag_morethan``/``flag_equal`` thresholds (strict).
    no_index : bool
        Ignore the panel completely.
    extra : tuple of (key, value)
        Keys of this panel the reader did not know, kept for writing.
    """

    name: str
    min_fs: int
    max_fs: int
    min_ss: int
    max_ss: int
    corner_x: float
    corner_y: float
    fs: Vec3
    ss: Vec3
    pixel_size_mm: float
    coffset_mm: float = 0.0
    clen: float | MetadataRef | None = None
    adu_per_ev: float | None = None
    adu_per_photon: float | None = None
    max_adu: float = math.inf
    adu_bias: float | None = None
    data: str = DEFAULT_DATA_PATH
    dims: tuple[Dim, ...] = DEFAULT_DIMS
    masks: tuple[MaskSpec, ...] = ()
    saturation_map: str | None = None
    saturation_map_file: str | None = None
    mask_edge_pixels: int = 0
    flags: tuple[tuple[FlagKind, float], ...] = ()
    no_index: bool = False
    extra: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        for problem in _panel_problems(self):
            raise ValueError(f"panel {self.name}: {problem}")

    @property
    def n_fs(self) -> int:
        """Number of pixels along the fast-scan axis."""
        return self.max_fs - self.min_fs + 1

    @property
    def n_ss(self) -> int:
        """Number of pixels along the slow-scan axis."""
        return self.max_ss - self.min_ss + 1

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_ss, n_fs)``, the numpy shape of the panel's pixels."""
        return (self.n_ss, self.n_fs)

    @property
    def res(self) -> float:
        """CrystFEL ``res``: pixels per metre."""
        return 1000.0 / self.pixel_size_mm

    @property
    def fixed_indices(self) -> tuple[int, ...]:
        """Fixed indices of the data block (``dimN = <number>``), in axis order."""
        return tuple(d for d in self.dims if isinstance(d, int))

    def mask(self, index: int) -> MaskSpec | None:
        """The mask with number ``index``, or None."""
        return next((m for m in self.masks if m.index == index), None)


def _panel_problems(p: Panel) -> list[str]:
    """Reasons why ``p`` is not a usable panel (empty if it is)."""
    problems = []
    if not (0 <= p.min_fs <= p.max_fs and 0 <= p.min_ss <= p.max_ss):
        problems.append("needs 0 <= min_fs <= max_fs and 0 <= min_ss <= max_ss")
    if not (math.isfinite(p.pixel_size_mm) and p.pixel_size_mm > 0):
        problems.append(f"pixel size must be positive, got {p.pixel_size_mm}")
    numbers = [p.corner_x, p.corner_y, p.coffset_mm, *p.fs, *p.ss]
    if isinstance(p.clen, float | int):
        numbers.append(p.clen)
    if not all(math.isfinite(v) for v in numbers):
        problems.append("corner, coffset, clen and fs/ss vectors must be finite")
    elif not _spans_plane(p.fs, p.ss):
        problems.append("fs and ss directions are zero or parallel")
    if p.dims.count("fs") != 1 or p.dims.count("ss") != 1:
        problems.append("dims must name 'fs' and 'ss' exactly once")
    elif p.dims.index("ss") > p.dims.index("fs"):
        problems.append("the fs dimension must come after the ss dimension")
    if any(not (d in ("%", "fs", "ss") or (isinstance(d, int) and d >= 0)) for d in p.dims):
        problems.append(f"invalid dims {p.dims}")
    if p.adu_per_ev is not None and p.adu_per_photon is not None:
        problems.append("give adu_per_ev or adu_per_photon, not both")
    if p.mask_edge_pixels < 0:
        problems.append("mask_edge_pixels must be >= 0")
    if [m.index for m in p.masks] != sorted({m.index for m in p.masks}):
        problems.append("masks must be sorted by number, each number once")
    return problems


def _spans_plane(a: Vec3, b: Vec3) -> bool:
    """True if ``a`` and ``b`` are non-zero and not parallel (angle > ~1e-6 rad)."""
    with np.errstate(over="ignore", invalid="ignore"):
        na, nb = np.linalg.norm(a), np.linalg.norm(b)
        if not (0 < na < math.inf and 0 < nb < math.inf):
            return False
        sin = np.linalg.norm(np.cross(np.divide(a, na), np.divide(b, nb)))
    return bool(sin > 1e-6)
