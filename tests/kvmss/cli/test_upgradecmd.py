"""The upgrade commands of ``kvmss vmss`` (rolling-upgrade start, cancel,
get-latest, --wait; history, manual-upgrade, reimage, plan) against the
stand-in controller of tests.kvmss.cli.fakecontroller."""

from __future__ import annotations

import json

import pytest

from kvmss.base.clock import FakeClock
from tests.kvmss.cli.fakecontroller import FakeController, Reply, rows, run
from tests.kvmss.client.upgradestatus import T0, decision, status

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


def test_history_table(api: FakeController) -> None:
    entry = {
        "properties": {
            "runningStatus": {
                "code": "Faulted",
                "startTime": "2024-05-01T10:00:00.000Z",
                "endTime": "2024-05-01T10:07:00.000Z",
            },
            "progress": {
                "successfulInstanceCount": 2,
                "failedInstanceCount": 1,
                "inProgressInstanceCount": 0,
                "pendingInstanceCount": 1,
            },
            "error": {"code": "Faulted", "message": "x"},
            "startedBy": "Platform",
            "targetImageReference": {
                "publisher": "kvmss",
                "offer": "tiny",
                "sku": "1",
                "version": "2.0.0",
            },
            "rollbackInfo": {
                "successfullyRolledbackInstanceCount": 1,
                "failedRolledbackInstanceCount": 0,
                "rollbackError": None,
            },
        },
        "type": "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades",
        "location": "local",
    }
    api.on("GET", "/v1/scaleSets/web/osUpgradeHistory", Reply(200, {"value": [entry]}))
    r = run(api, "vmss", "get-os-upgrade-history", "web")
    assert r.exit_code == 0
    table = rows(r.stdout)
    assert table[0] == [
        "START", "END", "CODE", "STARTED BY", "TARGET", "SUCCEEDED", "FAILED", "ROLLED BACK",
    ]  # fmt: skip
    assert table[2] == [
        "2024-05-01T10:00:00.000Z", "2024-05-01T10:07:00.000Z", "Faulted", "Platform",
        "kvmss:tiny:1:2.0.0", "2", "1", "1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("verb", "action"), [("manual-upgrade", "manualUpgrade"), ("reimage", "reimage")]
)
def test_instance_actions_send_the_ids(api: FakeController, verb: str, action: str) -> None:
    api.on("POST", f"/v1/scaleSets/web/{action}", Reply(202))
    r = run(api, "vmss", verb, "web", "--instance-ids", "0", "1", "2")
    assert r.exit_code == 0, r.output
    assert api.only().json() == {"instanceIds": ["0", "1", "2"]}
    assert "0, 1, 2" in r.stdout
    r = run(api, "vmss", verb, "web", "--instance-ids", "3,4", "--instance-ids", "5")
    assert api.requests[-1].json() == {"instanceIds": ["3", "4", "5"]}
    r = run(api, "vmss", verb, "web")
    assert r.exit_code == 2 and "--instance-ids" in r.output


def test_manual_upgrade_sends_update_domains(api: FakeController) -> None:
    api.on("POST", "/v1/scaleSets/web/manualUpgrade", Reply(202))
    r = run(api, "vmss", "manual-upgrade", "web", "--update-domains", "0,2")
    assert r.exit_code == 0, r.output
    assert api.only().json() == {"instanceIds": [], "updateDomains": [0, 2]}
    assert "update domains 0, 2" in r.stdout
    r = run(api, "vmss", "manual-upgrade", "web", "--update-domains", "1", "--instance-ids", "4")
    assert api.requests[-1].json() == {"instanceIds": ["4"], "updateDomains": [1]}
    for bad in ("x", "20"):
        r = run(api, "vmss", "manual-upgrade", "web", "--update-domains", bad)
        assert r.exit_code == 2 and "--update-domains" in r.output
    r = run(api, "vmss", "manual-upgrade", "web")
    assert r.exit_code == 2 and "--update-domains" in r.output
    assert len(api.requests) == 2


def test_plan_prints_batches_in_order(api: FakeController) -> None:
    plan = {
        "targetImageReference": {
            "publisher": "kvmss",
            "offer": "tiny",
            "sku": "1",
            "version": "2.0.0",
        },
        "batchSize": 2,
        "batches": [["3", "0"], ["1", "4"], ["2"]],
    }
    api.on("GET", "/v1/scaleSets/web/rollingUpgrades/plan", Reply(200, plan))
    r = run(api, "vmss", "plan", "web")
    assert r.exit_code == 0
    assert r.stdout.splitlines() == [
        "target kvmss:tiny:1:2.0.0, batch size 2, 3 batches",
        "batch 1: 3, 0",
        "batch 2: 1, 4",
        "batch 3: 2",
    ]
    plan["batches"] = []
    api.on("GET", "/v1/scaleSets/web/rollingUpgrades/plan", Reply(200, plan))
    r = run(api, "vmss", "plan", "web")
    assert r.stdout.strip() == "nothing to upgrade: every instance runs kvmss:tiny:1:2.0.0"
