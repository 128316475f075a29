"""Writing a cRED experiment: an Instamatic-style directory, hand-off files and the record.

:func:`write_cred` takes the :class:`~crystalscope.acquire.cred.CredRecord` of
:func:`~crystalscope.acquire.cred.collect_cred` and writes, into a new numbered
directory ``experiment_<n>`` under the base directory (never an existing one):

* what Instamatic writes (:func:`~crystalscope.rotation.instamatic.write_cred_directory`):
  ``cRED_log.txt``, ``tiff/`` diffraction frames, ``tiff_image/`` defocused images,
  ``beam_centers.txt``, ``SMV/`` frames with ``XDS.INP`` and a DIALS script, ``RED/``
  MRC frames with the REDp ``.ed3d``, ``NXmx/cred.nxs`` with its DIALS script;
* ``events.log`` (every event with its clock time), ``calls.jsonl`` (every instrument
  call, when the microscope keeps a :class:`~crystalscope.acquire.interfaces.CallLog`),
  ``slots.csv`` (per slot: kind, clock times, start angle, relative diffracted
  intensity), ``tracking.csv`` (every measurement of the crystal and the beam shift set),
  ``settings.yaml`` and ``cred.png`` (intensity scale per frame, as seed 001 Fig. 7, and
  the tracked crystal position).

Timepix quad frames (512 x 512) are expanded to the physical 516 x 516 grid with integer
counts (:func:`~crystalscope.acquire.timepix.expand_quad`) and the cross of spread pixels
is declared untrusted.  The beam centre is the median direct-beam position of the frames
(:func:`~crystalscope.rotation.cred_import.estimate_beam_centre`).  A calibrated
elliptical distortion (``stretch_percent``, ``stretch_azimuth_deg``, Instamatic's
"Stretch amplitude" and "azimuth") goes into the log and into XDS's geometric
correction tables.

Rotation axis and angles: the goniometer's alpha axis is the lab ``x`` axis (NeXus), seen
on the detector at ``rotation_axis_deg`` from ``+fs`` towards ``+ss`` (0 for the
simulated camera).  A rotation towards smaller angles is written as the opposite axis
with negated angles, so that the oscillation is positive, as XDS and DIALS expect.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from crystalscope.acquire import timepix
from crystalscope.acquire.cred import CredRecord
from crystalscope.acquire.interfaces import CallLog
from crystalscope.errors import DataError
from crystalscope.io.atomic import atomic_write, save_png
from crystalscope.model.distortion import EllipticalDistortion
from crystalscope.rotation.cred_import import FrameSource, estimate_beam_centre
from crystalscope.rotation.dials_script import DialsOptions
from crystalscope.rotation.instamatic import (
    CredDirectory,
    CredLog,
    new_experiment_directory,
    write_cred_directory,
)
from crystalscope.rotation.scan import RotationScanInfo

__all__ = ["CredOutput", "cred_scan", "diffracted_intensity", "write_cred"]


@dataclass
class CredOutput:
    """What :func:`write_cred` wrote."""

    directory: Path
    scan: RotationScanInfo | None
    files: CredDirectory | None
    status: str

    def summary(self) -> str:
        """A few lines for the terminal."""
        if self.scan is None:
            return f"{self.directory}: no diffraction frame recorded ({self.status})"
        s = self.scan
        return (
            f"{self.directory}: {len(s.data_frames)} diffraction frames, "
            f"{len(s.excluded_frames)} slots excluded, {s.start_angle_deg:.2f} deg + "
            f"{s.n_frames} x {s.oscillation_deg:.4f} deg ({self.status})"
        )


def _is_quad(record: CredRecord) -> bool:
    return tuple(record.frame_shape) == timepix.RAW_SHAPE


def cred_scan(record: CredRecord, beam_centre_px: tuple[float, float]) -> RotationScanInfo:
    """The rotation series of an experiment (module docstring for axis and angles).

    Raises
    ------
    DataError
        If the record holds no slot or no measured rotation.
    """
    if not record.slots or not math.isfinite(record.oscillation_deg):
        raise DataError("the experiment recorded no rotation", field="slots")
    sign = 1.0 if record.oscillation_deg >= 0 else -1.0
    a = math.radians(record.settings.rotation_axis_deg)
    quad = _is_quad(record)
    shape = timepix.EXPANDED_SHAPE if quad else tuple(record.frame_shape)
    return RotationScanInfo(
        wavelength_a=record.wavelength_a,
        camera_length_mm=record.camera_length_mm,
        pixel_size_mm=record.pixel_size_mm,
        detector_shape=(int(shape[0]), int(shape[1])),
        beam_centre_px=beam_centre_px,
        rotation_axis=(sign * math.cos(a), sign * math.sin(a), 0.0),
        start_angle_deg=sign * record.slot_start_deg(1),
        oscillation_deg=abs(record.oscillation_deg),
        n_frames=record.n_slots,
        exposure_s=record.settings.exposure_s,
        excluded_frames=record.excluded_slots,
        untrusted_rectangles=timepix.cross_rectangles() if quad else (),
        distortion=_distortion(record),
    )


def _distortion(record: CredRecord) -> EllipticalDistortion | None:
    """The calibrated elliptical distortion (XDS gets correction tables for it)."""
    s = record.settings
    if s.stretch_percent == 0.0:
        return None
    return EllipticalDistortion(1.0 + s.stretch_percent / 100.0, s.stretch_azimuth_deg)


def diffracted_intensity(
    frame: np.ndarray, centre_px: tuple[float, float], inner_px: float = 12.0
) -> float:
    """Counts outside a disc of ``inner_px`` around the direct beam (Bragg spots and
    the inelastic halo): proportional to the part of the crystal in the selected area."""
    data = np.asarray(frame, dtype=float)
    return float(data[_outside(data.shape, centre_px, inner_px)].sum())


def _outside(shape: tuple[int, ...], centre_px: tuple[float, float], inner_px: float) -> np.ndarray:
    """Pixels farther than ``inner_px`` from ``centre_px`` (fs, ss)."""
    ss, fs = np.indices(shape)
    return np.asarray((fs - centre_px[0]) ** 2 + (ss - centre_px[1]) ** 2 > inner_px**2)


def _slots_table(record: CredRecord, frames: Mapping[int, np.ndarray],
                 centre: tuple[float, float] | None) -> pd.DataFrame:  # fmt: skip
    outside = None
    rows = []
    for s in record.slots:
        value = math.nan
        if s.slot in record.frames and centre is not None:
            frame = frames[s.slot]
            if outside is None:  # one mask for all frames (same shape and centre)
                outside = _outside(frame.shape, centre, 12.0)
            value = float(frame[outside].sum(dtype=np.float64))
        rows.append({"slot": s.slot, "kind": s.kind, "t_start_s": s.t_start,
                     "t_end_s": s.t_end, "alpha_start_deg": record.slot_start_deg(s.slot),
                     "diffracted": value})  # fmt: skip
    table = pd.DataFrame(rows, columns=["slot", "kind", "t_start_s", "t_end_s",
                                        "alpha_start_deg", "diffracted"])  # fmt: skip
    median = float(np.nanmedian(table["diffracted"])) if table["diffracted"].notna().any() else 0
    table["intensity_scale"] = table["diffracted"] / median if median > 0 else math.nan
    return table


def _tracking_table(record: CredRecord) -> pd.DataFrame:
    rows = [
        {"slot": t.frame, "time_s": t.time_s, "alpha_deg": t.alpha_deg, "found": t.position.ok,
         "offset_x_nm": t.position.offset_nm[0], "offset_y_nm": t.position.offset_nm[1],
         "contrast": t.position.contrast, "shift_before_x_nm": t.shift_before_nm[0],
         "shift_before_y_nm": t.shift_before_nm[1], "shift_after_x_nm": t.shift_after_nm[0],
         "shift_after_y_nm": t.shift_after_nm[1]}
        for t in record.tracking
    ]  # fmt: skip
    return pd.DataFrame(rows)


def plot_cred(slots: pd.DataFrame, tracking: pd.DataFrame, path: Path) -> Path:
    """PNG: relative diffracted intensity per frame (seed 001 Fig. 7) and the crystal's
    tracked position (beam shift plus measured offset)."""
    fig = Figure(figsize=(11, 6.5))
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    diff = slots[slots["kind"] == "diffraction"]
    top.plot(diff["alpha_start_deg"], diff["intensity_scale"], ".-", ms=3)
    top.set(ylabel="diffracted intensity / median", title="intensity scale per frame")
    top.set_ylim(bottom=0)
    top.grid(alpha=0.3)
    if len(tracking):
        found = tracking[tracking["found"].astype(bool)]
        for axis, colour in (("x", "C0"), ("y", "C1")):
            pos = found[f"shift_before_{axis}_nm"] + found[f"offset_{axis}_nm"]
            bottom.plot(found["alpha_deg"], pos / 1000.0, "o", color=colour, ms=4,
                        label=f"crystal {axis}")  # fmt: skip
            bottom.plot(tracking["alpha_deg"], tracking[f"shift_after_{axis}_nm"] / 1000.0,
                        "-", color=colour, drawstyle="steps-post",
                        label=f"beam shift {axis}")  # fmt: skip
        bottom.legend(fontsize=8, ncol=2)
    else:
        bottom.text(0.5, 0.5, "no tracking", ha="center", transform=bottom.transAxes)
    bottom.set(xlabel="goniometer angle (deg)", ylabel="position (um)",
               title="crystal position from the defocused images")  # fmt: skip
    bottom.grid(alpha=0.3)
    return save_png(fig, path)


def _write_record(
    out: Path, record: CredRecord, call_log: CallLog | None,
    frames: Mapping[int, np.ndarray], centre: tuple[float, float] | None,
) -> None:  # fmt: skip
    with atomic_write(out / "events.log") as fh:
        fh.writelines(f"{t:12.4f}  {text}\n" for t, text in record.events)
        fh.write(f"status: {record.status}\n")
    with atomic_write(out / "settings.yaml") as fh:
        yaml.safe_dump(record.settings.model_dump(mode="json"), fh, sort_keys=False)
    if call_log is not None:
        call_log.write(out / "calls.jsonl")
    slots = _slots_table(record, frames, centre)
    tracking = _tracking_table(record)
    with atomic_write(out / "slots.csv") as fh:
        slots.to_csv(fh, index=False)
    with atomic_write(out / "tracking.csv") as fh:
        tracking.to_csv(fh, index=False)
    if len(slots):
        plot_cred(slots, tracking, out / "cred.png")


def _cred_log(record: CredRecord, scan: RotationScanInfo) -> CredLog:
    s = record.settings
    n_images = len(record.defocused)
    first, last = record.slots[0], record.slots[-1]
    return CredLog.from_scan(
        scan,
        time_start=first.t_start, time_end=last.t_end, total_time_s=last.t_end - first.t_start,
        acquisition_time_s=record.slot_period_s,
        image_interval=s.defocus_every or None,
        defocus=float(s.defocus_offset) if n_images else None,
        exposure_image_s=s.defocus_exposure_s if n_images else None,
        n_images=n_images or None,
    )  # fmt: skip


def write_cred(
    record: CredRecord,
    base: str | os.PathLike[str],
    *,
    call_log: CallLog | None = None,
    formats: tuple[str, ...] = ("smv", "mrc", "nxmx"),
    dials: DialsOptions | None = None,
    start_time: _dt.datetime | None = None,
    say: Callable[[str], None] = lambda text: None,
) -> CredOutput:
    """Write an experiment into a new ``experiment_<n>`` under ``base`` (module docstring).

    An experiment without diffraction frames (a fault before the first one) still gets
    its directory with ``events.log``, ``settings.yaml`` and the call log.
    """
    out = new_experiment_directory(base, "experiment")
    say(f"writing the experiment to {out}")
    expand = (lambda a: timepix.expand_quad(a, integer=True)) if _is_quad(record) else None
    frames = FrameSource(record.frames, np.asarray, expand)
    mask = timepix.cross_mask() if _is_quad(record) else None
    if not record.frames:
        _write_record(out, record, call_log, frames, None)
        return CredOutput(out, None, None, record.status)
    centre = estimate_beam_centre(frames, mask=mask)
    scan = cred_scan(record, centre)
    files = write_cred_directory(
        out, frames, scan, defocused=record.defocused, log=_cred_log(record, scan),
        handoff=formats, dials=dials, start_time=start_time, say=say,
    )  # fmt: skip
    _write_record(out, record, call_log, frames, centre)
    return CredOutput(out, scan, files, record.status)
