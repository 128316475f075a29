"""REDp input (``.ed3d``) for a continuous-rotation series, as Instamatic writes it.

REDp (Wan et al., J. Appl. Cryst. 46, 1863, 2013) reads a plain-text ``.ed3d`` file
beside the MRC frames::

    WAVELENGTH    0.025079
    ROTATIONAXIS    -53.130102
    CCDPIXELSIZE    0.004387
    GONIOTILTSTEP    0.800000
    BEAMTILTSTEP    0
    BEAMTILTRANGE    0.000
    STRETCHINGMP    0.0
    STRETCHINGAZIMUTH    0.0

    FILELIST
    FILE 00001.mrc     -39.6000    0     -39.6000
    ...
    ENDFILELIST

* ``WAVELENGTH`` in A; ``ROTATIONAXIS`` is Instamatic's in-plane axis angle in degrees,
  wrapped to ``[-180, 180)`` (``axis = (cos a, -sin a, 0)``,
  :meth:`~crystalscope.rotation.scan.RotationScanInfo.instamatic_axis_angle_rad`);
* ``CCDPIXELSIZE`` is the reciprocal pixel size, 1/A per pixel
  (:attr:`~crystalscope.rotation.scan.RotationScanInfo.reciprocal_pixel_size`);
* ``GONIOTILTSTEP`` is the oscillation per frame, degrees; no beam tilt in cRED;
* ``STRETCHINGMP`` / ``STRETCHINGAZIMUTH``: the elliptical distortion as Instamatic
  describes it, amplitude ``(ratio - 1) * 100`` percent and the azimuth in degrees
  (crystalscope's ``angle_deg``; REDp's own azimuth convention is not documented, so
  check it against a calibration before relying on REDp's correction);
* one ``FILE name  goniometer-angle  beam-tilt  total-tilt`` line per diffraction frame,
  the angle at the middle of the frame's exposure.

The MRC frames for REDp are stored upside down (REDp reads images from the bottom-left
corner; :mod:`~crystalscope.rotation.handoff` flips them, as Instamatic does).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from crystalscope.errors import FormatError
from crystalscope.io.atomic import atomic_write
from crystalscope.rotation.scan import RotationScanInfo

__all__ = ["ED3D_NAME", "Ed3dFile", "ed3d_text", "read_ed3d", "write_ed3d"]

ED3D_NAME = "1.ed3d"
"""Instamatic's name for the REDp input file."""

_NUMBERS = ("WAVELENGTH", "ROTATIONAXIS", "CCDPIXELSIZE", "GONIOTILTSTEP", "BEAMTILTSTEP",
            "BEAMTILTRANGE", "STRETCHINGMP", "STRETCHINGAZIMUTH")  # fmt: skip


@dataclass
class Ed3dFile:
    """Contents of an ``.ed3d`` file: the header numbers and the file list."""

    values: dict[str, float]
    files: list[tuple[str, float, float, float]]


def _wrap_deg(angle: float) -> float:
    return (angle + 180.0) % 360.0 - 180.0


def ed3d_text(scan: RotationScanInfo, files: Mapping[int, str]) -> str:
    """The ``.ed3d`` text for ``files`` (1-based frame number -> MRC file name)."""
    omega = _wrap_deg(math.degrees(scan.instamatic_axis_angle_rad()))
    amplitude = angle = 0.0
    if scan.distortion is not None:
        amplitude = (scan.distortion.ratio - 1.0) * 100.0
        angle = scan.distortion.angle_deg
    lines = [
        f"WAVELENGTH    {scan.wavelength_a:.6f}",
        f"ROTATIONAXIS    {omega:.6f}",
        f"CCDPIXELSIZE    {scan.reciprocal_pixel_size:.6f}",
        f"GONIOTILTSTEP    {scan.oscillation_deg:.6f}",
        "BEAMTILTSTEP    0",
        "BEAMTILTRANGE    0.000",
        f"STRETCHINGMP    {amplitude:.4f}",
        f"STRETCHINGAZIMUTH    {angle:.4f}",
        "",
        "FILELIST",
    ]
    for frame in sorted(files):
        mid = scan.frame_start_deg(frame) + 0.5 * scan.oscillation_deg
        lines.append(f"FILE {files[frame]}    {mid:12.4f}    0    {mid:12.4f}")
    lines.append("ENDFILELIST")
    return "\n".join(lines) + "\n"


def write_ed3d(
    path: str | os.PathLike[str],
    scan: RotationScanInfo,
    files: Mapping[int, str],
    *,
    overwrite: bool = False,
) -> Path:
    """Write the REDp input file (module docstring); returns its path."""
    target = Path(path)
    with atomic_write(target, overwrite=overwrite) as fh:
        fh.write(ed3d_text(scan, files))
    return target


def read_ed3d(path: str | os.PathLike[str]) -> Ed3dFile:
    """Read an ``.ed3d`` file.

    Raises
    ------
    FormatError
        For an unreadable file, a malformed number or FILE line (with its line number),
        or a missing FILELIST / ENDFILELIST.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror})", path=p) from None
    values: dict[str, float] = {}
    files: list[tuple[str, float, float, float]] = []
    state = "head"
    for number, line in enumerate(lines, start=1):
        words = line.split()
        if not words:
            continue
        key = words[0].upper()
        if key == "FILELIST":
            state = "files"
        elif key == "ENDFILELIST":
            state = "done"
        elif state == "files" and key == "FILE":
            files.append(_file_line(words, p, number))
        elif state == "head" and key in _NUMBERS:
            values[key] = _number(words, p, number)
    if state != "done":
        raise FormatError("no FILELIST ... ENDFILELIST block", path=p, field="FILELIST")
    return Ed3dFile(values=values, files=files)


def _number(words: list[str], path: Path, line: int) -> float:
    try:
        return float(words[1])
    except (IndexError, ValueError):
        raise FormatError("expected a number", path=path, field=words[0], line=line) from None


def _file_line(words: list[str], path: Path, line: int) -> tuple[str, float, float, float]:
    try:
        return words[1], float(words[2]), float(words[3]), float(words[4])
    except (IndexError, ValueError):
        raise FormatError("expected FILE name angle beam-tilt angle", path=path, field="FILE",
                          line=line) from None  # fmt: skip
