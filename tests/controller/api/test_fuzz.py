"""Schema-driven fuzzing of the controller API (see tests/apifuzz.py): every
operation, authenticated and not, with generated path and query parameters
and JSON bodies, over a real SQLite store and catalog with the agent double
standing in for host agents. No response may be a 5xx or a malformed error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import strategies as st

from controller.api.app import create_app
from controller.model.body import ScaleSetBody
from controller.model.mergepatch import merge_patch
from controller.service.controller import Controller
from hostagent.contract import instancespec, operations, views
from kvmss.base import qemuimg
from kvmss.base.clock import SystemClock
from tests.apifuzz import Draw, FuzzCase, FuzzReport, fuzz_app, known_values
from tests.controller.agentdouble import AgentDouble
from tests.controller.controllerenv import make_controller

TOKEN = "controller-fuzz-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EXAMPLES_PER_MODE = 40
MIN_REQUESTS = 2000
REF = {"publisher": "kvmss", "offer": "tiny", "sku": "1", "version": "latest"}
KNOWN = {
    "p": ["kvmss"],
    "o": ["tiny"],
    "s": ["1"],
    "v": ["1", "2", "latest"],
    "part": ["kernel", "initrd"],
    "name": ["web", "db", "h1"],
    "iid": ["0", "1", "2"],
}


class SerialAgentDouble(AgentDouble):
    """The agent double, one call at a time. The controller calls its agent
    port from request threads and reconcile threads at once, and the double
    keeps plain dicts (iterating one while another thread adds to it raised
    "dictionary changed size during iteration", a 500 of the double's own)."""

    _lock = threading.RLock()

    def put_instance(
        self, host: str, name: str, spec: instancespec.InstanceSpec
    ) -> operations.Operation:
        with self._lock:
            return super().put_instance(host, name, spec)

    def reimage(
        self, host: str, name: str, image: instancespec.ImageSpec, operation_id: str
    ) -> operations.Operation:
        with self._lock:
            return super().reimage(host, name, image, operation_id)

    def rollback(self, host: str, name: str, operation_id: str) -> operations.Operation:
        with self._lock:
            return super().rollback(host, name, operation_id)

    def commit(self, host: str, name: str, operation_id: str) -> operations.Operation:
        with self._lock:
            return super().commit(host, name, operation_id)

    def delete(self, host: str, name: str, operation_id: str) -> operations.Operation:
        with self._lock:
            return super().delete(host, name, operation_id)

    def operation(self, host: str, op_id: str) -> operations.Operation:
        with self._lock:
            return super().operation(host, op_id)

    def cancel(
        self, host: str, name: str, op_id: str, kind: operations.OperationKind
    ) -> operations.Operation:
        with self._lock:
            return super().cancel(host, name, op_id, kind)

    def instance(self, host: str, name: str) -> views.InstanceView | None:
        with self._lock:
            return super().instance(host, name)


@dataclass
class Env:
    app: FastAPI
    api: TestClient
    ctl: Controller
    image: bytes


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    agents = SerialAgentDouble(SystemClock(), op_seconds=0, boot_seconds=0)
    ctl, staging = make_controller(tmp_path, agents)
    store = ctl.store
    qemuimg.create(tmp_path / "img.qcow2", 16 << 20)
    app = create_app(ctl, TOKEN, staging)
    try:
        yield Env(app, TestClient(app), ctl, (tmp_path / "img.qcow2").read_bytes())
    finally:
        ctl.close()
        store.close()


def scale_set_body() -> dict[str, Any]:
    return {
        "sku": {"capacity": 2},
        "properties": {
            "upgradePolicy": {"mode": "Rolling"},
            "virtualMachineProfile": {"storageProfile": {"imageReference": dict(REF)}},
        },
    }


def ensure_resources(env: Env) -> Callable[[], None]:
    """Before each operation: image versions 1 and 2, host h1 and scale set
    web exist again (an earlier operation may have deleted them)."""

    def ensure() -> None:
        for version in ("1", "2"):
            url = f"/v1/images/kvmss/tiny/1/{version}"
            if env.api.get(url, headers=AUTH).status_code == 404:
                r = env.api.put(url, content=env.image, headers=AUTH)
                assert r.status_code == 201, r.text
        host = {"name": "h1", "url": "http://agent/h1", "token": "t" * 20}
        r = env.api.post("/v1/hosts", json=host, headers=AUTH)
        assert r.status_code in (201, 409), r.text
        r = env.api.put("/v1/scaleSets/web", json=scale_set_body(), headers=AUTH)
        assert r.status_code in (200, 201, 409), r.text

    return ensure


def declare_bodies(doc: dict[str, Any]) -> None:
    """Declare the bodies the controller reads by hand, so they are generated
    too: the scale set model for PUT (and, with nothing required, for PATCH,
    a merge patch) and raw bytes for image uploads."""
    # (under names of their own: the response bodies have parts of the same names)
    schema = ScaleSetBody.model_json_schema(ref_template="#/components/schemas/Put{model}")
    defs = {f"Put{name}": part for name, part in schema.pop("$defs", {}).items()}
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    assert not set(defs) & set(schemas), "request parts named as documented ones"
    schemas.update(defs)
    schemas["PutScaleSetBody"] = schema

    def optional(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: optional(v) for k, v in node.items() if k != "required"}
        if isinstance(node, list):
            return [optional(v) for v in node]
        return node

    scale_set = doc["paths"]["/v1/scaleSets/{name}"]
    scale_set["put"]["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PutScaleSetBody"}}
        },
    }
    scale_set["patch"]["requestBody"] = {
        "required": True,
        "content": {"application/json": {"schema": optional(schema)}},
    }
    binary = {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    for path in ("/v1/images/{p}/{o}/{s}/{v}", "/v1/images/{p}/{o}/{s}/{v}/{part}"):
        doc["paths"][path]["put"]["requestBody"] = binary


def near_valid_scale_set(case: FuzzCase, draw: Draw) -> None:
    """Now and then lay a generated PUT body over a valid model (as a merge
    patch) and give it the image that exists, so generated fields get past
    the first error and models are stored and reconciled."""
    if case.path != "/v1/scaleSets/{name}" or not isinstance(case.body, dict):
        return
    if not draw(st.booleans()):
        return
    if case.method.upper() == "PUT" and draw(st.booleans()):
        case.body = merge_patch(scale_set_body(), case.body)
    node: Any = case.body
    for key in ("properties", "virtualMachineProfile", "storageProfile"):
        nxt = node.get(key)
        if not isinstance(nxt, dict):
            return
        node = nxt
    node["imageReference"] = dict(REF)


def test_fuzz_controller_api(env: Env) -> None:
    ensure = ensure_resources(env)
    ensure()
    report: FuzzReport = fuzz_app(
        env.app,
        token=TOKEN,
        examples=EXAMPLES_PER_MODE,
        public_paths=frozenset({"/healthz", "/metrics"}),
        schema_overrides=declare_bodies,
        mappers=(known_values(KNOWN), near_valid_scale_set),
        before_operation=ensure,
    )
    env.ctl.wait_idle()
    assert report.sent >= MIN_REQUESTS, report.summary()
    # every operation of the document was reached, and some requests got past
    # validation to the controller itself
    documented = {f"{m.upper()} {p}" for p, ops in env.app.openapi()["paths"].items() for m in ops}
    assert report.operations() == documented
    succeeded = sum(n for (_op, status), n in report.outcomes.items() if status < 300)
    assert succeeded > 100, report.summary()
    # every status an operation answered is one its document names (but 405:
    # a hostile segment, such as "a/b", made the path another route's)
    responses = {
        f"{m.upper()} {p}": set(op["responses"])
        for p, ops in env.app.openapi()["paths"].items()
        for m, op in ops.items()
    }
    undocumented = {(op, s) for op, s in report.outcomes if str(s) not in {*responses[op], "405"}}
    assert not undocumented, f"{sorted(undocumented)}: {report.summary()}"
