"""The upgrade instances repository (compare-and-swap on the state)."""

from __future__ import annotations

import pytest

from controller.store.facade import (
    AlreadyExists,
    NotFound,
    Store,
    UpgradeInstanceRecord,
)
from controller.store.states import (
    UpgradeInstanceState,
)
from kvmss.base.clock import FakeClock
from tests.controller.store.builders import an_upgrade


def test_upgrade_instances_and_cas(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    up = an_upgrade("web", clock.now())
    store.upgrades.create(up)
    store.upgrade_instances.add(
        [
            UpgradeInstanceRecord(up.id, "10", batch=1),
            UpgradeInstanceRecord(up.id, "2", batch=0, from_version="1.0.0"),
            UpgradeInstanceRecord(up.id, "1", batch=1),
            UpgradeInstanceRecord(
                up.id, "0", batch=0, state=UpgradeInstanceState.SKIPPED, reason="on target"
            ),
        ]
    )
    got = store.upgrade_instances.of(up.id)
    assert [(r.batch, r.instance_id) for r in got] == [(0, "0"), (0, "2"), (1, "1"), (1, "10")]
    assert got[0].state == "Skipped" and got[0].reason == "on target"
    assert got[1] == UpgradeInstanceRecord(up.id, "2", batch=0, from_version="1.0.0")

    assert store.upgrade_instances.update(
        up.id,
        "2",
        UpgradeInstanceState.PENDING,
        state=UpgradeInstanceState.REIMAGING,
        operation_id="op-1",
        started_at=10.0,
    )
    # A second worker that still thinks it is Pending loses.
    assert not store.upgrade_instances.update(
        up.id, "2", UpgradeInstanceState.PENDING, state=UpgradeInstanceState.REIMAGING
    )
    assert store.upgrade_instances.update(
        up.id,
        "2",
        UpgradeInstanceState.REIMAGING,
        state=UpgradeInstanceState.WAITING_HEALTH,
        deadline=310.0,
    )
    assert store.upgrade_instances.update(up.id, "2", None, reason="no CAS")
    row = next(r for r in store.upgrade_instances.of(up.id) if r.instance_id == "2")
    assert (row.state, row.operation_id, row.started_at, row.deadline, row.reason) == (
        "WaitingHealth",
        "op-1",
        10.0,
        310.0,
        "no CAS",
    )

    with pytest.raises(NotFound, match="instance 99: not found"):
        store.upgrade_instances.update(
            up.id, "99", UpgradeInstanceState.PENDING, state=UpgradeInstanceState.REIMAGING
        )
    with pytest.raises(ValueError, match="state: 'Exploded' is not one of"):
        store.upgrade_instances.update(up.id, "2", None, state="Exploded")
    with pytest.raises(AlreadyExists):
        store.upgrade_instances.add(
            [UpgradeInstanceRecord(up.id, "3", 2), UpgradeInstanceRecord(up.id, "2", 2)]
        )
    # All or none: "3" was not added either.
    assert "3" not in {r.instance_id for r in store.upgrade_instances.of(up.id)}
    with pytest.raises(NotFound, match="upgrade nope: not found"):
        store.upgrade_instances.add([UpgradeInstanceRecord("nope", "0", 0)])
