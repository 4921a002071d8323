"""The store's batch writes for scale-outs of hundreds of instances, and the
counts that tell whether a scale set needs reconciling."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.store.facade import AlreadyExists, InstanceRecord, NotFound, Store
from controller.store.states import ProvisioningState
from kvmss.base.clock import FakeClock


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(f"sqlite:///{tmp_path / 'c.db'}", clock=FakeClock())
    s.scale_sets.put("web", {"sku": {"capacity": 3}}, None)
    return s


def inst(
    iid: str, state: ProvisioningState = ProvisioningState.CREATING, scale_set: str = "web"
) -> InstanceRecord:
    return InstanceRecord(scale_set, iid, f"{scale_set}-{iid}", "h1", int(iid) % 5, 0, "1", state)


def test_instances_added_together_are_stored_with_their_time(store: Store) -> None:
    stored = store.instances.add_many([inst("0"), inst("1"), inst("2", ProvisioningState.RUNNING)])
    assert [i.updated_at for i in stored] == [store.clock.now()] * 3
    assert store.instances.of("web") == stored
    assert store.instances.counts("web") == (3, 2)
    assert store.instances.add_many([]) == []


def test_instances_added_together_are_all_or_none(store: Store) -> None:
    store.instances.add_many([inst("1")])
    with pytest.raises(AlreadyExists):
        store.instances.add_many([inst("0"), inst("1")])
    assert [i.instance_id for i in store.instances.of("web")] == ["1"]
    with pytest.raises(NotFound):
        store.instances.add_many([inst("5", scale_set="nope")])
    with pytest.raises(ValueError, match="instance_id"):
        store.instances.add_many([inst("007")])
    assert store.instances.counts("web") == (1, 1)


def test_states_set_together_pass_over_instances_gone(store: Store) -> None:
    store.instances.add_many([inst("0"), inst("1"), inst("2")])
    store.clock.advance(5)  # type: ignore[attr-defined]
    store.instances.set_states(
        "web",
        {
            "0": ProvisioningState.RUNNING,
            "2": ProvisioningState.FAILED,
            "9": ProvisioningState.RUNNING,
        },
    )
    got = {i.instance_id: (i.state, i.updated_at) for i in store.instances.of("web")}
    now = store.clock.now()
    assert got == {"0": ("Running", now), "1": ("Creating", now - 5), "2": ("Failed", now)}
    assert store.instances.counts("web") == (3, 1)
    assert store.instances.counts("nope") == (0, 0)
