"""Hand-off files of a continuous-rotation series for XDS, DIALS and REDp.

:func:`write_handoff` writes, into one directory (Instamatic's layout, plus NXmx)::

    SMV/data/00001.img ...   every frame slot as SMV (ADSC header), excluded slots as
                             all-zero frames so that frame i keeps its angle
    SMV/XDS.INP              (+ XCORR.cbf, YCORR.cbf with an elliptical distortion)
    SMV/dials_process.sh     DIALS chain on the SMV frames
    NXmx/cred.nxs            NeXus/NXmx file of the same frames (bitshuffle/LZ4)
    NXmx/dials_process.sh    DIALS chain on the NXmx file
    RED/00001.mrc ...        diffraction frames only, uint16, upside down (REDp)
    RED/1.ed3d               REDp input
    rotation_scan.yaml       the RotationScanInfo, for the record

SMV frames hold ``unsigned_short`` pixels (dxtbx reads no other SMV type): counts are
rounded and clipped to ``0 .. 65535`` (the number of clipped pixels is reported; DIALS
and XDS treat 65535 as an overload).  Their headers carry the pixel size, camera length
(``DISTANCE``), wavelength, exposure (``TIME``), frame start angle and oscillation
(``OSC_START``, ``OSC_RANGE``, ``PHI``) and the beam centre in the ADSC convention
(mm from the first pixel's corner, ``BEAM_CENTER_X`` along the slow axis,
:mod:`crystalscope.io.smv`), plus ``FRAME`` and ``EXCLUDED`` (1 for the empty slots).

Nothing is overwritten unless ``overwrite`` is given; every file is written atomically.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from numpy.typing import ArrayLike

from crystalscope.errors import CrystalscopeError, DataError
from crystalscope.io.atomic import atomic_write, check_outputs_free
from crystalscope.rotation.dials_script import DialsOptions, write_dials_script
from crystalscope.rotation.redp import ED3D_NAME, write_ed3d
from crystalscope.rotation.scan import RotationScanInfo
from crystalscope.rotation.xds_input import write_xds_inp

__all__ = [
    "HANDOFF_FORMATS",
    "NXMX_NAME",
    "SCAN_RECORD",
    "HandoffFiles",
    "read_scan_record",
    "write_handoff",
    "write_scan_record",
]

HANDOFF_FORMATS = ("smv", "nxmx", "mrc")
NXMX_NAME = "cred.nxs"
SCAN_RECORD = "rotation_scan.yaml"
_SMV_MAX = 65535


@dataclass
class HandoffFiles:
    """What :func:`write_handoff` wrote."""

    directory: Path
    smv_frames: list[Path] = field(default_factory=list)
    xds_inp: list[Path] = field(default_factory=list)
    dials_scripts: list[Path] = field(default_factory=list)
    nxmx: Path | None = None
    mrc_frames: list[Path] = field(default_factory=list)
    ed3d: Path | None = None
    scan_record: Path | None = None
    clipped_pixels: int = 0

    def summary(self) -> str:
        """One line per kind of output."""
        lines = [f"hand-off files in {self.directory}/"]
        if self.smv_frames:
            lines.append(f"  {len(self.smv_frames)} SMV frames in SMV/data/ "
                         f"({self.clipped_pixels} pixels clipped at {_SMV_MAX})")  # fmt: skip
        lines += [f"  {p.relative_to(self.directory)}" for p in self.xds_inp + self.dials_scripts]
        if self.nxmx is not None:
            lines.append(f"  {self.nxmx.relative_to(self.directory)} (NXmx)")
        if self.mrc_frames and self.ed3d is not None:
            lines.append(f"  {len(self.mrc_frames)} MRC frames and "
                         f"{self.ed3d.relative_to(self.directory)} for REDp")  # fmt: skip
        return "\n".join(lines)


def _frame(frames: Mapping[int, ArrayLike], i: int, scan: RotationScanInfo) -> np.ndarray:
    data = np.asarray(frames[i])
    if data.shape != scan.detector_shape:
        raise DataError(f"frame {i} has shape {data.shape}, the scan says "
                        f"{scan.detector_shape}", field="frames")  # fmt: skip
    if data.dtype.kind not in "biuf":
        raise DataError(f"frame {i} is not numeric ({data.dtype})", field="frames")
    return data


def _check_frames(frames: Mapping[int, ArrayLike], scan: RotationScanInfo) -> None:
    given = {int(k) for k in frames}
    missing = [i for i in scan.data_frames if i not in given]
    if missing:
        raise DataError(f"diffraction frames {missing[:5]} are neither given nor excluded",
                        field="frames")  # fmt: skip
    extra = sorted(k for k in given if not 1 <= k <= scan.n_frames)
    if extra:
        raise DataError(f"frame numbers {extra[:5]} are outside 1..{scan.n_frames}",
                        field="frames")  # fmt: skip


def _as_uint16(data: np.ndarray) -> tuple[np.ndarray, int]:
    values = np.rint(np.nan_to_num(np.asarray(data, dtype=np.float64), nan=0.0))
    clipped = int(np.count_nonzero((values > _SMV_MAX) | (values < 0)))
    return np.clip(values, 0, _SMV_MAX).astype(np.uint16), clipped


def _smv_metadata(scan: RotationScanInfo, i: int, date: str | None) -> dict[str, Any]:
    header = {
        "FRAME": str(i),
        "PHI": f"{scan.frame_start_deg(i):.6f}",
        "EXCLUDED": "1" if i in scan.excluded_frames else "0",
        "TWOTHETA": "0.0",
    }
    if date:
        header["DATE"] = date
    return {
        "pixel_size_mm": scan.pixel_size_mm,
        "distance_mm": scan.camera_length_mm,
        "wavelength_a": scan.wavelength_a,
        "exposure_time_s": scan.exposure_s,
        "phi_start_deg": scan.frame_start_deg(i),
        "phi_range_deg": scan.oscillation_deg,
        "beam_center_px": scan.beam_centre_px,
        "header": header,
    }


def _write_smv_frames(
    folder: Path,
    frames: Mapping[int, ArrayLike],
    scan: RotationScanInfo,
    date: str | None,
    overwrite: bool,
) -> tuple[list[Path], int]:
    from crystalscope.io.smv import write_smv

    folder.mkdir(parents=True, exist_ok=True)
    paths, clipped = [], 0
    empty = np.zeros(scan.detector_shape, dtype=np.uint16)
    for i in range(1, scan.n_frames + 1):
        if i in scan.excluded_frames:
            data = empty
        else:
            data, n = _as_uint16(_frame(frames, i, scan))
            clipped += n
        path = folder / f"{i:05d}.img"
        write_smv(path, data, _smv_metadata(scan, i, date), overwrite=overwrite)
        paths.append(path)
    return paths, clipped


def _write_mrc_frames(
    folder: Path, frames: Mapping[int, ArrayLike], scan: RotationScanInfo, overwrite: bool
) -> dict[int, Path]:
    from crystalscope.io.mrc import write_mrc

    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in scan.data_frames:
        data, _ = _as_uint16(_frame(frames, i, scan))
        path = folder / f"{i:05d}.mrc"
        write_mrc(path, np.ascontiguousarray(np.flipud(data)), overwrite=overwrite)
        out[i] = path
    return out


def _planned(out: Path, scan: RotationScanInfo, formats: Iterable[str]) -> list[Path]:
    kinds = set(formats)
    paths = [out / SCAN_RECORD]
    if "smv" in kinds:
        paths += [out / "SMV" / "XDS.INP", out / "SMV" / "dials_process.sh"]
        paths += [out / "SMV" / "data" / f"{i:05d}.img" for i in range(1, scan.n_frames + 1)]
    if "nxmx" in kinds:
        paths += [out / "NXmx" / NXMX_NAME, out / "NXmx" / "dials_process.sh"]
    if "mrc" in kinds:
        paths += [out / "RED" / ED3D_NAME]
        paths += [out / "RED" / f"{i:05d}.mrc" for i in scan.data_frames]
    return paths


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(formats)
    bad = [k for k in kinds if k not in HANDOFF_FORMATS]
    if bad:
        raise CrystalscopeError(f"unknown hand-off format {bad[0]!r}; choose from "
                                f"{', '.join(HANDOFF_FORMATS)}", field="formats")  # fmt: skip
    return kinds


def write_handoff(
    out_dir: str | os.PathLike[str],
    frames: Mapping[int, ArrayLike],
    scan: RotationScanInfo,
    *,
    formats: Iterable[str] = HANDOFF_FORMATS,
    dials: DialsOptions | None = None,
    d_min: float | None = None,
    start_time: _dt.datetime | None = None,
    overwrite: bool = False,
    say: Callable[[str], None] = lambda message: None,
) -> HandoffFiles:
    """Write SMV frames, NXmx, MRC frames and the XDS, DIALS and REDp inputs.

    Parameters
    ----------
    out_dir : str or os.PathLike
        Output directory (created); layout in the module docstring.
    frames : mapping of int to 2-D array
        Diffraction frames by 1-based number (counts, ``scan.detector_shape``); every
        frame not in ``scan.excluded_frames`` must be present.  A lazy mapping works:
        frames are fetched one at a time.
    scan : RotationScanInfo
        The series.
    formats : iterable of {"smv", "nxmx", "mrc"}
        What to write (SMV brings ``XDS.INP`` and the DIALS script, MRC the ``.ed3d``).
    dials : DialsOptions, optional
        Options written into the DIALS scripts.
    d_min : float, optional
        Resolution limit written into ``XDS.INP``.
    start_time : datetime, optional
        Start of the experiment (SMV ``DATE``, NXmx ``start_time``).
    overwrite : bool
        Replace existing files.
    say : callable
        Receives one progress line per step.

    Raises
    ------
    CrystalscopeError
        If an output exists and ``overwrite`` is false (before anything is written).
    DataError
        If frames are missing or do not match the scan.
    """
    from crystalscope.io.nxmx import write_nxmx

    kinds = _check_formats(formats)
    out = Path(out_dir)
    _check_frames(frames, scan)
    check_outputs_free(_planned(out, scan, kinds), overwrite=overwrite)
    out.mkdir(parents=True, exist_ok=True)
    result = HandoffFiles(directory=out)
    date = start_time.strftime("%a %b %d %H:%M:%S %Y") if start_time else None
    if "smv" in kinds:
        say(f"writing {scan.n_frames} SMV frames to {out / 'SMV' / 'data'}")
        smv = out / "SMV"
        result.smv_frames, result.clipped_pixels = _write_smv_frames(
            smv / "data", frames, scan, date, overwrite
        )
        result.xds_inp = write_xds_inp(smv, scan, d_min=d_min, overwrite=overwrite)
        result.dials_scripts.append(
            write_dials_script(smv, scan, options=dials, overwrite=overwrite)
        )
    if "nxmx" in kinds:
        say(f"writing the NXmx file {out / 'NXmx' / NXMX_NAME}")
        (out / "NXmx").mkdir(exist_ok=True)
        result.nxmx = write_nxmx(out / "NXmx" / NXMX_NAME, frames, scan, start_time=start_time,
                                 overwrite=overwrite)  # fmt: skip
        result.dials_scripts.append(write_dials_script(
            out / "NXmx", scan, source="nxmx", image=NXMX_NAME, options=dials, overwrite=overwrite
        ))  # fmt: skip
    if "mrc" in kinds:
        say(f"writing {len(scan.data_frames)} MRC frames and {ED3D_NAME} to {out / 'RED'}")
        mrc = _write_mrc_frames(out / "RED", frames, scan, overwrite)
        result.mrc_frames = list(mrc.values())
        names = {i: p.name for i, p in mrc.items()}
        result.ed3d = write_ed3d(out / "RED" / ED3D_NAME, scan, names, overwrite=overwrite)
    result.scan_record = write_scan_record(out / SCAN_RECORD, scan, overwrite=overwrite)
    return result


def write_scan_record(path: Path, scan: RotationScanInfo, *, overwrite: bool = False) -> Path:
    """Write the scan description as YAML (read back with :func:`read_scan_record`)."""
    with atomic_write(path, overwrite=overwrite) as fh:
        fh.write("# crystalscope: geometry of a continuous-rotation series (docs/rotation.md)\n")
        yaml.safe_dump(scan.to_dict(), fh, sort_keys=False)
    return path


def read_scan_record(path: str | os.PathLike[str]) -> RotationScanInfo:
    """Read ``rotation_scan.yaml``.

    Raises
    ------
    DataError
        If the file is missing, not YAML or not a valid scan description.
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror})", path=p) from None
    except yaml.YAMLError as exc:
        raise DataError(f"not valid YAML: {exc}", path=p) from None
    if not isinstance(data, dict):
        raise DataError("expected a mapping of scan parameters", path=p)
    return RotationScanInfo.from_dict(data, source=str(p))
