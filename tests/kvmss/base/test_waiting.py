"""kvmss.base.waiting: tries on the injected clock, the last one at the deadline."""

from __future__ import annotations

from kvmss.base.clock import FakeClock
from kvmss.base.waiting import wait_for, wait_until


def test_returns_the_first_answer_and_stops_trying() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def attempt() -> str | None:
        calls.append(clock.monotonic())
        return "up" if len(calls) == 3 else None

    assert wait_for(clock, attempt, timeout=60, interval=2) == "up"
    assert calls == [0.0, 2.0, 4.0]


def test_gives_up_at_the_deadline_after_a_last_try_there() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def attempt() -> None:
        calls.append(clock.monotonic())

    assert wait_for(clock, attempt, timeout=5, interval=2) is None
    assert calls == [0.0, 2.0, 4.0, 5.0]
    assert clock.monotonic() == 5.0


def test_a_falsy_answer_other_than_none_is_an_answer() -> None:
    assert wait_for(FakeClock(), lambda: 0, timeout=1, interval=1) == 0


def test_stop_ends_the_wait_without_an_answer() -> None:
    clock = FakeClock()
    tries = 0

    def attempt() -> None:
        nonlocal tries
        tries += 1

    assert wait_for(clock, attempt, timeout=600, interval=1, stop=lambda: tries >= 2) is None
    assert tries == 2
    assert clock.monotonic() == 1.0


def test_wait_until_a_condition() -> None:
    clock = FakeClock()
    assert wait_until(clock, lambda: clock.monotonic() >= 3, timeout=10, interval=1)
    assert clock.monotonic() == 3.0
    assert not wait_until(clock, lambda: False, timeout=2, interval=1)
    assert clock.monotonic() == 5.0
