"""A host agent lost in the middle of a batch, for longer than the health
timeout: SIGKILLed (the host's agent is down; connections are refused) or
SIGSTOPped (the host hangs: connections are accepted, never answered).

The instance in flight counts as unhealthy: its health wait (or its
reimage) runs out, the rollback decided for it cannot be confirmed and is
given up on after the rollback deadline (RollbackFailed, the instance
NeedsAttention), the batch ends and rule 5 stops the upgrade (Faulted) while
the host is still gone. When the agent is back the controller carries out the
rollback it decided, once (same operation id), and the instance ends healthy
on the version it came from. The guests themselves keep running throughout:
only the agent is lost. Shared checks: tests.faults.flow.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from tests.agentproc import AgentProcess
from tests.faults.flow import check_and_record, observed, settled
from tests.faults.lab import SHORT_TIMEOUT, FaultLab, shared_lab, wait_until

pytestmark = pytest.mark.guest


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> FaultLab:
    """The run's shared lab, restored before each scenario."""
    return shared_lab(request)


def first_in_flight(lab: FaultLab, state: str) -> tuple[str, AgentProcess]:
    """Wait for the first batch's instance to reach ``state``; its id and agent."""
    batches: list[list[str]] = lab.latest()["kvmss"]["batches"]
    iid = batches[0][0]
    wait_until(
        lambda: lab.upgrade_rows()[iid]["state"] == state, 120, f"instance {iid} {state}", 0.3
    )
    host = next(v["host"] for v in lab.vms() if v["instanceId"] == iid)
    return iid, lab.agent(host)


def while_lost(lab: FaultLab, iid: str, lost_at: float) -> dict[str, Any]:
    """Wait for the upgrade to stop with the agent still gone; check how."""
    wait_until(
        lambda: lab.latest()["properties"]["runningStatus"]["code"] != "RollingForward",
        8 * SHORT_TIMEOUT,
        "the upgrade to stop without the lost host",
    )
    stopped_after = time.monotonic() - lost_at
    latest = lab.latest()
    props, row = latest["properties"], lab.upgrade_rows()[iid]
    assert props["runningStatus"]["code"] == "Faulted", latest["kvmss"]["decisions"]
    assert props["error"]["code"] == "MaxUnhealthyUpgradedInstancePercentExceeded", props
    assert row["state"] == "RollbackFailed", row
    assert "rollback not confirmed within" in row["reason"], row
    assert "is sent again when it answers" in row["reason"], row
    vm = next(v for v in lab.vms() if v["instanceId"] == iid)
    assert vm["provisioningState"] == "NeedsAttention", vm
    history = lab.history()[0]["properties"]["rollbackInfo"]
    assert history["failedRolledbackInstanceCount"] == 1, history
    assert "not confirmed" in history["rollbackError"]["message"], history
    assert stopped_after > SHORT_TIMEOUT  # lost for longer than the health timeout
    return {"stopped_after_s": round(stopped_after, 1), "row_while_lost": row["reason"]}


@pytest.mark.parametrize(
    ("how", "state"),
    [
        ("sigkill", "WaitingHealth"),
        ("sigstop", "Reimaging"),
    ],
)
def test_agent_lost_mid_batch_stops_the_upgrade_then_rolls_back_once(
    lab: FaultLab, how: str, state: str
) -> None:
    scenario = f"agent-{how}-during-batch"
    lab.set_health_timeout(SHORT_TIMEOUT)  # no new version has to turn healthy in time
    upgrades = len(lab.history())
    with observed(lab, scenario) as run:
        lab.publish(lab.next_version())
        lab.wait_upgrade_started(upgrades + 1)
        iid, agent = first_in_flight(lab, state)
        assert agent.proc is not None
        lost_at = time.monotonic()
        if how == "sigkill":
            agent.kill()
        else:
            agent.proc.send_signal(signal.SIGSTOP)
        try:
            run.notes.update(while_lost(lab, iid, lost_at))
        finally:
            if how == "sigkill":
                agent.start()
            else:
                agent.proc.send_signal(signal.SIGCONT)
        run.notes["outage_s"] = round(time.monotonic() - lost_at, 1)
        back = time.monotonic()
        latest = settled(lab, timeout=300)
        run.notes["settled_after_return_s"] = round(time.monotonic() - back, 1)
        run.notes["health_timeout_s"] = SHORT_TIMEOUT
        run.notes["lost"] = f"{agent.name} ({how}) with instance {iid} {state}"
    check_and_record(
        run,
        scenario,
        latest,
        fault=f"agent {how.upper()} while instance {iid} {state}",
        expect_status="Faulted",
        expect_rows={"RolledBack": 1, "Pending": 2},
    )
