"""kvmss.lab.view: what ``kvmss lab up`` shows while it waits, driven by
scripted API answers on a FakeClock."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from kvmss.base.clock import FakeClock
from kvmss.client.screen import Screen
from kvmss.lab.state import LabError
from kvmss.lab.view import (
    HEARTBEAT,
    follow_upgrade,
    upgrade_frame,
    vm_changes,
    wait_healthy,
)
from tests.kvmss.client.upgradestatus import T0, decision, status


def vm(iid: str, health: str = "Healthy", version: str = "1", **kw: Any) -> dict[str, Any]:
    return {
        "instanceId": iid,
        "name": f"demo-{iid}",
        "host": f"host{int(iid) % 2 + 1}",
        "imageVersion": version,
        "powerState": "running",
        "health": health,
        "healthReasons": kw.get("reasons", []),
    }


def script(answers: Sequence[Any]) -> Callable[[], Any]:
    """Each call answers the next item; the last one repeats."""
    items = list(answers)
    calls = [0]

    def fetch() -> Any:
        item = items[min(calls[0], len(items) - 1)]
        calls[0] += 1
        return item

    return fetch


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- waiting for healthy instances -----------------------------------------------


def test_wait_healthy_says_a_line_per_instance_as_it_turns_healthy() -> None:
    out = io.StringIO()
    fetch = script(
        [
            {"value": [vm("0", "Unknown")]},
            {"value": [vm("0", "Unhealthy"), vm("1", "Unknown")]},
            {"value": [vm("0"), vm("1", "Unhealthy", reasons=["Http probe is failing"])]},
            {"value": [vm("1"), vm("0")]},
        ]
    )
    clock = FakeClock()
    vms = wait_healthy(fetch, 2, Screen(out), clock, timeout=60)
    assert [v["instanceId"] for v in vms] == ["0", "1"]
    lines = out.getvalue().splitlines()
    assert lines == [
        "  instance 0 (demo-0) on host1: Healthy, image version 1, running  [0:00:02]",
        "  instance 1 (demo-1) on host2: Healthy, image version 1, running  [0:00:03]",
    ]
    assert clock.monotonic() == 3.0  # one poll a second


def test_wait_healthy_needs_exactly_the_count() -> None:
    fetch = script([{"value": [vm("0")]}, {"value": [vm("0"), vm("1")]}])
    clock = FakeClock()
    wait_healthy(fetch, 2, Screen(io.StringIO()), clock, timeout=60)
    assert clock.monotonic() == 1.0


def test_wait_healthy_times_out_naming_the_sick_instances() -> None:
    fetch = script([{"value": [vm("0"), vm("1", "Unhealthy", reasons=["probe failing"])]}])
    out = io.StringIO()
    with pytest.raises(LabError) as e:
        wait_healthy(fetch, 2, Screen(out), FakeClock(), timeout=40)
    assert "1 of 2 instances healthy after 40s" in str(e.value)
    assert "instance 1 (demo-1) on host2: Unhealthy (probe failing)" in str(e.value)
    # off a terminal, a heartbeat line says it is still waiting
    assert f"waiting: 1/2 healthy (0:00:{int(HEARTBEAT):02d})" in out.getvalue()


def test_wait_healthy_draws_a_table_on_a_terminal() -> None:
    out = Tty()
    fetch = script([{"value": [vm("0", "Unknown")]}, {"value": [vm("0")]}])
    wait_healthy(fetch, 1, Screen(out, width=200), FakeClock(), timeout=60)
    text = out.getvalue()
    assert "waiting for 1 healthy instances: 0/1  [--------------------]  0:00:00" in text
    assert "INSTANCE  HOST   VERSION  POWER    HEALTH" in text
    assert text.endswith("\x1b[J")  # the live area is cleared at the end


# --- following the upgrade ------------------------------------------------------------


def upgrade(code: str, states: dict[str, str], **kw: Any) -> dict[str, Any]:
    doc = status(code, states=states, batches=(("0",), ("1",)), **kw)
    doc["kvmss"]["startedBy"] = "Platform"
    doc["kvmss"]["currentBatch"] = 1 if states.get("0") == "Succeeded" else 0
    return doc


def test_upgrade_frame_shows_batches_states_health_bar_and_elapsed() -> None:
    cur = upgrade(
        "RollingForward",
        {"0": "Succeeded", "1": "WaitingHealth"},
        reasons={"1": "reimaged; waiting"},
        decisions=[decision(T0 + 5, "1", "WaitingHealth", "reimaged; waiting")],
    )
    vms = [vm("0", version="2"), vm("1", "Unhealthy", version="2", reasons=["probe failing"])]
    frame = upgrade_frame(cur, vms, T0 + 42)
    assert (
        frame[0] == "rolling upgrade 0f3c2a9e to kvmss:tiny:1:2.0.0, started by Platform: 2 batches"
    )
    assert frame[1].startswith("RollingForward  0:00:42  [##########----------]  1/2")
    assert frame[2] == "batch 2/2: 1 WaitingHealth (reimaged; waiting)"
    assert frame[3].split() == [
        "INSTANCE",
        "HOST",
        "BATCH",
        "UPGRADE",
        "VERSION",
        "POWER",
        "HEALTH",
    ]
    assert frame[5].split() == ["0", "host1", "1", "Succeeded", "2", "running", "Healthy"]
    assert frame[6].split()[:6] == ["1", "host2", "2", "WaitingHealth", "2", "running"]
    assert frame[6].endswith("Unhealthy (probe failing)")
    assert frame[-1].endswith("[1] WaitingHealth: reimaged; waiting")


def test_upgrade_frame_fits_a_short_terminal() -> None:
    cur = status("RollingForward", batches=[[str(i)] for i in range(30)])
    frame = upgrade_frame(cur, [vm(str(i)) for i in range(30)], T0, max_rows=12)
    assert len(frame) == 12
    assert frame[-1] == "... 24 more instances"  # 6 of 30 rows shown


def test_follow_upgrade_redraws_every_second_on_a_terminal_until_it_ends() -> None:
    out = Tty()
    statuses = [upgrade("RollingForward", {"0": "Reimaging"})] * 5 + [
        upgrade("Completed", {"0": "Succeeded", "1": "Succeeded"}, last_action_time=T0 + 5)
    ]
    clock = FakeClock()
    final = follow_upgrade(
        script(statuses), script([{"value": [vm("0"), vm("1")]}]), Screen(out, width=200), clock,
        timeout=600,
    )  # fmt: skip
    assert final["properties"]["runningStatus"]["code"] == "Completed"
    text = out.getvalue()
    for second in range(5):
        assert f"RollingForward  0:00:{second:02d}" in text
    last_frame = text.rpartition("\x1b[J")[2].splitlines()
    assert last_frame[1].startswith("Completed  0:00:05  [####################]  2/2")
    assert clock.monotonic() == 5.0


def test_follow_upgrade_off_a_terminal_prints_changes_and_a_heartbeat() -> None:
    out = io.StringIO()
    running = upgrade("RollingForward", {"0": "WaitingHealth"})
    statuses = [running] * 40 + [upgrade("Completed", {"0": "Succeeded", "1": "Succeeded"})]
    vms = [{"value": [vm("0", "Unhealthy")]}] * 3 + [{"value": [vm("0", version="2")]}]
    follow_upgrade(script(statuses), script(vms), Screen(out), FakeClock(), timeout=600)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("rolling upgrade 0f3c2a9e")
    assert "  instance 0 (demo-0) on host1: Healthy, image version 2, running" in lines
    beats = [x for x in lines if x.startswith("RollingForward  0:00:")]
    assert len(beats) >= 2  # the first picture and at least one heartbeat in 40 s
    assert lines[-1].startswith("batch 2/2") or any(x.startswith("Completed") for x in lines)


def test_follow_upgrade_gives_up_after_its_timeout() -> None:
    fetch = script([upgrade("RollingForward", {})])
    with pytest.raises(LabError, match="still RollingForward after 10s"):
        follow_upgrade(
            fetch, script([{"value": []}]), Screen(io.StringIO()), FakeClock(), timeout=10
        )


def test_vm_changes_name_only_instances_that_changed() -> None:
    before = [vm("0"), vm("1")]
    after = [vm("0"), vm("1", "Unhealthy", version="2")]
    assert vm_changes(None, after) == []
    assert vm_changes(before, after) == [
        "  instance 1 (demo-1) on host2: Unhealthy, image version 2, running"
    ]
