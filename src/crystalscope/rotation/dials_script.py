"""A ready-to-run DIALS processing script for a continuous-rotation electron series.

:func:`write_dials_script` writes a bash script (``dials_process.sh``) with one DIALS
command per line, run in the script's folder:

1. ``dials.import`` of the SMV frames (``template=data/#####.img``) with the rotation
   axis ``geometry.goniometer.axes=`` in dxtbx's frame for SMV images (``(ex, -ey,
   -ez)``, :meth:`~crystalscope.rotation.scan.RotationScanInfo.dials_smv_axis`: the
   ADSC header has no axis); or of the NXmx file, whose axis, mask and geometry DIALS
   reads from the file.  ``geometry.scan.image_range=`` limits the sweep to the first
   and last diffraction frame when excluded frames lie at either end, with
   ``geometry.scan.oscillation=`` giving the angle of that first frame (dxtbx would
   otherwise keep the angle of file 1 for it);
2. ``dials.generate_mask`` / ``dials.apply_mask`` (SMV only): the untrusted rectangles
   (the Timepix cross) as ``untrusted.rectangle=x0,x1,y0,y1`` (DIALS masks
   ``x0 <= x < x1``, 0-based: ``fs_min, fs_max + 1``);
3. ``dials.find_spots`` with one ``scan_range=first,last`` per run of diffraction frames,
   so that the empty frames kept in place of defocused images are not searched;
4. ``dials.index`` and ``dials.refine`` with ``detector.fix=distance`` (in electron
   diffraction the camera length and the cell scale are fully correlated: the calibrated
   camera length is kept) and ``trim_scan_to_observations=False`` (so that the frame
   numbers of the next step stay valid);
5. ``dials.integrate`` with ``exclude_images=`` listing every excluded frame inside the
   sweep;
6. ``dials.symmetry``, ``dials.scale``;
7. ``dials.export`` to MTZ (``scaled.mtz``) and SHELX (``scaled.hkl``, ``scaled.ins``).

The frames excluded from the series are present as all-zero frames (see
:mod:`~crystalscope.rotation.handoff`), so every frame keeps its angle
``start + (i - 1) * osc`` and DIALS sees one continuous sweep.
:func:`read_dials_script` returns the commands of such a script (for
:func:`~crystalscope.rotation.process.run_dials`).
"""

from __future__ import annotations

import datetime as _dt
import os
import shlex
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from crystalscope.errors import FormatError
from crystalscope.io.atomic import atomic_write
from crystalscope.rotation.scan import RotationScanInfo

__all__ = [
    "DIALS_SCRIPT",
    "DialsOptions",
    "dials_commands",
    "dials_script_text",
    "read_dials_script",
    "write_dials_script",
]

DIALS_SCRIPT = "dials_process.sh"
"""File name of the script."""


@dataclass(frozen=True)
class DialsOptions:
    """Choices for the DIALS chain.

    Attributes
    ----------
    d_min : float, optional
        High-resolution limit for spot finding and integration, A.
    d_max : float, optional
        Low-resolution limit for spot finding, A (keeps the direct beam's tails out).
    gain : float, optional
        Detector gain for spot finding (counts per electron; 1 for counting detectors).
    nproc : int
        Processes for spot finding and integration.
    space_group : str, optional
        Known space group for indexing (``P21/c``); unknown by default.
    unit_cell : tuple of 6 floats, optional
        Known cell for indexing (A, degrees), with ``space_group``.
    """

    d_min: float | None = None
    d_max: float | None = None
    gain: float | None = None
    nproc: int = 1
    space_group: str | None = None
    unit_cell: tuple[float, float, float, float, float, float] | None = None


def _fmt(values: tuple[float, ...]) -> str:
    return ",".join(f"{v + 0.0:.6f}" for v in values)


def _import(scan: RotationScanInfo, source: Literal["smv", "nxmx"], image: str) -> list[str]:
    first, last = scan.data_range
    cmd = ["dials.import", image if source == "nxmx" else f"template={image}"]
    if source == "smv":
        cmd.append(f"geometry.goniometer.axes={_fmt(scan.dials_smv_axis())}")
    if (first, last) != (1, scan.n_frames):
        # dxtbx 3.12 keeps the first file's angle for the first image of a restricted
        # range: give the angle of image ``first`` explicitly
        start = scan.frame_start_deg(first)
        cmd += [f"geometry.scan.image_range={first},{last}",
                f"geometry.scan.oscillation={start:.6f},{scan.oscillation_deg:.6f}"]  # fmt: skip
    return cmd


def _mask(scan: RotationScanInfo) -> list[list[str]]:
    rects = [f"untrusted.rectangle={f0},{f1 + 1},{s0},{s1 + 1}"
             for f0, f1, s0, s1 in scan.untrusted_rectangles]  # fmt: skip
    return [
        ["dials.generate_mask", "imported.expt", *rects, "output.mask=untrusted.mask"],
        ["dials.apply_mask", "imported.expt", "input.mask=untrusted.mask",
         "output.experiments=masked.expt"],
    ]  # fmt: skip


def dials_commands(
    scan: RotationScanInfo,
    *,
    source: Literal["smv", "nxmx"] = "smv",
    image: str = "data/#####.img",
    options: DialsOptions | None = None,
) -> list[list[str]]:
    """The DIALS commands of the chain (module docstring), as argument lists.

    Parameters
    ----------
    scan : RotationScanInfo
        The series.
    source : {"smv", "nxmx"}
        Import SMV frames (with the axis given on the command line) or an NXmx file.
    image : str
        SMV template (``#`` for digits) or the NXmx file, relative to the script.
    options : DialsOptions, optional
        Resolution limits, gain, processes, known symmetry.
    """
    opt = options or DialsOptions()
    cmds = [_import(scan, source, image)]
    expt = "imported.expt"
    if source == "smv" and scan.untrusted_rectangles:
        cmds += _mask(scan)
        expt = "masked.expt"
    find = ["dials.find_spots", expt]
    find += [f"scan_range={a},{b}" for a, b in scan.data_ranges()]
    find += [f"d_min={opt.d_min}"] if opt.d_min else []
    find += [f"d_max={opt.d_max}"] if opt.d_max else []
    find += [f"gain={opt.gain}"] if opt.gain else []
    cmds.append([*find, f"nproc={opt.nproc}"])
    index = ["dials.index", expt, "strong.refl", "detector.fix=distance"]
    if opt.space_group:
        index.append(f"space_group={opt.space_group.replace(' ', '')}")
    if opt.unit_cell:
        index.append(f"unit_cell={_fmt(opt.unit_cell)}")
    cmds.append(index)
    cmds.append(["dials.refine", "indexed.expt", "indexed.refl", "detector.fix=distance",
                 "trim_scan_to_observations=False"])  # fmt: skip
    integrate = ["dials.integrate", "refined.expt", "refined.refl", f"nproc={opt.nproc}"]
    if scan.inner_excluded_frames:
        integrate.append("exclude_images=" + ",".join(map(str, scan.inner_excluded_frames)))
    if opt.d_min:
        integrate.append(f"prediction.d_min={opt.d_min}")
    cmds.append(integrate)
    cmds.append(["dials.symmetry", "integrated.expt", "integrated.refl"])
    cmds.append(["dials.scale", "symmetrized.expt", "symmetrized.refl"])
    cmds.append(["dials.export", "scaled.expt", "scaled.refl", "format=mtz",
                 "mtz.hklout=scaled.mtz"])  # fmt: skip
    cmds.append(["dials.export", "scaled.expt", "scaled.refl", "format=shelx",
                 "shelx.hklout=scaled.hkl", "shelx.ins=scaled.ins"])  # fmt: skip
    return cmds


def dials_script_text(scan: RotationScanInfo, commands: list[list[str]]) -> str:
    """The bash script of ``commands`` with a header explaining the geometry."""
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    excluded = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in scan.excluded_ranges())
    head = [
        "#!/usr/bin/env bash",
        f"# DIALS processing of a continuous-rotation series; written by crystalscope, {stamp}",
        f"# {scan.n_frames} frames of {scan.oscillation_deg:.4f} deg from "
        f"{scan.start_angle_deg:.3f} deg; wavelength {scan.wavelength_a:.6f} A; camera length "
        f"{scan.camera_length_mm:.2f} mm",
        "# rotation axis (lab frame, NeXus) " + _fmt(scan.rotation_axis)
        + "; in dxtbx's frame for SMV images " + _fmt(scan.dials_smv_axis()),
        f"# frames without diffraction (kept as empty frames, excluded): {excluded or 'none'}",
        "# detector.fix=distance: the camera length is calibrated and correlated with the cell",
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
    ]  # fmt: skip
    body = [shlex.join(cmd) for cmd in commands]
    return "\n".join(head + body) + "\n"


def write_dials_script(
    directory: str | os.PathLike[str],
    scan: RotationScanInfo,
    *,
    source: Literal["smv", "nxmx"] = "smv",
    image: str = "data/#####.img",
    options: DialsOptions | None = None,
    name: str = DIALS_SCRIPT,
    overwrite: bool = False,
) -> Path:
    """Write the executable DIALS script into ``directory``; returns its path."""
    commands = dials_commands(scan, source=source, image=image, options=options)
    target = Path(directory) / name
    with atomic_write(target, overwrite=overwrite) as fh:
        fh.write(dials_script_text(scan, commands))
    mode = target.stat().st_mode
    target.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return target


def read_dials_script(path: str | os.PathLike[str]) -> list[list[str]]:
    """The DIALS commands of a script (lines starting with ``dials.``), split as the shell
    would.

    Raises
    ------
    FormatError
        If the file cannot be read, a line cannot be split, or there is no command.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FormatError(f"cannot read the DIALS script ({exc.strerror})", path=p) from None
    commands = []
    for number, line in enumerate(lines, start=1):
        if not line.strip().startswith("dials."):
            continue
        try:
            commands.append(shlex.split(line, comments=True))
        except ValueError as exc:
            raise FormatError(f"cannot split the command: {exc}", path=p, line=number) from None
    if not commands:
        raise FormatError("no dials.* command in the script", path=p)
    return commands
