"""The controller SIGKILLed at each step of a rolling upgrade, then started
again on the same database (docs/design.md rule 10).

A controller process armed with ``KVMSS_CONTROLLER_CRASH_AT=<step>`` sees a
new version published, starts the automatic upgrade and kills itself at that
step. Before restarting it the test reads the database and the agents, to
prove where it died (the decision recorded, the agent asked or not); after,
the upgrade must end as it would have without the crash: Completed with
every instance on the new version, or, for a version that never turns
healthy, Faulted with the instance rolled back. The four forward steps are
crashed in one upgrade (each restart armed with the next, the last with
none) to keep guest time down. Shared checks (tests.faults.flow):
every instance Healthy, none reimaged twice (the agents' operation records),
history counts consistent, out of service <= batch size, lun1 bytes unchanged.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from controller.store.facade import Store, UpgradeInstanceRecord
from tests.faults import evidence
from tests.faults.flow import check_and_record, observed, settled
from tests.faults.lab import HEALTH_TIMEOUT, SHORT_TIMEOUT, FaultLab, shared_lab

pytestmark = pytest.mark.guest


@pytest.fixture
def lab(request: pytest.FixtureRequest) -> FaultLab:
    """The run's shared lab, restored before each scenario."""
    return shared_lab(request)


@contextmanager
def database(lab: FaultLab) -> Iterator[Store]:
    store = Store.open(f"sqlite:///{lab.ctl.root / 'kvmss.db'}")
    try:
        yield store
    finally:
        store.close()


def rows_at_crash(lab: FaultLab) -> list[UpgradeInstanceRecord]:
    """The running upgrade's rows as the killed controller left them."""
    with database(lab) as store:
        (up,) = store.upgrades.all_running()
        return store.upgrade_instances.of(up.id)


def agent_ops(lab: FaultLab, kind: str) -> dict[str, str]:
    """Operation id -> status of every ``kind`` operation the agents know."""
    return {
        k: o.status for a in lab.agents for k, o in evidence.operations(a).items() if o.kind == kind
    }


def crashed_at(lab: FaultLab, step: str) -> str:
    """Check the database and agents show the controller died at ``step``;
    a line for the record."""
    rows = rows_at_crash(lab)
    active = [r for r in rows if r.state not in ("Pending", "Succeeded", "Skipped")]
    assert len(active) == 1, rows
    (r,) = active
    reimages = agent_ops(lab, "reimage")
    if step == "reimage-decided":
        assert r.state == "Reimaging" and r.operation_id not in reimages, (r, reimages)
    elif step == "reimaged":
        assert r.state == "Reimaging" and reimages.get(r.operation_id or "") == "Succeeded"
    elif step == "health-wait":
        assert r.state == "WaitingHealth", r
    elif step == "rollback-decided":
        assert r.state == "RollingBack", r
        assert r.operation_id not in agent_ops(lab, "rollback"), r
    elif step == "committed":
        assert r.state == "WaitingHealth", r
        commit = f"u{r.upgrade_id.replace('-', '')[:16]}-{r.instance_id}-commit"
        assert commit in agent_ops(lab, "commit"), r
    return f"instance {r.instance_id} {r.state} (batch {r.batch})"


# One upgrade to a good version, the controller killed four times on the way
# (restarted after each crash armed with the next point, the last time with
# none): each step's recovery is what the next process starts from.
FORWARD = ["reimage-decided", "reimaged", "health-wait:2", "committed"]


def crash_chain(lab: FaultLab, points: list[str], version: str) -> list[str]:
    """Publish ``version`` with the controller armed with ``points[0]``;
    after each crash check where it died and restart it armed with the next
    point (none after the last). What each crash left, for the record."""
    lab.ctl.stop()
    lab.ctl.start(crash_at=points[0])
    lab.publish(version)
    seen = []
    for k, point in enumerate(points):
        assert lab.ctl.wait_exit(timeout=240) == -signal.SIGKILL, lab.ctl.tail()
        seen.append(f"{point}: {crashed_at(lab, point.split(':')[0])}")
        lab.ctl.start(crash_at=points[k + 1] if k + 1 < len(points) else None)
    return seen


def test_controller_killed_at_every_step_of_an_upgrade_completes_it(lab: FaultLab) -> None:
    scenario = "controller-crash-forward"
    lab.set_health_timeout(HEALTH_TIMEOUT)
    upgrades = len(lab.history())
    with observed(lab, scenario) as run:
        run.notes["health_timeout_s"] = HEALTH_TIMEOUT
        run.notes["at_crash"] = crash_chain(lab, FORWARD, lab.next_version())
        run.notes["controller_restarts"] = len(FORWARD)
        lab.wait_upgrade_started(upgrades + 1)
        latest = settled(lab, timeout=300)
    check_and_record(
        run,
        scenario,
        latest,
        fault="controller SIGKILL at " + ", ".join(FORWARD),
        expect_status="Completed",
        expect_rows={"Succeeded": 3},
    )


def test_controller_killed_after_a_rollback_decision_finishes_the_rollback(
    lab: FaultLab,
) -> None:
    scenario = "controller-crash-rollback-decided"
    lab.set_health_timeout(SHORT_TIMEOUT)  # no new version has to turn healthy in time
    upgrades = len(lab.history())
    with observed(lab, scenario) as run:
        run.notes["health_timeout_s"] = SHORT_TIMEOUT
        run.notes["at_crash"] = crash_chain(
            lab, ["rollback-decided"], lab.next_version(healthy=False)
        )
        run.notes["controller_restarts"] = 1
        lab.wait_upgrade_started(upgrades + 1)
        latest = settled(lab, timeout=300)
    check_and_record(
        run,
        scenario,
        latest,
        fault="controller SIGKILL at rollback-decided (version never healthy)",
        expect_status="Faulted",
        expect_rows={"RolledBack": 1, "Pending": 2},
    )
    decisions = [d["message"] for d in latest["kvmss"]["decisions"]]
    assert any(m.startswith(f"not healthy within {SHORT_TIMEOUT}s") for m in decisions)
    assert any(m == f"rolled back to {lab.version}" for m in decisions), decisions
