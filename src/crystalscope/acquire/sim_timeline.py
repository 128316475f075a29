"""Time-dependent state of the simulated microscope: goniometer moves and lens settling.

Both are pure functions of clock time, so a camera exposure ``[t0, t1]`` can ask where
the stage was and how far the lens had settled at any moment inside it, without
threads.

Stage
-----
Every axis moves at constant speed from where it is to its target, without
acceleration: translations at ``translation_speed_um_per_s``, alpha and beta at the
current rotation speed.  The angle during a rotation started at ``t_s`` is therefore
``alpha(t) = alpha_s + sign * speed * (t - t_s)`` until the target is reached.
A stop freezes the axis where it is.  An injected fault (``fail_at_deg``) stops the
goniometer when alpha passes that angle: every axis freezes at the moment ``t_f`` the
angle is reached and every stage call from ``t_f`` on raises
:class:`~crystalscope.acquire.interfaces.StageError` until :meth:`StageModel.clear_fault`.

Lens
----
After the diffraction focus is changed by ``step`` lens units at ``t_c`` the effective
value relaxes exponentially to the new value,
``f(t) = f_new + (f(t_c) - f_new) exp(-(t - t_c) / tau)``, with ``tau = T / ln|step|``,
so that the remaining error is one lens unit after the settling time
``T = lens_settling_s * max(1, |step| / defocus_offset)`` (300-400 ms in seed 001,
longer for larger defocus steps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from crystalscope.acquire.config import StageLimits
from crystalscope.acquire.interfaces import StageError, StagePosition

__all__ = ["AXES", "LensModel", "StageModel"]

#: Stage axes, in :class:`~crystalscope.acquire.interfaces.StagePosition` order.
AXES = ("x_um", "y_um", "z_um", "alpha_deg", "beta_deg")
_HISTORY = 256  # moves kept per axis


@dataclass(frozen=True)
class _Move:
    """Constant-speed move of one axis from ``start`` (at ``t0``) to ``target``."""

    t0: float
    start: float
    target: float
    speed: float

    @property
    def end(self) -> float:
        return self.t0 + abs(self.target - self.start) / self.speed

    def value(self, t: float) -> float:
        if t <= self.t0:
            return self.start
        travel = self.speed * (t - self.t0)
        if travel >= abs(self.target - self.start):
            return self.target
        return self.start + math.copysign(travel, self.target - self.start)


class StageModel:
    """Goniometer trajectory: per-axis move history, limits and injected faults.

    Parameters
    ----------
    limits : StageLimits
        Travel of each axis.
    translation_speed_um_per_s : float
        Speed of x, y, z moves.
    start : StagePosition
        Position at time ``t_start``.
    t_start : float
        Clock time of ``start``.
    fail_at_deg : float, optional
        Inject a stage stop when alpha passes this angle.
    """

    def __init__(
        self,
        limits: StageLimits,
        translation_speed_um_per_s: float,
        start: StagePosition,
        t_start: float = 0.0,
        fail_at_deg: float | None = None,
    ) -> None:
        self.limits = limits
        self.translation_speed = float(translation_speed_um_per_s)
        self.fail_at_deg = fail_at_deg
        values = start.as_dict()
        self._moves: dict[str, list[_Move]] = {
            a: [_Move(t_start, values[a], values[a], 1.0)] for a in AXES
        }
        self.fault_time: float | None = None
        self.fault_alpha: float | None = None

    # ------------------------------------------------------------------ queries

    def _current(self, axis: str, t: float) -> _Move:
        moves = self._moves[axis]
        for move in reversed(moves):
            if move.t0 <= t:
                return move
        return moves[0]

    def _frozen_time(self, t: float) -> float:
        return t if self.fault_time is None else min(t, self.fault_time)

    def value(self, axis: str, t: float) -> float:
        """Value of one axis at time ``t``."""
        tt = self._frozen_time(t)
        return self._current(axis, tt).value(tt)

    def position(self, t: float) -> StagePosition:
        """Stage position at time ``t``."""
        return StagePosition(*(self.value(a, t) for a in AXES))

    def end_time(self, t: float) -> float:
        """When the moves under way at ``t`` end (``t`` when none is)."""
        if self.fault_time is not None and self.fault_time <= t:
            return t
        ends = [self._current(a, t).end for a in AXES]
        if self.fault_time is not None:
            ends = [min(e, self.fault_time) for e in ends]
        return max([t, *ends])

    def is_moving(self, t: float) -> bool:
        """Whether an axis moves at time ``t``."""
        return self.end_time(t) > t

    def breakpoints(self, t0: float, t1: float) -> list[float]:
        """Times in ``(t0, t1)`` where an axis starts, stops or changes speed."""
        times = set()
        for axis in AXES:
            for move in self._moves[axis]:
                for t in (move.t0, move.end):
                    if t0 < t < t1:
                        times.add(t)
        if self.fault_time is not None and t0 < self.fault_time < t1:
            times.add(self.fault_time)
        return sorted(times)

    # ------------------------------------------------------------------ faults

    def check(self, t: float) -> None:
        """Raise :class:`StageError` if the stage has faulted by time ``t``."""
        if self.fault_time is not None and t >= self.fault_time:
            self.fail_at_deg = None
            raise StageError(
                f"the goniometer stopped at alpha = {self.fault_alpha:.3f} deg "
                f"(t = {self.fault_time:.3f} s)",
                field="alpha_deg",
            )

    def clear_fault(self, t: float) -> None:
        """Recover from a fault: the axes stay where they stopped."""
        if self.fault_time is None:
            return
        frozen = self.position(t).as_dict()
        self.fault_time = self.fault_alpha = None
        for axis in AXES:
            self._push(axis, _Move(t, frozen[axis], frozen[axis], 1.0))

    # ------------------------------------------------------------------ moves

    def _push(self, axis: str, move: _Move) -> None:
        moves = self._moves[axis]
        moves.append(move)
        del moves[:-_HISTORY]

    def move(self, t: float, targets: dict[str, float], rotation_speed: float) -> float:
        """Start moving the axes in ``targets`` at time ``t``; return when they arrive.

        Raises
        ------
        StageError
            A target outside the limits (nothing moves then) or a faulted stage.
        """
        self.check(t)
        for axis, target in targets.items():
            lo, hi = getattr(self.limits, axis)
            if not (math.isfinite(target) and lo <= target <= hi):
                raise StageError(f"target {target} outside the stage range {lo}..{hi}", field=axis)
        for axis, target in targets.items():
            start = self.value(axis, t)
            speed = rotation_speed if axis in ("alpha_deg", "beta_deg") else self.translation_speed
            if axis == "alpha_deg":
                target = self._arm_fault(t, start, target, speed)
            self._push(axis, _Move(t, start, target, speed))
        return self.end_time(t)

    def _arm_fault(self, t: float, start: float, target: float, speed: float) -> float:
        """Truncate an alpha move at the injected fault angle and schedule the fault."""
        self.fault_time = self.fault_alpha = None
        fail = self.fail_at_deg
        if fail is None or not (min(start, target) < fail <= max(start, target)):
            return target
        self.fault_time = t + abs(fail - start) / speed
        self.fault_alpha = fail
        return fail

    def stop(self, t: float, axes: tuple[str, ...] = ("alpha_deg",)) -> None:
        """Freeze ``axes`` at time ``t`` (a fault not yet reached is cancelled)."""
        self.check(t)
        for axis in axes:
            here = self.value(axis, t)
            self._push(axis, _Move(t, here, here, 1.0))
        if "alpha_deg" in axes and self.fault_time is not None and self.fault_time > t:
            self.fault_time = self.fault_alpha = None


@dataclass(frozen=True)
class _Change:
    t: float
    start: float
    target: float
    tau: float


class LensModel:
    """Diffraction-focus lens: the value set and the effective (settling) value.

    Parameters
    ----------
    initial : int
        Lens value at ``t_start`` (settled).
    settling_s : float
        Settling time ``T`` of a step up to ``reference_step``.
    reference_step : float
        Step size (lens units) beyond which settling takes proportionally longer.
    t_start : float
        Clock time of the initial state.
    """

    def __init__(
        self, initial: int, settling_s: float, reference_step: float, t_start: float = 0.0
    ) -> None:
        self.settling_s = float(settling_s)
        self.reference_step = abs(float(reference_step))
        self.value = int(initial)
        self._changes = [_Change(t_start, float(initial), float(initial), 1.0)]

    def settling_time(self, step: float) -> float:
        """Time for a step of ``step`` lens units to settle to within one unit, seconds."""
        return self.settling_s * max(1.0, abs(step) / self.reference_step)

    def set(self, t: float, value: int) -> None:
        """Set the lens to ``value`` at time ``t``."""
        here = self.effective(t)
        step = value - here
        tau = self.settling_time(step) / max(math.log(abs(step)), 1.0) if abs(step) > 1 else 0.0
        self._changes.append(_Change(t, here, float(value), tau))
        del self._changes[:-_HISTORY]
        self.value = int(value)

    def effective(self, t: float) -> float:
        """Effective lens value at time ``t`` (float)."""
        change = self._changes[0]
        for c in reversed(self._changes):
            if c.t <= t:
                change = c
                break
        if change.tau <= 0.0:
            return change.target
        decay = math.exp(-(t - change.t) / change.tau)
        return change.target + (change.start - change.target) * decay
