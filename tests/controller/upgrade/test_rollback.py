"""A host whose agent stops answering in the middle of an upgrade, on a real
SQLite store, an injected clock and the scripted agent double: its reimage
and its rollback are retried up to a deadline, never forever; past it the
batch ends (rule 5 applies), the instance is marked NeedsAttention, and once
the host answers the decided rollback is carried out exactly once."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.images.catalog import Catalog
from controller.model.upgradepolicy import RollingPolicy as Policy
from controller.service.controller import Controller, Settings
from controller.store.facade import ImageRecord, InstanceRecord, Store, UpgradeRecord, instance_name
from controller.store.states import ProvisioningState, StartedBy
from controller.upgrade.orchestrator import Orchestrator
from hostagent.contract import instancespec, operations
from hostagent.contract.client import AgentError
from kvmss.base.clock import FakeClock
from tests.controller.agentdouble import AgentDouble
from tests.controller.controllerenv import host_view

SET = "web"
HOST = "host0"
NAME = instance_name(SET, "0")
TIMEOUT = 300.0
POLICY = Policy(health_timeout_seconds=TIMEOUT)


def image(version: str) -> ImageRecord:
    return ImageRecord("p", "o", "s", version, "a" * 64, 1, 1, Path("/x"), 0.0)


def spec_of(rec: ImageRecord) -> instancespec.ImageSpec:
    ref = instancespec.ImageReference(
        publisher=rec.publisher, offer=rec.offer, sku=rec.sku, version=rec.version
    )
    return instancespec.ImageSpec(reference=ref, url="http://controller/blob", sha256=rec.sha256)


@dataclass
class World:
    store: Store
    clock: FakeClock
    agents: AgentDouble
    orch: Orchestrator

    def steps(self, n: int, seconds: float = 5.0) -> UpgradeRecord:
        up = None
        for _ in range(n):
            assert self.up is not None
            up = self.orch.step(self.up)
            self.clock.advance(seconds)
        assert up is not None
        return up

    up: str | None = None

    def row(self) -> tuple[str, float | None, str]:
        assert self.up is not None
        u = self.store.upgrade_instances.of(self.up)[0]
        return u.state, u.finished_at, u.reason or ""

    def upgrade(self) -> UpgradeRecord:
        assert self.up is not None
        up = self.store.upgrades.get(self.up)
        assert up is not None
        return up

    def instance(self) -> InstanceRecord:
        inst = self.store.instances.get(SET, "0")
        assert inst is not None
        return inst


class LosingDouble(AgentDouble):
    """Loses its host the moment a reimage is asked for, when told to; or
    refuses that many reimages with a 503 (the image could not be fetched)."""

    lose_on_reimage = False
    transient_refusals = 0

    def reimage(
        self, host: str, name: str, image: instancespec.ImageSpec, operation_id: str
    ) -> operations.Operation:
        if self.lose_on_reimage:
            self.unreachable_hosts.add(host)
        if self.transient_refusals > 0 and host not in self.unreachable_hosts:
            self.transient_refusals -= 1
            raise AgentError(503, "ImageDownloadFailed", "download failed: ConnectionError")
        return super().reimage(host, name, image, operation_id)


@pytest.fixture
def w(tmp_path: Path) -> Iterator[World]:
    clock = FakeClock()
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    agents = LosingDouble(clock)
    store.scale_sets.put(SET, {"sku": {"capacity": 1}}, None)
    for v in ("1", "2", "3"):
        store.images.add(image(v))
    store.instances.add(InstanceRecord(SET, "0", NAME, HOST, 0, 0, "1", ProvisioningState.RUNNING))
    agents.add(NAME, "1")
    yield World(store, clock, agents, Orchestrator(store, agents, spec_of, clock))
    store.close()


def start(w: World, version: str = "2") -> None:
    w.up = w.orch.start(SET, image(version), POLICY, StartedBy.PLATFORM).id


def assert_given_up(w: World) -> None:
    state, finished, reason = w.row()
    assert state == "RollbackFailed" and finished is None, w.row()
    assert f"not confirmed within {TIMEOUT:g}s" in reason
    assert f"host agent {HOST} unreachable" in reason
    up = w.upgrade()
    assert up.status == "Faulted"
    assert up.error_code == "MaxUnhealthyUpgradedInstancePercentExceeded"
    assert up.rolled_back_failed == 1 and up.rollback_error is not None
    assert w.instance().state == ProvisioningState.NEEDS_ATTENTION


def assert_settled(w: World) -> None:
    state, finished, _ = w.row()
    assert state == "RolledBack" and finished is not None
    up = w.upgrade()
    assert up.status == "Faulted"
    assert (up.rolled_back_ok, up.rolled_back_failed, up.rollback_error) == (1, 0, None)
    assert w.instance().state == "Running"
    assert w.instance().image_version == "1"


def test_lost_during_health_wait_gives_up_then_rolls_back_once_when_back(w: World) -> None:
    start(w)
    w.steps(3)  # reimage done (10 s), waiting for health
    assert w.row()[0] == "WaitingHealth"
    w.agents.unreachable_hosts.add(HOST)
    w.steps(int(TIMEOUT / 5) + 2)
    assert w.row()[0] == "RollingBack"  # decided, the host does not answer
    w.steps(int(TIMEOUT / 5) + 2)
    assert_given_up(w)
    assert not w.orch.settle(w.up or "")  # still gone: nothing to do yet
    assert w.agents.rollbacks == {}

    w.agents.unreachable_hosts.clear()
    w.orch.settle(w.up or "")  # the rollback is sent now ...
    w.clock.advance(15)
    assert w.orch.settle(w.up or "")  # ... and seen done
    assert_settled(w)
    assert w.agents.instances[NAME].version == "1"
    assert (w.agents.reimages, w.agents.rollbacks) == ({NAME: 1}, {NAME: 1})


def test_rollback_that_reached_the_agent_before_it_was_lost_is_not_sent_twice(
    w: World,
) -> None:
    w.agents.health = lambda _n, version, _a: version == "1"
    start(w)
    w.steps(int(TIMEOUT / 5) + 4)
    assert w.row()[0] == "RollingBack"
    assert len([o for o in w.agents.ops.values() if o.kind == "rollback"]) == 1
    w.agents.unreachable_hosts.add(HOST)  # lost while its rollback runs
    w.steps(int(TIMEOUT / 5) + 2)
    assert_given_up(w)
    w.agents.unreachable_hosts.clear()
    assert w.orch.settle(w.up or "")
    assert_settled(w)
    assert w.agents.rollbacks == {NAME: 1}


def test_lost_during_reimage_is_rolled_back_after_both_deadlines(w: World) -> None:
    start(w)
    w.steps(1)  # the agent took the reimage
    w.agents.unreachable_hosts.add(HOST)
    w.steps(int(TIMEOUT / 5) + 2)
    state, _, reason = w.row()
    assert state == "RollingBack"
    assert f"reimage not confirmed within {TIMEOUT:g}s" in reason
    w.steps(int(TIMEOUT / 5) + 2)
    assert_given_up(w)
    w.agents.unreachable_hosts.clear()
    w.orch.settle(w.up or "")
    w.clock.advance(15)
    assert w.orch.settle(w.up or "")
    assert_settled(w)
    assert (w.agents.reimages, w.agents.rollbacks) == ({NAME: 1}, {NAME: 1})


def test_reimage_that_never_reached_the_agent_needs_no_rollback(w: World) -> None:
    assert isinstance(w.agents, LosingDouble)
    w.agents.lose_on_reimage = True
    start(w)
    w.steps(2 * int(TIMEOUT / 5) + 4)
    assert_given_up(w)
    w.agents.unreachable_hosts.clear()
    assert w.orch.settle(w.up or "")
    state, _, reason = w.row()
    assert state == "RolledBack" and "already on 1; nothing to undo" in reason
    assert w.agents.reimages == {} and w.agents.rollbacks == {}


def test_a_reimage_arriving_after_nothing_was_undone_does_nothing(w: World) -> None:
    """The reimage request was queued, not lost (a SIGSTOPped agent took it
    after it resumed, behind the controller's look): the controller cancels
    it before it decides there is nothing to undo, so it never runs."""
    assert isinstance(w.agents, LosingDouble)
    w.agents.lose_on_reimage = True
    start(w)
    w.steps(2 * int(TIMEOUT / 5) + 4)
    w.agents.unreachable_hosts.clear()
    assert w.orch.settle(w.up or "")
    state, _, reason = w.row()
    assert state == "RolledBack" and "nothing to undo" in reason
    up = w.upgrade()
    reimage_id = f"u{up.id.replace('-', '')[:16]}-0-reimage"
    w.agents.lose_on_reimage = False
    late = w.agents.reimage(HOST, NAME, spec_of(image("2")), reimage_id)
    assert late.status == "Failed" and late.error is not None
    assert late.error.code == "Cancelled"
    w.clock.advance(60)
    view = w.agents.instance(HOST, NAME)
    assert view is not None and view.current.image.version == "1"
    assert w.agents.reimages == {}


@pytest.mark.timeout(60)  # a regression would step forever
def test_run_returns_only_once_the_lost_host_answered_and_was_rolled_back(w: World) -> None:
    start(w)
    w.steps(3)
    w.agents.unreachable_hosts.add(HOST)
    seen_faulted = []

    def should_stop() -> bool:
        if w.upgrade().status == "Faulted":
            seen_faulted.append(w.row()[0])
            w.agents.unreachable_hosts.clear()  # the host comes back after the upgrade ended
        return False

    done = w.orch.run(w.up or "", poll_seconds=5, should_stop=should_stop)
    assert seen_faulted[0] == "RollbackFailed"
    assert done.status == "Faulted" and done.rolled_back_ok == 1
    assert_settled(w)


def test_new_upgrade_takes_over_an_instance_whose_host_is_still_gone(w: World) -> None:
    start(w)
    w.steps(3)
    w.agents.unreachable_hosts.add(HOST)
    w.steps(2 * int(TIMEOUT / 5) + 4)
    assert_given_up(w)
    first = w.up or ""
    w.up = w.orch.start(SET, image("3"), POLICY, StartedBy.PLATFORM).id
    old = w.store.upgrade_instances.of(first)[0]
    assert old.state == "RollbackFailed" and old.finished_at is not None
    assert "superseded by upgrade " + w.up in (old.reason or "")
    assert w.orch.settle(first)  # nothing left for the first upgrade's run to do
    w.agents.unreachable_hosts.clear()
    done = w.orch.run(w.up, poll_seconds=5)
    assert done.status == "Completed"
    assert w.agents.instances[NAME].version == "3"
    assert w.agents.rollbacks == {}  # the late rollback never undid the new upgrade


@pytest.mark.parametrize(("refusals", "state"), [(3, "Succeeded"), (1000, "Failed")])
def test_reimage_refused_for_now_is_asked_again_until_the_deadline(
    w: World, refusals: int, state: str
) -> None:
    # what a controller restarted mid-upgrade met: the agent could not fetch
    # the image from it yet (503), a few seconds before it served again
    assert isinstance(w.agents, LosingDouble)
    w.agents.transient_refusals = refusals
    start(w)
    done = w.orch.run(w.up or "", poll_seconds=5)
    assert w.row()[0] == state, w.row()
    if state == "Succeeded":
        assert done.status == "Completed" and w.agents.reimages == {NAME: 1}
    else:
        assert "reimage refused: ImageDownloadFailed" in w.row()[2]
        assert w.clock.now() - (w.upgrade().start_time) >= TIMEOUT


def test_a_restarted_controller_settles_what_an_ended_upgrade_left(
    w: World, tmp_path: Path
) -> None:
    """The upgrade ended (Faulted) with its rollback unconfirmed, then the
    controller restarted: resume() carries the rollback out once the host
    answers, with no new upgrade needed to trigger it."""
    start(w)
    w.steps(3)
    w.agents.unreachable_hosts.add(HOST)
    w.steps(2 * int(TIMEOUT / 5) + 4)
    assert_given_up(w)
    w.agents.unreachable_hosts.clear()
    ctl = Controller(
        w.store,
        Catalog(w.store, tmp_path / "blobs", w.clock),
        w.agents,
        w.clock,
        Settings("http://127.0.0.1:1", b"s" * 32, poll_seconds=0.01),
        probe_host=host_view,
    )
    try:
        ctl.resume()
        ctl.wait_idle(30)
    finally:
        ctl.close()
    assert_settled(w)
    assert w.agents.rollbacks == {NAME: 1}
