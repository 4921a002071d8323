"""Removing generations no domain refers to, and a deleted instance's files."""

from __future__ import annotations

from dataclasses import replace

import pytest

from hostagent.lifecycle.journal import Entry
from hostagent.lifecycle.records import meta
from tests.hostagent.lifecycle.test_agent_lifecycle import (
    Env,
    create,
    env,
    name,
)

__all__ = ["env"]  # the fixture, used by name


def _reimaged(env: Env) -> str:
    """An instance on generation 2 whose previous is generation 1."""
    n = name()
    create(env, n)
    env.agent.instances.reimage("op-reimage", n, env.images["2"])
    return n


def test_clean_removes_a_generation_only_once_no_domain_refers_to_it(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = _reimaged(env)
    cleanup, layout, journal = (
        env.agent.instances.cleanup,
        env.agent.layout,
        env.agent.instances.journal,
    )
    m = meta(env.agent.instances.domain(n))
    steps: list[tuple[str, bool]] = []
    record = journal.record

    def recorded(e: Entry) -> Entry:
        steps.append((e.step, layout.os_disk(n, 1).exists()))
        return record(e)

    monkeypatch.setattr(journal, "record", recorded)
    cleanup.clean(Entry("op-1", "commit", n, "swapping"), 1, m)
    assert layout.os_disk(n, 1).exists()  # the domain still refers to it
    cleanup.clean(Entry("op-2", "commit", n, "swapping"), 1, replace(m, previous=None))
    assert not layout.os_disk(n, 1).exists() and not layout.seed(n, 1).exists()
    assert layout.os_disk(n, 2).exists()
    # "cleaning" is recorded before the files go, "done" after
    assert steps == [("cleaning", True), ("done", True), ("cleaning", True), ("done", False)]


def test_clean_forgets_the_reports_of_instance_ids_that_are_gone(env: Env) -> None:
    n = _reimaged(env)
    m = meta(env.agent.instances.domain(n))
    reports = env.agent.reports
    assert m.previous is not None
    assert reports.expected(n, m.previous.instance_id) == ["app", "marker"]
    env.agent.instances.cleanup.clean(
        Entry("op", "commit", n, "swapping"), None, replace(m, previous=None)
    )
    assert reports.expected(n, m.previous.instance_id) is None
    assert reports.expected(n, m.current.instance_id) == ["app", "marker"]


def test_sweep_removes_orphans_unless_an_operation_is_half_done(env: Env) -> None:
    n = name()
    create(env, n)
    layout, cleanup = env.agent.layout, env.agent.instances.cleanup
    orphan = [layout.os_disk(n, 7), layout.seed(n, 7)]
    for p in orphan:
        p.write_bytes(b"left by a crashed reimage")
    env.agent.instances.journal.record(Entry("op", "reimage", n, "preparing"))
    assert cleanup.sweep_orphans(n) == []
    assert all(p.exists() for p in orphan)
    env.agent.instances.journal.clear(n)
    assert cleanup.sweep_orphans(n) == orphan
    assert not any(p.exists() for p in orphan)
    assert layout.os_disk(n, 1).exists()


def test_instance_files_are_removed_but_data_disks_only_when_asked(env: Env) -> None:
    n = name()
    view = create(env, n)
    env.agent.hv.undefine(n)
    layout, cleanup = env.agent.layout, env.agent.instances.cleanup
    data = [layout.data_disk(n, d["lun"]) for d in view["dataDisks"]]
    cleanup.remove_instance_files(n, delete_data_disks=False)
    assert sorted(p.name for p in layout.instance_dir(n).iterdir()) == sorted(p.name for p in data)
    cleanup.remove_instance_files(n, delete_data_disks=True)
    assert not layout.instance_dir(n).exists()
