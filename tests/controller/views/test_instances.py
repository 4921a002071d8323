"""The controller's instance views: packed views that cost the garbage
collector nothing, and the watcher-fed cache that listings read."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from controller.views.instances import InstanceViews, ObservingPort
from hostagent.contract import instancespec
from hostagent.contract.client import AgentError, AgentUnreachable
from hostagent.contract.views import (
    DataDiskView,
    ExtensionStatus,
    GenerationView,
    Health,
    InstanceView,
    ProbeStatus,
)
from kvmss.base.clock import SystemClock


def view(name: str, version: str = "1", health: str = "Healthy", **more: Any) -> InstanceView:
    gen = GenerationView(
        generation=2,
        instanceId=f"{name}-g2",
        image=instancespec.ImageReference(publisher="p", offer="o", sku="s", version=version),
        imageSha256="a" * 64,
        osDisk=f"/d/{name}",
    )
    return InstanceView(
        name=name,
        powerState="running",
        address="10.0.0.2",
        current=gen,
        health=Health(state=health, reasons=[] if health == "Healthy" else ["probe"]),  # type: ignore[arg-type]
        **more,
    )


def full_view() -> InstanceView:
    v = view("web-1", health="Unhealthy")
    return view(
        "web-1",
        health="Unhealthy",
        previous=v.current,
        dataDisks=[DataDiskView(lun=0, diskSizeGB=1, path="/d/0")],
        extensions=[
            ExtensionStatus(
                name="app", status="Failed", exitCode=3, message="m", instanceId="i", time="t"
            )
        ],
        probe=ProbeStatus(
            healthy=False,
            consecutiveSuccesses=0,
            consecutiveFailures=2,
            lastError="refused",
            lastProbeTime="t",
        ),
        applicationHealth="Unhealthy",
        operation="op-1",
    )


class Agents:
    """Per-host views, answering the port's ``instance`` and a host listing,
    counting the calls."""

    def __init__(self, hosts: dict[str, list[InstanceView]]) -> None:
        self.hosts = hosts
        self.calls: Counter[str] = Counter()
        self.down: set[str] = set()
        self.gate: threading.Event | None = None
        self.hang: dict[str, float] = {}  # host -> seconds it hangs before failing
        self.late: dict[str, float] = {}  # host -> seconds it hangs before answering
        self.cpu = 0.0  # what the watcher's CPU meter reads (see cpu_cost)
        self.cpu_cost = 0.0  # CPU seconds a listing "costs"

    def instance(self, host: str, name: str) -> InstanceView | None:
        self.calls["instance"] += 1
        if host in self.down:
            raise AgentUnreachable(host, "ConnectionError")
        return next((v for v in self.hosts[host] if v.name == name), None)

    def list(self, host: str) -> list[InstanceView]:
        self.calls[f"list {host}"] += 1
        if self.gate is not None:
            self.gate.wait(5)
        if host in self.hang:
            time.sleep(self.hang[host])
            raise AgentUnreachable(host, "ReadTimeout")
        if host in self.down:
            raise AgentUnreachable(host, "ConnectionError")
        time.sleep(self.late.get(host, 0.0))
        self.cpu += self.cpu_cost
        return list(self.hosts[host])


def views_of(agents: Agents, listing: bool = True, refresh: float = 60.0) -> InstanceViews:
    return InstanceViews(
        agents,  # type: ignore[arg-type]
        agents.list if listing else None,
        lambda: sorted(agents.hosts),
        SystemClock(),
        refresh_seconds=refresh,
    )


@pytest.fixture
def agents() -> Agents:
    return Agents({"h1": [view("a-0"), view("a-2")], "h2": [view("a-1")]})


KEYS = [("h1", "a-0"), ("h2", "a-1"), ("h1", "a-2")]


def test_a_listing_asks_each_host_once_not_each_instance(agents: Agents) -> None:
    views = views_of(agents)
    seen = views.many(KEYS)
    assert [s.image_version for s in seen if s is not None and not isinstance(s, AgentError)] == [
        "1",
        "1",
        "1",
    ]
    assert agents.calls == {"list h1": 1, "list h2": 1}
    views.many(KEYS)  # known now: no call (the watcher refreshes, not listings)
    assert agents.calls["instance"] == 0
    assert sum(agents.calls.values()) <= 4  # two, plus the watcher's first round at most
    views.close()


def test_concurrent_listings_share_one_call_per_host(agents: Agents) -> None:
    agents.gate = threading.Event()
    views = views_of(agents)
    out: list[Any] = []
    threads = [threading.Thread(target=lambda: out.append(views.many(KEYS))) for _ in range(5)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    agents.gate.set()
    for t in threads:
        t.join(5)
    assert len(out) == 5
    assert agents.calls["list h1"] == 1 and agents.calls["list h2"] == 1
    views.close()


def test_known_is_none_until_every_view_is_known(agents: Agents) -> None:
    agents.gate = threading.Event()  # the watcher it starts waits on the hosts
    views = views_of(agents)
    assert views.known(KEYS) is None
    assert agents.calls["instance"] == 0
    agents.gate.set()
    views.many(KEYS)
    known = views.known(KEYS)
    assert known is not None and len(known) == 3
    views.close()


def test_a_later_observation_wins_over_an_older_snapshot(agents: Agents) -> None:
    views = views_of(agents)
    views.many(KEYS)
    agents.hosts["h1"][0] = view("a-0", version="2", health="Unhealthy")
    views.one("h1", "a-0")  # the orchestrator's kind of read, recorded
    first = views.many(KEYS)[0]
    assert first is not None and not isinstance(first, AgentError)
    assert (first.image_version, first.health) == ("2", "Unhealthy")
    # a snapshot asked for before that observation does not replace it
    views.record("h1", "a-0", 0.0, view("a-0", version="1"))
    again = views.many(KEYS)[0]
    assert again is not None and not isinstance(again, AgentError)
    assert again.image_version == "2"
    views.close()


def test_an_instance_gone_from_its_host_and_a_host_down_show_as_such(agents: Agents) -> None:
    views = views_of(agents)
    views.many(KEYS)
    agents.hosts["h1"] = [view("a-0")]
    views.refresh_host("h1")
    agents.down.add("h2")
    views.refresh_host("h2")
    a0, a1, a2 = views.many(KEYS)
    assert a0 is not None and not isinstance(a0, AgentError)
    assert isinstance(a1, AgentUnreachable)
    assert a2 is None
    views.close()


def test_without_a_host_listing_every_instance_is_asked_every_time(agents: Agents) -> None:
    views = views_of(agents, listing=False)
    views.many(KEYS)
    views.many(KEYS)
    assert agents.calls == {"instance": 6}
    assert views.known(KEYS) is None


def test_the_orchestrator_reads_cached_views_only_while_planning(agents: Agents) -> None:
    views = views_of(agents)
    port = ObservingPort(agents, views)  # type: ignore[arg-type]
    views.many(KEYS)
    before = agents.calls["instance"]
    with views.cached_reads():
        planned = port.instance("h1", "a-0")
    assert planned is not None and planned.current.image.version == "1"
    assert agents.calls["instance"] == before
    port.instance("h1", "a-0")
    assert agents.calls["instance"] == before + 1
    agents.down.add("h2")
    views.refresh_host("h2")
    with views.cached_reads(), pytest.raises(AgentUnreachable):
        port.instance("h2", "a-1")
    views.close()


def test_the_watcher_refreshes_while_listings_come_and_stops_when_they_stop(
    agents: Agents,
) -> None:
    views = InstanceViews(
        agents,  # type: ignore[arg-type]
        agents.list,
        lambda: sorted(agents.hosts),
        SystemClock(),
        refresh_seconds=0.05,
        idle_seconds=0.4,
    )
    views.many(KEYS)
    agents.hosts["h2"] = [view("a-1", version="7")]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        a1 = views.many(KEYS)[1]
        if a1 is not None and not isinstance(a1, AgentError) and a1.image_version == "7":
            break
        time.sleep(0.02)
    else:
        pytest.fail("the watcher never refreshed h2")
    time.sleep(1.0)  # no listing: the watcher stops
    calls = sum(agents.calls.values())
    time.sleep(0.3)
    assert sum(agents.calls.values()) == calls
    views.close()


@pytest.mark.parametrize("how", ["hang", "late"])
def test_a_hung_host_does_not_stretch_the_refresh_of_the_others(agents: Agents, how: str) -> None:
    """Time lost waiting for a host, whether it then fails ("hang") or answers
    late ("late": a SIGSTOPped agent resumed within the client's timeout), is
    not work: the other hosts' views, and its own once it answers again, stay
    fresh (waiting stretched the period to 10x the hang)."""
    views = InstanceViews(
        agents,  # type: ignore[arg-type]
        agents.list,
        lambda: sorted(agents.hosts),
        SystemClock(),
        refresh_seconds=0.1,
        idle_seconds=30,
    )
    getattr(agents, how)["h1"] = 0.4
    try:
        views.many(KEYS)
        time.sleep(1.0)  # the watcher's first rounds, each with h1 hanging
        agents.hosts["h2"] = [view("a-1", version="7")]
        agents.hosts["h1"] = [view("a-0", version="7"), view("a-2")]
        del getattr(agents, how)["h1"]  # and h1 answers at once again
        changed = time.monotonic()
        deadline = changed + 10
        while time.monotonic() < deadline:
            a0, a1, _ = views.many(KEYS)
            if all(
                a is not None and not isinstance(a, AgentError) and a.image_version == "7"
                for a in (a0, a1)
            ):
                break
            time.sleep(0.02)
        else:
            pytest.fail(f"never refreshed: {views.many(KEYS)}")
        # One round: h1's 0.4 s hang plus the period; stretched, it was >= 4 s.
        assert time.monotonic() - changed < 2.0
    finally:
        views.close()


def test_refreshes_that_cost_cpu_stretch_the_period(agents: Agents) -> None:
    """The watcher spends at most a tenth of its time refreshing, counted in
    the CPU its thread used (injected here: each listing "costs" 0.1 s)."""

    def rounds(cost: float) -> int:
        agents.cpu_cost = cost
        agents.calls.clear()
        views = InstanceViews(
            agents,  # type: ignore[arg-type]
            agents.list,
            lambda: sorted(agents.hosts),
            SystemClock(),
            refresh_seconds=0.05,
            idle_seconds=30,
            cpu_seconds=lambda: agents.cpu,
        )
        try:
            views.many(KEYS)
            time.sleep(1.5)
        finally:
            views.close()
        return agents.calls["list h2"]

    free, costly = rounds(0.0), rounds(0.1)
    # free: a round every 0.05 s; costly: 2 hosts x 0.1 s -> a 2 s period
    assert free >= 8, free
    assert costly <= 3, costly
