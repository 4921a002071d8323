"""The one way kvmss waits for something: try, and try again on the injected
clock until it gives an answer or the time is up.

Every loop that polls (an agent's operation, a process going away, a guest
powering off, a daemon answering) goes through :func:`wait_for`, so a test
with :class:`~kvmss.base.clock.FakeClock` runs a ten-minute wait at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from kvmss.base.clock import Clock

T = TypeVar("T")


def _never() -> bool:
    return False


def wait_for(
    clock: Clock,
    attempt: Callable[[], T | None],
    *,
    timeout: float,
    interval: float,
    stop: Callable[[], bool] = _never,
) -> T | None:
    """Call ``attempt`` every ``interval`` seconds until it returns something
    other than None, and return that; None once ``timeout`` seconds have
    passed (the last attempt is made at the deadline) or ``stop()`` is true.

    ``attempt`` runs at least once, at once."""
    deadline = clock.monotonic() + timeout
    while True:
        got = attempt()
        if got is not None:
            return got
        left = deadline - clock.monotonic()
        if left <= 0 or stop():
            return None
        clock.sleep(min(interval, left))


def wait_until(
    clock: Clock,
    condition: Callable[[], bool],
    *,
    timeout: float,
    interval: float,
    stop: Callable[[], bool] = _never,
) -> bool:
    """:func:`wait_for` for a condition: True once it holds, False at the deadline."""
    return (
        wait_for(
            clock,
            lambda: True if condition() else None,
            timeout=timeout,
            interval=interval,
            stop=stop,
        )
        is not None
    )
