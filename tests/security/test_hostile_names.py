"""Hostile names and paths in every path parameter and name-like body field of
the controller's API and of the agent's management API.

Values: dot segments, traversals to a tagged file name, absolute paths,
encoded slashes, NUL, 10,000 characters, Unicode (accents, CJK, a
right-to-left override, an emoji), XML metacharacters, CR/LF, shell
substitutions. Each is either refused (4xx with the error shape, a bounded
message) or accepted and kept exactly as given, never a 5xx; a value that
reaches a libvirt domain (an image's kernel command line) is in the defined
domain XML exactly, as text, with no element added; and nothing is written
outside the services' own directories (each is nested a few levels below a
watched root, and the tagged file name is looked for where an absolute path
would have put it).
"""

from __future__ import annotations

import copy
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvmss.base import qemuimg
from kvmss.base.clock import SystemClock
from tests.fixtures import storage_root
from tests.security.agentenv import AGENT_AUTH, AgentEnv, agent_env
from tests.security.ctlapp import CONTROLLER_AUTH, CONTROLLER_VALUES, ControllerEnv, controller_env
from tests.security.hostile import (
    DEPTH,
    MESSAGE_LIMIT,
    hostile_values,
    nothing_written_outside,
    path_segment,
    problem,
)
from tests.security.routes import DOCS_REASON, fill, routed

TAG = uuid.uuid4().hex[:10]
HOSTILE = hostile_values(TAG)
AGENT_VALUES = {"name": "x1", "op_id": "x1", "rest": "x1/reimage"}


def nested(root: Path, name: str) -> Path:
    d = root.joinpath(*[f"l{i}" for i in range(DEPTH)], name)
    d.mkdir(parents=True)
    return d


@pytest.fixture
def controller() -> Iterator[ControllerEnv]:
    with storage_root("sec-names") as root, controller_env(nested(root, "ctl")) as env:
        yield env


@pytest.fixture
def agent() -> Iterator[AgentEnv]:
    with storage_root("sec-names") as root, agent_env(nested(root, "agent")) as env:
        env.create("x1")
        yield env


def _params(path: str) -> list[str]:
    out = []
    for part in path.split("{")[1:]:
        out.append(part.split("}")[0].split(":")[0])
    return out


def _hostile_paths(
    client: Any,
    app: Any,
    values: dict[str, str],
    auth: dict[str, str],
    body: Any,
    message_limit: int | None = MESSAGE_LIMIT,
) -> tuple[list[str], int]:
    problems: list[str] = []
    sent = 0
    for method, path in sorted(routed(app)):
        if path in ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"):
            continue  # DOCS_REASON: no parameters
        for param in _params(path):
            for value in HOSTILE:
                url = fill(path, {**values, param: path_segment(value)})
                r = client.request(method, url, headers=auth, json=body)
                sent += 1
                what = f"{method} {path} with {param}={value[:40]!r}"
                if (p := problem(r.status_code, r.text, message_limit)) is not None:
                    problems.append(f"{what}: {p}")
                elif method != "GET" and r.status_code < 300:
                    problems.append(f"{what}: accepted ({r.status_code} {r.text[:200]})")
    return problems, sent


def test_controller_path_parameters(controller: ControllerEnv) -> None:
    assert DOCS_REASON
    root = controller.root.parents[DEPTH]
    with nothing_written_outside(root, (controller.root,), TAG):
        problems, sent = _hostile_paths(
            controller.api, controller.app, CONTROLLER_VALUES, CONTROLLER_AUTH, {}, None
        )
    assert not problems, "\n".join(problems[:40])
    assert sent > 30 * len(HOSTILE)
    # the image, host and scale set behind the valid values are all still there
    assert controller.api.get("/v1/scaleSets/x1", headers=CONTROLLER_AUTH).status_code == 200
    assert controller.api.get("/v1/hosts", headers=CONTROLLER_AUTH).json()["value"]
    assert controller.api.get("/v1/images/kvmss/tiny/1/1", headers=CONTROLLER_AUTH).is_success


def test_controller_error_messages_do_not_echo_long_names(controller: ControllerEnv) -> None:
    long = "x" * 10_000
    problems = []
    for method, path in sorted(routed(controller.app)):
        for param in _params(path):
            url = fill(path, {**CONTROLLER_VALUES, param: long})
            r = controller.api.request(method, url, headers=CONTROLLER_AUTH, json={})
            if (p := problem(r.status_code, r.text)) is not None:
                problems.append(f"{method} {path} with a long {param}: {p}")
    assert not problems, "\n".join(problems)


def test_agent_path_parameters(agent: AgentEnv) -> None:
    from hostagent.daemon.api import create_app

    app = create_app(agent.agent)
    root = (agent.root).parents[DEPTH]
    with nothing_written_outside(root, (agent.root,), TAG):
        problems, sent = _hostile_paths(agent.api, app, AGENT_VALUES, AGENT_AUTH, agent.spec("2"))
    assert not problems, "\n".join(problems[:40])
    assert sent > 10 * len(HOSTILE)
    assert agent.api.get("/v1/instances/x1", headers=AGENT_AUTH).status_code == 200


# -- body fields ---------------------------------------------------------------------

Setter = Callable[[dict[str, Any], str], None]


def at(*path: str | int) -> Setter:
    """Sets the value at ``path`` (creating mappings on the way)."""

    def setter(body: dict[str, Any], value: str) -> None:
        node: Any = body
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(key, str) else node[key]
        node[path[-1]] = value

    return setter


VMP = ("properties", "virtualMachineProfile")
EXT = (*VMP, "extensionProfile", "extensions", 0)
SCALE_SET_FIELDS: dict[str, Setter] = {
    "name": at("name"),
    "id": at("id"),
    "type": at("type"),
    "location": at("location"),
    "sku.name": at("sku", "name"),
    "sku.tier": at("sku", "tier"),
    **{
        f"imageReference.{k}": at(*VMP, "storageProfile", "imageReference", k)
        for k in ("publisher", "offer", "sku", "version")
    },
    "osProfile.computerNamePrefix": at(*VMP, "osProfile", "computerNamePrefix"),
    "osProfile.adminUsername": at(*VMP, "osProfile", "adminUsername"),
    "extensions[0].name": at(*EXT, "name"),
    "extensions[0].properties.publisher": at(*EXT, "properties", "publisher"),
    "extensions[0].properties.typeHandlerVersion": at(*EXT, "properties", "typeHandlerVersion"),
    "extensions[0].properties.provisionAfterExtensions[0]": lambda b, v: at(
        *EXT, "properties", "provisionAfterExtensions"
    )(b, [v]),  # type: ignore[arg-type]
    "healthProbe.requestPath": at(*VMP, "networkProfile", "healthProbe", "requestPath"),
    "rollingUpgradePolicy.healthTimeout": at(
        "properties", "upgradePolicy", "rollingUpgradePolicy", "healthTimeout"
    ),
}


def scale_set_body() -> dict[str, Any]:
    from tests.security.ctlapp import model

    body = model(
        1,
        extensionProfile={
            "extensions": [
                {
                    "name": "app",
                    "properties": {
                        "type": "CustomScript",
                        "settings": {"commandToExecute": "true"},
                    },
                }
            ]
        },
        networkProfile={"healthProbe": {"protocol": "Http", "port": 80, "requestPath": "/health"}},
    )
    body["properties"]["upgradePolicy"] = {"mode": "Rolling"}
    return body


def _get(body: Any, path: list[str | int]) -> Any:
    for key in path:
        body = body[key]
    return body


def test_controller_body_fields(controller: ControllerEnv) -> None:
    api = controller.api
    root = controller.root.parents[DEPTH]
    problems: list[str] = []
    accepted: list[str] = []
    with nothing_written_outside(root, (controller.root,), TAG):
        for field, setter in SCALE_SET_FIELDS.items():
            for value in HOSTILE:
                body = scale_set_body()
                setter(body, value)
                r = api.put("/v1/scaleSets/hostile", json=body, headers=CONTROLLER_AUTH)
                what = f"scale set {field}={value[:40]!r}"
                if (p := problem(r.status_code, r.text)) is not None:
                    problems.append(f"{what}: {p}")
                if r.is_success:
                    accepted.append(what)
                    got = api.get("/v1/scaleSets/hostile", headers=CONTROLLER_AUTH).json()
                    if value not in str(got) and value.strip():
                        problems.append(f"{what}: accepted but not kept as given")
                    _delete_scale_set(controller, "hostile")
        for field in ("name", "url", "token"):
            for value in HOSTILE:
                host = {"name": "h2", "url": "http://agent.invalid/h2", "token": "t" * 32}
                host[field] = value
                r = api.post("/v1/hosts", json=host, headers=CONTROLLER_AUTH)
                if (p := problem(r.status_code, r.text)) is not None:
                    problems.append(f"host {field}={value[:40]!r}: {p}")
                elif r.is_success:
                    # a token is opaque: any printable ASCII of 16 or more, kept as given
                    if field != "token" or not (value.isascii() and value.isprintable()):
                        problems.append(f"host {field}={value[:40]!r}: {r.text[:200]}")
                    assert value not in r.text  # never shown back
                    assert api.delete("/v1/hosts/h2", headers=CONTROLLER_AUTH).status_code == 204
        for value in HOSTILE:
            for action in ("manualUpgrade", "reimage"):
                r = api.post(
                    f"/v1/scaleSets/x1/{action}",
                    json={"instanceIds": [value]},
                    headers=CONTROLLER_AUTH,
                )
                if (p := problem(r.status_code, r.text)) is not None or r.is_success:
                    problems.append(f"{action} instanceIds=[{value[:40]!r}]: {p or r.text[:200]}")
        for j, value in enumerate(HOSTILE):
            r = _publish_with_cmdline(controller, f"2.{j}", value)
            what = f"publish cmdline={value[:40]!r}"
            if (p := problem(r.status_code, r.text)) is not None:
                problems.append(f"{what}: {p}")
            elif r.is_success:
                accepted.append(what)
                if r.json()["cmdline"] != value:
                    problems.append(f"{what}: published as {r.json()['cmdline']!r:.60}")
    assert not problems, "\n".join(problems[:60])
    assert any(a.startswith("publish cmdline=") for a in accepted), accepted


def _delete_scale_set(controller: ControllerEnv, name: str) -> None:
    """Once its instance exists (test_deleting_a_scale_set_that_gains_an_instance_is_409)."""
    url = f"/v1/scaleSets/{name}"
    for _ in range(500):
        if controller.api.get(f"{url}/virtualMachines", headers=CONTROLLER_AUTH).json()["value"]:
            break
        SystemClock().sleep(0.01)
    r = controller.api.delete(url, headers=CONTROLLER_AUTH)
    assert r.status_code == 204, r.text


def test_deleting_a_scale_set_that_gains_an_instance_is_409(
    controller: ControllerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = controller.api
    assert api.put("/v1/scaleSets/racy", json=scale_set_body(), headers=CONTROLLER_AUTH).is_success
    for _ in range(500):
        if api.get("/v1/scaleSets/racy/virtualMachines", headers=CONTROLLER_AUTH).json()["value"]:
            break
        SystemClock().sleep(0.01)
    # the reconcile's instance appears just after the delete listed none
    monkeypatch.setattr(controller.ctl.store.instances, "of", lambda _name: [])
    r = api.delete("/v1/scaleSets/racy", headers=CONTROLLER_AUTH)
    assert r.status_code == 409, r.text
    assert problem(r.status_code, r.text) is None


def _publish_with_cmdline(controller: ControllerEnv, version: str, cmdline: str) -> Any:
    """Publish a version with a kernel and ``cmdline``; the response."""
    staged = controller.api.put(
        f"/v1/images/kvmss/tiny/1/{version}/kernel", content=b"kernel", headers=CONTROLLER_AUTH
    )
    assert staged.status_code == 204, staged.text
    disk = controller.root / "cmdline.qcow2"
    if not disk.exists():
        qemuimg.create(disk, 1 << 20)
    return controller.api.put(
        f"/v1/images/kvmss/tiny/1/{version}",
        params={"cmdline": cmdline},
        content=disk.read_bytes(),
        headers=CONTROLLER_AUTH,
    )


def test_controller_refuses_a_cmdline_the_agent_cannot_use(controller: ControllerEnv) -> None:
    accepted = []
    for j, value in enumerate(v for v in HOSTILE if not v.isprintable()):
        r = _publish_with_cmdline(controller, f"3.{j}", value)
        if r.is_success:
            accepted.append(value)
    assert not accepted


# The agent: its spec's name-like fields; the kernel command line reaches the
# domain XML.
SPEC_FIELDS: dict[str, Setter] = {
    "osProfile.computerName": at("osProfile", "computerName"),
    "osProfile.adminUsername": at("osProfile", "adminUsername"),
    "extensions[0].name": at("extensions", 0, "name"),
    "extensions[0].provisionAfterExtensions[0]": lambda b, v: at(
        "extensions", 0, "provisionAfterExtensions"
    )(b, [v]),  # type: ignore[arg-type]
    **{f"image.reference.{k}": at("image", "reference", k) for k in ("publisher", "offer", "sku")},
    "image.reference.version": at("image", "reference", "version"),
    "image.url": at("image", "url"),
    "image.cmdline": at("image", "cmdline"),
    "healthProbe.requestPath": at("healthProbe", "requestPath"),
    "operationId": at("operationId"),
}


def _tags(xml: str) -> Counter[str]:
    return Counter(el.tag for el in ET.fromstring(xml).iter())


def test_agent_body_fields(agent: AgentEnv) -> None:
    api = agent.api
    kernel = agent.images["1"].model_dump(mode="json", exclude_none=True)
    base = agent.spec(healthProbe={"protocol": "Http", "port": 80, "requestPath": "/h"})
    # a kernel for the command line: any verified file will do on the test driver
    base["image"]["kernel"] = {"url": kernel["url"], "sha256": kernel["sha256"]}
    base["image"]["cmdline"] = "console=ttyS0"
    problems: list[str] = []
    accepted: list[str] = []
    root = agent.root.parents[DEPTH]
    with nothing_written_outside(root, (agent.root,), TAG):
        op = agent.wait(api.put("/v1/instances/ref-1", json=base, headers=AGENT_AUTH))
        assert op["status"] == "Succeeded", op
        baseline = _tags(agent.domain_xml("ref-1"))
        for i, (field, setter) in enumerate(SPEC_FIELDS.items()):
            for j, value in enumerate(HOSTILE):
                name = f"h-{i}-{j}"
                body = copy.deepcopy(base)
                setter(body, value)
                r = api.put(f"/v1/instances/{name}", json=body, headers=AGENT_AUTH)
                what = f"spec {field}={value[:40]!r}"
                if (p := problem(r.status_code, r.text)) is not None:
                    problems.append(f"{what}: {p}")
                    continue
                usable = value.isprintable() and len(value) <= 1024
                if field == "image.cmdline" and r.is_success != usable:
                    problems.append(f"{what}: {r.status_code} {r.text[:200]}")
                if not r.is_success:
                    continue
                op = agent.wait(r)
                if op["status"] != "Succeeded":
                    problems.append(f"{what}: accepted (202), then {op['error']}")
                    continue
                accepted.append(what)
                xml = agent.domain_xml(name)
                try:
                    tags = _tags(xml)
                except ET.ParseError as e:
                    problems.append(f"{what}: domain XML does not parse: {e}")
                    continue
                want = baseline
                if field == "image.cmdline":
                    got = ET.fromstring(xml).findtext("os/cmdline")
                    if got != (value or None):  # an empty command line is none
                        problems.append(f"{what}: cmdline in the domain is {got!r:.60}")
                    if not value:
                        want = baseline - Counter({"cmdline": 1})
                if tags != want:
                    problems.append(f"{what}: domain XML elements changed: {tags} != {want}")
                agent.wait(api.delete(f"/v1/instances/{name}", headers=AGENT_AUTH))
    assert not problems, "\n".join(problems[:60])
    assert any(a.startswith("spec image.cmdline=") for a in accepted), accepted


def test_an_operation_that_breaks_half_way_reports_its_own_error(
    agent: AgentEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    # regression: a create whose domain definition raised (a NUL in the kernel
    # command line did) was undone and then reported "the agent restarted
    # during create", which it had not
    def broken(_domain: Any) -> None:
        raise ValueError("embedded null character")

    monkeypatch.setattr(agent.agent.hv, "define", broken)
    r = agent.api.put("/v1/instances/broken", json=agent.spec(), headers=AGENT_AUTH)
    assert r.status_code == 202, r.text
    journal = agent.agent.instances.journal
    op: dict[str, Any] = {}
    for _ in range(500):  # the operation ends Failed first, then it is settled
        op = agent.api.get(f"/v1/operations/{r.json()['id']}", headers=AGENT_AUTH).json()
        if op["status"] == "Failed" and "(what it did is undone)" in op["error"]["message"]:
            break
        SystemClock().sleep(0.01)
    assert op["status"] == "Failed"
    assert op["error"]["code"] == "InternalError", op["error"]
    assert "embedded null character" in op["error"]["message"]
    assert "restarted" not in op["error"]["message"]
    assert op["error"]["message"].endswith("(what it did is undone)")
    left = agent.root / "agent" / "instances" / "broken"
    # undone: no disk, seed (it holds the secrets) or spec left; the report
    # store's bookkeeping (extension names only) stays
    assert sorted(p.name for p in left.iterdir()) in ([], ["reports.json"])
    assert journal.get("broken") is None
