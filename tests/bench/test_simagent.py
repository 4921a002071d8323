"""The load benchmark's simulated agents speak the agent contract: the real
client (:class:`hostagent.contract.client.AgentClient`, which validates every answer
against :mod:`hostagent.contract.views`) drives them, and a real controller listing
their instances asks each host once, not each instance."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from bench.simagent import Agents, host_names, serving
from controller.api.app import create_app
from controller.fleet.agents import AgentPool
from controller.images.catalog import Catalog
from controller.service.controller import Controller, Settings
from controller.store.facade import HostRecord, InstanceRecord, Store
from controller.store.states import ProvisioningState
from hostagent.contract import instancespec
from hostagent.contract.client import AgentClient, AgentError
from kvmss.base.clock import Clock, FakeClock, SystemClock

TOKEN = "sim-agent-token-0123456789"


@pytest.fixture
def sim() -> Iterator[tuple[str, Agents]]:
    """The simulated agents of two hosts on a free port: (base URL, state)."""
    agents = Agents(host_names(2), op_seconds=0.3, boot_seconds=0.3)
    with serving(agents, TOKEN) as port:
        yield f"http://127.0.0.1:{port}", agents


def spec(version: str) -> instancespec.InstanceSpec:
    image = instancespec.ImageSpec(
        url="http://controller/blob",
        sha256=version * 64,
        reference=instancespec.ImageReference(publisher="p", offer="o", sku="s", version=version),
    )
    return instancespec.InstanceSpec(
        image=image,
        osProfile=instancespec.OsProfile(computerName="web0"),
        extensions=[instancespec.Extension(name="app")],
    )


def test_the_real_client_drives_a_simulated_agent_through_a_reimage(
    sim: tuple[str, Agents],
) -> None:
    url, _ = sim
    c = AgentClient(f"{url}/sim000", TOKEN)
    assert c.host().name == "sim000"
    assert c.put_instance("web-0", spec("1")).status == "Succeeded"
    v = c.instance("web-0")
    assert v is not None and v.health.state == "Healthy" and v.current.image.version == "1"
    op = c.reimage("web-0", spec("2").image, operation_id="r1")
    assert op.status == "InProgress"
    assert c.reimage("web-0", spec("2").image, operation_id="r1").id == "r1"  # idempotent
    assert c.wait(op, timeout=10, poll=0.05).status == "Succeeded"
    booting = c.instance("web-0")
    assert booting is not None and booting.health.state == "Unhealthy"
    assert booting.current.image.version == "2" and booting.previous is not None
    assert c.wait(c.rollback("web-0", operation_id="b1"), 10, 0.05).status == "Succeeded"
    back = c.instance("web-0")
    assert back is not None and back.current.image.version == "1" and back.previous is None
    with pytest.raises(AgentError) as e:
        c.rollback("web-0", operation_id="b2")
    assert e.value.code == "NoPreviousOsDisk"
    assert [i.name for i in c.instances()] == ["web-0"]
    assert AgentClient(f"{url}/sim001", TOKEN).instances() == []
    # a reimage cancelled before it arrives never runs
    cancelled = c.cancel("r-late", "reimage", "web-0")
    assert cancelled.status == "Failed" and cancelled.error is not None
    assert cancelled.error.code == "Cancelled"
    assert c.reimage("web-0", spec("2").image, operation_id="r-late").status == "Failed"
    late = c.instance("web-0")
    assert late is not None and late.current.image.version == "1"
    assert c.cancel("r1", "reimage", "web-0").status == "Succeeded"  # a known one as it is
    assert c.delete("web-0", operation_id="d1").status == "Succeeded"
    assert c.instance("web-0") is None


def test_a_simulated_agent_refuses_a_wrong_token_and_an_unknown_host(
    sim: tuple[str, Agents],
) -> None:
    url, _ = sim
    with pytest.raises(AgentError) as e:
        AgentClient(f"{url}/sim000", "wrong-token-0123456789").host()
    assert e.value.status == 401
    r = requests.get(f"{url}/nohost/v1/host", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "NotFound"


@contextmanager
def controller_of(
    url: str, tmp_path: Path, clock: Clock, count: int = 20
) -> Iterator[tuple[Controller, list[InstanceRecord]]]:
    """A real controller (store, :class:`AgentPool`) whose scale set ``web``
    has ``count`` instances on the simulated agents of two hosts, the
    watcher's period a minute (it refreshes nothing during a test)."""
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    holder: list[Controller] = []

    class Hosts:
        def host_endpoint(self, host: str) -> tuple[str, str]:
            return holder[0].host_endpoint(host)

    ctl = Controller(
        store,
        Catalog(store, tmp_path / "blobs", clock),
        AgentPool(Hosts()),
        clock,
        Settings("http://127.0.0.1:1", b"s" * 32, view_refresh_seconds=60),
    )
    holder.append(ctl)
    try:
        store.scale_sets.put("web", {}, None)
        hosts = host_names(2)
        for h in hosts:
            store.hosts.add(HostRecord(h, f"{url}/{h}", TOKEN, time.time()))
        recs = [
            InstanceRecord(
                "web",
                str(i),
                f"web-{i}",
                hosts[i % 2],
                i % 5,
                i % 2,
                "1",
                ProvisioningState.RUNNING,
            )
            for i in range(count)
        ]
        store.instances.add_many(recs)
        for r in recs:
            AgentClient(f"{url}/{r.host}", TOKEN).put_instance(r.name, spec("1"))
        yield ctl, recs
    finally:
        ctl.close()
        store.close()


def test_a_controller_lists_instances_with_one_call_per_host(
    sim: tuple[str, Agents], tmp_path: Path
) -> None:
    url, agents = sim
    with controller_of(url, tmp_path, SystemClock()) as (ctl, recs):
        calls = agents.calls
        views = ctl.views.many([(r.host, r.name) for r in recs])
        assert len(views) == 20 and all(v is not None for v in views)
        assert agents.calls - calls <= 2 * 2  # the listing, and the watcher's round
        assert ctl.views.known([(r.host, r.name) for r in recs]) is not None


def test_one_instance_shows_a_snapshot_as_fresh_as_a_listing_else_asks_its_agent(
    sim: tuple[str, Agents], tmp_path: Path
) -> None:
    url, agents = sim
    clock = FakeClock()
    with controller_of(url, tmp_path, clock, count=2) as (ctl, recs):
        api = TestClient(create_app(ctl, TOKEN, tmp_path / "staging"))
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = recs[1]
        agent = AgentClient(f"{url}/{r.host}", TOKEN)

        def shown() -> tuple[str, int]:
            before = agents.calls
            got = api.get("/v1/scaleSets/web/virtualMachines/1", headers=auth)
            assert got.status_code == 200, got.text
            assert got.json()["name"] == r.name
            return got.json()["imageVersion"], agents.calls - before

        ctl.views.many([(i.host, i.name) for i in recs])  # a listing's snapshot
        assert shown() == ("1", 0)
        agent.wait(agent.reimage(r.name, spec("2").image, operation_id="r2"), timeout=10, poll=0.05)
        clock.advance(59)
        assert shown() == ("1", 0)  # the snapshot, 59 s old: no agent call
        clock.advance(2)
        assert shown() == ("2", 1)  # 61 s old, past refresh_seconds: asked, and recorded
        assert shown() == ("2", 0)
        gone = api.get("/v1/scaleSets/web/virtualMachines/7", headers=auth)
        assert gone.status_code == 404 and "'7'" in gone.json()["error"]["message"]
