"""The scale set models as the API writes them, used by many clients at once
(found with bench/load.py): merge patches applied atomically, no reconcile
for changes that leave the capacity alone, a shown model never an older one."""

from __future__ import annotations

from typing import Any

from controller.store.facade import ScaleSetRecord
from tests.controller.api.test_app import AUTH, Env, body, env

__all__ = ["env"]  # the fixture, used by name


def scale_set(env: Env, capacity: int = 3) -> None:
    env.publish("1")
    r = env.api.post(
        "/v1/hosts", json={"name": "h1", "url": "http://a/h1", "token": "t" * 20}, headers=AUTH
    )
    assert r.status_code == 201, r.text
    assert env.api.put("/v1/scaleSets/web", json=body(capacity), headers=AUTH).status_code == 201
    env.ctl.wait_idle()


def _tags(env: Env) -> dict[str, str]:
    shown = env.api.get("/v1/scaleSets/web", headers=AUTH).json()
    return dict(shown.get("tags", {}))


def test_a_patch_racing_another_keeps_both_changes(env: Env) -> None:
    scale_set(env)
    store = env.ctl.store.scale_sets
    read = store.get
    raced: list[bool] = []

    def read_then_race(name: str) -> ScaleSetRecord | None:
        rec = read(name)
        if not raced:  # another client's patch lands between our read and write
            raced.append(True)
            env.ctl.patch("web", {"tags": {"theirs": "b"}})
        return rec

    store.get = read_then_race  # type: ignore[method-assign]
    try:
        r = env.api.patch("/v1/scaleSets/web", json={"tags": {"ours": "a"}}, headers=AUTH)
    finally:
        store.get = read  # type: ignore[method-assign]
    assert r.status_code == 200, r.text
    assert raced
    assert _tags(env) == {"ours": "a", "theirs": "b"}
    assert r.json()["tags"] == {"ours": "a", "theirs": "b"}


def test_a_tag_does_not_reconcile_a_capacity_change_does(env: Env) -> None:
    scale_set(env)
    reconciled: list[str] = []
    later = env.ctl.reconciler.reconcile_later

    def counted(name: str) -> None:
        reconciled.append(name)
        later(name)

    env.ctl.reconciler.reconcile_later = counted  # type: ignore[method-assign]
    assert env.api.patch("/v1/scaleSets/web", json={"tags": {"a": "b"}}, headers=AUTH).is_success
    assert reconciled == []
    capacity: dict[str, Any] = {"sku": {"capacity": 4}}
    assert env.api.patch("/v1/scaleSets/web", json=capacity, headers=AUTH).is_success
    assert reconciled == ["web"]
    env.ctl.wait_idle()
    vms = env.api.get("/v1/scaleSets/web/virtualMachines", headers=AUTH).json()["value"]
    assert len(vms) == 4


def test_a_scale_set_short_of_its_capacity_is_reconciled_by_any_put(env: Env) -> None:
    scale_set(env, capacity=2)
    env.ctl.store.instances.delete("web", "1")  # e.g. a reconcile that never finished
    assert env.api.patch("/v1/scaleSets/web", json={"tags": {"a": "b"}}, headers=AUTH).is_success
    env.ctl.wait_idle()
    assert len(env.ctl.store.instances.of("web")) == 2


def test_a_shown_model_is_never_an_older_one(env: Env) -> None:
    scale_set(env, capacity=0)
    assert _tags(env) == {}  # generation 1, shown once
    # deleted and made again under the same name: generation 1 again
    assert env.api.delete("/v1/scaleSets/web", headers=AUTH).status_code == 204
    again = body(0)
    again["tags"] = {"b": "2"}
    assert env.api.put("/v1/scaleSets/web", json=again, headers=AUTH).status_code == 201
    assert _tags(env) == {"b": "2"}
    listed = env.api.get("/v1/scaleSets", headers=AUTH).json()["value"]
    assert [s["tags"] for s in listed] == [{"b": "2"}]
    assert env.api.patch("/v1/scaleSets/web", json={"tags": {"a": "1"}}, headers=AUTH).is_success
    assert _tags(env) == {"a": "1", "b": "2"}
