"""Import cRED data: an Instamatic-style directory (or a simulated series) -> hand-off files.

:func:`cred_import` reads an experiment directory (:mod:`~crystalscope.rotation.instamatic`:
``cRED_log.txt`` and the frames of ``tiff/``, else ``RED/`` (MRC), else ``SMV/data/``)
and writes SMV frames, an NXmx file and the XDS, DIALS and REDp inputs
(:func:`~crystalscope.rotation.handoff.write_handoff`) with the geometry of the log:

* wavelength, oscillation, exposure and start angle from the log; the rotation axis from
  Instamatic's in-plane angle (opposite axis and negated angles for a rotation towards
  smaller stage angles); the camera length from the calibrated reciprocal pixel size;
* frame slots without a diffraction frame (defocused images, lost frames) excluded;
* Timepix quad frames: raw 512 x 512 frames are expanded to 516 x 516
  (:func:`~crystalscope.acquire.timepix.expand_quad`, integer counts), and for 516 x 516
  frames the cross of spread pixels is marked untrusted;
* the beam centre: the median of ``beam_centers.txt`` (Instamatic's per-frame centres,
  row and column), else the median over the diffraction frames of the thresholded centre
  of mass of the direct beam (:func:`crystalscope.image.centre.centre_of_mass`, the cross
  masked), as the seed's section 5.3 describes.

:func:`simulated_series` turns the output of ``crystalscope simulate rotation``
(:func:`~crystalscope.simulate.rotation_output.simulate_rotation`) into the same
ingredients (scan, diffraction frames, defocused images), so that a simulated series can
be written as an Instamatic directory or as hand-off files directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import yaml

from crystalscope.acquire import timepix
from crystalscope.errors import DataError, FormatError
from crystalscope.rotation.dials_script import DialsOptions
from crystalscope.rotation.handoff import HANDOFF_FORMATS, HandoffFiles, write_handoff
from crystalscope.rotation.instamatic import (
    CredDirectory,
    check_log_against_frames,
    read_cred_directory,
    read_frame,
)
from crystalscope.rotation.scan import RotationScanInfo

__all__ = [
    "FrameSource",
    "ImportResult",
    "SimulatedSeries",
    "cred_import",
    "estimate_beam_centre",
    "simulated_series",
]


_Item = TypeVar("_Item")


class FrameSource(Mapping[int, np.ndarray], Generic[_Item]):
    """Frames by 1-based slot, read from their files (or any source items, e.g. frames
    held in memory) when asked for, one at a time.

    ``convert`` is applied to every frame (e.g. the Timepix expansion).
    """

    def __init__(
        self,
        files: Mapping[int, _Item],
        read: Callable[[_Item], np.ndarray],
        convert: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self._files = dict(files)
        self._read = read
        self._convert = convert

    def __getitem__(self, key: int) -> np.ndarray:
        data = self._read(self._files[key])
        return self._convert(data) if self._convert is not None else data

    def __iter__(self) -> Iterator[int]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def estimate_beam_centre(
    frames: Mapping[int, np.ndarray], *, mask: np.ndarray | None = None, max_frames: int = 50
) -> tuple[float, float]:
    """Median direct-beam position ``(fs, ss)`` over (up to ``max_frames``, evenly spread)
    diffraction frames, from the thresholded centre of mass of each.

    Raises
    ------
    DataError
        If no frame shows a direct beam.
    """
    from crystalscope.image.centre import centre_of_mass

    keys = sorted(frames)
    if len(keys) > max_frames:
        keys = [keys[int(k)] for k in np.linspace(0, len(keys) - 1, max_frames)]
    centres = []
    for i in keys:
        fit = centre_of_mass(np.asarray(frames[i], dtype=np.float64), mask)
        if fit.success:
            centres.append(fit.centre)
    if not centres:
        raise DataError("no direct beam found in the frames; give the beam centre",
                        field="beam_centre_px")  # fmt: skip
    fs, ss = np.median(np.asarray(centres), axis=0)
    return float(fs), float(ss)


@dataclass
class ImportResult:
    """What :func:`cred_import` read and wrote."""

    source: CredDirectory
    scan: RotationScanInfo
    handoff: HandoffFiles
    centre_source: str
    warnings: list[str]

    def summary(self) -> str:
        """A few lines for the terminal."""
        s = self.scan
        lines = [
            f"read {len(s.data_frames)} diffraction frames ({len(s.excluded_frames)} slots "
            f"excluded) from {self.source.directory}",
            f"  {s.start_angle_deg:.3f} deg + {s.n_frames} x {s.oscillation_deg:.4f} deg, "
            f"axis {tuple(round(v, 4) for v in s.rotation_axis)}, wavelength "
            f"{s.wavelength_a:.6f} A, camera length {s.camera_length_mm:.2f} mm",
            f"  beam centre (fs, ss) = ({s.beam_centre_px[0]:.2f}, {s.beam_centre_px[1]:.2f}) px "
            f"from {self.centre_source}",
            *(f"  warning: {w}" for w in self.warnings),
            self.handoff.summary(),
        ]
        return "\n".join(lines)


def _timepix_plan(shape: tuple[int, int], timepix_quad: bool | None) -> tuple[bool, bool]:
    """(expand raw frames, mark the cross untrusted)."""
    if timepix_quad is False:
        return False, False
    if shape == timepix.RAW_SHAPE:
        return True, True
    if shape == timepix.EXPANDED_SHAPE:
        return False, True
    if timepix_quad:
        raise DataError(f"Timepix quad frames are 512 x 512 or 516 x 516, not {shape}",
                        field="timepix_quad")  # fmt: skip
    return False, False


def cred_import(
    directory: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    formats: Iterable[str] = HANDOFF_FORMATS,
    timepix_quad: bool | None = None,
    factor: float = timepix.DEFAULT_FACTOR,
    beam_centre_px: tuple[float, float] | None = None,
    dials: DialsOptions | None = None,
    d_min: float | None = None,
    overwrite: bool = False,
    say: Callable[[str], None] = lambda message: None,
) -> ImportResult:
    """Import an Instamatic-style cRED directory and write the hand-off files to ``out``.

    Parameters
    ----------
    directory : str or os.PathLike
        The experiment directory (``cRED_log.txt`` and frames).
    out : str or os.PathLike
        Output directory for the hand-off files (may be ``directory`` itself when its
        ``SMV/``, ``RED/`` and NXmx files do not exist yet).
    formats : iterable of {"smv", "nxmx", "mrc"}
        Hand-off formats.
    timepix_quad : bool, optional
        Treat the frames as a Timepix quad (None: when they are 512 x 512 or 516 x 516).
    factor : float
        Wide-pixel divisor for expanding raw quad frames.
    beam_centre_px : (fs, ss), optional
        Beam centre of the (expanded) frames; default from ``beam_centers.txt`` or the
        frames.
    dials : DialsOptions, optional
        Options for the DIALS scripts.
    d_min : float, optional
        Resolution limit for ``XDS.INP``.
    overwrite : bool
        Replace existing outputs.
    say : callable
        Receives progress lines.

    Raises
    ------
    FormatError
        If the directory's log or frames are missing or malformed.
    DataError
        If the geometry is inconsistent (named field).
    """
    source = read_cred_directory(directory)
    warnings = [w for w in [check_log_against_frames(source)] if w]
    scan = source.scan
    expand, cross = _timepix_plan(scan.detector_shape, timepix_quad)
    convert = (lambda a: timepix.expand_quad(a, factor, integer=True)) if expand else None
    frames = FrameSource(source.frames, lambda p: read_frame(p, source.kind), convert)
    shape = timepix.EXPANDED_SHAPE if expand else scan.detector_shape
    centre, centre_source = _beam_centre(source, frames, beam_centre_px, expand, cross)
    scan = scan.replace(
        detector_shape=shape,
        beam_centre_px=centre,
        untrusted_rectangles=timepix.cross_rectangles() if cross else (),
    )
    say(f"{len(scan.data_frames)} diffraction frames, beam centre {centre} from {centre_source}")
    handoff = write_handoff(out, frames, scan, formats=formats, dials=dials, d_min=d_min,
                            overwrite=overwrite, say=say)  # fmt: skip
    return ImportResult(source, scan, handoff, centre_source, warnings)


def _beam_centre(
    source: CredDirectory,
    frames: Mapping[int, np.ndarray],
    given: tuple[float, float] | None,
    expanded: bool,
    cross: bool,
) -> tuple[tuple[float, float], str]:
    if given is not None:
        return (float(given[0]), float(given[1])), "the command line"
    if source.centre_source == "beam_centers.txt":
        fs, ss = source.scan.beam_centre_px
        if expanded:
            efs, ess = timepix.raw_to_expanded(fs, ss)
            fs, ss = float(efs), float(ess)
        return (fs, ss), "beam_centers.txt"
    mask = timepix.cross_mask() if cross else None
    return estimate_beam_centre(frames, mask=mask), "the direct beam in the frames"


# ------------------------------------------------------------------ simulations


@dataclass
class SimulatedSeries:
    """A simulated rotation series as hand-off ingredients."""

    scan: RotationScanInfo
    frames: FrameSource[Path]
    defocused: FrameSource[Path]
    log: dict[str, Any]


def simulated_series(
    directory: str | os.PathLike[str], *, factor: float = timepix.DEFAULT_FACTOR
) -> SimulatedSeries:
    """Read the output of :func:`~crystalscope.simulate.rotation_output.simulate_rotation`
    (``rotation.yaml`` and the frame files) as a scan, diffraction frames and defocused
    images (1-based slots = simulated frame + 1).  Timepix quad frames are expanded to
    516 x 516 with the cross untrusted.

    Raises
    ------
    FormatError
        If ``rotation.yaml`` is missing or lacks an item.
    """
    from crystalscope.io.images import read_image

    root = Path(directory)
    path = root / "rotation.yaml"
    try:
        log = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FormatError(f"cannot read ({exc.strerror})", path=path) from None
    try:
        shape = (int(log["frame_shape"][0]), int(log["frame_shape"][1]))
        defocused = {int(j) + 1 for j in log["defocus_frames"]}
        files = {int(f["frame"]) + 1: root / f["file"] for f in log["frames"]}
        starts = np.array([float(f["phi_start_deg"]) for f in log["frames"]])
        step = _uniform_step(starts, path)
        quad = log.get("detector") == "timepix-quad" and shape == timepix.RAW_SHAPE
        centre = tuple(float(v) for v in log["beam_centre_px"])
        if quad:
            cfs, css = timepix.raw_to_expanded(*centre)
            centre = (float(cfs), float(css))
        scan = RotationScanInfo(
            wavelength_a=log["wavelength_a"], camera_length_mm=log["camera_length_mm"],
            pixel_size_mm=log["pixel_size_mm"],
            detector_shape=timepix.EXPANDED_SHAPE if quad else shape,
            beam_centre_px=centre,  # type: ignore[arg-type]
            rotation_axis=tuple(log["rotation_axis"]),  # type: ignore[arg-type]
            start_angle_deg=float(starts[0]), oscillation_deg=step,
            n_frames=log["n_frames"], exposure_s=log["exposure_s"],
            excluded_frames=tuple(sorted(defocused)),
            untrusted_rectangles=timepix.cross_rectangles() if quad else (),
            radiation="electron" if log.get("radiation") == "electron" else "xray",
        )  # fmt: skip
    except (KeyError, TypeError, IndexError) as exc:
        raise FormatError(f"incomplete simulation log ({exc})", path=path) from None
    except DataError as exc:
        raise FormatError(exc.message, path=path, field=exc.field) from None

    def read(p: Path) -> np.ndarray:
        return np.asarray(read_image(p).data)

    convert = (lambda a: timepix.expand_quad(a, factor, integer=True)) if quad else None
    data = {i: p for i, p in files.items() if i not in defocused}
    images = {i: p for i, p in files.items() if i in defocused}
    return SimulatedSeries(scan, FrameSource(data, read, convert),
                           FrameSource(images, read, convert), log)  # fmt: skip


def _uniform_step(starts: np.ndarray, path: Path) -> float:
    """The constant angular step between frame starts (XDS and DIALS need one)."""
    if starts.size < 2:
        raise FormatError("a rotation series needs two frames or more", path=path,
                          field="frames")  # fmt: skip
    steps = np.diff(starts)
    step = float(np.median(steps))
    if step <= 0 or np.max(np.abs(steps - step)) > 1e-6 * abs(step):
        raise FormatError("frame start angles are not evenly spaced (defocus_cost_deg?); "
                          "XDS and DIALS need a constant step", path=path,
                          field="phi_start_deg")  # fmt: skip
    return step
