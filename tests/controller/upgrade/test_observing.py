"""How often the orchestrator asks agents while it waits: a reimage's
operation and an instance waiting for health are asked at most every tenth
of the time they have been at it (up to MAX_POLL_INTERVAL), once more at
their deadline, and health not at all while a fresh snapshot of the view
says enough; the gate before a batch reads snapshots.
Injected clock, real SQLite store, the scripted agent double."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from controller.model.upgradepolicy import RollingPolicy as Policy
from controller.store.facade import Store, instance_name
from controller.store.states import StartedBy
from controller.upgrade.observing import MAX_POLL_INTERVAL
from controller.upgrade.orchestrator import Orchestrator
from hostagent.contract import operations
from hostagent.contract.views import Health, InstanceView
from kvmss.base.clock import FakeClock
from tests.controller.agentdouble import AgentDouble
from tests.controller.upgrade.test_orchestrator import SET, World, image, populate, spec_of, states


class Counting:
    """The agent double, with the time of every ``instance`` call."""

    def __init__(self, agents: AgentDouble, clock: FakeClock) -> None:
        self.agents = agents
        self.clock = clock
        self.asked: list[float] = []
        self.who: list[str] = []  # the instance of each ``instance`` call
        self.polled: list[float] = []  # operation calls

    def instance(self, host: str, name: str) -> InstanceView | None:
        self.asked.append(self.clock.now())
        self.who.append(name)
        return self.agents.instance(host, name)

    def operation(self, host: str, op_id: str) -> operations.Operation:
        self.polled.append(self.clock.now())
        return self.agents.operation(host, op_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.agents, name)


class Snapshots:
    """What ``recent`` answers: views the test sets, by instance name."""

    def __init__(self) -> None:
        self.views: dict[str, InstanceView] = {}
        self.asked = 0

    def __call__(
        self, host: str, name: str, max_age: float | None
    ) -> tuple[bool, InstanceView | None]:
        self.asked += 1
        view = self.views.get(name)
        return (view is not None), view


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[World, Counting, Snapshots]]:
    clock = FakeClock()
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    agents = AgentDouble(clock, op_seconds=2, boot_seconds=5)
    counting, snapshots = Counting(agents, clock), Snapshots()
    orch = Orchestrator(store, counting, spec_of, clock, snapshots)
    w = World(tmp_path / "c.db", store, clock, agents, orch)
    store.scale_sets.put(SET, {"sku": {"capacity": 0}}, None)
    for v in ("1", "2"):
        store.images.add(image(v))
    yield w, counting, snapshots
    w.store.close()


def decided(w: World, upgrade_id: str, event: str) -> float:
    """When the upgrade's decision log first says ``event`` (a row's new state)."""
    return next(d.time for d in w.store.decisions.of(upgrade_id) if d.event == event)


def most_asks(waited: float) -> float:
    """Every second for 10 s, every waited/10 up to 50 s, then every 5 s."""
    ramp = 10 * math.log(min(max(waited, 10), 50) / 10)
    return 10 + ramp + max(0.0, waited - 50) / MAX_POLL_INTERVAL + 3


@pytest.mark.parametrize("healthy_after", [40.0, 200.0])
def test_a_waiting_instance_is_asked_less_often_the_longer_it_waits(
    world: tuple[World, Counting, Snapshots], healthy_after: float
) -> None:
    w, counting, _ = world
    w.agents.health = lambda _n, version, age: version == "1" or age >= healthy_after
    populate(w, 1)
    up = w.orch.start(SET, image("2"), Policy(health_timeout_seconds=300), StartedBy.PLATFORM)
    w.orch.run(up.id, poll_seconds=1)
    assert states(w, up.id) == {"0": "Succeeded"}
    began, ended = decided(w, up.id, "WaitingHealth"), decided(w, up.id, "Succeeded")
    asks = [t for t in counting.asked if began < t <= ended]
    waited = ended - began
    # it was asked every second (~waited times); now a tenth as often as it waited
    assert len(asks) <= most_asks(waited), (len(asks), waited)
    assert waited > healthy_after and len(asks) < waited * 0.7, (len(asks), waited)
    gaps = [b - a for a, b in itertools.pairwise(asks)]
    assert max(gaps) <= MAX_POLL_INTERVAL + 1, gaps
    # committed soon after it turned healthy: within a tenth of the wait (<= 5 s) and a step
    assert waited - healthy_after <= min(MAX_POLL_INTERVAL, waited / 10) + 1, waited


def test_a_long_reimage_is_polled_less_often_the_longer_it_takes(
    world: tuple[World, Counting, Snapshots],
) -> None:
    w, counting, _ = world
    w.agents.op_seconds = 200  # e.g. a big image downloading
    populate(w, 1)
    up = w.orch.start(SET, image("2"), Policy(health_timeout_seconds=300), StartedBy.PLATFORM)
    w.orch.run(up.id, poll_seconds=1)
    assert states(w, up.id) == {"0": "Succeeded"}
    began, reimaged = decided(w, up.id, "Reimaging"), decided(w, up.id, "WaitingHealth")
    polls = [t for t in counting.polled if began <= t <= reimaged]
    assert 200 <= reimaged - began <= 200 + MAX_POLL_INTERVAL + 1, reimaged - began
    assert len(polls) <= most_asks(reimaged - began), len(polls)  # it was ~200
    assert max(b - a for a, b in itertools.pairwise(polls)) <= MAX_POLL_INTERVAL + 1, polls


def test_an_instance_that_never_turns_healthy_is_asked_again_at_its_deadline(
    world: tuple[World, Counting, Snapshots],
) -> None:
    w, counting, _ = world
    w.agents.health = lambda _n, version, _age: version == "1"
    populate(w, 1)
    up = w.orch.start(SET, image("2"), Policy(health_timeout_seconds=300), StartedBy.PLATFORM)
    w.orch.run(up.id, poll_seconds=1)
    (row,) = w.store.upgrade_instances.of(up.id)
    assert row.state == "RolledBack", row
    began, failed = decided(w, up.id, "WaitingHealth"), decided(w, up.id, "RollingBack")
    assert 300 <= failed - began <= 301, failed - began  # at the deadline, not later
    asks = [t for t in counting.asked if began < t <= failed]
    assert len(asks) <= most_asks(300), len(asks)
    # the failure was decided on an answer asked at the deadline, not on an older one
    assert asks[-1] == failed, (asks[-3:], failed)
    assert asks[-1] - asks[-2] < MAX_POLL_INTERVAL, asks[-3:]


def healthy_snapshots(w: World, snapshots: Snapshots, names: list[str]) -> None:
    """Every instance's snapshot as the agent reports it now, but Healthy."""
    for n in names:
        view = w.agents.instance("host0", n)
        assert view is not None
        snapshots.views[n] = view.model_copy(update={"health": Health(state="Healthy", reasons=[])})


def five_with_snapshots(w: World, snapshots: Snapshots) -> list[str]:
    """Five instances, each with a healthy snapshot; their names."""
    populate(w, 5)
    names = [instance_name(SET, str(i)) for i in range(5)]
    healthy_snapshots(w, snapshots, names)
    return names


def test_a_fresh_snapshot_commits_without_asking_and_the_gate_reads_healthy_snapshots(
    world: tuple[World, Counting, Snapshots],
) -> None:
    w, counting, snapshots = world
    names = five_with_snapshots(w, snapshots)
    up = w.orch.start(SET, image("2"), Policy(max_batch_instance_percent=20), StartedBy.PLATFORM)
    # the snapshot of instance 0 is refreshed to its new version once it is reimaged
    w.orch.step(up.id)
    w.clock.advance(3)
    w.orch.step(up.id)
    healthy_snapshots(w, snapshots, names[:1])
    before = len(counting.asked)
    w.orch.step(up.id)
    assert states(w, up.id)["0"] == "Succeeded"
    # committed on the snapshot alone, and the same step hands off to batch 1,
    # whose gate reads the healthy snapshots: no instance outside it is asked
    assert states(w, up.id)["1"] != "Pending"
    assert set(counting.who[before:]) <= {names[1]}, counting.who[before:]


def unhealthy(snapshots: Snapshots, names: list[str]) -> None:
    for n in names:
        snapshots.views[n] = snapshots.views[n].model_copy(
            update={"health": Health(state="Unhealthy", reasons=["probe"])}
        )


def test_the_gate_asks_again_where_a_snapshot_says_unhealthy(
    world: tuple[World, Counting, Snapshots],
) -> None:
    """A snapshot taken while instances booted says unhealthy after they
    recovered (the stale view that once faulted a real upgrade): the gate
    asks their agents, and goes on."""
    w, counting, snapshots = world
    names = five_with_snapshots(w, snapshots)
    unhealthy(snapshots, names)
    up = w.orch.start(SET, image("2"), Policy(max_batch_instance_percent=20), StartedBy.PLATFORM)
    w.orch.step(up.id)
    assert states(w, up.id)["0"] != "Pending", w.store.upgrades.get(up.id)
    assert set(names) <= set(counting.who)  # each instance the snapshot doubted was asked


def test_the_gate_stops_an_upgrade_when_agents_confirm_the_unhealthy_snapshot(
    world: tuple[World, Counting, Snapshots],
) -> None:
    w, _, snapshots = world
    names = five_with_snapshots(w, snapshots)
    unhealthy(snapshots, names[1:4])
    sick = {names[1], names[2], names[3]}
    w.agents.health = lambda name, _version, _age: name not in sick
    up = w.orch.start(SET, image("2"), Policy(max_batch_instance_percent=20), StartedBy.PLATFORM)
    done = w.orch.run(up.id, poll_seconds=1)
    assert done.status == "Faulted", done
    assert done.error_code == "MaxUnhealthyInstancePercentExceeded", done
    assert all(s == "Pending" for s in states(w, up.id).values()), states(w, up.id)


def test_a_step_that_changes_nothing_writes_nothing(
    world: tuple[World, Counting, Snapshots],
) -> None:
    """While an instance waits for health, a step that finds it still
    unhealthy commits no transaction (every commit syncs the disk, and each
    running upgrade steps every second); the step that sees it healthy does."""
    w, counting, _ = world
    w.agents.health = lambda _n, version, age: version == "1" or age >= 100
    populate(w, 1)
    up = w.orch.start(SET, image("2"), Policy(health_timeout_seconds=300), StartedBy.PLATFORM)
    for _ in range(60):
        if states(w, up.id)["0"] == "WaitingHealth":
            break
        w.orch.step(up.id)
        w.clock.advance(1)
    assert states(w, up.id)["0"] == "WaitingHealth"
    commits: list[int] = []
    engine = w.store._engine
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    asked = len(counting.asked)
    for _ in range(30):
        w.orch.step(up.id)
        w.clock.advance(1)
    assert len(counting.asked) > asked, "the agent was asked meanwhile"
    assert commits == []
    w.agents.health = lambda _n, _version, _age: True
    for _ in range(10):
        w.orch.step(up.id)
        w.clock.advance(1)
    assert commits, "the commit of a healthy instance is recorded"
    assert states(w, up.id)["0"] == "Succeeded"
