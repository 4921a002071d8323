"""End to end on real TCG guests: a controller (its HTTP API, SQLite store and
catalog) and two real host agents, each its own "host" with its own bridge.

A scale set of 6 tiny-image instances with an HTTP health probe follows
``latest`` with automatic OS upgrades. Publishing version 2 upgrades all six
automatically, one at a time; publishing a version 3 whose guests never turn
healthy rolls the first instance back and ends Faulted, every instance left
on version 2 and healthy.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import uvicorn

from controller.server import ControllerConfig, build
from controller.service import Controller
from images.tiny.build import build as build_image
from tests.agentproc import REPO, AgentProcess, free_port
from tests.fixtures import storage_root

pytestmark = pytest.mark.guest

IMAGES = REPO / "build" / "images"
TOKEN = "controller-token-0123456789abcdef"
# The service starts from a per-boot script, so it also comes back on a
# rollback; version 3 of the image "breaks" it (the upgrade must roll back).
SERVICE = (
    'if [ "$(cat /etc/os-version)" = 3 ]; then echo "no service on 3"; exit 0; fi; '
    "mkdir -p /var/lib/cloud/scripts/per-boot /www && echo ok > /www/health && "
    "printf '#!/bin/sh\\nbusybox httpd -p 8080 -h /www\\n' "
    "> /var/lib/cloud/scripts/per-boot/httpd.sh && "
    "chmod +x /var/lib/cloud/scripts/per-boot/httpd.sh && "
    "/var/lib/cloud/scripts/per-boot/httpd.sh"
)


@dataclass
class Lab:
    url: str
    ctl: Controller
    agents: list[AgentProcess]

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = requests.request(
            method, self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600, **kw
        )
        assert r.status_code < 400, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def publish(self, version: str) -> None:
        d = IMAGES / f"tiny-{version}"
        m = json.loads((d / "manifest.json").read_text())
        base = f"/v1/images/kvmss/tiny/1/{version}"
        for part in ("kernel", "initrd"):
            with (d / m[part]["file"]).open("rb") as f:
                self.call("PUT", f"{base}/{part}", data=f)
        with (d / m["disk"]["file"]).open("rb") as f:
            self.call("PUT", base, data=f, params={"cmdline": m["cmdline"]})

    def vms(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/scaleSets/web/virtualMachines")["value"])


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    for v in ("1", "2", "3"):
        build_image(v, IMAGES / f"tiny-{v}")
    with storage_root("e2e") as root:
        agents = []
        for i in (1, 2):
            (root / f"host{i}").mkdir()
            agents.append(AgentProcess(root / f"host{i}", name=f"host{i}"))
        port = free_port()
        cfg = ControllerConfig.from_dict(
            {
                "listen": f"127.0.0.1:{port}",
                "token": TOKEN,
                "database": str(root / "ctl" / "kvmss.db"),
                "blob_dir": str(root / "ctl" / "images"),
                "poll_seconds": 1,
            }
        )
        ctl, app = build(cfg)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        t = threading.Thread(target=server.run, daemon=True)
        t.start()
        while not server.started:
            time.sleep(0.05)
        try:
            for a in agents:
                a.start()
            yield Lab(f"http://127.0.0.1:{port}", ctl, agents)
        finally:
            ctl.close()
            server.should_exit = True
            t.join(10)
            for a in agents:
                a.cleanup()
            ctl.store.close()


def model() -> dict[str, Any]:
    return {
        "sku": {"name": "tiny", "capacity": 6},
        "properties": {
            "upgradePolicy": {
                "mode": "Rolling",
                "rollingUpgradePolicy": {
                    "maxBatchInstancePercent": 20,
                    "maxUnhealthyInstancePercent": 20,
                    "maxUnhealthyUpgradedInstancePercent": 20,
                    "pauseTimeBetweenBatches": "PT0S",
                    "healthTimeout": "PT60S",
                },
                "automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": True},
            },
            "virtualMachineProfile": {
                "hardwareProfile": {"vCPUs": 1, "memoryMB": 192},
                "storageProfile": {
                    "imageReference": {
                        "publisher": "kvmss",
                        "offer": "tiny",
                        "sku": "1",
                        "version": "latest",
                    },
                    "dataDisks": [{"lun": 0, "diskSizeGB": 1}],
                },
                "osProfile": {"computerNamePrefix": "web"},
                "networkProfile": {
                    "healthProbe": {
                        "protocol": "Http",
                        "port": 8080,
                        "requestPath": "/health",
                        "intervalInSeconds": 2,
                        "numberOfProbes": 2,
                    }
                },
                "extensionProfile": {
                    "extensions": [
                        {
                            "name": "service",
                            "properties": {
                                "type": "CustomScript",
                                "settings": {"commandToExecute": SERVICE},
                            },
                        }
                    ]
                },
            },
        },
    }


def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def watch_upgrade(lab: Lab, timeout: float) -> tuple[dict[str, Any], int]:
    """Poll until the latest upgrade ends; return it and the most instances
    ever seen out of service (not running and healthy) at once."""
    worst = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        vms = lab.vms()
        worst = max(worst, sum(1 for v in vms if v["health"] != "Healthy"))
        latest = lab.call("GET", "/v1/scaleSets/web/rollingUpgrades/latest")
        if latest["properties"]["runningStatus"]["code"] != "RollingForward":
            return latest, worst
        time.sleep(1)
    raise AssertionError("upgrade did not end")


def test_publish_upgrades_automatically_then_a_bad_version_rolls_back(lab: Lab) -> None:
    lab.publish("1")
    for a in lab.agents:
        host = {"name": a.name, "url": a.client.base_url, "token": a.token}
        lab.call("POST", "/v1/hosts", json=host)
    lab.call("PUT", "/v1/scaleSets/web", json=model())
    wait_until(
        lambda: len(vms := lab.vms()) == 6 and all(v["health"] == "Healthy" for v in vms),
        420,
        "6 healthy instances",
    )
    vms = lab.vms()
    assert {v["host"] for v in vms} == {"host1", "host2"}
    assert all(v["imageVersion"] == "1" for v in vms)

    # version 2: automatic, one at a time, Completed with 6 successful
    lab.publish("2")
    wait_until(
        lambda: lab.call("GET", "/v1/scaleSets/web/osUpgradeHistory")["value"], 30, "an upgrade"
    )
    latest, worst = watch_upgrade(lab, 900)
    assert latest["properties"]["runningStatus"]["code"] == "Completed", latest
    assert worst <= 1, f"{worst} instances out of service at once"
    hist = lab.call("GET", "/v1/scaleSets/web/osUpgradeHistory")["value"]
    entry = hist[0]["properties"]
    assert entry["startedBy"] == "Platform"
    assert entry["progress"]["successfulInstanceCount"] == 6
    assert entry["progress"]["failedInstanceCount"] == 0
    assert entry["targetImageReference"]["version"] == "2"
    assert all(v["imageVersion"] == "2" and v["health"] == "Healthy" for v in lab.vms())

    # version 3 never turns healthy: the first instance is rolled back, Faulted
    lab.publish("3")
    wait_until(
        lambda: len(lab.call("GET", "/v1/scaleSets/web/osUpgradeHistory")["value"]) == 2,
        30,
        "the second upgrade",
    )
    latest, worst = watch_upgrade(lab, 900)
    props = latest["properties"]
    assert props["runningStatus"]["code"] == "Faulted", latest
    assert props["error"]["code"] == "MaxUnhealthyUpgradedInstancePercentExceeded"
    assert worst <= 1
    entry = lab.call("GET", "/v1/scaleSets/web/osUpgradeHistory")["value"][0]["properties"]
    assert entry["rollbackInfo"]["successfullyRolledbackInstanceCount"] == 1
    assert entry["progress"]["failedInstanceCount"] == 1
    decisions = latest["kvmss"]["decisions"]
    assert any("not healthy within 60s" in d["message"] for d in decisions)
    wait_until(
        lambda: all(v["imageVersion"] == "2" and v["health"] == "Healthy" for v in lab.vms()),
        180,
        "every instance back on version 2 and healthy",
    )
