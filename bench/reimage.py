"""How much of a reimage is the agent's own work?

Boots a real TCG guest from the tiny image under a real agent (in this
process, on qemu:///system), then reimages it several times between two image
versions and prints, measured in this one run:

- the agent's own work per reimage: everything but waiting for the guest to
  shut down and to boot (cached-image check, overlay, seed ISO, journal
  writes, the domain redefinition, the start call);
- the guest's boot time: from the start call returning to the instance being
  healthy (extension reported, HTTP probe passing);
- their ratio (goal: <= 0.05).

Run as root from the repository: .venv/bin/python bench/reimage.py [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.served import FileServer, free_port, scratch_dir, tiny_image_spec  # noqa: E402
from hostagent.contract import instancespec  # noqa: E402
from hostagent.daemon.config import AgentConfig  # noqa: E402
from hostagent.daemon.server import AgentServer  # noqa: E402
from hostagent.daemon.service import Agent  # noqa: E402
from hostagent.network import bridge  # noqa: E402
from images.tiny.build import build  # noqa: E402
from kvmss.base.clock import SystemClock  # noqa: E402
from kvmss.base.waiting import wait_for  # noqa: E402

HTTPD = "mkdir -p /www && echo ok > /www/health && busybox httpd -p 8080 -h /www && echo started"


class Timings:
    """Times the hypervisor's stop and start calls (wrapped in place), so the
    wait for a guest to shut down can be told from the agent's own work."""

    def __init__(self, hv: Any) -> None:
        self.stops: list[float] = []
        self.start_done: list[float] = []
        self.start_took: list[float] = []
        real_stop, real_start = hv.stop, hv.start

        def timed_stop(n: str, timeout: float) -> bool:
            t = time.monotonic()
            try:
                return bool(real_stop(n, timeout))
            finally:
                self.stops.append(time.monotonic() - t)

        def timed_start(n: str) -> None:
            t = time.monotonic()
            real_start(n)
            self.start_done.append(time.monotonic())
            self.start_took.append(self.start_done[-1] - t)

        hv.stop, hv.start = timed_stop, timed_start

    def clear(self) -> None:
        self.stops.clear()
        self.start_done.clear()
        self.start_took.clear()


def agent_config(root: Path) -> AgentConfig:
    return AgentConfig.from_dict(
        {
            "name": "bench",
            "listen": f"127.0.0.1:{free_port()}",
            "token": "bench-token-0123456789",
            "libvirt_uri": "qemu:///system",
            "storage_dir": str(root / "storage"),
            "bridge": {"name": f"kvb{uuid.uuid4().hex[:6]}", "subnet": "10.199.77.0/24"},
            "guest_port": free_port(),
            "shutdown_timeout": 20,
        }
    )


def instance_spec(image: instancespec.ImageSpec) -> instancespec.InstanceSpec:
    return instancespec.InstanceSpec(
        image=image,
        osProfile=instancespec.OsProfile(computerName="bench"),
        dataDisks=[instancespec.DataDisk(lun=0, diskSizeGB=1)],
        extensions=[instancespec.Extension(name="httpd", settings={"commandToExecute": HTTPD})],
        healthProbe=instancespec.HealthProbe(
            protocol="Http", port=8080, requestPath="/health", intervalInSeconds=1,
            numberOfProbes=1,
        ),
    )  # fmt: skip


def wait_healthy(agent: Agent, name: str, timeout: float = 120) -> float:
    """When (time.monotonic) instance ``name`` was seen healthy."""

    def healthy_at() -> float | None:
        healthy = agent.instances.view(name).health.state == "Healthy"
        return time.monotonic() if healthy else None

    at = wait_for(SystemClock(), healthy_at, timeout=timeout, interval=0.05)
    if at is None:
        raise SystemExit(f"{name} did not become healthy: {agent.instances.view(name).health}")
    return at


def reimage_rounds(
    agent: Agent, name: str, specs: dict[str, instancespec.ImageSpec], rounds: int
) -> tuple[list[float], list[float]]:
    """Reimage ``name`` back and forth ``rounds`` times; each round's agent
    work and boot to healthy, in seconds."""
    timings = Timings(agent.hv)
    mgr = agent.instances
    work: list[float] = []
    boots: list[float] = []
    for i in range(rounds):
        target = specs["2" if i % 2 == 0 else "1"]
        timings.clear()
        t0 = time.monotonic()
        mgr.reimage(f"bench-{i}", name, target)
        t1 = time.monotonic()
        mgr.commit(f"bench-c{i}", name)
        t2 = time.monotonic()
        healthy_at = wait_healthy(agent, name)
        work.append((t1 - t0) - sum(timings.stops) + (t2 - t1))
        boots.append(healthy_at - timings.start_done[-1])
        print(
            f"round {i + 1}: agent work {work[-1] * 1000:7.1f} ms"
            f" (of which libvirt's domain start {timings.start_took[-1] * 1000:5.1f} ms)"
            f"  (shutdown wait {sum(timings.stops):5.2f} s)"
            f"  boot to healthy {boots[-1]:5.2f} s"
        )
    return work, boots


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    images = REPO / "build" / "images"
    for v in ("1", "2"):
        build(v, images / f"tiny-{v}")
    files = FileServer(images)
    with scratch_dir("bench") as root:
        cfg = agent_config(root)
        agent = Agent.build(cfg)
        agent.start()
        server = AgentServer(agent)
        server.start_background()
        specs = {v: tiny_image_spec(files.base_url, v, images / f"tiny-{v}") for v in "12"}
        name = "bench-0"
        try:
            agent.instances.builder.fetch(specs["2"])  # both versions cached, as in a rollout
            agent.instances.create("bench-create", name, instance_spec(specs["1"]))
            wait_healthy(agent, name)
            work, boots = reimage_rounds(agent, name, specs, args.rounds)
            w, b = statistics.median(work), statistics.median(boots)
            print(f"median agent work per reimage: {w * 1000:.1f} ms")
            print(f"median guest boot to healthy:  {b:.2f} s")
            print(f"ratio agent work / boot: {w / b:.4f} (goal <= 0.05)")
            return 0 if w / b <= 0.05 else 1
        finally:
            server.stop()
            agent.hv.undefine(name)
            agent.stop()
            bridge.delete_bridge(cfg.bridge_name)
            files.close()


if __name__ == "__main__":
    raise SystemExit(main())
