"""The rolling-upgrade rules of docs/design.md, each with its edge, on a real SQLite
store, an injected clock and a scripted agent double."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.fleet import placement
from controller.model.upgradepolicy import RollingPolicy as Policy
from controller.store.facade import Conflict, ImageRecord, InstanceRecord, Store, instance_name
from controller.store.states import ProvisioningState, StartedBy
from controller.upgrade import planner
from controller.upgrade.orchestrator import Orchestrator
from hostagent.contract import instancespec
from kvmss.base.clock import FakeClock
from tests.controller.agentdouble import AgentDouble

SET = "web"


def image(version: str) -> ImageRecord:
    return ImageRecord("p", "o", "s", version, "a" * 64, 1, 1, Path("/x"), 0.0)


def spec_of(rec: ImageRecord) -> instancespec.ImageSpec:
    return instancespec.ImageSpec(
        reference=instancespec.ImageReference(
            publisher=rec.publisher, offer=rec.offer, sku=rec.sku, version=rec.version
        ),
        url="http://controller/blob",
        sha256=rec.sha256,
    )


@dataclass
class World:
    db: Path
    store: Store
    clock: FakeClock
    agents: AgentDouble
    orch: Orchestrator

    def names(self) -> list[str]:
        return [i.name for i in self.store.instances.of(SET)]

    def versions(self) -> list[str]:
        return [self.agents.instances[n].version for n in self.names()]

    def restart(self) -> None:
        """A new controller process on the same database file."""
        self.store.close()
        self.store = Store.open(f"sqlite:///{self.db}", clock=self.clock)
        self.orch = Orchestrator(self.store, self.agents, spec_of, self.clock)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    clock = FakeClock()
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    agents = AgentDouble(clock)
    w = World(tmp_path / "c.db", store, clock, agents, Orchestrator(store, agents, spec_of, clock))
    store.scale_sets.put(SET, {"sku": {"capacity": 0}}, None)
    for v in ("1", "2", "3"):
        store.images.add(image(v))
    yield w
    w.store.close()


def populate(w: World, n: int, version: str = "1") -> None:
    ids = [str(i) for i in range(n)]
    for iid in ids:
        name = instance_name(SET, iid)
        w.store.instances.add(
            InstanceRecord(
                SET,
                iid,
                name,
                f"host{int(iid) % 2}",
                placement.update_domain(iid),
                int(iid) % 2,
                version,
                ProvisioningState.RUNNING,
            )
        )
        w.agents.add(name, version)


def run(
    w: World, policy: Policy | None = None, version: str = "2", by: StartedBy = StartedBy.PLATFORM
) -> str:
    up = w.orch.start(SET, image(version), policy or Policy(), by)
    return w.orch.run(up.id, poll_seconds=5).id


def states(w: World, upgrade_id: str) -> dict[str, str]:
    return {u.instance_id: u.state for u in w.store.upgrade_instances.of(upgrade_id)}


@pytest.mark.parametrize(("n", "batches"), [(1, 1), (5, 5), (6, 6), (10, 5), (11, 6), (100, 5)])
def test_every_instance_upgraded_in_batches_never_more_than_b_out(
    world: World, n: int, batches: int
) -> None:
    populate(world, n)
    up_id = run(world)
    up = world.store.upgrades.get(up_id)
    assert up is not None
    assert up.status == "Completed", up.error_message
    b = planner.batch_size(n, 20)
    assert all(len(batch) <= b for batch in up.batches)
    # b = 1 up to N = 9; batches never span update domains (11 -> [0,5],[10],[1,6],...)
    assert len(up.batches) == batches
    assert up.successful_count == n and up.failed_count == 0
    assert world.versions() == ["2"] * n
    assert all(c == 1 for c in world.agents.reimages.values())
    assert world.agents.max_out_of_service <= b
    assert all(c == 1 for c in world.agents.commits.values())


def test_instances_already_on_target_are_skipped(world: World) -> None:
    populate(world, 6)
    world.agents.instances[instance_name(SET, "3")].version = "2"
    up_id = run(world)
    assert instance_name(SET, "3") not in world.agents.reimages
    up = world.store.upgrades.get(up_id)
    assert up is not None and up.status == "Completed"
    assert "3" not in [i for b in up.batches for i in b]


def unhealthy_set(w: World, ids: set[str]) -> None:
    names = {instance_name(SET, i) for i in ids}
    w.agents.health = lambda name, _v, _age: name not in names


def test_precheck_exactly_at_threshold_proceeds(world: World) -> None:
    populate(world, 10)
    unhealthy_set(world, {"8", "9"})  # 2 of 10 = 20%: allowed
    up = world.orch.start(
        SET, image("2"), Policy(max_unhealthy_upgraded_instance_percent=100), StartedBy.PLATFORM
    )
    world.orch.step(up.id)
    assert world.agents.ops, "the first batch must have started"


def test_precheck_just_above_threshold_faults_before_first_batch_touching_nothing(
    world: World,
) -> None:
    populate(world, 10)
    unhealthy_set(world, {"7", "8", "9"})  # 30% > 20%
    up_id = run(world)
    up = world.store.upgrades.get(up_id)
    assert up is not None
    assert up.status == "Faulted"
    assert up.error_code == "MaxUnhealthyInstancePercentExceeded"
    assert "nothing was changed" in (up.error_message or "")
    assert world.agents.ops == {}
    assert set(states(world, up_id).values()) == {"Pending"}


def test_precheck_before_a_later_batch_stops_the_upgrade(world: World) -> None:
    populate(world, 10)
    up = world.orch.start(SET, image("2"), Policy(), StartedBy.PLATFORM)
    # batch 0 is taken, then three instances of later batches go bad while it runs
    world.orch.step(up.id)
    later = {i for b in up.batches[1:] for i in b}
    unhealthy_set(world, set(sorted(later, key=int)[:3]))
    done = world.orch.run(up.id, poll_seconds=5)
    assert done.status == "Faulted"
    assert done.error_code == "MaxUnhealthyInstancePercentExceeded"
    assert "before batch 1" in (done.error_message or "")
    assert done.successful_count == len(up.batches[0])
    assert sum(world.agents.reimages.values()) == len(up.batches[0])


def test_unhealthy_after_timeout_is_rolled_back_and_upgrade_stops_after_the_batch(
    world: World,
) -> None:
    populate(world, 10)
    world.agents.health = lambda _n, v, _a: v != "3"  # version 3 never turns healthy
    world.store.images.add(image("3")) if world.store.images.get(
        "p", "o", "s", "3"
    ) is None else None
    up_id = run(world, version="3")
    up = world.store.upgrades.get(up_id)
    assert up is not None
    assert up.status == "Faulted"
    assert up.error_code == "MaxUnhealthyUpgradedInstancePercentExceeded"
    first = up.batches[0]
    assert states(world, up_id) == {
        i: ("RolledBack" if i in first else "Pending") for b in up.batches for i in b
    }
    assert up.failed_count == len(first) and up.rolled_back_ok == len(first)
    assert world.versions() == ["1"] * 10  # rolled back: everyone on the old version
    log = world.store.decisions.of(up_id)
    timeouts = [d for d in log if d.event == "RollingBack"]
    assert len(timeouts) == len(first)
    assert all("not healthy within 300s (probe failing)" in d.message for d in timeouts)
    # the timeout is the policy's: rollback started no earlier than 300 s after the reimage
    rows = {u.instance_id: u for u in world.store.upgrade_instances.of(up_id)}
    for i in first:
        deadline, started = rows[i].deadline, rows[i].started_at
        assert deadline is not None and started is not None
        assert deadline - started >= 300


def test_upgraded_failure_exactly_at_threshold_continues(world: World) -> None:
    populate(world, 10)
    bad = instance_name(SET, "0")
    world.agents.health = lambda n, v, _a: not (n == bad and v == "2")
    up_id = run(world, Policy(max_unhealthy_upgraded_instance_percent=50))
    up = world.store.upgrades.get(up_id)
    assert up is not None
    # batch 0 = [0, 5]: 1 of 2 failed = 50%, allowed; later failures none
    assert up.status == "Completed", up.error_message
    assert states(world, up_id)["0"] == "RolledBack"
    assert up.failed_count == 1 and up.successful_count == 9


def test_started_by_hand_does_not_roll_back(world: World) -> None:
    populate(world, 3)
    world.agents.health = lambda _n, v, _a: v != "2"
    up_id = run(world, Policy(automatic_rollback=False), by=StartedBy.USER)
    up = world.store.upgrades.get(up_id)
    assert up is not None and up.status == "Faulted"
    assert world.agents.rollbacks == {}
    assert states(world, up_id)["0"] == "Failed"
    assert world.agents.instances[instance_name(SET, "0")].version == "2"


def test_failed_reimage_that_changed_nothing_counts_failed_without_rollback(world: World) -> None:
    populate(world, 1)
    world.agents.fail_reimage.add(instance_name(SET, "0"))
    up_id = run(world)
    assert states(world, up_id) == {"0": "Failed"}
    assert world.agents.rollbacks == {}
    assert world.versions() == ["1"]


def test_cancel_mid_batch_lets_in_flight_finish_and_starts_nothing_new(world: World) -> None:
    populate(world, 10)
    up = world.orch.start(SET, image("2"), Policy(), StartedBy.USER)
    world.orch.step(up.id)  # batch 0 in flight
    assert world.store.upgrades.request_cancel(SET)
    done = world.orch.run(up.id, poll_seconds=5)
    assert done.status == "Cancelled"
    st = states(world, up.id)
    assert all(st[i] == "Succeeded" for i in up.batches[0])
    assert all(st[i] == "Pending" for b in up.batches[1:] for i in b)
    assert sum(world.agents.reimages.values()) == len(up.batches[0])


def test_one_upgrade_at_a_time(world: World) -> None:
    populate(world, 2)
    world.orch.start(SET, image("2"), Policy(), StartedBy.PLATFORM)
    with pytest.raises(Conflict):
        world.orch.start(SET, image("3"), Policy(), StartedBy.PLATFORM)


def test_version_published_mid_upgrade_is_picked_up_by_the_next(world: World) -> None:
    populate(world, 4)
    up = world.orch.start(SET, image("2"), Policy(), StartedBy.PLATFORM)
    world.orch.step(up.id)
    # version 3 appears while the upgrade to 2 runs: this upgrade stays on 2
    done = world.orch.run(up.id, poll_seconds=5)
    assert done.status == "Completed" and done.target.version == "2"
    assert world.versions() == ["2"] * 4
    nxt = world.orch.run(world.orch.start(SET, image("3"), Policy(), StartedBy.PLATFORM).id)
    assert nxt.status == "Completed" and world.versions() == ["3"] * 4


@pytest.mark.parametrize("steps", [1, 2, 3, 5, 8])
def test_controller_restarted_mid_batch_resumes_without_reimaging_twice(
    world: World, steps: int
) -> None:
    populate(world, 6)
    up = world.orch.start(SET, image("2"), Policy(), StartedBy.PLATFORM)
    for _ in range(steps):
        world.orch.step(up.id)
        world.clock.advance(5)
    world.restart()
    done = world.orch.run(up.id, poll_seconds=5)
    assert done.status == "Completed"
    assert world.versions() == ["2"] * 6
    assert world.agents.reimages == {n: 1 for n in world.names()}


def test_pause_between_batches(world: World) -> None:
    populate(world, 3)
    up_id = run(world, Policy(pause_seconds=600))
    rows = sorted(world.store.upgrade_instances.of(up_id), key=lambda u: u.batch)
    for prev, nxt in itertools.pairwise(rows):
        assert nxt.started_at is not None and prev.finished_at is not None
        assert nxt.started_at >= prev.finished_at + 600


def test_prioritize_unhealthy_takes_unhealthy_first(world: World) -> None:
    populate(world, 10)
    bad = instance_name(SET, "7")
    world.agents.health = lambda n, v, _a: n != bad or v == "2"
    up = world.orch.start(SET, image("2"), Policy(prioritize_unhealthy=True), StartedBy.PLATFORM)
    assert up.batches[0] == ["7"]
    assert world.orch.run(up.id, poll_seconds=5).status == "Completed"


def test_unreachable_agent_during_health_wait_fails_after_timeout(world: World) -> None:
    populate(world, 1)
    up = world.orch.start(SET, image("2"), Policy(), StartedBy.PLATFORM)
    world.orch.step(up.id)
    world.clock.advance(15)
    world.orch.step(up.id)  # reimage done, now waiting for health
    world.agents.unreachable_hosts.add("host0")
    for _ in range(100):
        world.orch.step(up.id)
        world.clock.advance(5)
    row = world.store.upgrade_instances.of(up.id)[0]
    assert row.state == "RollingBack"  # decided; the rollback waits for the host
    world.agents.unreachable_hosts.clear()
    done = world.orch.run(up.id, poll_seconds=5)
    assert done.status == "Faulted"
    assert states(world, up.id) == {"0": "RolledBack"}


def test_the_step_that_ends_a_batch_starts_the_next(world: World) -> None:
    """No step leaves a finished batch with the next one still all Pending
    (that was one idle poll interval per batch)."""
    populate(world, 5)
    up = world.orch.start(SET, image("2"), Policy(), StartedBy.PLATFORM)
    handoffs = 0
    for _ in range(1000):
        cur = world.orch.step(up.id)
        if cur.status != "RollingForward":
            break
        rows = world.store.upgrade_instances.of(up.id)
        k = cur.current_batch
        if k > 0:
            assert any(u.state != "Pending" for u in rows if u.batch == k), k
            handoffs = k
        world.clock.advance(1)
    assert cur.status == "Completed", cur.error_message
    assert handoffs == len(cur.batches) - 1
