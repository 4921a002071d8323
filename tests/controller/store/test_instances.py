"""The instances repository."""

from __future__ import annotations

import pytest

from controller.store.facade import (
    AlreadyExists,
    InstanceRecord,
    NotFound,
    Store,
)
from controller.store.states import (
    ProvisioningState,
)
from kvmss.base.clock import FakeClock
from tests.controller.store.builders import an_instance


def test_instance_crud(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    for iid in ("10", "2", "0", "1"):
        stored = store.instances.add(an_instance("web", iid))
        assert stored.updated_at == clock.now()
    assert [i.instance_id for i in store.instances.of("web")] == ["0", "1", "2", "10"]
    assert store.instances.of("other") == []
    with pytest.raises(AlreadyExists, match="instance 'web'/2"):
        store.instances.add(an_instance("web", "2"))
    with pytest.raises(NotFound, match="scale set 'nope'"):
        store.instances.add(an_instance("nope", "0"))
    with pytest.raises(ValueError, match="instance_id: '01'"):
        store.instances.add(an_instance("web", "01"))

    clock.advance(5)
    assert store.instances.update("web", "2", state="Running", image_version="1.1.0")
    got = store.instances.get("web", "2")
    assert got is not None
    assert (got.state, got.image_version, got.updated_at) == ("Running", "1.1.0", clock.now())

    # Compare-and-swap on state.
    assert not store.instances.update("web", "2", expected_state="Creating", state="Failed")
    assert store.instances.update("web", "2", expected_state="Running", state="NeedsAttention")
    got = store.instances.get("web", "2")
    assert got is not None and got.state == "NeedsAttention"
    with pytest.raises(ValueError, match="state: 'Deleting' is not one of"):
        store.instances.update("web", "2", state="Deleting")

    with pytest.raises(NotFound, match="instance 'web'/99: not found"):
        store.instances.update("web", "99", state="Running")
    with pytest.raises(ValueError, match="zone: not an updatable field"):
        store.instances.update("web", "2", zone="other")
    store.instances.delete("web", "2")
    assert store.instances.get("web", "2") is None
    with pytest.raises(NotFound):
        store.instances.delete("web", "2")


# --- batches: scale-outs of hundreds, and the counts that tell whether to reconcile


@pytest.fixture
def web(store: Store) -> Store:
    store.scale_sets.put("web", {"sku": {"capacity": 3}}, None)
    return store


def inst(
    iid: str, state: ProvisioningState = ProvisioningState.CREATING, scale_set: str = "web"
) -> InstanceRecord:
    return InstanceRecord(scale_set, iid, f"{scale_set}-{iid}", "h1", int(iid) % 5, 0, "1", state)


def test_instances_added_together_are_stored_with_their_time(web: Store, clock: FakeClock) -> None:
    stored = web.instances.add_many([inst("0"), inst("1"), inst("2", ProvisioningState.RUNNING)])
    assert [i.updated_at for i in stored] == [web.clock.now()] * 3
    assert web.instances.of("web") == stored
    assert web.instances.counts("web") == (3, 2)
    assert web.instances.add_many([]) == []


def test_instances_added_together_are_all_or_none(web: Store, clock: FakeClock) -> None:
    web.instances.add_many([inst("1")])
    with pytest.raises(AlreadyExists):
        web.instances.add_many([inst("0"), inst("1")])
    assert [i.instance_id for i in web.instances.of("web")] == ["1"]
    with pytest.raises(NotFound):
        web.instances.add_many([inst("5", scale_set="nope")])
    with pytest.raises(ValueError, match="instance_id"):
        web.instances.add_many([inst("007")])
    assert web.instances.counts("web") == (1, 1)


def test_states_set_together_pass_over_instances_gone(web: Store, clock: FakeClock) -> None:
    web.instances.add_many([inst("0"), inst("1"), inst("2")])
    clock.advance(5)
    web.instances.set_states(
        "web",
        {
            "0": ProvisioningState.RUNNING,
            "2": ProvisioningState.FAILED,
            "9": ProvisioningState.RUNNING,
        },
    )
    got = {i.instance_id: (i.state, i.updated_at) for i in web.instances.of("web")}
    now = web.clock.now()
    assert got == {"0": ("Running", now), "1": ("Creating", now - 5), "2": ("Failed", now)}
    assert web.instances.counts("web") == (3, 1)
    assert web.instances.counts("nope") == (0, 0)
