"""Starting upgrades through the controller (its API, an agent double)."""

from __future__ import annotations

import time
from typing import Any

from tests.controller.api.test_app import AUTH, Env, env
from tests.controller.service.test_scalesets import scale_set

__all__ = ["env"]  # the fixture, used by name


def test_a_second_upgrade_is_refused_before_any_agent_is_asked(env: Env) -> None:
    scale_set(env)
    env.publish("2")  # no automatic upgrades in this model: nothing starts by itself
    env.agents.op_seconds = 3600  # the first upgrade stays in its first batch
    r = env.api.post("/v1/scaleSets/web/osRollingUpgrade", headers=AUTH)
    assert r.status_code == 202, r.text
    up = r.json()["upgradeId"]
    deadline = time.monotonic() + 30
    while not any(u.state == "Reimaging" for u in env.ctl.store.upgrade_instances.of(up)):
        assert time.monotonic() < deadline, "the first upgrade never took an instance"
        time.sleep(0.02)
    # from now on the upgrade only polls its operations
    asked: list[str] = []
    instance = env.agents.instance

    def counted(host: str, name: str) -> Any:
        asked.append(name)
        return instance(host, name)

    env.agents.instance = counted  # type: ignore[method-assign]
    r = env.api.post("/v1/scaleSets/web/osRollingUpgrade", headers=AUTH)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "OperationNotAllowed"
    assert asked == []
    assert env.api.post("/v1/scaleSets/web/rollingUpgrades/cancel", headers=AUTH).status_code == 202
