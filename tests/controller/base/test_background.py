"""The controller's background threads: one per key, and a request made
while one runs is served by running it again."""

from __future__ import annotations

import threading

from controller.base.background import Background


def test_a_key_runs_once_at_a_time() -> None:
    bg = Background()
    release = threading.Event()
    runs: list[str] = []

    def slow() -> None:
        runs.append("slow")
        release.wait(10)

    bg.run("k", slow)
    bg.run("k", lambda: runs.append("second"))  # passed over: "k" still runs
    release.set()
    bg.wait_idle(10)
    bg.run("k", lambda: runs.append("third"))  # "k" ended: runs
    bg.wait_idle(10)
    assert runs == ["slow", "third"]


def test_asked_again_while_running_runs_once_more_after() -> None:
    bg = Background()
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def work() -> None:
        runs.append(len(runs))
        started.set()
        release.wait(10)

    bg.coalesce("k", work)
    assert started.wait(10)
    bg.coalesce("k", work)
    bg.coalesce("k", work)  # two requests while it runs: one more run serves both
    release.set()
    bg.wait_idle(10)
    assert runs == [0, 1]


def test_a_failing_job_frees_its_key_and_close_stops_what_is_asked_again() -> None:
    bg = Background()

    def fail() -> None:
        raise RuntimeError("boom")

    bg.run("k", fail)
    bg.wait_idle(10)
    done = threading.Event()
    bg.run("k", done.set)
    assert done.wait(10)
    bg.close(10)
    assert bg.stopping()
    ran: list[int] = []
    bg.coalesce("c", lambda: ran.append(1))
    bg.wait_idle(10)
    assert ran == []  # stopped: a coalesced job does not start its work
