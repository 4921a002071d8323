"""kvmss.client.progress: the live view of a rolling upgrade, line per change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kvmss.base.clock import FakeClock
from kvmss.client.api import ApiError, ControllerUnreachable
from kvmss.client.progress import (
    WatchError,
    changes,
    describe,
    format_elapsed,
    parse_time,
    progress_bar,
    watch,
)
from tests.kvmss.client.upgradestatus import T0, decision, status


def test_progress_bar_fills_by_done_over_total() -> None:
    assert progress_bar(0, 10) == "[" + "-" * 20 + "]"
    assert progress_bar(5, 10) == "[" + "#" * 10 + "-" * 10 + "]"
    assert progress_bar(10, 10) == "[" + "#" * 20 + "]"
    assert progress_bar(1, 3, width=9) == "[###------]"
    assert progress_bar(0, 0) == "[" + "-" * 20 + "]"


def test_elapsed_formats_and_times_parse() -> None:
    assert format_elapsed(None) == "-"
    assert format_elapsed(5.9) == "0:00:05"
    assert format_elapsed(3723) == "1:02:03"
    assert parse_time("2023-11-14T22:13:20.000Z") == T0
    assert parse_time(12.5) == 12.5
    assert parse_time("yesterday") is None
    assert parse_time("2023-11-14T22:13:20") is None  # no zone: not guessed


def test_first_view_is_the_whole_picture_with_the_last_decision() -> None:
    s = status(
        "RollingForward",
        states={"0": "Succeeded", "1": "WaitingHealth"},
        decisions=[
            decision(T0 + 1, "0", "Reimaged", "to 2.0.0"),
            decision(T0 + 9, "1", "Reimaged", "to 2.0.0"),
        ],
    )
    lines = changes(None, s, now=T0 + 42)
    assert lines == [
        "rolling upgrade 0f3c2a9e to kvmss:tiny:1:2.0.0: 2 batches",
        "RollingForward  0:00:42  [#####---------------]  1/4  "
        "succeeded 1, failed 0, in progress 1, pending 2",
        "batch 1/2: 0 Succeeded, 1 WaitingHealth",
        "batch 2/2: 2 Pending, 3 Pending",
        "decision 2023-11-14T22:13:29.000Z [1] Reimaged: to 2.0.0",
    ]
    assert describe(s, now=T0 + 42) == lines


def test_nothing_changed_prints_nothing_even_as_time_passes() -> None:
    s = status("RollingForward", states={"0": "Reimaging"})
    assert changes(s, s, now=T0 + 1) == []
    assert changes(s, status("RollingForward", states={"0": "Reimaging"}), now=T0 + 500) == []


def test_only_the_changed_batch_and_new_decisions_are_printed() -> None:
    d1 = decision(T0 + 1, "0", "Reimaged", "to 2.0.0")
    before = status("RollingForward", states={"0": "WaitingHealth"}, decisions=[d1])
    d2 = decision(T0 + 5, "0", "Healthy", "after 4s")
    d3 = decision(T0 + 6, "1", "Reimaged", "to 2.0.0")
    after = status(
        "RollingForward",
        states={"0": "Succeeded", "1": "Reimaging"},
        decisions=[d1, d2, d3],
    )
    lines = changes(before, after, now=T0 + 7)
    assert lines == [
        "RollingForward  0:00:07  [#####---------------]  1/4  "
        "succeeded 1, failed 0, in progress 1, pending 2",
        "batch 1/2: 0 Succeeded, 1 Reimaging",
        "decision 2023-11-14T22:13:25.000Z [0] Healthy: after 4s",
        "decision 2023-11-14T22:13:26.000Z [1] Reimaged: to 2.0.0",
    ]


def test_a_state_change_inside_a_batch_without_count_change_prints_only_that_batch() -> None:
    before = status("RollingForward", states={"2": "Reimaging"})
    after = status("RollingForward", states={"2": "WaitingHealth"})
    assert changes(before, after, now=T0) == ["batch 2/2: 2 WaitingHealth, 3 Pending"]


def test_faulted_shows_the_reason_and_the_error_once() -> None:
    before = status("RollingForward", states={"0": "WaitingHealth"})
    err = {"code": "MaxUnhealthyUpgradedInstancePercentExceeded", "message": "1 of 1 failed"}
    after = status(
        "Faulted",
        states={"0": "RolledBack"},
        reasons={"0": "not healthy within 5m"},
        error=err,
        last_action_time=T0 + 330,
    )
    lines = changes(before, after, now=T0 + 999)
    assert lines[0].startswith("Faulted  0:05:30  ")  # stops at the last action
    assert "batch 1/2: 0 RolledBack (not healthy within 5m), 1 Pending" in lines
    assert lines[-1] == "error: 1 of 1 failed (MaxUnhealthyUpgradedInstancePercentExceeded)"
    assert changes(after, after, now=T0 + 1000) == []


def test_a_different_upgrade_is_shown_from_scratch() -> None:
    old = status("Completed", states=dict.fromkeys("0123", "Succeeded"), upgrade_id="aaaaaaaa-old")
    new = status("RollingForward", upgrade_id="bbbbbbbb-new")
    lines = changes(old, new, now=T0)
    assert lines[0].startswith("rolling upgrade bbbbbbbb ")
    assert len(lines) == 4


def test_control_characters_from_the_server_do_not_reach_the_terminal() -> None:
    s = status(
        "RollingForward",
        decisions=[decision(T0, "0", "Failed", "boom\x1b[2J\nsecond line")],
    )
    last = describe(s, now=T0)[-1]
    assert "\x1b" not in last and "\n" not in last
    assert last.endswith("boom?[2J second line")


class Script:
    """A fetch function that plays answers (or raises) in order, then repeats the last."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _collect() -> tuple[list[str], Callable[[str], None]]:
    lines: list[str] = []
    return lines, lines.append


def test_watch_polls_every_second_until_completed() -> None:
    clock = FakeClock()
    fetch = Script(
        status("RollingForward"),
        status("RollingForward"),
        status("RollingForward", states={"0": "Succeeded", "1": "Succeeded"}),
        status("Completed", states=dict.fromkeys("0123", "Succeeded")),
    )
    lines, emit = _collect()
    final = watch(fetch, emit, clock)
    assert final["properties"]["runningStatus"]["code"] == "Completed"
    assert fetch.calls == 4
    assert clock.monotonic() == pytest.approx(3.0)  # three one-second sleeps
    assert sum(line.startswith("RollingForward  ") for line in lines) == 2
    assert lines[-2:] == [
        "Completed  0:00:00  [####################]  4/4  "
        "succeeded 4, failed 0, in progress 0, pending 0",
        "batch 2/2: 2 Succeeded, 3 Succeeded",
    ]


@pytest.mark.parametrize("code", ["Faulted", "Cancelled"])
def test_watch_returns_on_faulted_and_cancelled(code: str) -> None:
    clock = FakeClock()
    final = watch(Script(status("RollingForward"), status(code)), lambda _l: None, clock)
    assert final["properties"]["runningStatus"]["code"] == code


def test_watch_rides_out_a_restarting_controller() -> None:
    clock = FakeClock()
    down = ControllerUnreachable("http://c", "connection refused")
    fetch = Script(
        status("RollingForward"),
        down,
        ApiError(503, "Unavailable", "starting"),
        status("Completed", states=dict.fromkeys("0123", "Succeeded")),
    )
    lines, emit = _collect()
    watch(fetch, emit, clock)
    notes = [line for line in lines if line.startswith("controller")]
    assert notes == [
        "controller not answering (cannot reach the controller at http://c: "
        "connection refused); retrying for up to 120s",
        "controller answering again",
    ]


def test_watch_gives_up_after_its_patience() -> None:
    clock = FakeClock()
    down = ControllerUnreachable("http://c", "connection refused")
    fetch = Script(status("RollingForward"), down)
    with pytest.raises(ControllerUnreachable):
        watch(fetch, lambda _l: None, clock, patience=10)
    assert 10 <= clock.monotonic() <= 12


def test_watch_raises_client_errors_at_once() -> None:
    fetch = Script(status("RollingForward"), ApiError(404, "NotFound", "no rolling upgrade"))
    with pytest.raises(ApiError):
        watch(fetch, lambda _l: None, FakeClock())
    assert fetch.calls == 2


def test_watch_raises_at_once_when_the_controller_never_answered() -> None:
    fetch = Script(ControllerUnreachable("http://c", "connection refused"))
    with pytest.raises(ControllerUnreachable):
        watch(fetch, lambda _l: None, FakeClock())
    assert fetch.calls == 1


def test_watch_skips_a_previous_upgrade_until_the_expected_one_shows() -> None:
    old = status("Completed", states=dict.fromkeys("0123", "Succeeded"), upgrade_id="old-1")
    new_done = status("Completed", states=dict.fromkeys("0123", "Succeeded"), upgrade_id="new-2")
    lines, emit = _collect()
    final = watch(Script(old, old, new_done), emit, FakeClock(), expected_upgrade_id="new-2")
    assert final is new_done
    assert lines[0].startswith("rolling upgrade new-2 ")


def test_watch_stops_waiting_for_an_upgrade_that_never_shows() -> None:
    old = status("Completed", upgrade_id="old-1")
    with pytest.raises(WatchError, match="old-1"):
        watch(Script(old), lambda _l: None, FakeClock(), expected_upgrade_id="new", patience=5)


def test_watch_lets_ctrl_c_through() -> None:
    class Interrupting(FakeClock):
        def sleep(self, seconds: float) -> None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        watch(Script(status("RollingForward")), lambda _l: None, Interrupting())


@pytest.fixture(autouse=True)
def _no_real_sleep(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The watcher must only sleep on the injected clock."""
    import time

    def refuse(seconds: float) -> None:
        if seconds > 0.01:
            raise AssertionError(f"real sleep of {seconds}s")

    monkeypatch.setattr(time, "sleep", refuse)
    yield
