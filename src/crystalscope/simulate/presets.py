"""Detector presets for the simulators: hybrid-pixel cameras used in diffraction.

All presets are flat, perpendicular to the beam, with square 55 um pixels, the fast-scan
axis along lab ``+x`` and the slow-scan axis along lab ``+y`` (see docs/conventions.md),
and the camera length ``distance_mm`` along ``+z``.  ``beam_centre_px`` is the
pixel-centre position ``(fs, ss)`` where the direct beam hits, in the coordinates of
panel 0 extended beyond its edges (for the presets below these equal the raw-array
coordinates on chip 0 and the physical 55 um grid elsewhere).

``single``
    One 1024 x 1024 panel.  Default beam centre: the middle, ``(511.5, 511.5)``.

``timepix-quad``
    Four Timepix/Medipix chips of 256 x 256 pixels in a 2 x 2 arrangement, raw frame
    512 x 512 (e.g. the ASI Cheetah/CheeTah M3 quad used for 3D ED).  The chips sit on
    one continuous sensor; the pixels along the chip boundaries (raw rows and columns
    255 and 256) are three times wider (165 um) so that the sensor has no dead area:
    the quad is physically 516 x 516 pixels of 55 um.  The :class:`Detector` model
    describes the four chips as four panels of 256 x 256 normal pixels with a physical
    gap of 4 pixels (220 um) between them, so every normal pixel is exactly in place and
    the wide pixel is represented by its outermost 55 um part (its nominal centre is one
    pixel off its true area centre; processing should mask or correct the cross).  The
    renderer (:mod:`crystalscope.simulate.render`) draws the pattern on the physical
    516 x 516 grid and *folds* each wide pixel, so that it collects the counts of its
    whole 165 um area.  The raw frame has no gap pixels, so ``DetectorEffects.gaps`` does
    not change it.  Default beam centre ``(240.0, 240.0)``: on chip 0, 16 pixels from
    the cross.

``lambda-750k``
    X-Spectrum LAMBDA 750K: twelve Medipix3 chips of 256 x 256 pixels in 6 columns x 2
    rows on one sensor (1536 x 512 chip pixels), read out as a 1556 x 516 raw frame in
    which each chip occupies a 256 x 256 block starting at raw ``(260 c, 260 r)`` and
    the 4 raw columns/rows between chips (raw 256-259, 516-519, ... and rows 256-259)
    carry no chip pixel.  The raw frame is a uniform 55 um grid of the physical sensor:
    the chip-boundary pixels are 165 um wide and cover the 4 pixels between two chips
    together with their neighbour on the other chip (this is the layout diffractem
    assumes, whose ``gap_pixels`` are raw columns 255-260 + 260 k and rows 255-260).
    The model has twelve panels with 4-pixel (220 um) gaps; the renderer folds the gap
    area into the wide edge pixels (``DetectorEffects.gaps = True``) and writes 0 into
    the raw gap pixels, or, with ``gaps = False``, renders the raw array as a gapless
    uniform detector.  The LAMBDA's own software may spread a wide pixel's counts over
    the gap pixels instead; processing should mask raw columns/rows 255-260 (+260 k) in
    either case.  Default beam centre ``(760.0, 240.0)``: on chip (row 0, column 2),
    16 pixels from the central gaps.

The multi-chip presets mask one pixel along every chip edge (CrystFEL's
``mask_edge_pixels = 1``), which covers the wide chip-boundary pixels whose counts come
from three times the area (a flat field measured under even illumination would correct
them instead); the simulator renders them all the same, processing leaves them out.

Panel names: ``p0`` (single), ``q0``..``q3`` row by row (quad), ``m<row><column>``
(LAMBDA, ``m00``..``m15``).
"""

from __future__ import annotations

from typing import Literal

from crystalscope.config import BeamConfig
from crystalscope.errors import ConfigError
from crystalscope.model.beam import Beam
from crystalscope.model.detector import Detector
from crystalscope.model.panel import Panel, WavelengthSource
from crystalscope.simulate.config import SimDetectorConfig

__all__ = [
    "PRESET_NAMES",
    "PresetName",
    "detector_preset",
    "preset_description",
    "simulation_beam",
    "simulation_detector",
]

PresetName = Literal["lambda-750k", "timepix-quad", "single"]
PRESET_NAMES: tuple[str, ...] = ("lambda-750k", "timepix-quad", "single")

PIXEL_MM = 0.055
"""Pixel pitch of Medipix/Timepix chips, mm."""
CHIP_PX = 256
"""Pixels per chip along each axis."""
WIDE_GAP_PX = 4
"""Extra 55 um pixel widths at a chip boundary (two 3x-wide pixels = 6 widths)."""

_DEFAULT_CENTRE: dict[str, tuple[float, float]] = {
    "single": (511.5, 511.5),
    "timepix-quad": (240.0, 240.0),
    "lambda-750k": (760.0, 240.0),
}

_DESCRIPTIONS: dict[str, str] = {
    "single": "one 1024 x 1024 panel of 55 um pixels",
    "timepix-quad": "2 x 2 Timepix chips, raw 512 x 512, 165 um wide cross pixels",
    "lambda-750k": "X-Spectrum LAMBDA 750K, 6 x 2 Medipix3 chips, raw 1556 x 516 with gaps",
}


def preset_description(name: str) -> str:
    """One-line description of preset ``name``."""
    _check_name(name)
    return _DESCRIPTIONS[name]


def _check_name(name: str) -> None:
    if name not in PRESET_NAMES:
        raise ConfigError(
            f"unknown detector preset {name!r}; choose one of {', '.join(PRESET_NAMES)}",
            field="preset",
        )


def _wavelength_source(beam: Beam) -> WavelengthSource:
    if beam.radiation == "electron":
        return WavelengthSource("electron_voltage", beam.voltage_kv)
    return WavelengthSource("photon_energy", beam.energy_ev)


def detector_preset(
    name: str,
    distance_mm: float,
    beam: Beam,
    *,
    beam_centre_px: tuple[float, float] | None = None,
    adu_per_count: float = 1.0,
) -> Detector:
    """A detector preset (see the module documentation for the layouts).

    Parameters
    ----------
    name : {"lambda-750k", "timepix-quad", "single"}
        The preset.
    distance_mm : float
        Sample-to-detector distance (effective camera length), mm.
    beam : Beam
        The incident beam; its energy or voltage becomes the geometry's wavelength.
    beam_centre_px : (fs, ss), optional
        Pixel-centre position of the direct beam in panel 0's coordinates (extended
        beyond the panel); default per preset (module documentation).
    adu_per_count : float
        Gain written into the geometry (``adu_per_photon``).

    Returns
    -------
    Detector
        Panels with raw-array ranges and lab positions as described above.

    Raises
    ------
    ConfigError
        For an unknown preset, a non-positive distance or gain, or a non-finite centre.
    """
    _check_name(name)
    if not distance_mm > 0 or distance_mm == float("inf"):
        raise ConfigError(f"distance must be positive, got {distance_mm} mm", field="distance_mm")
    if not adu_per_count > 0:
        raise ConfigError(f"gain must be positive, got {adu_per_count}", field="adu_per_count")
    centre = _DEFAULT_CENTRE[name] if beam_centre_px is None else beam_centre_px
    bc_fs, bc_ss = (float(v) for v in centre)
    if not all(abs(v) < 1e9 for v in (bc_fs, bc_ss)):
        raise ConfigError(f"beam centre must be finite, got {centre}", field="beam_centre_px")
    if name == "single":
        panels = [_chip("p0", (0, 0), 1024, (0, 0), (bc_fs, bc_ss), adu_per_count, 0)]
    else:
        n_cols, n_rows, raw_step = (2, 2, CHIP_PX) if name == "timepix-quad" else (6, 2, 260)
        phys_step = CHIP_PX + WIDE_GAP_PX
        panels = [
            _chip(
                f"q{r * 2 + c}" if name == "timepix-quad" else f"m{r}{c}",
                (raw_step * c, raw_step * r),
                CHIP_PX,
                (phys_step * c, phys_step * r),
                (bc_fs, bc_ss),
                adu_per_count,
                1,
            )
            for r in range(n_rows)
            for c in range(n_cols)
        ]
    return Detector(
        tuple(panels), clen=float(distance_mm), wavelength_source=_wavelength_source(beam)
    )


def _chip(
    name: str,
    raw: tuple[int, int],
    size: int,
    phys: tuple[int, int],
    centre: tuple[float, float],
    gain: float,
    mask_edge: int,
) -> Panel:
    """A square panel at raw ``(fs, ss)`` and at ``phys`` on the physical 55 um grid.

    The physical grid position is counted from panel 0's first pixel; the beam centre
    is in the same grid, so ``corner = phys - (centre + 0.5)`` pixels.
    """
    (raw_fs, raw_ss), (phys_fs, phys_ss), (bc_fs, bc_ss) = raw, phys, centre
    return Panel(
        name=name,
        min_fs=raw_fs,
        max_fs=raw_fs + size - 1,
        min_ss=raw_ss,
        max_ss=raw_ss + size - 1,
        corner_x=phys_fs - (bc_fs + 0.5),
        corner_y=phys_ss - (bc_ss + 0.5),
        fs=(1.0, 0.0, 0.0),
        ss=(0.0, 1.0, 0.0),
        pixel_size_mm=PIXEL_MM,
        adu_per_photon=float(gain),
        mask_edge_pixels=mask_edge,
    )


def simulation_beam(config: BeamConfig) -> Beam:
    """The beam of a simulation; ConfigError when none is given."""
    beam = config.to_beam()
    if beam is None:
        raise ConfigError("the simulation needs a beam (voltage_kv, energy_kev, ...)", field="beam")
    return beam


def simulation_detector(config: SimDetectorConfig, beam: Beam) -> Detector:
    """The detector of a simulation: a CrystFEL geometry with numeric values, or a preset."""
    if config.geometry is not None:
        from crystalscope.io.crystfel_geom import read_geom

        det = read_geom(config.geometry)
        if not det.is_resolved:
            raise ConfigError(
                "the geometry takes values from data files; give numbers to simulate",
                path=config.geometry,
                field="clen",
            )
        return det
    return detector_preset(config.preset or "single", config.distance_mm, beam)
