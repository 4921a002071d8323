"""The controller's REST API on a real store and catalog, with the agent double
standing in for host agents (no guest runs here)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.images.catalog import Catalog
from controller.service.controller import Controller, Settings
from controller.store.facade import Store
from hostagent.contract import instancespec, operations
from kvmss.base import qemuimg
from kvmss.base.clock import SystemClock
from tests.controller.agentdouble import AgentDouble, FakeOp
from tests.controller.controllerenv import make_controller

TOKEN = "controller-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Env:
    api: TestClient
    ctl: Controller
    agents: AgentDouble
    tmp: Path

    def qcow2(self, name: str = "img.qcow2") -> Path:
        p = self.tmp / name
        if not p.exists():
            qemuimg.create(p, 16 << 20)
        return p

    def publish(self, version: str) -> Any:
        with self.qcow2(f"v{version}.qcow2").open("rb") as f:
            return self.api.put(
                f"/v1/images/kvmss/tiny/1/{version}", content=f.read(), headers=AUTH
            )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    agents = AgentDouble(SystemClock(), op_seconds=0, boot_seconds=0)
    ctl, staging = make_controller(tmp_path, agents)
    store = ctl.store
    yield Env(TestClient(create_app(ctl, TOKEN, staging)), ctl, agents, tmp_path)
    ctl.close()
    store.close()


def body(capacity: int = 2, **upgrade: Any) -> dict[str, Any]:
    return {
        "sku": {"capacity": capacity},
        "properties": {
            "upgradePolicy": {"mode": "Rolling", **upgrade},
            "virtualMachineProfile": {
                "storageProfile": {
                    "imageReference": {
                        "publisher": "kvmss",
                        "offer": "tiny",
                        "sku": "1",
                        "version": "latest",
                    }
                },
                "osProfile": {"customData": "U0VDUkVULXh5eg=="},
            },
        },
    }


def test_publish_lists_and_serves_blobs_by_signature(env: Env) -> None:
    r = env.publish("1")
    assert r.status_code == 201, r.text
    man = r.json()
    assert man["version"] == "1" and len(man["sha256"]) == 64
    assert env.publish("1").status_code == 409
    env.publish("1.10")
    env.publish("1.9")
    got = env.api.get("/v1/images/kvmss/tiny/1/versions", headers=AUTH).json()
    assert [m["version"] for m in got["value"]] == ["1.10", "1.9", "1"]
    assert env.api.get("/v1/images", headers=AUTH).json()["value"][0]["latest"] == "1.10"
    rec = env.ctl.catalog.resolve("kvmss", "tiny", "1", "1")
    spec = env.ctl.image_spec(rec)
    path = spec.url.split("127.0.0.1:1", 1)[1]
    blob = env.api.get(path)
    assert blob.status_code == 200 and len(blob.content) == rec.size_bytes
    bad = path.split("?")[0] + "?sig=" + "0" * 64
    assert env.api.get(bad).status_code == 401


def test_a_signature_that_is_not_ascii_is_401(env: Env) -> None:
    # regression: the signature comparison raised TypeError (a 500) on non-ASCII
    env.publish("1")
    r = env.api.get("/v1/images/kvmss/tiny/1/1/blob", params={"sig": "caf\u00e9"})
    assert r.status_code == 401, r.text
    assert r.json()["error"] == {"code": "Unauthorized", "message": "invalid signature"}


def test_staging_under_a_name_with_a_nul_byte_is_400(env: Env) -> None:
    # regression: the NUL reached the file system (ValueError, a 500)
    r = env.api.put("/v1/images/a%00b/tiny/1/1/kernel", content=b"k", headers=AUTH)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {"code": "InvalidParameter", "message": "publisher: invalid"}


def test_bodies_nested_too_deeply_are_400(env: Env) -> None:
    # regression: 1000 levels broke the JSON parser (RecursionError), 250 the
    # model's serialisation (ValueError): both were 500s
    env.publish("1")
    deep: Any = "x"
    for _ in range(100):
        deep = {"a": deep}
    b = body()
    b["properties"]["virtualMachineProfile"]["extensionProfile"] = {
        "extensions": [
            {
                "name": "x",
                "properties": {
                    "type": "CustomScript",
                    "settings": {"commandToExecute": "true", "deep": deep},
                },
            }
        ]
    }
    nested = b"[" * 5000 + b"]" * 5000
    for method, content in (("PUT", nested), ("PUT", None), ("PATCH", nested)):
        kw: dict[str, Any] = {"content": content} if content else {"json": b}
        r = env.api.request(method, "/v1/scaleSets/web", headers=AUTH, **kw)
        assert r.status_code == 400, (method, r.text)
        assert r.json()["error"] == {
            "code": "InvalidJson",
            "message": "the request body nests deeper than 64 levels",
        }


def test_a_host_token_that_cannot_travel_in_a_header_is_400(env: Env) -> None:
    # regression: a non-latin-1 token broke the probe request (UnicodeEncodeError, a 500)
    for token in ("\u2603" * 20, "tok en-0123456789abcdef", "token\n0123456789abcdef"):
        r = env.api.post(
            "/v1/hosts", json={"name": "h1", "url": "http://a/h1", "token": token}, headers=AUTH
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"]["message"] == "token: must be printable ASCII without spaces"


def test_a_host_url_that_is_no_agent_is_400(tmp_path: Path) -> None:
    # regression: with the real agent client, a 200 that is not JSON or not a
    # host view escaped as JSONDecodeError / ValidationError (500s)
    from bench.served import FileServer

    served = tmp_path / "served"
    for sub, text in (("text", "hello"), ("json", '{"name": 1}')):
        (served / sub / "v1").mkdir(parents=True)
        (served / sub / "v1" / "host").write_text(text)
    files = FileServer(served)
    clock = SystemClock()
    store = Store.open(f"sqlite:///{tmp_path / 'c.db'}", clock=clock)
    ctl = Controller(
        store,
        Catalog(store, tmp_path / "blobs", clock),
        AgentDouble(clock),
        clock,
        Settings("http://127.0.0.1:1", b"s" * 32, poll_seconds=0.01),
    )
    staging = tmp_path / "staging"
    staging.mkdir()
    api = TestClient(create_app(ctl, TOKEN, staging))
    try:
        for sub in ("text", "json"):
            host = {"name": "h1", "url": files.url(sub), "token": "t" * 20}
            r = api.post("/v1/hosts", json=host, headers=AUTH)
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == "HostUnreachable"
            assert "(InvalidResponse)" in r.json()["error"]["message"]
    finally:
        ctl.close()
        store.close()
        files.close()


def test_publishing_garbage_is_a_4xx_and_leaves_nothing(env: Env) -> None:
    r = env.api.put("/v1/images/kvmss/tiny/1/1", content=b"not a disk" * 100, headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "NotQcow2"
    r = env.api.put("/v1/images/kvmss/tiny/1/latest", content=b"x", headers=AUTH)
    assert r.status_code == 400
    assert env.api.get("/v1/images", headers=AUTH).json()["value"] == []


def test_scale_set_errors_name_the_field_and_hide_secrets(env: Env) -> None:
    env.publish("1")
    b = body(rollingUpgradePolicy={"maxBatchInstancePercent": 500})
    r = env.api.put("/v1/scaleSets/web", json=b, headers=AUTH)
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert msg.startswith("properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent")
    assert "SECRET" not in r.text and "U0VDUkVU" not in r.text
    r = env.api.put("/v1/scaleSets/Bad_Name", json=body(), headers=AUTH)
    assert r.status_code == 400
    r = env.api.put("/v1/scaleSets/web", content=b"{", headers=AUTH)
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidJson"
    nov = body()
    nov["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]["sku"] = "9"
    r = env.api.put("/v1/scaleSets/web", json=nov, headers=AUTH)
    assert r.status_code == 400 and "imageReference" in r.json()["error"]["message"]
    assert env.api.get("/v1/scaleSets/web", headers=AUTH).status_code == 404


def test_scale_set_lifecycle_and_automatic_upgrade_on_publish(env: Env) -> None:
    env.publish("1")
    assert (
        env.api.post(
            "/v1/hosts", json={"name": "h1", "url": "http://a/h1", "token": "t" * 20}, headers=AUTH
        ).status_code
        == 201
    )
    b = body(
        capacity=3,
        automaticOSUpgradePolicy={"enableAutomaticOSUpgrade": True},
    )
    b["properties"]["virtualMachineProfile"]["networkProfile"] = {
        "healthProbe": {"protocol": "Tcp", "port": 22}
    }
    r = env.api.put("/v1/scaleSets/web", json=b, headers=AUTH)
    assert r.status_code == 201, r.text
    shown = r.json()
    assert shown["properties"]["virtualMachineProfile"]["osProfile"]["customData"] == "(redacted)"
    env.ctl.wait_idle()
    vms = env.api.get("/v1/scaleSets/web/virtualMachines", headers=AUTH).json()["value"]
    assert [v["instanceId"] for v in vms] == ["0", "1", "2"]
    assert all(v["imageVersion"] == "1" and v["health"] == "Healthy" for v in vms)
    plan = env.api.get("/v1/scaleSets/web/rollingUpgrades/plan", headers=AUTH).json()
    assert plan["batches"] == [] and plan["targetImageReference"]["version"] == "1"

    assert env.publish("2").status_code == 201  # starts an upgrade (startedBy Platform)
    env.ctl.wait_idle()
    hist = env.api.get("/v1/scaleSets/web/osUpgradeHistory", headers=AUTH).json()["value"]
    assert len(hist) == 1
    h = hist[0]["properties"]
    assert h["runningStatus"]["code"] == "Completed"
    assert h["startedBy"] == "Platform"
    assert h["progress"]["successfulInstanceCount"] == 3
    latest = env.api.get("/v1/scaleSets/web/rollingUpgrades/latest", headers=AUTH).json()
    assert latest["type"] == "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades"
    assert [i["state"] for i in latest["kvmss"]["instances"]] == ["Succeeded"] * 3

    # a manual start with nothing to do completes at once; cancel with none running is 409
    r = env.api.post("/v1/scaleSets/web/osRollingUpgrade", headers=AUTH)
    assert r.status_code == 202
    env.ctl.wait_idle()
    r = env.api.post("/v1/scaleSets/web/rollingUpgrades/cancel", headers=AUTH)
    assert r.status_code == 409

    # opting out: a new version no longer starts anything
    r = env.api.patch(
        "/v1/scaleSets/web",
        json={
            "properties": {
                "upgradePolicy": {"automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": False}}
            }
        },
        headers={**AUTH, "Content-Type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    env.publish("3")
    env.ctl.wait_idle()
    assert len(env.api.get("/v1/scaleSets/web/osUpgradeHistory", headers=AUTH).json()["value"]) == 2

    # scale in
    r = env.api.patch("/v1/scaleSets/web", json={"sku": {"capacity": 1}}, headers=AUTH)
    assert r.status_code == 200
    env.ctl.wait_idle()
    vms = env.api.get("/v1/scaleSets/web/virtualMachines", headers=AUTH).json()["value"]
    assert [v["instanceId"] for v in vms] == ["0"]
    assert env.api.delete("/v1/hosts/h1", headers=AUTH).status_code == 409
    assert env.api.delete("/v1/scaleSets/web", headers=AUTH).status_code == 204
    assert env.api.delete("/v1/hosts/h1", headers=AUTH).status_code == 204


def test_unknown_things_are_404(env: Env) -> None:
    for path in (
        "/v1/scaleSets/nope",
        "/v1/scaleSets/nope/virtualMachines",
        "/v1/scaleSets/nope/rollingUpgrades/latest",
        "/v1/scaleSets/nope/osUpgradeHistory",
        "/v1/images/a/b/c/1",
    ):
        r = env.api.get(path, headers=AUTH)
        assert r.status_code == 404, (path, r.text)
        assert set(r.json()["error"]) == {"code", "message"}


def _explicit(env: Env, mode: str, capacity: int = 3) -> None:
    env.publish("1")
    env.publish("2")
    env.api.post(
        "/v1/hosts", json={"name": "h1", "url": "http://a/h1", "token": "t" * 20}, headers=AUTH
    )
    b = body(capacity=capacity)
    b["properties"]["upgradePolicy"]["mode"] = mode
    b["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]["version"] = "1"
    assert env.api.put("/v1/scaleSets/web", json=b, headers=AUTH).status_code == 201
    env.ctl.wait_idle()


def _to_version(env: Env, version: str) -> Any:
    patch = {
        "properties": {
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"version": version}}}
        }
    }
    r = env.api.patch("/v1/scaleSets/web", json=patch, headers=AUTH)
    env.ctl.wait_idle()
    return r


def _versions(env: Env) -> list[str]:
    vms = env.api.get("/v1/scaleSets/web/virtualMachines", headers=AUTH).json()["value"]
    return [v["imageVersion"] for v in vms]


def test_model_change_in_rolling_mode_runs_a_rolling_upgrade(env: Env) -> None:
    _explicit(env, "Rolling")
    assert _to_version(env, "2").status_code == 200
    hist = env.api.get("/v1/scaleSets/web/osUpgradeHistory", headers=AUTH).json()["value"]
    assert hist[0]["properties"]["startedBy"] == "User"
    assert hist[0]["properties"]["runningStatus"]["code"] == "Completed"
    latest = env.api.get("/v1/scaleSets/web/rollingUpgrades/latest", headers=AUTH).json()
    assert latest["kvmss"]["batches"] == [["0"], ["1"], ["2"]]
    assert _versions(env) == ["2", "2", "2"]


def test_model_change_in_automatic_mode_upgrades_all_at_once(env: Env) -> None:
    _explicit(env, "Automatic")
    _to_version(env, "2")
    latest = env.api.get("/v1/scaleSets/web/rollingUpgrades/latest", headers=AUTH).json()
    assert latest["kvmss"]["batches"] == [["0", "1", "2"]]
    assert _versions(env) == ["2", "2", "2"]


def test_manual_mode_waits_for_manual_upgrade_of_named_instances(env: Env) -> None:
    _explicit(env, "Manual")
    _to_version(env, "2")
    assert env.api.get("/v1/scaleSets/web/osUpgradeHistory", headers=AUTH).json()["value"] == []
    assert _versions(env) == ["1", "1", "1"]
    r = env.api.post("/v1/scaleSets/web/manualUpgrade", json={"instanceIds": ["1"]}, headers=AUTH)
    assert r.status_code == 202, r.text
    env.ctl.wait_idle()
    assert _versions(env) == ["1", "2", "1"]
    r = env.api.post("/v1/scaleSets/web/manualUpgrade", json={"instanceIds": ["7"]}, headers=AUTH)
    assert r.status_code == 400 and "instanceIds" in r.json()["error"]["message"]
    r = env.api.post("/v1/scaleSets/web/manualUpgrade", json={"instanceIds": []}, headers=AUTH)
    assert r.status_code == 400


def test_manual_upgrade_of_update_domains_takes_every_instance_in_them(env: Env) -> None:
    _explicit(env, "Manual")
    _to_version(env, "2")
    post = partial(env.api.post, "/v1/scaleSets/web/manualUpgrade", headers=AUTH)
    r = post(json={"updateDomains": [4]})  # instances 0, 1, 2 are in UDs 0, 1, 2
    assert r.status_code == 400 and "updateDomains" in r.json()["error"]["message"]
    r = post(json={"updateDomains": [20]})
    assert r.status_code == 400 and "updateDomains" in r.json()["error"]["message"]
    assert post(json={}).status_code == 400
    assert env.api.get("/v1/scaleSets/web/osUpgradeHistory", headers=AUTH).json()["value"] == []
    r = post(json={"updateDomains": [2], "instanceIds": ["0"]})
    assert r.status_code == 202, r.text
    env.ctl.wait_idle()
    assert _versions(env) == ["2", "1", "2"]


def test_reimage_gives_named_instances_a_fresh_disk_of_their_version(env: Env) -> None:
    _explicit(env, "Manual")
    r = env.api.post("/v1/scaleSets/web/reimage", json={"instanceIds": ["0", "2"]}, headers=AUTH)
    assert r.status_code == 202, r.text
    env.ctl.wait_idle()
    assert env.agents.reimages == {"web-0": 1, "web-2": 1}
    assert _versions(env) == ["1", "1", "1"]
    assert all(i.previous is None for i in env.agents.instances.values())  # committed


def test_blobs_answer_range_requests(env: Env) -> None:
    env.publish("1")
    rec = env.ctl.catalog.resolve("kvmss", "tiny", "1", "1")
    path = env.ctl.image_spec(rec).url.split("127.0.0.1:1", 1)[1]
    r = env.api.get(path, headers={"Range": "bytes=0-3"})
    assert r.status_code == 206
    assert r.content == rec.path.read_bytes()[:4] == b"QFI\xfb"


def test_an_instance_its_agent_refuses_to_create_is_failed_and_the_reason_logged(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    """(A lab run killed midway leaves domains of the same names behind; the
    next run's agents refuse them, and the reason must reach the log.)"""
    refusal = operations.ErrorInfo(
        code="Conflict",
        message="a domain named web-0 exists on this host and is not a kvmss instance",
    )

    def refuse(host: str, name: str, spec: instancespec.InstanceSpec) -> operations.Operation:
        op = FakeOp("create-" + name, "create", name, 0.0, lambda: None, "Failed", refusal)
        env.agents.ops[op.id] = op
        return env.agents._view(op)

    env.agents.put_instance = refuse  # type: ignore[method-assign]
    env.publish("1")
    host = {"name": "h1", "url": "http://a/h1", "token": "t" * 20}
    assert env.api.post("/v1/hosts", json=host, headers=AUTH).status_code == 201
    with caplog.at_level(logging.ERROR, logger="controller.service.reconciler"):
        r = env.api.put("/v1/scaleSets/web", json=body(capacity=1), headers=AUTH)
        assert r.status_code == 201, r.text
        env.ctl.wait_idle()
    vms = env.api.get("/v1/scaleSets/web/virtualMachines", headers=AUTH).json()["value"]
    assert [v["provisioningState"] for v in vms] == ["Failed"], vms
    assert f"web-0: create failed on h1: Conflict: {refusal.message}" in caplog.text
    assert "U0VDUkVULXh5eg==" not in caplog.text and "SECRET" not in caplog.text
