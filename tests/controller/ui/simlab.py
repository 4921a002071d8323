"""A served controller with simulated agents (bench.simagent, the real agent
HTTP contract) on two hosts, an image in two versions and a scale set of six
instances: what the no-guest dashboard tests drive."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import scalesets
from bench.simagent import Agents, host_names, serving
from kvmss.base import qemuimg
from kvmss.base.clock import SystemClock
from kvmss.base.waiting import wait_until
from tests.servedcontroller import ServedController, served_controller

TOKEN = "dashboard-test-token-0123456789"
AGENT_TOKEN = "dashboard-agent-token-0123456789"
IMAGE = ("dash", "tiny", "1")
SET = "web"
CAPACITY = 6


@dataclass
class SimLab:
    served: ServedController
    agents: Agents


def publish(served: ServedController, root: Path, version: str) -> None:
    disk = root / f"disk-{version}.qcow2"
    qemuimg.create(disk, (16 + int(version)) << 20)
    served.ok("PUT", "/v1/images/" + "/".join((*IMAGE, version)), data=disk.read_bytes())


def body() -> dict[str, object]:
    b = scalesets.scale_set_body(
        CAPACITY,
        IMAGE,
        prefix="web",
        probe=scalesets.http_probe(interval=5, probes=1),
        extensions=[scalesets.custom_script("app", "true")],
        automatic=False,
    )
    return {"location": "local", **b}


@contextmanager
def sim_lab(root: Path) -> Iterator[SimLab]:
    agents = Agents(host_names(2), op_seconds=0.3, boot_seconds=0.3)
    with serving(agents, AGENT_TOKEN) as port, served_controller(root, TOKEN) as served:
        publish(served, root, "1")
        for name in host_names(2):
            url = f"http://127.0.0.1:{port}/{name}"
            served.ok("POST", "/v1/hosts", json={"name": name, "url": url, "token": AGENT_TOKEN})
        served.ok("PUT", f"/v1/scaleSets/{SET}", json=body())

        def ready() -> bool:
            vms = served.ok("GET", f"/v1/scaleSets/{SET}/virtualMachines")["value"]
            return len(vms) == CAPACITY and all(v["health"] == "Healthy" for v in vms)

        if not wait_until(SystemClock(), ready, timeout=60, interval=0.2):
            raise RuntimeError("the scale set did not become Healthy")
        publish(served, root, "2")
        yield SimLab(served, agents)
