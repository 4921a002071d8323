"""Injected time.

Everything that waits or times out takes a :class:`Clock`, so a five-minute
health timeout is tested in milliseconds with :class:`FakeClock`.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock time, seconds since the epoch (for timestamps)."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds (for deadlines and intervals)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class FakeClock:
    """A clock that only moves when told to, or when someone sleeps on it.

    ``sleep`` advances time at once (and yields the thread briefly so other
    threads polling the clock make progress), which lets code written against
    real timeouts run its five-minute paths in milliseconds.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._now = start
        self._mono = 0.0

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
            self._mono += seconds

    def sleep(self, seconds: float) -> None:
        self.advance(max(seconds, 0.0))
        time.sleep(0.0005)


def iso8601(epoch: float) -> str:
    """UTC timestamp as Azure prints them: 2024-01-02T03:04:05.678Z."""
    # Round the whole instant to milliseconds first, so x.9996 s carries
    # into the next second instead of printing as x.000 (one second early).
    total_ms = round(epoch * 1000)
    seconds, millis = divmod(total_ms, 1000)
    t = time.gmtime(seconds)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{millis:03d}Z"
