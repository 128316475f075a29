"""``XDS.INP`` for a continuous-rotation electron diffraction series, and its geometric
correction tables.

:func:`xds_inp_text` writes every keyword XDS needs for a series described by a
:class:`~crystalscope.rotation.scan.RotationScanInfo` whose frames are SMV files
(:mod:`~crystalscope.rotation.handoff`):

=====================================  =====================================================
keyword                                value
=====================================  =====================================================
NAME_TEMPLATE_OF_DATA_FRAMES           ``data/?????.img SMV`` (relative to ``XDS.INP``)
DATA_RANGE                             first and last diffraction frame
SPOT_RANGE                             one line per run of diffraction frames
BACKGROUND_RANGE                       the first run (at most 10 frames)
EXCLUDE_DATA_RANGE                     one line per run of excluded frames inside DATA_RANGE
                                       (defocused images for crystal tracking, lost frames)
STARTING_ANGLE, STARTING_FRAME         start of frame 1, ``1``
OSCILLATION_RANGE                      degrees per frame (> 0)
ROTATION_AXIS                          the lab-frame axis (XDS frame = crystalscope's, below)
X-RAY_WAVELENGTH                       A (the electron wavelength: XDS does not care)
INCIDENT_BEAM_DIRECTION                ``0 0 1``
DIRECTION_OF_DETECTOR_X-/Y-AXIS        ``1 0 0`` / ``0 1 0`` (detector fast = lab +x, slow =
                                       lab +y)
ORGX, ORGY                             beam centre in XDS pixels: XDS numbers pixels from 1
                                       with the *centre* of the first pixel at 1.0, so
                                       ``ORGX = fs + 1``, ``ORGY = ss + 1`` for crystalscope's
                                       pixel-centre ``(fs, ss)`` (as dxtbx converts)
DETECTOR_DISTANCE                      camera length, mm (positive: detector downstream)
NX, NY, QX, QY                         frame size and pixel size (mm)
DETECTOR, MINIMUM_VALID_PIXEL_VALUE,   ``ADSC`` (the SMV layout; ``PILATUS`` when geometric
OVERLOAD                               correction tables are used, which XDS applies to that
                                       detector type only), 0, the saturation value
UNTRUSTED_RECTANGLE                    ``X1 X2 Y1 Y2`` excludes the XDS pixels ``X1 < IX < X2,
                                       Y1 < IY < Y2``; a crystalscope rectangle ``fs_min ..
                                       fs_max`` (0-based, inclusive) is ``X1 = fs_min``, ``X2 =
                                       fs_max + 2`` (the Timepix cross: ``255 262``)
SENSOR_THICKNESS, AIR                  0: no parallax or air absorption for electrons
FRACTION_OF_POLARIZATION               0.5 (unpolarised; at ED angles the factor is 1)
X-GEO_CORR, Y-GEO_CORR                 ``XCORR.cbf``, ``YCORR.cbf`` with an elliptical
                                       distortion (:func:`write_geo_corr`)
REFINE(IDXREF/INTEGRATE/CORRECT)       never DISTANCE/POSITION: in electron diffraction the
                                       camera length and the cell are 100 % correlated
=====================================  =====================================================

**Geometric correction tables.**  XDS adds ``table(IX, IY) / 100`` to the coordinates
of pixel ``(IX, IY)`` to get its distortion-free position (Instamatic writes the same
tables).  With the distortion's correction matrix ``C`` about the beam centre ``c``
(:class:`~crystalscope.model.distortion.EllipticalDistortion`), pixel ``p`` (centre) is
corrected to ``c + C (p - c)``, so the tables hold ``round(100 * [(C - I)(p - c)])``
(int32 CBF, :func:`crystalscope.io.cbf.write_cbf`), X along fs and Y along ss.

:func:`parse_xds_inp` reads an ``XDS.INP`` back into keyword -> values (every
occurrence), for tests and for :mod:`~crystalscope.rotation.process`.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path

import numpy as np

from crystalscope.errors import FormatError
from crystalscope.io.atomic import atomic_write
from crystalscope.rotation.scan import RotationScanInfo

__all__ = [
    "GEO_CORR_FILES",
    "geo_corr_tables",
    "parse_xds_inp",
    "write_geo_corr",
    "write_xds_inp",
    "xds_inp_text",
    "xds_rectangle",
]

GEO_CORR_FILES = ("XCORR.cbf", "YCORR.cbf")
"""File names of the X and Y geometric correction tables, beside ``XDS.INP``."""

_KEYWORD = re.compile(r"([A-Za-z][A-Za-z0-9_\-()']*=)")


def xds_rectangle(rect: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """UNTRUSTED_RECTANGLE ``(X1, X2, Y1, Y2)`` of a crystalscope rectangle (0-based,
    inclusive ``fs_min, fs_max, ss_min, ss_max``): XDS excludes ``X1 < IX < X2``."""
    f0, f1, s0, s1 = rect
    return f0, f1 + 2, s0, s1 + 2


def _vec(v: tuple[float, float, float]) -> str:
    return " ".join(f"{c + 0.0:.6f}" for c in v)


def _frames_block(scan: RotationScanInfo, template: str) -> list[str]:
    runs = scan.data_ranges()
    first = runs[0]
    lines = [
        "! ---- data images: frame i covers STARTING_ANGLE + (i - 1) * OSCILLATION_RANGE",
        f"NAME_TEMPLATE_OF_DATA_FRAMES= {template} SMV",
        "DATA_RANGE= {} {}".format(*scan.data_range),
        *(f"SPOT_RANGE= {a} {b}" for a, b in runs),
        f"BACKGROUND_RANGE= {first[0]} {min(first[1], first[0] + 9)}",
    ]
    if scan.inner_excluded_frames:
        lines.append("! frames without a diffraction pattern (defocused images, lost frames)")
        lines += [f"EXCLUDE_DATA_RANGE= {a} {b}" for a, b in scan.excluded_ranges(inner=True)]
    return lines


def _geometry_block(scan: RotationScanInfo) -> list[str]:
    orgx, orgy = scan.xds_origin()
    ny, nx = scan.detector_shape
    return [
        "! ---- rotation and beam (XDS lab frame = crystalscope/NeXus lab frame)",
        f"STARTING_ANGLE= {scan.start_angle_deg:.6f}",
        "STARTING_FRAME= 1",
        f"OSCILLATION_RANGE= {scan.oscillation_deg:.6f}",
        f"ROTATION_AXIS= {_vec(scan.xds_rotation_axis())}",
        f"X-RAY_WAVELENGTH= {scan.wavelength_a:.6f}",
        "INCIDENT_BEAM_DIRECTION= 0 0 1",
        "FRACTION_OF_POLARIZATION= 0.5",
        "POLARIZATION_PLANE_NORMAL= 0 1 0",
        "! ---- detector (ORGX = fs + 1, ORGY = ss + 1: centre of the first pixel at 1.0)",
        f"NX= {nx} NY= {ny} QX= {scan.pixel_size_mm:.6f} QY= {scan.pixel_size_mm:.6f}",
        "DIRECTION_OF_DETECTOR_X-AXIS= 1 0 0",
        "DIRECTION_OF_DETECTOR_Y-AXIS= 0 1 0",
        f"ORGX= {orgx:.3f} ORGY= {orgy:.3f}",
        f"DETECTOR_DISTANCE= {scan.camera_length_mm:.3f}",
    ]


def _detector_block(scan: RotationScanInfo) -> list[str]:
    lines = []
    if scan.distortion is not None:
        lines += [
            "! PILATUS makes XDS apply the geometric correction tables (XYCORR)",
            f"DETECTOR= PILATUS MINIMUM_VALID_PIXEL_VALUE= 0 OVERLOAD= {int(scan.saturation)}",
            f"X-GEO_CORR= {GEO_CORR_FILES[0]}",
            f"Y-GEO_CORR= {GEO_CORR_FILES[1]}",
        ]
    else:
        lines.append(
            f"DETECTOR= ADSC MINIMUM_VALID_PIXEL_VALUE= 0 OVERLOAD= {int(scan.saturation)}"
        )
    lines += [
        "SENSOR_THICKNESS= 0.0",
        "AIR= 0.0",
        "TRUSTED_REGION= 0.0 1.4142",
        "! low electron background: keep dim pixels trusted (as Instamatic)",
        "VALUE_RANGE_FOR_TRUSTED_DETECTOR_PIXELS= 10 30000",
    ]
    if scan.untrusted_rectangles:
        lines.append("! untrusted pixels X1 < IX < X2, Y1 < IY < Y2 (e.g. the Timepix cross)")
    for rect in scan.untrusted_rectangles:
        x1, x2, y1, y2 = xds_rectangle(rect)
        lines.append(f"UNTRUSTED_RECTANGLE= {x1} {x2} {y1} {y2}")
    return lines


def _crystal_block(
    d_min: float | None,
    space_group: int | None,
    cell: tuple[float, ...] | None,
    processors: int,
) -> list[str]:
    lines = ["! ---- crystal and refinement (never DISTANCE: it is correlated with the cell)"]
    if space_group is not None and cell is not None:
        lines += [f"SPACE_GROUP_NUMBER= {int(space_group)}",
                  "UNIT_CELL_CONSTANTS= " + " ".join(f"{v:.4f}" for v in cell)]  # fmt: skip
    else:
        lines.append("SPACE_GROUP_NUMBER= 0")
    if d_min is not None:
        lines.append(f"INCLUDE_RESOLUTION_RANGE= 20.0 {d_min:.3f}")
    lines += [
        "FRIEDEL'S_LAW= TRUE",
        "MAX_CELL_AXIS_ERROR= 0.05",
        "MAX_CELL_ANGLE_ERROR= 3.0",
        "MINIMUM_FRACTION_OF_INDEXED_SPOTS= 0.25",
        "REFINE(IDXREF)= BEAM AXIS ORIENTATION CELL",
        "REFINE(INTEGRATE)= BEAM ORIENTATION CELL",
        "REFINE(CORRECT)= BEAM AXIS ORIENTATION CELL",
        f"MAXIMUM_NUMBER_OF_JOBS= 1 MAXIMUM_NUMBER_OF_PROCESSORS= {int(processors)}",
    ]
    return lines


def xds_inp_text(
    scan: RotationScanInfo,
    *,
    template: str = "data/?????.img",
    d_min: float | None = None,
    space_group: int | None = None,
    cell: tuple[float, float, float, float, float, float] | None = None,
    processors: int = 4,
    comment: str | None = None,
) -> str:
    """Text of ``XDS.INP`` for ``scan`` (keywords in the module docstring).

    Parameters
    ----------
    scan : RotationScanInfo
        The series.
    template : str
        NAME_TEMPLATE_OF_DATA_FRAMES, relative to ``XDS.INP`` (XDS lines hold at most
        80 characters, so keep it short).
    d_min : float, optional
        High-resolution limit, A (INCLUDE_RESOLUTION_RANGE).
    space_group, cell : optional
        Known space-group number and cell (A, degrees); unknown by default.
    processors : int
        MAXIMUM_NUMBER_OF_PROCESSORS.
    comment : str, optional
        Extra comment line(s) for the header.
    """
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    head = [
        "! XDS.INP for continuous-rotation electron diffraction, written by crystalscope",
        f"! {stamp}",
        "! keywords: https://xds.mr.mpg.de/html_doc/xds_parameters.html",
        *(f"! {line}"[:80] for line in (comment or "").splitlines() if line.strip()),
        "JOB= XYCORR INIT COLSPOT IDXREF DEFPIX INTEGRATE CORRECT",
    ]
    lines = (
        head
        + _frames_block(scan, template)
        + _geometry_block(scan)
        + _detector_block(scan)
        + _crystal_block(d_min, space_group, cell, processors)
    )
    return "\n".join(lines) + "\n"


def write_xds_inp(
    directory: str | os.PathLike[str],
    scan: RotationScanInfo,
    *,
    template: str = "data/?????.img",
    d_min: float | None = None,
    space_group: int | None = None,
    cell: tuple[float, float, float, float, float, float] | None = None,
    comment: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``XDS.INP`` (and the geometric correction tables when the scan has an
    elliptical distortion) into ``directory``; returns the files written.

    The options are those of :func:`xds_inp_text`.
    """
    folder = Path(directory)
    written = []
    if scan.distortion is not None:
        written += write_geo_corr(folder, scan, overwrite=overwrite)
    target = folder / "XDS.INP"
    with atomic_write(target, overwrite=overwrite) as fh:
        fh.write(xds_inp_text(scan, template=template, d_min=d_min, space_group=space_group,
                              cell=cell, comment=comment))  # fmt: skip
    return [target, *written]


def geo_corr_tables(scan: RotationScanInfo) -> tuple[np.ndarray, np.ndarray]:
    """X and Y correction tables (int32, 1/100 pixel) of the scan's distortion."""
    if scan.distortion is None:
        raise ValueError("the scan has no distortion")
    ny, nx = scan.detector_shape
    ss, fs = np.mgrid[0:ny, 0:nx].astype(float)
    true_fs, true_ss = scan.distortion.correct(fs, ss, scan.beam_centre_px)
    x = np.rint(100.0 * (true_fs - fs)).astype(np.int32)
    y = np.rint(100.0 * (true_ss - ss)).astype(np.int32)
    return x, y


def write_geo_corr(
    directory: str | os.PathLike[str], scan: RotationScanInfo, *, overwrite: bool = False
) -> list[Path]:
    """Write ``XCORR.cbf`` and ``YCORR.cbf`` (module docstring) into ``directory``."""
    from crystalscope.io.cbf import write_cbf

    folder = Path(directory)
    paths = [folder / name for name in GEO_CORR_FILES]
    for path, table in zip(paths, geo_corr_tables(scan), strict=True):
        write_cbf(path, table, overwrite=overwrite)
    return paths


def parse_xds_inp(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Keywords of an ``XDS.INP``: ``{"ORGX=": ["241.000"], "SPOT_RANGE=": ["1 9", ...]}``.

    Comments (``!`` to the end of the line) are dropped; several keywords on one line
    are split.

    Raises
    ------
    FormatError
        If the file cannot be read or a line has text before its first keyword.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise FormatError(f"cannot read XDS.INP ({exc.strerror})", path=p) from None
    out: dict[str, list[str]] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.split("!", 1)[0].strip()
        if not text:
            continue
        parts = _KEYWORD.split(text)
        if parts[0].strip():
            raise FormatError(f"text before the first keyword: {parts[0].strip()!r}", path=p,
                              line=number)  # fmt: skip
        for key, value in zip(parts[1::2], parts[2::2], strict=True):
            out.setdefault(key, []).append(value.strip())
    return out
