"""The frame every fault scenario runs in: snapshot, sample, inject, settle,
then the checks every scenario shares and its record (tests.faults.record).

Shared checks, whatever the fault:
- every instance ends Healthy (so it has a bootable OS disk) on the version
  its upgrade row says: Succeeded -> the target (one generation more),
  RolledBack -> the version it came from (same generation), not taken ->
  unchanged; none left NeedsAttention;
- no instance reimaged twice: at most one reimage operation per instance on
  its agent, exactly one for every instance the upgrade took;
- the history entry's counts match the rows and the instances;
- never more instances out of service than the batch size;
- lun1's guest-visible bytes unchanged;
- the controller's instance listing agrees with the agents soon after.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from controller.upgrade import planner
from tests.faults import evidence
from tests.faults.lab import FaultLab, wait_until
from tests.faults.record import record

# How stale the controller's listing may be after a scenario settled: its
# watcher refreshes every 5 s (controller/views/instances.py).
LISTING_LAG_LIMIT = 30.0


@dataclass
class Run:
    lab: FaultLab
    before: evidence.Snapshot
    sampler: evidence.ServiceSampler
    started: float
    notes: dict[str, Any] = field(default_factory=dict)


@contextmanager
def observed(lab: FaultLab, tag: str) -> Iterator[Run]:
    """Snapshot and start sampling; the body publishes and injects the fault."""
    before = evidence.snapshot(lab.agents, lab.root / "snapshots", f"{tag}-before")
    for n, p in before.lun1.items():
        assert evidence.marked(p), f"{n}: the extension never wrote lun1"
    addresses = {n: v.address for n, v in before.views.items()}
    with evidence.ServiceSampler(addresses) as sampler:
        yield Run(lab, before, sampler, time.monotonic())


def settled(lab: FaultLab, timeout: float) -> dict[str, Any]:
    """Wait until the latest upgrade ended, no rollback is left unconfirmed
    and every instance is healthy; return the latest upgrade."""

    def done() -> bool:
        latest = lab.latest()
        if latest["properties"]["runningStatus"]["code"] == "RollingForward":
            return False
        rows = latest["kvmss"]["instances"]
        if any(r["state"] in ("RollingBack", "RollbackFailed") for r in rows):
            return False
        views = [v for a in lab.agents for v in a.client.instances()]
        if not all(v.health.state == "Healthy" for v in views):
            return False
        # nothing left marked for attention (the store's word, not a cached view)
        return all(vm["provisioningState"] == "Running" for vm in lab.vms())

    wait_until(done, timeout, "the upgrade to end and every instance to be healthy")
    return lab.latest()


def listing_lag(lab: FaultLab, limit: float = 60) -> tuple[float, list[str]]:
    """Seconds until the controller's listing (instance views its watcher
    refreshes) agrees with what the agents say now (``limit`` if it never
    does), and what disagreed last."""
    began = time.monotonic()
    disagreed: list[str] = []

    def agrees() -> bool:
        views = {v.name: v for a in lab.agents for v in a.client.instances()}
        disagreed[:] = [
            f"{vm['name']}: listed {vm['health']} {vm['imageVersion']} ({vm['healthReasons']}),"
            f" agent {views[vm['name']].health.state} {views[vm['name']].current.image.version}"
            for vm in lab.vms()
            if vm["health"] != views[vm["name"]].health.state
            or vm["imageVersion"] != views[vm["name"]].current.image.version
        ]
        return not disagreed

    try:
        wait_until(agrees, limit, "the controller's listing to agree with the agents", 0.5)
    except AssertionError:
        return limit, disagreed
    return round(time.monotonic() - began, 1), disagreed


def check_and_record(
    run: Run,
    scenario: str,
    latest: dict[str, Any],
    *,
    fault: str,
    expect_status: str,
    expect_rows: dict[str, int],
) -> dict[str, Any]:
    """The shared checks; then the scenario's record. ``expect_rows`` counts
    final row states (e.g. {"Succeeded": 3})."""
    lab = run.lab
    duration = time.monotonic() - run.started
    after = evidence.snapshot(lab.agents, lab.root / "snapshots", f"{scenario}-after")
    d = evidence.delta(run.before, after)
    props = latest["properties"]
    status = props["runningStatus"]["code"]
    target = latest["kvmss"]["targetImageReference"]["version"]
    rows = {r["instanceId"]: r for r in latest["kvmss"]["instances"]}
    vms = {v["name"]: v for v in lab.vms()}
    by_id = {v["instanceId"]: n for n, v in vms.items()}
    context = f"{scenario}: {latest['kvmss']['decisions']}"

    assert status == expect_status, context
    counts: dict[str, int] = {}
    for r in rows.values():
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    assert counts == expect_rows, (counts, context)

    for iid, name in by_id.items():
        view = after.views[name]
        was = run.before.views[name].current.image.version
        state = rows[iid]["state"] if iid in rows else "NotPlanned"
        assert view.health.state == "Healthy", (name, view.health, context)
        assert vms[name]["provisioningState"] == "Running", (name, vms[name], context)
        assert d.reimages[name] <= 1, (name, d.reimages, context)
        if state == "Succeeded":
            assert (view.current.image.version, d.generation[name]) == (target, 1), name
            assert d.reimages[name] == 1 and view.previous is None, name
        elif state == "RolledBack":
            assert view.current.image.version == rows[iid]["fromVersion"] == was, name
            assert d.generation[name] == 0, (name, d)
            # rolled back once if it was reimaged, not at all if the reimage never took
            assert d.rollbacks[name] == d.reimages[name], (name, d)
        else:
            assert state in ("Pending", "NotPlanned"), (name, state)
            assert view.current.image.version == was and d.reimages[name] == 0, (name, d)

    progress, rollback = props["progress"], lab.history()[0]["properties"]["rollbackInfo"]
    assert progress["successfulInstanceCount"] == counts.get("Succeeded", 0), progress
    failed = sum(counts.get(s, 0) for s in ("Failed", "RolledBack", "RollbackFailed"))
    assert progress["failedInstanceCount"] == failed, progress
    assert progress["inProgressInstanceCount"] == 0, progress
    assert rollback["successfullyRolledbackInstanceCount"] == counts.get("RolledBack", 0)
    assert rollback["failedRolledbackInstanceCount"] == counts.get("RollbackFailed", 0)

    batch = planner.batch_size(len(vms), 20)
    assert run.sampler.max_down <= batch, (run.sampler.worst, run.sampler.down_seconds)
    assert d.data_bytes_changed == dict.fromkeys(after.views, 0), d.data_bytes_changed
    lag, disagreed = listing_lag(lab)

    figures: dict[str, Any] = {
        "instances": len(vms),
        "fault": fault,
        "outcome": status + (f" ({props['error']['code']})" if props.get("error") else ""),
        "rows": counts,
        "out_of_service_max": run.sampler.max_down,
        "batch_size": batch,
        "out_of_service_seconds": run.sampler.down_seconds,
        "samples": run.sampler.samples,
        "data_disk_bytes_changed": sum(d.data_bytes_changed.values()),
        "reimages": d.reimages,
        "rollbacks": d.rollbacks,
        "duration_s": round(duration, 1),
        "listing_lag_s": lag,
        "target_version": target,
        "final_states": evidence.final_states(after),
        **run.notes,
    }
    record(scenario, **figures)
    if status == "Completed":
        lab.version = target
    # after the record, so the figures are kept when this fails
    assert lag < LISTING_LAG_LIMIT, (
        f"{scenario}: the controller's instance listing disagreed with the agents for"
        f" {lag:g}s (or more) after the scenario settled: {disagreed}"
    )
    return figures
