"""A simulated camera implementing :class:`~crystalscope.acquire.interfaces.Camera`.

The camera is bound to a :class:`~crystalscope.acquire.sim_microscope.SimulatedMicroscope`
and shares its clock and call log.

Timing
------
A frame started at ``t0`` integrates ``[t0, t0 + exposure_s]``; :meth:`~SimulatedCamera.get_image`
returns at ``t0 + exposure_s + readout_s + overhead_s`` (Timepix: 8 ms readout, 3-4 ms
overhead, seed 001 section 5.2).  :meth:`~SimulatedCamera.get_movie` yields frames one
after another with the same cadence, lazily, so an experiment can act on the microscope
between frames.  An injected timeout (``timeout_at_frame``, 0-based count of frames
this camera has acquired) waits ``exposure_s + readout_s + timeout_s`` and raises
:class:`~crystalscope.acquire.interfaces.CameraTimeout` once; later frames work again.

Detector
--------
The expected counts of the exposure (:func:`~crystalscope.acquire.sim_render.render_exposure`)
plus dark counts go through the project's detector response
(:func:`~crystalscope.simulate.render.apply_response`: flat field, Poisson noise,
paralyzable dead time, hot and dead pixels, saturation at the counter depth).  The
``timepix-quad`` layout is the raw 512 x 512 frame of four 256 x 256 chips whose
boundary pixels are three times wider and collect the counts of their whole area
(:mod:`crystalscope.simulate.presets`); the conversion to 516 x 516 is not done here.
Binned frames sum ``b x b`` raw pixels after saturation.  Frames are ``uint16`` or
``int32`` counts, clipped to the type's range.  The random stream of frame ``n`` is
``default_rng([seed, 2, n])``; pixel defects come from ``default_rng([seed, 1])``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import numpy as np

from crystalscope.acquire.clock import Clock
from crystalscope.acquire.config import CameraConfig
from crystalscope.acquire.interfaces import CallRecord, CameraTimeout
from crystalscope.acquire.sim_microscope import SimulatedMicroscope, api_call
from crystalscope.acquire.sim_render import CameraGeometry, ExposureState, render_exposure
from crystalscope.errors import DataError
from crystalscope.model.detector import Detector
from crystalscope.simulate.config import DetectorEffects
from crystalscope.simulate.presets import detector_preset
from crystalscope.simulate.render import apply_response, make_detector_state

__all__ = ["SimulatedCamera"]


def _check_exposure(exposure_s: float) -> float:
    value = float(exposure_s)
    if not (math.isfinite(value) and value > 0):
        raise DataError(
            f"exposure must be a finite time > 0 s, got {exposure_s!r}", field="exposure_s"
        )
    return value


class SimulatedCamera:
    """Simulated camera on a simulated microscope (see the module docstring).

    Parameters
    ----------
    microscope : SimulatedMicroscope
        The instrument whose state the frames show.
    config : CameraConfig, optional
        Camera parameters (default: all defaults, a 512 x 512 single panel).
    """

    def __init__(self, microscope: SimulatedMicroscope, config: CameraConfig | None = None) -> None:
        self.microscope = microscope
        self.config = config if config is not None else CameraConfig()
        self.call_log = microscope.call_log
        self._lock = threading.RLock()
        self._latency_s = 0.0
        self._detectors: dict[float, Detector] = {}
        self.frames_acquired = 0
        self.timeout_at_frame = self.config.simulation.timeout_at_frame
        self.last_exposure: ExposureState | None = None
        sim = self.config.simulation
        self._det_fx = DetectorEffects(
            noise=sim.noise,
            psf_sigma_px=sim.psf_sigma_px,
            flat_field_rms=sim.flat_field_rms,
            dead_pixel_fraction=sim.dead_pixel_fraction,
            hot_pixel_fraction=sim.hot_pixel_fraction,
            hot_pixel_counts=sim.hot_pixel_counts,
            dead_time_s=sim.dead_time_s,
            saturation_adu=sim.saturation_counts,
            gaps=True,
        )
        first = self.detector(microscope.config.optics.camera_lengths_mm[0])
        self._state = make_detector_state(first, self._det_fx, np.random.default_rng([sim.seed, 1]))
        self.geometry = CameraGeometry(
            (self.config.dimensions[0], self.config.dimensions[1]),
            self.config.pixel_size_mm,
            self.detector,
            self._det_fx,
        )

    # ------------------------------------------------------------------ properties

    @property
    def name(self) -> str:
        """Camera name."""
        return self.config.name

    @property
    def clock(self) -> Clock:
        """The microscope's clock."""
        return self.microscope.clock

    @property
    def binning(self) -> int:
        """Binning factor."""
        return int(self.config.binning)

    @property
    def dimensions(self) -> tuple[int, int]:
        """Frame shape (ny, nx) at the current binning."""
        ny, nx = self.config.dimensions
        return ny // self.binning, nx // self.binning

    @property
    def pixel_size_mm(self) -> float:
        """Pixel pitch at the current binning, mm."""
        return float(self.config.pixel_size_mm * self.binning)

    @property
    def readout_s(self) -> float:
        """Readout dead time per frame, s."""
        return float(self.config.readout_s)

    @property
    def overhead_s(self) -> float:
        """Software overhead per frame, s."""
        return float(self.config.overhead_s)

    @property
    def beam_centre_px(self) -> tuple[float, float]:
        """Where the untilted direct beam hits: unbinned raw ``(fs, ss)``."""
        given = self.config.simulation.beam_centre_px
        if given is not None:
            return float(given[0]), float(given[1])
        if self.config.simulation.layout == "timepix-quad":
            return 240.0, 240.0
        ny, nx = self.config.dimensions
        return 0.5 * (nx - 1), 0.5 * (ny - 1)

    def detector(self, camera_length_mm: float) -> Detector:
        """The camera's geometry (unbinned) at a camera length (cached)."""
        key = float(camera_length_mm)
        if key not in self._detectors:
            beam = self.microscope.beam
            if self.config.simulation.layout == "timepix-quad":
                det = detector_preset("timepix-quad", key, beam, beam_centre_px=self.beam_centre_px)
            else:
                ny, nx = self.config.dimensions
                det = Detector.single_panel(
                    nx,
                    ny,
                    self.config.pixel_size_mm,
                    key,
                    self.beam_centre_px,
                    electron_voltage_kv=self.microscope.voltage_kv,
                )
            self._detectors[key] = det
        return self._detectors[key]

    # ------------------------------------------------------------------ frames

    def expected_frame(self, t0_s: float, t1_s: float) -> np.ndarray:
        """Expected counts (float64, unbinned, no noise) of an exposure ``[t0_s, t1_s]``."""
        state = self.microscope.exposure_state(t0_s, t1_s)
        return render_exposure(self.microscope.scene, state, self.geometry)

    def _frame(self, exposure: float) -> np.ndarray:
        """Acquire one frame (advances the clock); raises CameraTimeout when injected."""
        clock = self.clock
        index = self.frames_acquired
        self.frames_acquired += 1
        t0 = clock.now()
        if self.timeout_at_frame is not None and index == self.timeout_at_frame:
            self.timeout_at_frame = None
            clock.sleep(exposure + self.readout_s + self.config.timeout_s)
            raise CameraTimeout(
                f"camera {self.name}: no frame within {self.config.timeout_s} s "
                f"(frame {index}, exposure {exposure} s)",
                field="get_image",
            )
        clock.sleep(exposure)
        state = self.microscope.exposure_state(t0, t0 + exposure)
        self.last_exposure = state
        clock.sleep(self.readout_s + self.overhead_s)
        expected = render_exposure(self.microscope.scene, state, self.geometry)
        return self._respond(expected, exposure, index)

    def _respond(self, expected: np.ndarray, exposure: float, index: int) -> np.ndarray:
        sim = self.config.simulation
        if sim.dark_counts_per_px_s > 0:
            expected = expected + sim.dark_counts_per_px_s * exposure
        fx = self._det_fx.model_copy(update={"exposure_s": exposure})
        rng = np.random.default_rng([sim.seed, 2, index])
        counts = np.rint(apply_response(expected, fx, self._state, rng)).astype(np.float64)
        b = self.binning
        if b > 1:
            ny, nx = counts.shape
            counts = counts.reshape(ny // b, b, nx // b, b).sum(axis=(1, 3))
        info = np.iinfo(np.dtype(self.config.dtype))
        return np.clip(counts, 0, info.max).astype(self.config.dtype)

    @api_call
    def get_image(self, exposure_s: float) -> np.ndarray:
        """Expose for ``exposure_s`` s; returns a ``dimensions`` frame of counts."""
        return self._frame(_check_exposure(exposure_s))

    def get_movie(self, n_frames: int, exposure_s: float) -> Iterator[np.ndarray]:
        """Yield ``n_frames`` consecutive frames (lazily, one per ``next``)."""
        exposure = _check_exposure(exposure_s)
        if int(n_frames) != n_frames or n_frames < 1:
            raise DataError(
                f"n_frames must be a positive integer, got {n_frames!r}", field="n_frames"
            )
        return self._movie(int(n_frames), exposure)

    def _movie(self, n_frames: int, exposure: float) -> Iterator[np.ndarray]:
        for k in range(n_frames):
            with self._lock:
                start = self.clock.now()
                try:
                    frame = self._frame(exposure)
                except CameraTimeout as exc:
                    self._log(start, k, exposure, None, str(exc))
                    raise
                self._log(start, k, exposure, frame, None)
            yield frame

    def _log(
        self, start: float, k: int, exposure: float, frame: np.ndarray | None, error: str | None
    ) -> None:
        args = {"frame": k, "exposure_s": exposure}
        self.call_log.append(
            CallRecord(start, self.clock.now(), self.name, "get_movie", args, frame, error)
        )
