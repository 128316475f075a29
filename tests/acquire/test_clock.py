"""Clocks: the virtual clock advances only by sleeping; both implement the protocol."""

from __future__ import annotations

import threading

import pytest

from crystalscope.acquire.clock import Clock, RealClock, VirtualClock
from crystalscope.errors import DataError


def test_virtual_clock_starts_at_zero_and_sleep_advances_instantly() -> None:
    clock = VirtualClock()
    assert clock.now() == 0.0
    clock.sleep(120.5)
    clock.sleep(0.0)
    assert clock.now() == pytest.approx(120.5)
    clock.advance_to(100.0)  # never goes back
    assert clock.now() == pytest.approx(120.5)
    clock.advance_to(130.0)
    assert clock.now() == pytest.approx(130.0)
    assert VirtualClock(5.0).now() == 5.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_sleep_rejects_bad_times(bad: float) -> None:
    with pytest.raises(DataError, match="sleep"):
        VirtualClock().sleep(bad)
    with pytest.raises(DataError, match="sleep"):
        RealClock().sleep(bad)


def test_virtual_clock_is_thread_safe() -> None:
    clock = VirtualClock()

    def work() -> None:
        for _ in range(1000):
            clock.sleep(0.001)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clock.now() == pytest.approx(4.0)


def test_real_clock_is_monotonic_and_sleeps() -> None:
    clock = RealClock()
    t0 = clock.now()
    clock.sleep(0.01)
    assert clock.now() - t0 >= 0.009


def test_both_clocks_satisfy_the_protocol() -> None:
    assert isinstance(VirtualClock(), Clock)
    assert isinstance(RealClock(), Clock)
    assert not isinstance(object(), Clock)
