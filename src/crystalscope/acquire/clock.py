"""Clocks: the time base of every microscope, camera and experiment.

Every piece of the acquisition code reads time through a :class:`Clock` instead of
calling :mod:`time` directly.  Against a real instrument this is :class:`RealClock`
(``time.monotonic`` / ``time.sleep``).  Against the simulated microscope it is a
:class:`VirtualClock`: it starts at 0 s and ``sleep`` advances it instantly, so an
experiment with realistic timings (0.5 s exposures, 35 ms API calls, 350 ms of lens
settling, minutes of stage rotation) runs in milliseconds of wall time while every
timestamp it logs is the one a real run would have produced.

Times are in seconds (docs/conventions.md).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Protocol, runtime_checkable

from crystalscope.errors import DataError

__all__ = ["Clock", "RealClock", "VirtualClock"]


def _check_seconds(seconds: float) -> float:
    value = float(seconds)
    if not math.isfinite(value) or value < 0:
        raise DataError(f"cannot sleep {seconds!r} s: need a finite time >= 0", field="seconds")
    return value


@runtime_checkable
class Clock(Protocol):
    """A monotonic time source that can wait.

    Methods
    -------
    now() -> float
        Current time in seconds (arbitrary origin, never decreasing).
    sleep(seconds) -> None
        Wait ``seconds`` (>= 0).
    """

    def now(self) -> float:
        """Current time in seconds."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` seconds."""
        ...


class RealClock:
    """Wall-clock time: :func:`time.monotonic` and :func:`time.sleep`."""

    def now(self) -> float:
        """Seconds since an arbitrary origin (``time.monotonic``)."""
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        """Block the calling thread for ``seconds`` seconds.

        Raises
        ------
        DataError
            For a negative or non-finite time.
        """
        time.sleep(_check_seconds(seconds))

    def __repr__(self) -> str:
        return "RealClock()"


class VirtualClock:
    """Simulated time: starts at ``start_s`` and :meth:`sleep` advances it instantly.

    Thread-safe: concurrent sleeps add up (the clock models one timeline).

    Parameters
    ----------
    start_s : float
        Initial time in seconds (default 0).
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._t = _check_seconds(start_s)
        self._lock = threading.Lock()

    def now(self) -> float:
        """Current simulated time in seconds."""
        with self._lock:
            return self._t

    def sleep(self, seconds: float) -> None:
        """Advance the clock by ``seconds`` (returns at once).

        Raises
        ------
        DataError
            For a negative or non-finite time.
        """
        step = _check_seconds(seconds)
        with self._lock:
            self._t += step

    def advance_to(self, t_s: float) -> None:
        """Advance the clock to ``t_s`` if that is later than now (never goes back)."""
        target = float(t_s)
        if not math.isfinite(target):
            raise DataError(f"cannot advance to {t_s!r} s", field="t_s")
        with self._lock:
            self._t = max(self._t, target)

    def __repr__(self) -> str:
        return f"VirtualClock(now={self.now():.6f} s)"
