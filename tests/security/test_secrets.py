"""Secrets never appear in logs, history, decision logs or error messages.

A controller served in this process and a real ``kvmss-agent serve`` process
(libvirt's test:///default driver: domains are defined and "run", no guest
boots), with a model holding customData and protectedSettings and an agent
with a distinctive token. Guests are played by this test: it reports each
instance's extension from the instance's own address with its token (from a
bridge holding those addresses), failing it on image version 3.

Driven: create (2 instances), an automatic upgrade that completes (v2), one
that fails, rolls back and faults (v3), and bad requests whose rejected fields
carry the secrets (customData, protectedSettings, a host's token, a wrong
controller token). Then every log line (this process at DEBUG, the agent's
file at DEBUG), every API answer (models, hosts, instance views, history,
rollingUpgrades/latest with its decision log, the plan, the error bodies) and
every row of the controller's tables but the two that must hold secrets
(scale_sets.body, hosts.token), and the agent's records but the instance spec
and seed (which carry them to the guest) are searched for each secret and for
its base64 forms.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.scalesets import image_reference
from hostagent.contract.client import AgentClient
from kvmss.client.api import ApiClient, path_of
from tests.fixtures import make_qcow2, storage_root
from tests.security.hostnet import HostBridge, host_bridge, post_from
from tests.security.routes import sqlite_dump
from tests.security.services import AgentServe, served_controller
from tests.servedcontroller import ServedController

CUSTOM_SECRET = "CUSTOMDATA-SECRET-7f3a9c1e"
PROTECTED_SECRET = "PROTECTED-SECRET-b2d84e60"
AGENT_TOKEN = "AGENT-TOKEN-SECRET-5e1c7a93d0f24b68"
CONTROLLER_TOKEN = "CONTROLLER-TOKEN-SECRET-a8c3e5f7091b"
BAD_TOKEN = "WRONG-TOKEN-SECRET-4d6f8a0c2e"
# The controller's tables that hold secrets by design: the model (sent to
# agents) and the hosts' agent tokens.
SECRET_COLUMNS = {("scale_sets", "body"), ("hosts", "token")}


def base64_forms(secret: str) -> list[str]:
    """Substrings every base64 encoding of a text containing ``secret`` has,
    whatever the secret's offset modulo 3."""
    raw = secret.encode()
    forms = []
    for offset in range(3):
        enc = base64.b64encode(b"\0" * offset + raw).decode()
        skip = -(-offset * 4 // 3)  # characters touched by the padding bytes
        forms.append(enc[skip + 1 : len(enc) - 4])
    return forms


def model(capacity: int = 2) -> dict[str, Any]:
    custom = base64.b64encode(f"#!/bin/sh\necho {CUSTOM_SECRET}\n".encode()).decode()
    return {
        "sku": {"capacity": capacity},
        "properties": {
            "upgradePolicy": {
                "mode": "Rolling",
                "rollingUpgradePolicy": {
                    "maxBatchInstancePercent": 50,
                    "maxUnhealthyInstancePercent": 50,
                    "maxUnhealthyUpgradedInstancePercent": 0,
                    "healthTimeout": "PT10S",
                },
                "automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": True},
            },
            "virtualMachineProfile": {
                "storageProfile": {
                    "imageReference": image_reference("kvmss", "tiny", "1"),
                    "dataDisks": [{"lun": 0, "diskSizeGB": 1}],
                },
                "osProfile": {"computerNamePrefix": "sec", "customData": custom},
                "extensionProfile": {
                    "extensions": [
                        {
                            "name": "app",
                            "properties": {
                                "type": "CustomScript",
                                "protectedSettings": {
                                    "commandToExecute": f"echo {PROTECTED_SECRET}"
                                },
                            },
                        },
                        {
                            "name": "health",
                            "properties": {
                                "type": "ApplicationHealthLinux",
                                "settings": {"protocol": "tcp", "port": 80},
                            },
                        },
                    ]
                },
            },
        },
    }


@dataclass
class Guests:
    """Plays every guest: once per instance-id, from its address, reports its
    extensions Succeeded and its application health Healthy, or on image
    version 3 extension app Failed and Unhealthy."""

    agent: AgentServe
    net: HostBridge
    stop: threading.Event = field(default_factory=threading.Event)
    reported: set[str] = field(default_factory=set)
    addresses: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        client = AgentClient(self.agent.url, self.agent.token, timeout=30)
        while not self.stop.wait(0.2):
            try:
                for view in client.instances():
                    current = view.current
                    self._report(view.name, view.address, current.instanceId, current.image.version)
            except Exception as e:
                self.errors.append(repr(e))

    def _report(self, name: str, address: str, instance_id: str, version: str) -> None:
        if instance_id in self.reported:
            return
        if address not in self.addresses:
            self.net.add_address(address)
            self.addresses.add(address)
        failed = version == "3"
        output = base64.b64encode(b"app output\n").decode()
        reports = {
            "extensions/app": {
                "instanceId": instance_id,
                "status": "Failed" if failed else "Succeeded",
                "exitCode": 1 if failed else 0,
                "outputBase64": output,
            },
            "extensions/health": {"instanceId": instance_id, "status": "Succeeded", "exitCode": 0},
            "health": {"instanceId": instance_id, "state": "Unhealthy" if failed else "Healthy"},
        }
        for path, body in reports.items():
            status, got = post_from(
                address,
                self.net.gateway,
                self.agent.guest_port,
                f"/v1/guest/instances/{name}/{path}",
                body,
                {"Authorization": f"Bearer {self.agent.guest_token(name)}"},
            )
            if status != 204:
                self.errors.append(f"report {path} for {name}: {status} {got}")
        self.reported.add(instance_id)


@dataclass
class Lab:
    ctl: ServedController
    agent: AgentServe
    guests: Guests
    root: Path
    answers: list[str] = field(default_factory=list)

    def keep(self, r: Any) -> Any:
        """Record an API answer to search later."""
        self.answers.append(r.text)
        return r

    def get(self, path: str) -> Any:
        r = self.keep(self.ctl.call("GET", path))
        assert r.status_code == 200, (path, r.text)
        return r.json()

    def wait_for(self, what: str, pred: Any, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert not self.guests.errors, self.guests.errors
            if pred():
                return
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}")

    def publish(self, version: str) -> None:
        disk = self.root / f"v{version}.qcow2"
        make_qcow2(disk, f"kvmss secrets {version}".encode(), size_mib=4)
        ApiClient(self.ctl.url, CONTROLLER_TOKEN).upload(
            path_of("images", "kvmss", "tiny", "1", version), disk
        )


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with storage_root("sec-secrets") as root, host_bridge() as net:
        (root / "ctl").mkdir()
        (root / "agent").mkdir()
        agent = AgentServe(
            root / "agent",
            {
                "name": "host1",
                "token": AGENT_TOKEN,
                "libvirt_uri": "test:///default",
                "bridge": {"name": net.name, "subnet": str(net.subnet)},
            },
        )
        agent.start()
        guests = Guests(agent, net)
        thread = threading.Thread(target=guests.run, daemon=True)
        try:
            with served_controller(root / "ctl", CONTROLLER_TOKEN) as ctl:
                thread.start()
                yield Lab(ctl, agent, guests, root)
                guests.stop.set()
                thread.join(10)
                _delete_everything(ctl)
        finally:
            guests.stop.set()
            agent.stop()


def _delete_everything(ctl: ServedController) -> None:
    ctl.call("DELETE", "/v1/scaleSets/sec")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ctl.call("GET", "/v1/scaleSets/sec").status_code != 404:
        time.sleep(0.3)
        ctl.call("DELETE", "/v1/scaleSets/sec")


def _latest(lab: Lab) -> dict[str, Any]:
    got: dict[str, Any] = lab.get("/v1/scaleSets/sec/rollingUpgrades/latest")
    return got


def _code(lab: Lab) -> str:
    return str(_latest(lab)["properties"]["runningStatus"]["code"])


def test_secrets_stay_out_of_logs_answers_and_records(
    lab: Lab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ctl = lab.ctl
    lab.publish("1")
    host = {"name": "host1", "url": lab.agent.url, "token": AGENT_TOKEN}
    assert lab.keep(ctl.call("POST", "/v1/hosts", json=host)).status_code == 201
    assert lab.keep(ctl.call("PUT", "/v1/scaleSets/sec", json=model())).status_code == 201

    def all_healthy(version: str) -> bool:
        vms = lab.get("/v1/scaleSets/sec/virtualMachines")["value"]
        return len(vms) == 2 and all(
            v["health"] == "Healthy" and v["imageVersion"] == version for v in vms
        )

    lab.wait_for("2 healthy instances", lambda: all_healthy("1"))
    lab.publish("2")  # an automatic upgrade that completes
    lab.wait_for("the upgrade to 2", lambda: all_healthy("2") and _code(lab) == "Completed")
    lab.publish("3")  # one whose extension fails: rolled back, Faulted
    lab.wait_for("the upgrade to 3 to fault", lambda: _code(lab) == "Faulted", 180)
    latest = _latest(lab)
    assert latest["kvmss"]["decisions"], "a decision log to search"
    entry = lab.get("/v1/scaleSets/sec/osUpgradeHistory")["value"][0]["properties"]
    assert entry["rollbackInfo"]["successfullyRolledbackInstanceCount"] == 1
    lab.wait_for("instances back on 2", lambda: all_healthy("2"))

    _bad_requests(lab)
    for path in (
        "/v1/scaleSets",
        "/v1/scaleSets/sec",
        "/v1/scaleSets/sec/virtualMachines",
        "/v1/scaleSets/sec/virtualMachines/0",
        "/v1/scaleSets/sec/osUpgradeHistory",
        "/v1/scaleSets/sec/rollingUpgrades/latest",
        "/v1/scaleSets/sec/rollingUpgrades/plan",
        "/v1/hosts",
        "/v1/images",
    ):
        lab.get(path)
    for view in lab.agent.client.instances():  # the agent's own views
        lab.answers.append(view.model_dump_json())

    guest_tokens = [lab.agent.guest_token(v.name) for v in lab.agent.client.instances()]
    secrets = [CUSTOM_SECRET, PROTECTED_SECRET, AGENT_TOKEN, CONTROLLER_TOKEN, BAD_TOKEN]
    secrets += guest_tokens
    needles = {s: [s, *base64_forms(s)] for s in secrets}
    haystacks = {
        "controller log (DEBUG)": caplog.text,
        "agent log (DEBUG)": lab.agent.log.read_text(errors="replace"),
        "API answers": "\n".join(lab.answers),
        "controller tables": _tables_but_secret_columns(ctl.database),
        "agent records": _agent_records(lab.agent.storage),
    }
    assert len(caplog.records) > 50 and "DEBUG" in haystacks["agent log (DEBUG)"]
    leaks = [
        f"{where}: {secret}"
        for where, text in haystacks.items()
        for secret, forms in needles.items()
        if any(f in text for f in forms)
    ]
    assert not leaks, leaks
    # the search can find them: the model and the seeds do hold them
    tables = json.dumps(sqlite_dump(ctl.database), default=str)
    assert any(f in tables for f in base64_forms(CUSTOM_SECRET))
    assert PROTECTED_SECRET in tables and AGENT_TOKEN in tables
    seeds = b"".join(p.read_bytes() for p in lab.agent.storage.glob("instances/*/seed-*.iso"))
    assert any(f.encode() in seeds for f in base64_forms(PROTECTED_SECRET))
    assert any(f.encode() in seeds for f in base64_forms(guest_tokens[0]))


def _bad_requests(lab: Lab) -> None:
    """Refused requests whose faulty fields hold the secrets; their answers are kept."""
    ctl = lab.ctl
    bad_custom = model()
    os_profile = bad_custom["properties"]["virtualMachineProfile"]["osProfile"]
    os_profile["customData"] = f"not base64! {CUSTOM_SECRET}"
    bad_protected = model()
    ext = bad_protected["properties"]["virtualMachineProfile"]["extensionProfile"]["extensions"]
    ext[0]["properties"]["protectedSettings"] = {"commandToExecute": 7, "key": PROTECTED_SECRET}
    bad_protected_type = model()
    ext = bad_protected_type["properties"]["virtualMachineProfile"]["extensionProfile"]
    ext["extensions"][0]["properties"]["protectedSettings"] = PROTECTED_SECRET
    long_custom = model()
    long_custom["properties"]["virtualMachineProfile"]["osProfile"]["customData"] = (
        base64.b64encode(CUSTOM_SECRET.encode() * 5000).decode()
    )
    refused = [
        ctl.call("PUT", "/v1/scaleSets/sec", json=bad_custom),
        ctl.call("PUT", "/v1/scaleSets/other", json=bad_protected),
        ctl.call("PUT", "/v1/scaleSets/other", json=bad_protected_type),
        ctl.call("PUT", "/v1/scaleSets/other", json=long_custom),
        ctl.call(
            "PATCH",
            "/v1/scaleSets/sec",
            json={
                "properties": {
                    "virtualMachineProfile": {
                        "osProfile": {"customData": {"nested": CUSTOM_SECRET}}
                    }
                }
            },
            headers={"Content-Type": "application/merge-patch+json"},
        ),
        ctl.call(
            "PUT", "/v1/scaleSets/other", data=f'{{"x": "{CUSTOM_SECRET}"', headers={}
        ),  # not JSON
        ctl.call(
            "POST",
            "/v1/hosts",
            json={"name": "h2", "url": lab.agent.url, "token": f"has space {AGENT_TOKEN}"},
        ),
        ctl.call(
            "POST", "/v1/hosts", json={"name": "h2", "url": lab.agent.url, "token": BAD_TOKEN}
        ),
        ctl.call("GET", "/v1/scaleSets", headers={"Authorization": f"Bearer {BAD_TOKEN}"}),
        ctl.call("GET", "/v1/scaleSets", headers={"Authorization": BAD_TOKEN}),
    ]
    agent_url = f"{lab.agent.url}/v1/instances/sec-9"
    spec = {"image": {}, "osProfile": {"computerName": "x", "customData": f"!{CUSTOM_SECRET}"}}
    auth = {"Authorization": f"Bearer {AGENT_TOKEN}"}
    refused += [
        requests.put(agent_url, json=spec, headers=auth, timeout=30),
        requests.get(agent_url, headers={"Authorization": f"Bearer {BAD_TOKEN}"}, timeout=30),
    ]
    for r in refused:
        lab.keep(r)
        assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.text)
    # the model was not changed by any of them
    got = lab.get("/v1/scaleSets/sec")
    assert got["properties"]["virtualMachineProfile"]["osProfile"]["customData"] == "(redacted)"


def _tables_but_secret_columns(db: Path) -> str:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        out = []
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            cur = conn.execute(f'SELECT * FROM "{t}"')
            cols = [d[0] for d in cur.description]
            for row in cur:
                cells = zip(cols, row, strict=True)
                out += [f"{t}.{c}={v}" for c, v in cells if (t, c) not in SECRET_COLUMNS]
        return "\n".join(out)
    finally:
        conn.close()


def _agent_records(storage: Path) -> str:
    """Everything the agent writes but the spec and seed it hands each guest
    (and disks, its key, and cached images)."""
    out = []
    for p in storage.rglob("*"):
        if not p.is_file() or p.name in ("spec.json", "guest-secret"):
            continue
        if p.suffix in (".iso", ".qcow2") or "cache" in p.relative_to(storage).parts:
            continue
        out.append(f"{p.relative_to(storage)}: {p.read_text(errors='replace')}")
    assert any("operations" in line for line in out)
    return "\n".join(out)
