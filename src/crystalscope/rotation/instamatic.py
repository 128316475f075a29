"""Instamatic-style cRED experiment directories: write them and read them back.

Instamatic (Cichocka et al. 2018, seed 001 section 5) saves each continuous-rotation
experiment in a new numbered directory::

    experiment_3/
      cRED_log.txt            experiment parameters (below)
      tiff/00001.tiff ...     diffraction frames, numbered by their frame slot
      tiff_image/00010.tiff   defocused images (crystal tracking), in their own folder
      SMV/data/00001.img ...  SMV frames, XDS.INP, DIALS script   } the hand-off files of
      RED/00001.mrc, 1.ed3d   MRC frames and the REDp input       } rotation.handoff
      beam_centers.txt        per-frame beam centre (row, column) in pixels, NaN rows for
                              frames without a diffraction pattern

Frame slot ``i`` (1-based) covers ``start + (i - 1) * osc``; slots without a file in
``tiff/`` are the defocused images and frames lost to the timing of a defocus cycle.

``cRED_log.txt``
----------------
One ``Key: value unit`` line per item, in Instamatic's order and wording::

    Program: crystalscope 0.1.0
    Data Collection Time: 2026-01-01 12:00:00
    Time Period Start: 0.000
    Time Period End: 51.200
    Starting angle: -40.00 degrees
    Ending angle: 40.00 degrees
    Rotation range: 80.00 degrees
    Exposure Time: 0.500 s
    Acquisition time: 0.512 s
    Total time: 51.200 s
    Spot Size: 2
    Camera length: 500.0 mm
    Pixelsize: 0.004386 px/Angstrom
    Physical pixelsize: 0.055 um
    Wavelength: 0.0250793 Angstrom
    Stretch amplitude: 0.0 %
    Stretch azimuth: 0.0 degrees
    Rotation axis: 0.927295 radians
    Oscillation angle: 0.8000 degrees
    Number of frames: 90
    Stage start: X 0 | Y 0 | Z 0 | A -40.00 | B 0.00
    Stage end:   X 0 | Y 0 | Z 0 | A 40.00 | B 0.00
    Image interval: every 10 frames an image with defocus 1500 (t=0.01 s).
    Number of images: 10

Instamatic's labels are kept although two units are wrong: "Pixelsize" is the reciprocal
pixel size in 1/A per pixel (``pixel / (wavelength * camera length)``), "Physical
pixelsize" is in mm.  Instamatic itself writes the stretch *azimuth* after "Stretch
amplitude" and the amplitude after "Stretch azimuth" (swapped); a log whose "Program"
line is not crystalscope's is read with the two swapped back.  "Rotation axis" is the
in-plane angle ``a`` with ``axis = (cos a, -sin a, 0)`` for increasing stage angles;
a rotation towards smaller angles is read as the opposite axis with angles negated
(:mod:`~crystalscope.rotation.scan`).  "Number of frames" counts diffraction frames.

The camera length used for processing is derived from the calibrated "Pixelsize"
(``pixel / (wavelength * Pixelsize)``), as Instamatic does; the nominal "Camera length"
is used only when "Pixelsize" is missing.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from crystalscope.errors import DataError, FormatError
from crystalscope.io.atomic import atomic_write, check_outputs_free
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.rotation.dials_script import DialsOptions
from crystalscope.rotation.handoff import HandoffFiles, write_handoff
from crystalscope.rotation.scan import RotationScanInfo, axis_from_instamatic

__all__ = [
    "CRED_LOG",
    "CredDirectory",
    "CredLog",
    "check_log_against_frames",
    "format_cred_log",
    "new_experiment_directory",
    "parse_cred_log",
    "read_cred_directory",
    "read_frame",
    "scan_from_log",
    "write_cred_directory",
]

CRED_LOG = "cRED_log.txt"
_PROGRAM = "crystalscope"
_TIFF_TYPES = ("uint16", "uint32", "int32", "float32")
_NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan)"
_FRAME_FILE = re.compile(r"^(\d+)\.(tiff?|mrc|img)$", re.IGNORECASE)


@dataclass
class CredLog:
    """The items of ``cRED_log.txt`` (module docstring), in crystalscope's units."""

    starting_angle_deg: float
    ending_angle_deg: float
    exposure_s: float
    oscillation_deg: float
    wavelength_a: float
    camera_length_mm: float
    reciprocal_pixel_size: float | None
    physical_pixel_size_mm: float
    rotation_axis_rad: float
    n_frames_diff: int
    acquisition_time_s: float | None = None
    total_time_s: float | None = None
    time_start: float = 0.0
    time_end: float | None = None
    spot_size: str = "?"
    stretch_amplitude_percent: float = 0.0
    stretch_azimuth_deg: float = 0.0
    program: str = field(default_factory=lambda: f"{_PROGRAM} {_version()}")
    collection_time: str = ""
    stage_start: tuple[float, float, float, float, float] | None = None
    stage_end: tuple[float, float, float, float, float] | None = None
    image_interval: int | None = None
    defocus: float | None = None
    exposure_image_s: float | None = None
    n_images: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_scan(cls, scan: RotationScanInfo, **items: Any) -> CredLog:
        """The log of a scan (rotation towards larger stage angles); ``items`` fill in
        or override the other fields (``spot_size``, ``stage_start``, ``defocus``...)."""
        values: dict[str, Any] = {
            "starting_angle_deg": scan.start_angle_deg,
            "ending_angle_deg": scan.end_angle_deg,
            "exposure_s": scan.exposure_s,
            "oscillation_deg": scan.oscillation_deg,
            "wavelength_a": scan.wavelength_a,
            "camera_length_mm": scan.camera_length_mm,
            "reciprocal_pixel_size": scan.reciprocal_pixel_size,
            "physical_pixel_size_mm": scan.pixel_size_mm,
            "rotation_axis_rad": scan.instamatic_axis_angle_rad(),
            "n_frames_diff": len(scan.data_frames),
            "collection_time": _dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
        }
        if scan.distortion is not None:
            values["stretch_amplitude_percent"] = (scan.distortion.ratio - 1.0) * 100.0
            values["stretch_azimuth_deg"] = scan.distortion.angle_deg
        values.update(items)
        return cls(**values)

    @property
    def total_frames(self) -> int:
        """Frame slots of the rotation: ``|end - start| / oscillation``, rounded."""
        return max(1, round(abs(self.ending_angle_deg - self.starting_angle_deg)
                            / self.oscillation_deg))  # fmt: skip

    @property
    def effective_camera_length_mm(self) -> float:
        """Camera length from the calibrated reciprocal pixel size (else the nominal)."""
        if self.reciprocal_pixel_size:
            return self.physical_pixel_size_mm / (self.wavelength_a * self.reciprocal_pixel_size)
        return self.camera_length_mm


# ------------------------------------------------------------------ cRED_log.txt


def _version() -> str:
    from crystalscope import __version__

    return str(__version__)


def _opt(value: float | None, fmt: str) -> str:
    return "nan" if value is None else format(value, fmt)


def _stage(values: tuple[float, ...] | None, angle: float) -> str:
    x, y, z, a, b = values if values is not None else (0.0, 0.0, 0.0, angle, 0.0)
    return f"X {x:6.0f} | Y {y:6.0f} | Z {z:6.0f} | A {a:5.2f} | B {b:5.2f}"


def format_cred_log(log: CredLog) -> str:
    """Text of ``cRED_log.txt`` (module docstring)."""
    lines = [
        f"Program: {log.program}",
        f"Data Collection Time: {log.collection_time}",
        f"Time Period Start: {log.time_start:.3f}",
        f"Time Period End: {_opt(log.time_end, '.3f')}",
        f"Starting angle: {log.starting_angle_deg:.2f} degrees",
        f"Ending angle: {log.ending_angle_deg:.2f} degrees",
        f"Rotation range: {log.ending_angle_deg - log.starting_angle_deg:.2f} degrees",
        f"Exposure Time: {log.exposure_s:.3f} s",
        f"Acquisition time: {_opt(log.acquisition_time_s, '.3f')} s",
        f"Total time: {_opt(log.total_time_s, '.3f')} s",
        f"Spot Size: {log.spot_size}",
        f"Camera length: {log.camera_length_mm:.1f} mm",
        f"Pixelsize: {_opt(log.reciprocal_pixel_size, '.8g')} px/Angstrom",
        f"Physical pixelsize: {log.physical_pixel_size_mm:.6g} um",
        f"Wavelength: {log.wavelength_a:.8g} Angstrom",
        f"Stretch amplitude: {log.stretch_amplitude_percent:.4g} %",
        f"Stretch azimuth: {log.stretch_azimuth_deg:.4g} degrees",
        f"Rotation axis: {log.rotation_axis_rad:.8g} radians",
        f"Oscillation angle: {log.oscillation_deg:.4f} degrees",
        f"Number of frames: {log.n_frames_diff}",
        f"Stage start: {_stage(log.stage_start, log.starting_angle_deg)}",
        f"Stage end:   {_stage(log.stage_end, log.ending_angle_deg)}",
    ]
    if log.image_interval:
        defocus, exposure = _opt(log.defocus, "g"), _opt(log.exposure_image_s, "g")
        lines.append(f"Image interval: every {log.image_interval} frames an image with defocus "
                     f"{defocus} (t={exposure} s).")  # fmt: skip
        lines.append(f"Number of images: {log.n_images or 0}")
    lines += [f"{key}: {value}" for key, value in log.extra.items()]
    return "\n".join(lines) + "\n"


_REQUIRED = {
    "Starting angle": "starting_angle_deg",
    "Ending angle": "ending_angle_deg",
    "Exposure Time": "exposure_s",
    "Oscillation angle": "oscillation_deg",
    "Wavelength": "wavelength_a",
    "Camera length": "camera_length_mm",
    "Physical pixelsize": "physical_pixel_size_mm",
    "Rotation axis": "rotation_axis_rad",
    "Number of frames": "n_frames_diff",
}
_OPTIONAL = {
    "Pixelsize": "reciprocal_pixel_size",
    "Acquisition time": "acquisition_time_s",
    "Total time": "total_time_s",
    "Time Period Start": "time_start",
    "Time Period End": "time_end",
    "Stretch amplitude": "stretch_amplitude_percent",
    "Stretch azimuth": "stretch_azimuth_deg",
    "Number of images": "n_images",
}
_TEXT = {"Program": "program", "Data Collection Time": "collection_time", "Spot Size": "spot_size"}
_INTERVAL = re.compile(rf"every\s+(\d+)\s+frames.*defocus\s+{_NUMBER}.*t\s*=\s*{_NUMBER}", re.I)


def _first_number(text: str, path: Path, key: str, line: int) -> float:
    match = re.search(_NUMBER, text)
    if match is None:
        raise FormatError(f"no number in {text!r}", path=path, field=key, line=line)
    return float(match.group(1))


def _stage_values(text: str) -> tuple[float, float, float, float, float] | None:
    numbers = [float(v) for v in re.findall(_NUMBER, text)]
    if len(numbers) != 5:
        return None
    return numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]


def _log_items(path: Path) -> list[tuple[int, str, str]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise FormatError("file not found", path=path) from None
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror})", path=path) from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        key, sep, value = line.partition(":")
        if sep and key.strip() and not line.startswith((" ", "-")):
            items.append((number, key.strip(), value.strip()))
    return items


def parse_cred_log(path: str | os.PathLike[str]) -> CredLog:
    """Read ``cRED_log.txt`` (module docstring).

    Raises
    ------
    FormatError
        If the file is missing or a required item is missing or not a number (named,
        with its line).
    """
    p = Path(path)
    values: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for number, key, value in _log_items(p):
        if key in _REQUIRED or key in _OPTIONAL:
            name = _REQUIRED.get(key) or _OPTIONAL[key]
            if value.lower().startswith("nan") and key in _OPTIONAL:
                continue
            values[name] = _first_number(value, p, key, number)
        elif key in _TEXT:
            values[_TEXT[key]] = value
        elif key in ("Stage start", "Stage end"):
            values["stage_start" if key == "Stage start" else "stage_end"] = _stage_values(value)
        elif key == "Image interval":
            match = _INTERVAL.search(value)
            if match:
                values["image_interval"] = int(match.group(1))
                values["defocus"] = float(match.group(2))
                values["exposure_image_s"] = float(match.group(3))
        elif key != "References":
            extra[key] = value
    missing = [key for key, name in _REQUIRED.items() if name not in values]
    if missing:
        raise FormatError("required item missing", path=p, field=missing[0])
    for name in ("n_frames_diff", "n_images"):
        if name in values:
            values[name] = int(values[name])
    if not str(values.get("program", "")).startswith(_PROGRAM):
        # Instamatic writes the azimuth after "Stretch amplitude" and vice versa
        amp, azi = values.get("stretch_amplitude_percent"), values.get("stretch_azimuth_deg")
        values["stretch_amplitude_percent"], values["stretch_azimuth_deg"] = azi or 0.0, amp or 0.0
    if values["physical_pixel_size_mm"] > 1.0:  # given in um as the unit says
        values["physical_pixel_size_mm"] /= 1000.0
    return CredLog(**values, extra=extra)


# ------------------------------------------------------------------ directories


def new_experiment_directory(
    base: str | os.PathLike[str], name: str = "experiment", *, start: int = 1
) -> Path:
    """Create and return ``base/<name>_<n>`` with the first unused number ``n >= start``.

    The directory is created atomically (``mkdir`` without ``exist_ok``), so two
    experiments started at once never share a directory and nothing is overwritten.
    """
    root = Path(base)
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.iterdir()
             if (m := re.fullmatch(re.escape(name) + r"_(\d+)", p.name))]  # fmt: skip
    n = max([start - 1, *taken]) + 1
    while True:
        candidate = root / f"{name}_{n}"
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            n += 1


def _write_tiffs(
    folder: Path, frames: Mapping[int, ArrayLike], numbers: Iterable[int],
    meta: Callable[[int], dict[str, Any]], overwrite: bool,
) -> list[Path]:  # fmt: skip
    from crystalscope.io.image_data import as_lossless
    from crystalscope.io.tiff import write_tiff

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in numbers:
        path = folder / f"{i:05d}.tiff"
        data = np.asarray(frames[i])
        if data.dtype.kind == "f" and data.dtype.itemsize > 4:
            data = data.astype(np.float32)
        data = as_lossless(data, _TIFF_TYPES, what="TIFF frames")
        write_tiff(path, data, meta(i), overwrite=overwrite)
        paths.append(path)
    return paths


def _write_beam_centres(
    path: Path, scan: RotationScanInfo, centres: Mapping[int, tuple[float, float]] | None,
    overwrite: bool,
) -> None:  # fmt: skip
    table = np.full((scan.n_frames, 2), np.nan)
    for i in scan.data_frames:
        fs, ss = centres[i] if centres and i in centres else scan.beam_centre_px
        table[i - 1] = (ss, fs)
    with atomic_write(path, overwrite=overwrite) as fh:
        np.savetxt(fh, table, fmt="%10.4f")


@dataclass
class CredDirectory:
    """An Instamatic-style experiment directory, written or read."""

    directory: Path
    scan: RotationScanInfo
    log: CredLog
    frames: dict[int, Path]
    defocused: dict[int, Path]
    handoff: HandoffFiles | None = None
    kind: str = "tiff"
    centre_source: str = "scan"


def write_cred_directory(
    out_dir: str | os.PathLike[str],
    frames: Mapping[int, ArrayLike],
    scan: RotationScanInfo,
    *,
    defocused: Mapping[int, ArrayLike] | None = None,
    log: CredLog | None = None,
    beam_centres: Mapping[int, tuple[float, float]] | None = None,
    handoff: Iterable[str] = ("smv", "mrc", "nxmx"),
    dials: DialsOptions | None = None,
    start_time: _dt.datetime | None = None,
    overwrite: bool = False,
    say: Callable[[str], None] = lambda message: None,
) -> CredDirectory:
    """Write an Instamatic-style cRED directory (module docstring) with hand-off files.

    Parameters
    ----------
    out_dir : str or os.PathLike
        The experiment directory (see :func:`new_experiment_directory`).
    frames : mapping of int to 2-D array
        Diffraction frames by 1-based slot (every slot not excluded in ``scan``).
    scan : RotationScanInfo
        The series; its in-plane rotation axis goes into the log.
    defocused : mapping of int to 2-D array, optional
        Defocused images by slot (written to ``tiff_image/``).
    log : CredLog, optional
        Log items; by default derived from ``scan`` (:meth:`CredLog.from_scan`).
    beam_centres : mapping of int to (fs, ss), optional
        Per-frame beam centres for ``beam_centers.txt`` (default: the scan's).
    handoff : iterable of {"smv", "mrc", "nxmx"}
        Hand-off formats (:func:`~crystalscope.rotation.handoff.write_handoff`).
    dials : DialsOptions, optional
        Options for the DIALS scripts.
    start_time : datetime, optional
        Start of the experiment.
    overwrite : bool
        Replace existing files.
    say : callable
        Receives progress lines.
    """
    out = Path(out_dir)
    extra: Mapping[int, ArrayLike] = defocused if defocused is not None else {}
    log = log or CredLog.from_scan(scan, image_interval=None, n_images=len(extra) or None)
    planned = [out / CRED_LOG, out / "beam_centers.txt"]
    planned += [out / "tiff" / f"{i:05d}.tiff" for i in scan.data_frames]
    planned += [out / "tiff_image" / f"{i:05d}.tiff" for i in extra]
    check_outputs_free(planned, overwrite=overwrite)
    kinds = tuple(handoff)
    result = write_handoff(out, frames, scan, formats=kinds, dials=dials,
                           start_time=start_time, overwrite=overwrite, say=say)  # fmt: skip

    def meta(i: int) -> dict[str, Any]:
        return {"phi_start_deg": scan.frame_start_deg(i), "phi_range_deg": scan.oscillation_deg,
                "exposure_time_s": scan.exposure_s, "wavelength_a": scan.wavelength_a,
                "distance_mm": scan.camera_length_mm, "pixel_size_mm": scan.pixel_size_mm,
                "beam_center_px": scan.beam_centre_px, "frame": i}  # fmt: skip

    say(f"writing {len(scan.data_frames)} TIFF frames and {len(extra)} defocused images")
    tiffs = _write_tiffs(out / "tiff", frames, scan.data_frames, meta, overwrite)
    images = _write_tiffs(out / "tiff_image", extra, sorted(extra),
                          lambda i: {"phi_start_deg": scan.frame_start_deg(i), "frame": i,
                                     "defocused": True}, overwrite)  # fmt: skip
    _write_beam_centres(out / "beam_centers.txt", scan, beam_centres, overwrite)
    with atomic_write(out / CRED_LOG, overwrite=overwrite) as fh:
        fh.write(format_cred_log(log))
    return CredDirectory(
        directory=out, scan=scan, log=log,
        frames=dict(zip(scan.data_frames, tiffs, strict=True)),
        defocused=dict(zip(sorted(extra), images, strict=True)), handoff=result,
    )  # fmt: skip


# ---------------------------------------------------------------------- reading


def _numbered(folder: Path) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for p in folder.iterdir():
        m = _FRAME_FILE.match(p.name)
        if m and p.is_file():
            out[int(m.group(1))] = p
    return dict(sorted(out.items()))


def _frame_files(directory: Path) -> tuple[dict[int, Path], str]:
    """Diffraction frames: tiff/, else RED/ (MRC, upside down), else SMV/data/."""
    for sub, kind in (("tiff", "tiff"), ("RED", "mrc"), ("SMV/data", "smv")):
        files = _numbered(directory / sub)
        if files:
            return files, kind
    raise FormatError("no diffraction frames in tiff/, RED/ or SMV/data/", path=directory)


def _centres_table(path: Path) -> dict[int, tuple[float, float]]:
    """beam_centers.txt rows (ss, fs) -> {frame: (fs, ss)} (finite rows only)."""
    if not path.is_file():
        return {}
    try:
        table = np.atleast_2d(np.loadtxt(path, dtype=float))
    except ValueError as exc:
        raise FormatError(f"not a table of two numbers per row: {exc}", path=path) from None
    if table.shape[1] != 2:
        raise FormatError(f"expected 2 columns, found {table.shape[1]}", path=path)
    return {i + 1: (float(r[1]), float(r[0])) for i, r in enumerate(table)
            if np.all(np.isfinite(r))}  # fmt: skip


def scan_from_log(
    log: CredLog,
    frame_numbers: Iterable[int],
    *,
    shape: tuple[int, int],
    beam_centre_px: tuple[float, float],
    untrusted: Iterable[tuple[int, int, int, int]] = (),
    source: str | None = None,
) -> RotationScanInfo:
    """The scan description of an Instamatic experiment (module docstring for the axis and
    angle conventions); frames not in ``frame_numbers`` are excluded."""
    numbers = sorted({int(i) for i in frame_numbers})
    if not numbers:
        raise DataError("no diffraction frames", path=source, field="frames")
    n = max(log.total_frames, numbers[-1])
    sign = -1.0 if log.ending_angle_deg < log.starting_angle_deg else 1.0
    axis = tuple(sign * v for v in axis_from_instamatic(log.rotation_axis_rad))
    distortion = None
    if log.stretch_amplitude_percent:
        distortion = EllipticalDistortion(1.0 + log.stretch_amplitude_percent / 100.0,
                                          log.stretch_azimuth_deg)  # fmt: skip
    present = set(numbers)
    try:
        return RotationScanInfo(
            wavelength_a=log.wavelength_a, camera_length_mm=log.effective_camera_length_mm,
            pixel_size_mm=log.physical_pixel_size_mm, detector_shape=shape,
            beam_centre_px=beam_centre_px, rotation_axis=axis,  # type: ignore[arg-type]
            start_angle_deg=sign * log.starting_angle_deg, oscillation_deg=log.oscillation_deg,
            n_frames=n, exposure_s=log.exposure_s,
            excluded_frames=tuple(i for i in range(1, n + 1) if i not in present),
            untrusted_rectangles=tuple(untrusted), distortion=distortion,
        )  # fmt: skip
    except DataError as exc:
        raise DataError(exc.message, path=source, field=exc.field) from None


def read_frame(path: Path, kind: str) -> np.ndarray:
    """One frame of an Instamatic directory (MRC frames are flipped back upright)."""
    from crystalscope.io.images import read_image

    data = np.asarray(read_image(path).data)
    if data.ndim == 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim != 2:
        raise FormatError(f"expected one 2-D frame, got shape {data.shape}", path=path)
    return np.flipud(data) if kind == "mrc" else data


def _blank(path: Path) -> bool:
    """An SMV slot without a diffraction pattern: ours say EXCLUDED=1, Instamatic's
    DIALS conversion writes all-zero frames."""
    from crystalscope.io.smv import read_smv, read_smv_header

    header, _ = read_smv_header(path)
    if header.get("EXCLUDED") == "1":
        return True
    return not np.any(read_smv(path).data)


def read_cred_directory(directory: str | os.PathLike[str]) -> CredDirectory:
    """Read the log and list the frames of an Instamatic-style directory.

    The beam centre is the median of ``beam_centers.txt`` (``centre_source`` says so);
    without that file it is the middle of the frame and
    :func:`~crystalscope.rotation.cred_import.cred_import` estimates it from the frames.
    Untrusted rectangles are not set here.

    Raises
    ------
    FormatError
        If the log or the frames are missing or malformed.
    """
    root = Path(directory)
    if not root.is_dir():
        raise FormatError("not a directory", path=root)
    log = parse_cred_log(root / CRED_LOG)
    files, kind = _frame_files(root)
    if kind == "smv":
        files = {i: p for i, p in files.items() if not _blank(p)}
        if not files:
            raise FormatError("every SMV frame is empty", path=root / "SMV" / "data")
    first = read_frame(next(iter(files.values())), kind)
    shape = (int(first.shape[0]), int(first.shape[1]))
    centres = _centres_table(root / "beam_centers.txt")
    if centres:
        fs, ss = np.median(np.asarray(list(centres.values())), axis=0)
        centre, source = (float(fs), float(ss)), "beam_centers.txt"
    else:
        centre, source = ((shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0), "frame centre"
    scan = scan_from_log(log, files, shape=shape, beam_centre_px=centre,
                         source=str(root / CRED_LOG))  # fmt: skip
    return CredDirectory(directory=root, scan=scan, log=log, frames=files,
                         defocused=_numbered(root / "tiff_image"), kind=kind,
                         centre_source=source)  # fmt: skip


def check_log_against_frames(directory: CredDirectory) -> str | None:
    """A warning when the log's count of diffraction frames differs from the files."""
    n_files = len(directory.frames)
    if directory.log.n_frames_diff and directory.log.n_frames_diff != n_files:
        return (f"the log lists {directory.log.n_frames_diff} diffraction frames, {n_files} "
                "files were found")  # fmt: skip
    return None
