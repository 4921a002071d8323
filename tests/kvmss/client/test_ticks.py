"""kvmss.client.ticks: a beat that keeps going while the data call is slow."""

from __future__ import annotations

import threading
import time

import pytest

from kvmss.base.clock import FakeClock, SystemClock
from kvmss.client.ticks import ticks


def test_beats_go_on_with_the_last_answer_while_a_call_is_slow() -> None:
    release = threading.Event()
    calls = [0]
    in_flight = [0, 0]  # now, most ever
    lock = threading.Lock()

    def fetch() -> int:
        with lock:
            calls[0] += 1
            n = calls[0]
            in_flight[0] += 1
            in_flight[1] = max(in_flight[1], in_flight[0])
        if n == 2:
            release.wait(10)
        with lock:
            in_flight[0] -= 1
        return n

    beats = ticks(fetch, SystemClock(), interval=0.05)
    t0 = time.monotonic()
    seen = [next(beats) for _ in range(4)]
    assert seen == [(1, True), (1, False), (1, False), (1, False)]
    assert time.monotonic() - t0 < 1.0  # not held up by the slow call
    release.set()
    later = [next(beats) for _ in range(3)]
    assert (2, True) in later
    assert in_flight[1] == 1  # never two calls at once


def test_each_beat_is_one_interval_of_the_clock() -> None:
    clock = FakeClock()
    beats = ticks(lambda: "x", clock)
    for i in range(3):
        assert next(beats) == ("x", True)
        assert clock.monotonic() == float(i)


def test_errors_of_the_call_are_raised_by_the_beat() -> None:
    calls = [0]

    def fetch() -> int:
        calls[0] += 1
        if calls[0] > 1:
            raise ConnectionError("gone")
        return 1

    beats = ticks(fetch, FakeClock())
    assert next(beats) == (1, True)
    with pytest.raises(ConnectionError, match="gone"):
        next(beats)
