"""Real answers of the controller's API conform to what /openapi.json says of
them (schemathesis validates each against the schema documented for its
status, and the status must be documented for its route), over a real store
and catalog with the agent double standing in for host agents."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.images.catalog import Catalog
from controller.service.controller import Controller, Settings
from controller.store.facade import Store
from hostagent.contract.client import AgentError
from hostagent.contract.views import ExtensionStatus, HostView, InstanceView
from kvmss.base import qemuimg
from kvmss.base.clock import SystemClock
from tests.controller.agentdouble import AgentDouble
from tests.controller.controllerenv import host_view
from tests.controller.model.test_valid import SECRET_B64, full_body, with_value

TOKEN = "responses-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IMAGE = "/v1/images/kvmss/tiny/1"
SET = "/v1/scaleSets/web"


class ReportingAgents(AgentDouble):
    """The agent double, its views carrying extension statuses."""

    def instance(self, host: str, name: str) -> InstanceView | None:
        view = super().instance(host, name)
        if view is None:
            return None
        extensions = [
            ExtensionStatus(name="app", status="Succeeded", exitCode=0),
            ExtensionStatus(name="base", status="Transitioning"),
        ]
        return view.model_copy(update={"extensions": extensions})


@dataclass
class Checked:
    """Each answer validated against the served document."""

    api: TestClient
    doc: dict[str, Any]
    schema: Any
    seen: set[tuple[str, str, int]] = field(default_factory=set)

    def call(self, method: str, template: str, url: str, **kw: Any) -> httpx.Response:
        kw.setdefault("headers", AUTH)
        r: httpx.Response = self.api.request(method, url, **kw)
        documented = self.doc["paths"][template][method.lower()]["responses"]
        assert str(r.status_code) in documented, f"{method} {url}: {r.status_code} {r.text}"
        self.schema[template][method].validate_response(r)
        self.seen.add((method, template, r.status_code))
        return r

    def statuses(self, method: str, template: str) -> set[int]:
        return {s for m, t, s in self.seen if (m, t) == (method, template)}

    def unanswered(self, *templates: str) -> set[tuple[str, str]]:
        """The operations on these paths whose success no call has seen."""
        ops = {(m.upper(), t) for t in templates for m in self.doc["paths"][t]}
        return ops - {(m, t) for m, t, s in self.seen if 200 <= s < 300}


@dataclass
class Env:
    checked: Checked
    ctl: Controller
    agents: ReportingAgents
    down: set[str]
    image: bytes


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    clock = SystemClock()
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    agents = ReportingAgents(clock, op_seconds=0, boot_seconds=0)
    down: set[str] = set()

    def probe(url: str, token: str) -> HostView:
        if url in down:
            raise AgentError(503, "Unreachable", f"{url} does not answer")
        return host_view(url, token)

    settings = Settings("http://127.0.0.1:1", b"s" * 32, poll_seconds=0.01)
    catalog = Catalog(store, tmp_path / "blobs", clock)
    ctl = Controller(store, catalog, agents, clock, settings, probe_host=probe)
    (tmp_path / "staging").mkdir()
    api = TestClient(create_app(ctl, TOKEN, tmp_path / "staging"))
    doc = api.get("/openapi.json").json()
    qemuimg.create(tmp_path / "img.qcow2", 16 << 20)
    checked = Checked(api, doc, schemathesis.openapi.from_dict(doc))
    try:
        yield Env(checked, ctl, agents, down, (tmp_path / "img.qcow2").read_bytes())
    finally:
        ctl.close()
        store.close()


def scale_set(capacity: int = 3) -> dict[str, Any]:
    """Every field of the model; Manual, so that nothing starts by itself."""
    body = with_value(full_body(), "sku.capacity", capacity)
    body = with_value(body, "properties.upgradePolicy.mode", "Manual")
    automatic = "properties.upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade"
    return with_value(body, automatic, False)


def publish(env: Env, version: str, query: str = "") -> httpx.Response:
    url = f"{IMAGE}/{version}{query}"
    return env.checked.call("PUT", "/v1/images/{p}/{o}/{s}/{v}", url, content=env.image)


def test_the_catalog_answers_as_documented(env: Env) -> None:
    c = env.checked
    c.call("GET", "/healthz", "/healthz", headers={})
    assert c.call("GET", "/metrics", "/metrics", headers={}).text.startswith("# HELP")
    part = "/v1/images/{p}/{o}/{s}/{v}/{part}"
    assert c.call("PUT", part, f"{IMAGE}/1/kernel", content=b"k" * 64).status_code == 204
    c.call("PUT", part, f"{IMAGE}/1/initrd", content=b"i" * 64)
    c.call("PUT", part, f"{IMAGE}/1/other", content=b"x")
    c.call("PUT", part, "/v1/images/kvmss/tiny/1/1/kernel", content=b"x", headers={})
    manifest = publish(env, "1", "?cmdline=console%3DttyS0").json()
    assert manifest["cmdline"] == "console=ttyS0" and "kernelSha256" in manifest
    publish(env, "2")
    assert publish(env, "2").status_code == 409
    assert publish(env, "3", "?sha256=" + "0" * 64).status_code == 422
    assert publish(env, "latest").status_code == 400
    assert c.call("GET", "/v1/images", "/v1/images").json()["value"][0]["latest"] == "2"
    c.call("GET", "/v1/images", "/v1/images", headers={})
    versions = c.call("GET", "/v1/images/{p}/{o}/{s}/versions", f"{IMAGE}/versions").json()
    assert [m["version"] for m in versions["value"]] == ["2", "1"]
    one = "/v1/images/{p}/{o}/{s}/{v}"
    assert c.call("GET", one, f"{IMAGE}/latest").json()["version"] == "2"
    assert c.call("GET", one, f"{IMAGE}/9").status_code == 404
    assert c.call("GET", one, f"{IMAGE}/x%20y").status_code == 400
    blob = "/v1/images/{p}/{o}/{s}/{v}/blob"
    assert c.call("GET", blob, f"{IMAGE}/1/blob").content == env.image
    ranged = c.call("GET", blob, f"{IMAGE}/1/blob", headers={**AUTH, "Range": "bytes=0-3"})
    assert ranged.status_code == 206
    assert c.call("GET", blob, f"{IMAGE}/1/blob?sig=00", headers={}).status_code == 401
    kernel = "/v1/images/{p}/{o}/{s}/{v}/kernel"
    assert c.call("GET", kernel, f"{IMAGE}/1/kernel").content == b"k" * 64
    assert c.call("GET", kernel, f"{IMAGE}/2/kernel").status_code == 404
    c.call("GET", "/v1/images/{p}/{o}/{s}/{v}/initrd", f"{IMAGE}/1/initrd")
    catalog = [p for p in c.doc["paths"] if p.startswith("/v1/images")]
    assert c.unanswered("/healthz", "/metrics", *catalog) == set()


def test_hosts_scale_sets_and_instances_answer_as_documented(env: Env) -> None:
    c = env.checked
    publish(env, "1")
    hosts = "/v1/hosts"
    for name in ("h1", "h2"):
        host = {"name": name, "url": f"http://agent/{name}", "token": "t" * 20}
        assert c.call("POST", hosts, hosts, json=host).status_code == 201
    assert c.call("POST", hosts, hosts, json=host).status_code == 409
    assert c.call("POST", hosts, hosts, json={"name": "h3"}).status_code == 400
    env.down.add("http://agent/h2")
    shown = c.call("GET", hosts, hosts).json()["value"]
    assert [h["reachable"] for h in shown] == [True, False] and shown[1]["error"] == "Unreachable"
    one = "/v1/scaleSets/{name}"
    assert c.call("PUT", one, SET, json=scale_set()).status_code == 201
    env.ctl.wait_idle()
    vm = c.call("PUT", one, SET, json=scale_set()).json()["properties"]["virtualMachineProfile"]
    assert vm["osProfile"]["customData"] == "(redacted)"
    shown = [e["properties"]["protectedSettings"] for e in vm["extensionProfile"]["extensions"]]
    assert shown == ["(redacted)", {}]
    assert c.call("PUT", one, SET, content=b"{").status_code == 400
    assert c.call("PUT", one, "/v1/scaleSets/Bad", json={}).status_code == 400
    c.call("PATCH", one, SET, json={"tags": {"team": "db"}})
    assert c.call("PATCH", one, "/v1/scaleSets/nope", json={}).status_code == 404
    assert c.call("GET", one, SET).json()["tags"] == {"team": "db"}
    c.call("GET", one, "/v1/scaleSets/nope")
    assert len(c.call("GET", "/v1/scaleSets", "/v1/scaleSets").json()["value"]) == 1
    vms = c.call("GET", "/v1/scaleSets/{name}/virtualMachines", f"{SET}/virtualMachines")
    assert [v["extensions"][0]["exitCode"] for v in vms.json()["value"]] == [0, 0, 0]
    env.agents.instances.pop("web-1")
    env.agents.unreachable_hosts.update({"h1", "h2"})
    vm = "/v1/scaleSets/{name}/virtualMachines/{iid}"
    assert "address" not in c.call("GET", vm, f"{SET}/virtualMachines/1").json()
    env.agents.unreachable_hosts.clear()
    gone = c.call("GET", vm, f"{SET}/virtualMachines/1").json()
    assert gone["healthReasons"] == ["not found on its host"]
    assert c.call("GET", vm, f"{SET}/virtualMachines/7").status_code == 404
    reimage = "/v1/scaleSets/{name}/reimage"
    assert c.call("POST", reimage, f"{SET}/reimage", json={"instanceIds": ["0"]}).status_code == 202
    assert c.call("POST", reimage, f"{SET}/reimage", json={"instanceIds": ["9"]}).status_code == 400
    env.ctl.wait_idle()
    assert c.call("DELETE", "/v1/hosts/{name}", "/v1/hosts/h1").status_code == 409
    assert c.call("DELETE", one, SET).status_code == 204
    env.ctl.wait_idle()
    assert c.call("DELETE", "/v1/hosts/{name}", "/v1/hosts/h1").status_code == 204
    assert c.call("DELETE", "/v1/hosts/{name}", "/v1/hosts/h1").status_code == 404
    assert c.statuses("GET", vm) == {200, 404}
    listing = "/v1/scaleSets/{name}/virtualMachines"
    assert (
        c.unanswered(hosts, "/v1/hosts/{name}", "/v1/scaleSets", one, listing, vm, reimage) == set()
    )


def test_upgrades_answer_as_documented(env: Env) -> None:
    c = env.checked
    publish(env, "1")
    host = {"name": "h1", "url": "http://agent/h1", "token": "t" * 20}
    c.call("POST", "/v1/hosts", "/v1/hosts", json=host)
    c.call("PUT", "/v1/scaleSets/{name}", SET, json=scale_set())
    env.ctl.wait_idle()
    latest = "/v1/scaleSets/{name}/rollingUpgrades/latest"
    assert c.call("GET", latest, f"{SET}/rollingUpgrades/latest").status_code == 404
    publish(env, "2")
    plan = c.call("GET", "/v1/scaleSets/{name}/rollingUpgrades/plan", f"{SET}/rollingUpgrades/plan")
    assert plan.json()["batches"] == [["0"], ["1"], ["2"]]
    manual = "/v1/scaleSets/{name}/manualUpgrade"
    one = c.call("POST", manual, f"{SET}/manualUpgrade", json={"instanceIds": ["1"]})
    assert one.status_code == 202
    env.ctl.wait_idle()
    history = "/v1/scaleSets/{name}/osUpgradeHistory"
    done = c.call("GET", history, f"{SET}/osUpgradeHistory").json()["value"]
    assert done[0]["properties"]["runningStatus"]["code"] == "Completed"
    # A finished upgrade's status conforms too: lastAction is what was asked last.
    ended = c.call("GET", latest, f"{SET}/rollingUpgrades/latest").json()["properties"][
        "runningStatus"
    ]
    assert (ended["code"], ended["lastAction"]) == ("Completed", "Start")
    # An upgrade that stays running: its reimages never finish during the test.
    env.agents.op_seconds = 3600
    start = "/v1/scaleSets/{name}/osRollingUpgrade"
    assert c.call("POST", start, f"{SET}/osRollingUpgrade").status_code == 202
    assert c.call("POST", start, f"{SET}/osRollingUpgrade").status_code == 409
    running = c.call("GET", latest, f"{SET}/rollingUpgrades/latest").json()
    assert running["properties"]["runningStatus"]["code"] == "RollingForward"
    busy = c.call("POST", manual, f"{SET}/manualUpgrade", json={"instanceIds": ["0"]})
    assert busy.status_code == 409
    cancel = "/v1/scaleSets/{name}/rollingUpgrades/cancel"
    assert c.call("POST", cancel, f"{SET}/rollingUpgrades/cancel").status_code == 202
    cancelled = c.call("GET", latest, f"{SET}/rollingUpgrades/latest").json()["properties"][
        "runningStatus"
    ]
    assert cancelled["lastAction"] == "Cancel"
    both = c.call("GET", history, f"{SET}/osUpgradeHistory").json()["value"]
    assert [h["properties"]["runningStatus"]["endTime"] is None for h in both] == [True, False]
    for method, template in (("GET", latest), ("GET", history), ("POST", start), ("POST", cancel)):
        url = template.replace("{name}", "nope")
        assert c.call(method, template, url).status_code == 404
        assert c.call(method, template, url, headers={}).status_code == 401
    upgrades = [p for p in c.doc["paths"] if "grade" in p]
    assert c.unanswered(*upgrades) == set()


def test_an_answer_off_its_schema_is_caught(env: Env) -> None:
    # (the check above could not fail if the schemas allowed anything)
    c = env.checked
    publish(env, "1")
    r = c.call("PUT", "/v1/scaleSets/{name}", SET, json=scale_set())
    shown = r.json()
    extra = {**shown, "secret": "x"}
    missing = {k: v for k, v in shown.items() if k != "sku"}
    vm = shown["properties"]["virtualMachineProfile"]
    unredacted = json.loads(json.dumps(shown))
    unredacted["properties"]["virtualMachineProfile"]["osProfile"]["customData"] = SECRET_B64
    assert vm["osProfile"]["customData"] == "(redacted)"
    op = c.schema["/v1/scaleSets/{name}"]["PUT"]
    for body in (extra, missing, unredacted):
        assert not op.is_valid_response(answer(r, body)), body
    assert op.is_valid_response(answer(r, shown))


def answer(like: httpx.Response, body: Any) -> httpx.Response:
    """An answer to the request of ``like`` with ``body`` instead."""
    r = httpx.Response(like.status_code, json=body, request=like.request)
    r.elapsed = timedelta(0)
    return r
