"""The scale sets repository: generations and compare-and-swap."""

from __future__ import annotations

import threading

import pytest

from controller.store.facade import (
    Conflict,
    NotFound,
    Store,
)
from kvmss.base.clock import FakeClock
from tests.controller.store.builders import an_instance, an_upgrade


def test_scale_set_generations_and_cas(store: Store, clock: FakeClock) -> None:
    assert store.scale_sets.put("web", {"v": 1}, None) == 1
    created = clock.now()
    clock.advance(10)
    assert store.scale_sets.put("web", {"v": 2}, None) == 2
    assert store.scale_sets.put("web", {"v": 3}, expected_generation=2) == 3
    with pytest.raises(Conflict, match="scale set 'web': generation is 3, expected 2"):
        store.scale_sets.put("web", {"v": 4}, expected_generation=2)
    with pytest.raises(Conflict, match="generation is 3"):
        store.scale_sets.put("web", {"v": 4}, expected_generation=0)
    got = store.scale_sets.get("web")
    assert got is not None
    assert (got.body, got.generation) == ({"v": 3}, 3)
    assert got.created_at == created
    assert got.updated_at == created + 10
    # 0 = create only; n > 0 on a missing scale set is NotFound.
    assert store.scale_sets.put("api", {"v": 1}, expected_generation=0) == 1
    with pytest.raises(NotFound, match="scale set 'db'"):
        store.scale_sets.put("db", {"v": 1}, expected_generation=4)
    assert store.scale_sets.get("db") is None
    assert [s.name for s in store.scale_sets.all()] == ["api", "web"]


def test_scale_set_body_stays_out_of_repr(store: Store) -> None:
    store.scale_sets.put("web", {"osProfile": {"customData": "cGFzc3dvcmQ="}}, None)
    got = store.scale_sets.get("web")
    assert got is not None
    assert got.body["osProfile"]["customData"] == "cGFzc3dvcmQ="
    assert "cGFzc3dvcmQ=" not in repr(got)


def test_scale_set_cas_loses_no_update_under_threads(store: Store) -> None:
    store.scale_sets.put("web", {"n": 0}, None)
    per_thread = 15

    def bump() -> None:
        done = 0
        while done < per_thread:
            cur = store.scale_sets.get("web")
            assert cur is not None
            try:
                store.scale_sets.put("web", {"n": cur.body["n"] + 1}, cur.generation)
            except Conflict:
                continue
            done += 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = store.scale_sets.get("web")
    assert got is not None
    assert got.body == {"n": 4 * per_thread}
    assert got.generation == 4 * per_thread + 1


def test_delete_scale_set(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    store.instances.add(an_instance("web", "0"))
    up = an_upgrade("web", clock.now())
    store.upgrades.create(up)
    store.decisions.log(up.id, clock.now(), None, "start", "started")
    with pytest.raises(Conflict, match="scale set 'web': still has 1 instances"):
        store.scale_sets.delete("web")
    store.instances.delete("web", "0")
    with pytest.raises(Conflict, match="generation is 1, expected 7"):
        store.scale_sets.delete("web", expected_generation=7)
    store.scale_sets.delete("web", expected_generation=1)
    assert store.scale_sets.get("web") is None
    # Its upgrades and their logs went with it (foreign keys are on).
    assert store.upgrades.get(up.id) is None
    assert store.decisions.of(up.id) == []
    with pytest.raises(NotFound):
        store.scale_sets.delete("web")
