"""A controller (its HTTP API, SQLite store and catalog) and real host agents,
each its own "host" with its own bridge: the lab the end-to-end guest tests
(tiny and Debian images) drive through the controller's REST API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from controller.service.controller import Controller
from kvmss.base import waiting
from kvmss.base.clock import SystemClock
from kvmss.base.waiting import wait_for
from kvmss.client import imagebuild
from kvmss.client.api import ApiClient
from tests.agentproc import AgentProcess
from tests.fixtures import storage_root
from tests.labstate import describe_lab, explained
from tests.servedcontroller import served_controller

TOKEN = "controller-token-0123456789abcdef"
# A web service for tiny guests, from a per-boot script so it also comes back
# after a rollback; /health answers 200 on port 8080.
HTTPD_PER_BOOT = (
    "mkdir -p /var/lib/cloud/scripts/per-boot /www && echo ok > /www/health && "
    "printf '#!/bin/sh\\nbusybox httpd -p 8080 -h /www\\n' "
    "> /var/lib/cloud/scripts/per-boot/httpd.sh && "
    "chmod +x /var/lib/cloud/scripts/per-boot/httpd.sh && "
    "/var/lib/cloud/scripts/per-boot/httpd.sh"
)


# The upgrade's instance states that hold an instance out of service.
IN_FLIGHT = frozenset({"Reimaging", "WaitingHealth", "RollingBack"})


@dataclass
class UpgradeWatch:
    latest: dict[str, Any] = field(default_factory=dict)
    worst_unhealthy: int = 0
    unhealthy_sample: list[str] = field(default_factory=list)
    worst_in_flight: int = 0
    in_flight_sample: list[str] = field(default_factory=list)


@dataclass
class GuestLab:
    url: str
    ctl: Controller
    agents: list[AgentProcess]

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = requests.request(
            method, self.url + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600, **kw
        )
        assert r.status_code < 400, (method, path, r.status_code, r.text)
        return r.json() if r.content else None

    def publish(self, image_dir: Path, offer: str, version: str) -> None:
        """What ``kvmss image publish`` does with an image directory."""
        imagebuild.publish(ApiClient(self.url, TOKEN), image_dir, "kvmss", offer, "1", version)

    def add_hosts(self) -> None:
        for a in self.agents:
            host = {"name": a.name, "url": a.client.base_url, "token": a.token}
            self.call("POST", "/v1/hosts", json=host)

    def vms(self, scale_set: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/v1/scaleSets/{scale_set}/virtualMachines")["value"])

    def describe(self, *scale_sets: str) -> str:
        """What the agents and the controller say of each instance of
        ``scale_sets``, and the ends of the agents' logs."""
        return describe_lab(self.agents, lambda: [v for n in scale_sets for v in self.vms(n)])

    def history(self, scale_set: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/v1/scaleSets/{scale_set}/osUpgradeHistory")["value"])

    def watch_upgrade(self, scale_set: str, timeout: float) -> tuple[dict[str, Any], int]:
        """Poll until the latest upgrade ends; return it and the most instances
        ever seen out of service (not healthy) at once."""
        watch = self.watch(scale_set, timeout)
        return watch.latest, watch.worst_unhealthy

    def watch(self, scale_set: str, timeout: float) -> UpgradeWatch:
        """Poll once a second until the latest upgrade ends, sampling how many
        instances are not healthy and how many the upgrade holds at once
        (Reimaging, WaitingHealth or RollingBack), and what the worst sample
        of each looked like."""
        w = UpgradeWatch()

        def ended() -> UpgradeWatch | None:
            vms = self.vms(scale_set)
            latest = self.call("GET", f"/v1/scaleSets/{scale_set}/rollingUpgrades/latest")
            unhealthy = [
                f"{v['name']}: {v['health']} {v['healthReasons']}"
                for v in vms
                if v["health"] != "Healthy"
            ]
            held = [
                f"{i['instanceId']}: {i['state']}"
                for i in latest.get("kvmss", {}).get("instances", [])
                if i["state"] in IN_FLIGHT
            ]
            if len(unhealthy) > w.worst_unhealthy:
                w.worst_unhealthy, w.unhealthy_sample = len(unhealthy), unhealthy
            if len(held) > w.worst_in_flight:
                w.worst_in_flight, w.in_flight_sample = len(held), held
            if latest["properties"]["runningStatus"]["code"] != "RollingForward":
                w.latest = latest
                return w
            return None

        if wait_for(SystemClock(), ended, timeout=timeout, interval=1) is None:
            raise AssertionError("upgrade did not end")
        return w


def wait_until(
    pred: Callable[[], Any], timeout: float, what: str, explain: Callable[[], str] | None = None
) -> None:
    """Poll ``pred`` once a second until it holds; on timeout, fail with
    ``what`` and what ``explain`` tells of the state it was stuck in."""
    if not waiting.wait_until(SystemClock(), lambda: bool(pred()), timeout=timeout, interval=1):
        raise AssertionError(f"timed out waiting for {what}" + explained(explain))


@contextmanager
def guest_lab(tag: str, hosts: int = 2) -> Iterator[GuestLab]:
    """A controller served by uvicorn in this process and ``hosts`` agent
    processes on qemu:///system, all torn down (guests included) on exit."""
    with storage_root(tag) as root:
        agents = []
        for i in range(1, hosts + 1):
            (root / f"host{i}").mkdir()
            agents.append(AgentProcess(root / f"host{i}", name=f"host{i}"))
        try:
            with served_controller(root / "ctl", TOKEN, poll_seconds=1) as served:
                for a in agents:
                    a.start()
                yield GuestLab(served.url, served.ctl, agents)
        finally:
            for a in agents:
                a.cleanup()
