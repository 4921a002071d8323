"""Everything that speaks the agent contract is held to its one table of calls
(hostagent.contract.calls): the agent's routes, the client, the controller's
agent port (and its real pool), the tests' agent double and the bench's
simulated agents. Each fails here when it has a call the table lacks or
lacks one the table has."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from bench.simagent import Agents, Reply
from controller.fleet.agents import AgentPool, AgentPort
from hostagent.contract import calls, instancespec, operations, views
from hostagent.contract.calls import Call
from hostagent.contract.client import AgentClient
from hostagent.daemon.api import FALLBACK_ROUTE, Handlers, create_app
from hostagent.daemon.config import AgentConfig
from hostagent.daemon.service import Agent
from kvmss.base.clock import SystemClock
from tests.controller.agentdouble import AgentDouble
from tests.fixtures import storage_root

TABLE = {c.name: c for c in calls.CALLS}
DOCS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
# Calls the controller makes without the port: a host's view when it is
# registered and a host's listing for the views' watcher (both through
# AgentPool.client); it never starts or stops an instance by itself.
NOT_THROUGH_PORT = {"host", "instances", "start", "stop"}
DOUBLE_HELPERS = {"add"}  # the agent double's own: tests seed instances with it


def public_methods(cls: type) -> set[str]:
    """Its methods, not a dataclass field that holds a function (the double's health)."""
    fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    return {
        n
        for n, _ in inspect.getmembers(cls, inspect.isfunction)
        if not n.startswith("_") and n not in fields
    }


def parameters(fn: Any) -> list[str]:
    return list(inspect.signature(fn).parameters)


# -- the table itself --------------------------------------------------------------


def test_the_table_names_each_call_and_route_once() -> None:
    assert len(TABLE) == len(calls.CALLS) == len(calls.BY_NAME)
    assert len({(c.method, c.path) for c in calls.CALLS}) == len(calls.CALLS)
    for c in calls.CALLS:
        assert c.status in (200, 202), c.name
        assert set(c.path_params) <= {"name", "op_id"}, c.name
        assert c.request is None or issubclass(c.request, instancespec.WireModel), c.name
        assert c.timeout in (calls.TMO_READ, calls.TMO_START, calls.TMO_POLL), c.name
    # what starts an operation answers 202 with it, and waits longest
    for c in calls.CALLS:
        starts = c.status == 202
        assert (c.timeout is calls.TMO_START) == starts, c.name
        assert not starts or c.response is operations.Operation, c.name


def test_a_path_routes_to_its_call_and_nothing_else_does() -> None:
    assert calls.route("GET", "/v1/instances/web-0") == (calls.INSTANCE, {"name": "web-0"})
    assert calls.route("POST", "/v1/operations/o-1/cancel") == (calls.CANCEL, {"op_id": "o-1"})
    assert calls.route("DELETE", "/v1/instances") is None
    assert calls.route("GET", "/v1/instances/web-0/extra") is None
    assert calls.DELETE.url_path(name="web-0") == "/v1/instances/web-0"
    with pytest.raises(ValueError):
        calls.DELETE.url_path(op_id="x")


# -- the agent -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def app() -> Iterator[FastAPI]:
    with storage_root("calls") as root:
        cfg = AgentConfig.from_dict(
            {
                "name": "host-c",
                "token": "calls-token-0123456789abcdef",
                "libvirt_uri": "test:///default",
                "storage_dir": str(root / "agent"),
                "bridge": {"name": "kvc0", "subnet": "10.248.0.0/24"},
            }
        )
        yield create_app(Agent.build(cfg, SystemClock()))


def _body(route: APIRoute) -> Any:
    """The model of the route's body (None: none), optional or not."""
    bodies = route.dependant.body_params
    assert len(bodies) <= 1, route.name
    if not bodies:
        return None
    kinds = [t for t in typing.get_args(bodies[0].field_info.annotation) if t is not type(None)]
    return kinds[0] if kinds else bodies[0].field_info.annotation


def test_the_agent_serves_every_call_of_the_table_and_no_other(app: FastAPI) -> None:
    served: dict[str, tuple[Any, ...]] = {}
    others = []
    for r in app.routes:
        if getattr(r, "path", None) in DOCS:
            continue
        assert isinstance(r, APIRoute), r
        if r.name == FALLBACK_ROUTE:
            others.append(r)
            continue
        assert r.name not in served, f"two routes for call {r.name}"
        served[r.name] = (
            tuple(r.methods or ()),
            r.path,
            r.status_code,
            r.response_model,
            _body(r),
            tuple(q.name for q in r.dependant.query_params),
        )
    declared = {
        c.name: ((c.method,), c.path, c.status, c.response, c.request, c.query) for c in calls.CALLS
    }
    assert served == declared
    # the one route that is no call: undocumented, registered after every call
    assert [r.path for r in others] == ["/v1/instances/{rest:path}"]
    assert not others[0].include_in_schema and app.routes[-1] is others[0]


def test_the_agent_has_a_handler_for_every_call_and_no_other() -> None:
    assert public_methods(Handlers) == set(TABLE)


def test_the_documented_api_is_the_table(app: FastAPI) -> None:
    documented = {
        (m.upper(), p)
        for p, ops in app.openapi()["paths"].items()
        for m in ops
        if m != "parameters"
    }
    assert documented == {(c.method, c.path) for c in calls.CALLS}


# -- the client ----------------------------------------------------------------------

OPERATION = {"id": "o-1", "kind": "reimage", "instance": "web-0", "status": "Succeeded"}
GENERATION = {
    "generation": 1,
    "instanceId": "i-1",
    "image": {"publisher": "p", "offer": "o", "sku": "s", "version": "1"},
    "imageSha256": "0" * 64,
    "osDisk": "/x",
}
ANSWERS: dict[type[Any], Any] = {
    operations.Operation: {**OPERATION, "startTime": "t"},
    views.InstanceList: {"value": []},
    views.InstanceView: {
        "name": "web-0",
        "powerState": "running",
        "address": "10.0.0.2",
        "current": GENERATION,
        "health": {"state": "Healthy"},
    },
    views.HostView: {
        "name": "h",
        "hypervisor": "test",
        "libvirtVersion": "9",
        "capacity": {"vcpus": 1, "memoryMB": 1, "diskFreeGB": 1.0},
        "instanceCount": 0,
        "bridge": "b",
        "subnet": "10.0.0.0/24",
    },
}
IMAGE = instancespec.ImageSpec(
    url="http://images/1",
    sha256="1" * 64,
    reference=instancespec.ImageReference(publisher="p", offer="o", sku="s", version="1"),
)
SPEC = instancespec.InstanceSpec(image=IMAGE, osProfile=instancespec.OsProfile(computerName="w"))
# How a test calls each of the client's methods.
CLIENT_ARGS: dict[str, tuple[Any, ...]] = {
    "host": (),
    "instances": (),
    "instance": ("web-0",),
    "put_instance": ("web-0", SPEC),
    "reimage": ("web-0", IMAGE, "r-1"),
    "rollback": ("web-0", "r-2"),
    "commit": ("web-0", "c-1"),
    "start": ("web-0", "s-1"),
    "stop": ("web-0", "s-2"),
    "delete": ("web-0",),
    "operation": ("o-1",),
    "cancel": ("o-1", "reimage", "web-0"),
}


class Answer:
    def __init__(self, status: int, payload: Any) -> None:
        self.status = status
        self.data = json.dumps(payload).encode()


class RecordingPool:
    """Stands in for the client's urllib3 pool: records, answers the call's model."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, float]] = []

    def request(self, method: str, url: str, **kw: Any) -> Answer:
        path = url.removeprefix("http://agent").split("?", 1)[0]
        self.sent.append((method, path, kw["timeout"].read_timeout))
        found = calls.route(method, path)
        assert found is not None, f"the client sent {method} {path}, which is no call"
        return Answer(found[0].status, ANSWERS[found[0].response])


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> tuple[AgentClient, RecordingPool]:
    client = AgentClient("http://agent", "token-0123456789abcdef")
    pool = RecordingPool()
    monkeypatch.setattr(client, "_pool", pool)
    return client, pool


def test_the_client_has_a_method_for_every_call_and_no_other() -> None:
    assert public_methods(AgentClient) - {"send", "wait"} == set(TABLE)
    assert set(CLIENT_ARGS) == set(TABLE)


@pytest.mark.parametrize("call", calls.CALLS, ids=lambda c: c.name)
def test_each_client_method_sends_its_call_with_its_timeout_class(
    call: Call[Any], recording: tuple[AgentClient, RecordingPool]
) -> None:
    client, pool = recording
    getattr(client, call.name)(*CLIENT_ARGS[call.name])
    params = {p: "o-1" if p == "op_id" else "web-0" for p in call.path_params}
    assert pool.sent == [(call.method, call.url_path(**params), call.timeout.seconds)]


def test_the_client_sends_nothing_the_table_does_not_declare(
    recording: tuple[AgentClient, RecordingPool],
) -> None:
    client, pool = recording
    stray = Call("stray", "GET", "/v1/stray", None, views.HostView, 200, calls.TMO_READ)
    with pytest.raises(ValueError, match="not a call"):
        client.send(stray)
    with pytest.raises(TypeError, match="takes OperationRequest"):
        client.send(calls.COMMIT, body=operations.ReimageRequest(image=IMAGE), name="web-0")
    with pytest.raises(TypeError, match="takes no body"):
        client.send(calls.HOST, body=operations.OperationRequest())
    with pytest.raises(ValueError, match="query parameters"):
        client.send(calls.INSTANCE, query={"all": "true"}, name="web-0")
    with pytest.raises(ValueError, match="path parameters"):
        client.send(calls.INSTANCE, op_id="o-1")
    assert pool.sent == []


def test_a_timeout_given_to_the_client_holds_for_every_class(
    recording: tuple[AgentClient, RecordingPool],
) -> None:
    client, pool = recording
    client.timeout = 2.5
    client.host()
    client.operation("o-1")
    assert [s[2] for s in pool.sent] == [2.5, 2.5]


# -- the controller's port and the doubles of it ---------------------------------------


def test_the_controller_port_is_made_of_calls_of_the_table() -> None:
    port = public_methods(AgentPort)
    assert port <= set(TABLE), f"the port has calls the table lacks: {port - set(TABLE)}"
    assert set(TABLE) - port == NOT_THROUGH_PORT
    for name in port:
        answer = typing.get_type_hints(getattr(AgentPort, name))["return"]
        wanted: Any = TABLE[name].response
        if name == "instance":  # None: not on this host (the agent's 404)
            wanted = wanted | None
        assert answer == wanted, name
        assert parameters(getattr(AgentPort, name))[:2] == ["self", "host"], name


@pytest.mark.parametrize(
    ("implementation", "own"),
    [(AgentPool, {"client"}), (AgentDouble, DOUBLE_HELPERS)],
    ids=["AgentPool", "AgentDouble"],
)
def test_each_agent_port_implements_exactly_the_port(implementation: type, own: set[str]) -> None:
    port = public_methods(AgentPort)
    assert public_methods(implementation) - own == port
    for name in port:
        got = parameters(getattr(implementation, name))
        assert got == parameters(getattr(AgentPort, name)), name


# -- the bench's simulated agents ----------------------------------------------------


def test_the_simulated_agent_answers_every_call_with_its_status() -> None:
    agents = Agents(["sim000"], op_seconds=0, boot_seconds=0)
    assert set(agents.handlers) == set(TABLE)
    spec = SPEC.model_dump(mode="json", exclude_none=True)
    image = IMAGE.model_dump(mode="json", exclude_none=True)
    bodies: dict[str, Any] = {
        "put_instance": spec,
        "reimage": {"image": image, "operationId": "r-1"},
        "cancel": {"kind": "reimage", "instance": "web-0"},
    }
    order = ["put_instance", "host", "instances", "instance", "reimage", "rollback", "commit"]
    order += ["start", "stop", "operation", "cancel", "delete"]
    assert sorted(order) == sorted(TABLE)
    for name in order:
        call = TABLE[name]
        params = {p: "r-1" if p == "op_id" else "web-0" for p in call.path_params}
        if name == "cancel":
            params["op_id"] = "never-sent"
        status, _ = agents.handle(
            call.method, "/sim000" + call.url_path(**params), bodies.get(name)
        )
        assert status == call.status, name


def test_the_simulated_agent_routes_nothing_the_table_lacks() -> None:
    agents = Agents(["sim000"], op_seconds=0, boot_seconds=0)
    for method, path in [("GET", "/sim000/v1/extra"), ("PATCH", "/sim000/v1/instances/web-0")]:
        with pytest.raises(Reply) as e:
            agents.handle(method, path, None)
        assert e.value.status in (404, 405)
