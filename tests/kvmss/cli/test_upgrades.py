"""The ``kvmss`` CLI's rolling upgrade commands (start, cancel, get-latest,
--wait, plan) against the recording stand-in of tests.kvmss.cli.test_main."""

from __future__ import annotations

import json

import pytest

from kvmss.base.clock import FakeClock
from tests.kvmss.cli.test_main import (
    FakeController,
    Reply,
    api,
    run,
)
from tests.kvmss.client.upgradestatus import T0, decision, status

__all__ = ["api"]  # the fixture, used by name


LATEST = "/v1/scaleSets/web/rollingUpgrades/latest"
ALL_DONE = dict.fromkeys("0123", "Succeeded")


def test_rolling_upgrade_start_cancel_get_latest(api: FakeController) -> None:
    api.on("POST", "/v1/scaleSets/web/osRollingUpgrade", Reply(202))
    api.on("POST", "/v1/scaleSets/web/rollingUpgrades/cancel", Reply(202))
    api.on("GET", LATEST, Reply(200, status("RollingForward", states={"0": "Reimaging"})))

    r = run(api, "vmss", "rolling-upgrade", "start", "web")
    assert r.exit_code == 0
    assert "rolling-upgrade wait web" in r.stdout
    assert api.requests[-1].method == "POST" and api.requests[-1].body == b""

    r = run(api, "vmss", "rolling-upgrade", "cancel", "web")
    assert r.exit_code == 0
    assert api.requests[-1].path == "/v1/scaleSets/web/rollingUpgrades/cancel"

    r = run(api, "vmss", "rolling-upgrade", "get-latest", "web", clock=FakeClock(T0 + 65))
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[1].startswith("RollingForward  0:01:05  [")
    assert "batch 1/2: 0 Reimaging, 1 Pending" in lines


def test_start_wait_follows_to_completed_and_exits_0(api: FakeController) -> None:
    first = status("RollingForward", states={"0": "Reimaging"})
    api.on("POST", "/v1/scaleSets/web/osRollingUpgrade", Reply(202, first))
    api.on(
        "GET",
        LATEST,
        Reply(200, first),
        Reply(200, first),
        Reply(200, status("RollingForward", states={"0": "Succeeded", "1": "Succeeded"})),
        Reply(200, status("RollingForward", states={"0": "Succeeded", "1": "Succeeded"})),
        Reply(200, status("Completed", states=ALL_DONE, last_action_time=T0 + 4)),
    )
    clock = FakeClock()
    r = run(api, "vmss", "rolling-upgrade", "start", "web", "--wait", clock=clock)
    assert r.exit_code == 0, r.output
    assert clock.monotonic() == pytest.approx(4.0)  # polled once a second, never really slept
    assert sum(q.path == LATEST for q in api.requests) == 5
    out = r.stdout.splitlines()
    assert out[0] == "rolling upgrade 0f3c2a9e to kvmss:tiny:1:2.0.0: 2 batches"
    assert sum(line.startswith("RollingForward ") for line in out) == 2  # only on change
    assert "Completed  0:00:04  [####################]  4/4" in r.stdout
    assert len(out) == len(set(out))  # nothing reprinted


def test_wait_exits_1_on_faulted_with_the_error(api: FakeController) -> None:
    api.on(
        "GET",
        LATEST,
        Reply(200, status("RollingForward", states={"0": "WaitingHealth"})),
        Reply(
            200,
            status(
                "Faulted",
                states={"0": "RolledBack"},
                reasons={"0": "not healthy within 5m"},
                error={"code": "UpgradeFaulted", "message": "1 of 1 upgraded instances failed"},
                decisions=[decision(T0 + 300, "0", "RolledBack", "not healthy within 5m")],
            ),
        ),
    )
    r = run(api, "vmss", "rolling-upgrade", "wait", "web")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines() == [
        "kvmss: rolling upgrade of web Faulted: 1 of 1 upgraded instances failed (UpgradeFaulted)"
    ]
    assert "batch 1/2: 0 RolledBack (not healthy within 5m), 1 Pending" in r.stdout


def test_wait_exits_1_on_cancelled(api: FakeController) -> None:
    api.on("GET", LATEST, Reply(200, status("Cancelled", states={"0": "Succeeded"})))
    r = run(api, "vmss", "rolling-upgrade", "wait", "web")
    assert r.exit_code == 1
    assert r.stderr.strip() == "kvmss: rolling upgrade of web Cancelled"


def test_wait_as_json_prints_only_the_final_status_on_stdout(api: FakeController) -> None:
    done = status("Completed", states=ALL_DONE)
    api.on("GET", LATEST, Reply(200, status("RollingForward")), Reply(200, done))
    r = run(api, "-o", "json", "vmss", "rolling-upgrade", "wait", "web")
    assert r.exit_code == 0
    assert json.loads(r.stdout) == done
    assert "RollingForward" in r.stderr


def test_ctrl_c_leaves_the_upgrade_running_and_exits_130(api: FakeController) -> None:
    class CtrlC(FakeClock):
        def sleep(self, seconds: float) -> None:
            raise KeyboardInterrupt

    api.on("GET", LATEST, Reply(200, status("RollingForward")))
    r = run(api, "vmss", "rolling-upgrade", "wait", "web", clock=CtrlC())
    assert r.exit_code == 130
    assert "keeps running" in r.stderr
    assert not any(q.path.endswith("/cancel") for q in api.requests)
