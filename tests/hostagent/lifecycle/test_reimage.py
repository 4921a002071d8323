"""Reimage, rollback and commit called directly (libvirt test:///default)."""

from __future__ import annotations

import pytest

from hostagent.hypervisor.virt import HypervisorError
from hostagent.lifecycle.journal import Entry
from hostagent.lifecycle.operations import OperationFailed
from hostagent.lifecycle.records import Conflict, meta
from tests.hostagent.lifecycle.test_agent_lifecycle import Env, create, env, name

__all__ = ["env"]  # the fixture, used by name


def test_a_guest_that_cannot_be_stopped_keeps_its_old_os_disk(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = name()
    create(env, n)
    reimaging, layout = env.agent.instances.reimaging, env.agent.layout

    def refused(*_a: object) -> bool:
        raise HypervisorError("stopping domain: refused")

    monkeypatch.setattr(reimaging.hv, "stop", refused)
    with pytest.raises(OperationFailed) as e:
        reimaging.reimage("op-reimage", n, env.images["2"])
    assert e.value.code == "StopFailed"
    m = meta(env.agent.instances.domain(n))
    assert (m.current.number, m.previous) == (1, None)
    assert not layout.os_disk(n, 2).exists() and not layout.seed(n, 2).exists()
    assert env.agent.hv.is_running(n)
    assert env.agent.instances.journal.get(n) is None


def test_reimage_rollback_and_commit_move_between_generations(env: Env) -> None:
    n = name()
    create(env, n)
    reimaging, layout = env.agent.instances.reimaging, env.agent.layout
    reimaging.reimage("op-1", n, env.images["2"])
    reimaging.rollback("op-2", n)
    m = meta(env.agent.instances.domain(n))
    assert (m.current.number, m.previous) == (1, None)
    assert not layout.os_disk(n, 2).exists()
    reimaging.reimage("op-3", n, env.images["2"])
    reimaging.commit("op-4", n)
    m = meta(env.agent.instances.domain(n))
    assert (m.current.number, m.previous) == (2, None)  # 2 again: the first one is gone
    assert sorted(p.name for p in layout.instance_dir(n).glob("os-*")) == ["os-2.qcow2"]
    assert env.agent.hv.is_running(n)


def test_a_rollback_to_a_generation_gone_is_a_conflict(env: Env) -> None:
    n = name()
    create(env, n)
    reimaging = env.agent.instances.reimaging
    with pytest.raises(Conflict, match="no previous OS disk"):
        reimaging.rollback("op-1", n)
    entry = env.agent.instances.journal.record(
        Entry("op-2", "rollback", n, "stopping", data={"from": 2, "to": 7})
    )
    with pytest.raises(Conflict, match="no longer has generation 7"):
        reimaging.redo_rollback(entry)
    assert env.agent.instances.journal.get(n) is None
