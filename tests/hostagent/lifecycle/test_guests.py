"""The agent with real TCG guests from the tiny image, through its HTTP API.

Two instances with data disks; an extension leaves a marker on /data and
reports the image version; reimage both to version 2, roll one back; the
agent killed with SIGKILL after each step of a reimage, then restarted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.served import FileServer, tiny_image_spec
from hostagent.contract import instancespec, operations, views
from hostagent.contract.client import AgentClient
from images.tiny.build import build
from kvmss.base.clock import SystemClock
from kvmss.base.waiting import wait_for
from tests.agentproc import REPO, AgentProcess
from tests.fixtures import sha256_file, storage_root

pytestmark = pytest.mark.guest

IMAGES = REPO / "build" / "images"

MARKER_EXT = (
    'if [ ! -f /data/marker ]; then echo "m-$KVMSS_INSTANCE_ID" > /data/marker; sync; fi; '
    'echo "version=$(cat /etc/os-version) marker=$(cat /data/marker)"'
)
# The service is installed as a per-boot script (cloud-init's per-boot
# directory) so it also starts on a boot that runs no extension (rollback).
HTTPD_EXT = (
    "mkdir -p /var/lib/cloud/scripts/per-boot /www && echo ok > /www/health && "
    "printf '#!/bin/sh\\nbusybox httpd -p 8080 -h /www\\n' "
    "> /var/lib/cloud/scripts/per-boot/httpd.sh && "
    "chmod +x /var/lib/cloud/scripts/per-boot/httpd.sh && "
    "/var/lib/cloud/scripts/per-boot/httpd.sh"
)


@dataclass
class Lab:
    agent: AgentProcess
    images: dict[str, instancespec.ImageSpec]
    root: Path

    @property
    def client(self) -> AgentClient:
        return self.agent.client


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    for v in ("1", "2"):
        build(v, IMAGES / f"tiny-{v}")
    with storage_root("guests") as root:
        files = FileServer(IMAGES)
        agent = AgentProcess(root)
        try:
            agent.start()
            images = {v: tiny_image_spec(files.base_url, v, IMAGES / f"tiny-{v}") for v in "12"}
            yield Lab(agent, images, root)
        finally:
            agent.cleanup()
            files.close()


def spec(lab: Lab, version: str, *, extensions: list[instancespec.Extension] | None = None,
         probe: bool = True) -> instancespec.InstanceSpec:  # fmt: skip
    return instancespec.InstanceSpec(
        image=lab.images[version],
        vcpus=1,
        memoryMB=256,
        dataDisks=[
            instancespec.DataDisk(lun=0, diskSizeGB=1),
            instancespec.DataDisk(lun=1, diskSizeGB=1),
        ],
        osProfile=instancespec.OsProfile(computerName="tiny"),
        extensions=extensions
        if extensions is not None
        else [
            instancespec.Extension(name="httpd", settings={"commandToExecute": HTTPD_EXT}),
            instancespec.Extension(
                name="marker",
                settings={"commandToExecute": MARKER_EXT},
                provisionAfterExtensions=["httpd"],
            ),
        ],
        healthProbe=instancespec.HealthProbe(
            protocol="Http", port=8080, requestPath="/health", intervalInSeconds=1, numberOfProbes=2
        )
        if probe
        else None,
    )


def wait_view(
    client: AgentClient, name: str, pred: Callable[[views.InstanceView], bool], timeout: float = 180
) -> views.InstanceView:
    last: list[views.InstanceView | None] = [None]

    def attempt() -> views.InstanceView | None:
        last[0] = view = client.instance(name)
        return view if view is not None and pred(view) else None

    got = wait_for(SystemClock(), attempt, timeout=timeout, interval=0.5)
    if got is None:
        raise AssertionError(f"{name} never got there; last view: {last[0]}")
    return got


def healthy(v: views.InstanceView) -> bool:
    return v.health.state == "Healthy"


def marker_message(v: views.InstanceView) -> str:
    ext = {e.name: e for e in v.extensions}["marker"]
    assert ext.message is not None
    return ext.message.strip()


def run(client: AgentClient, op: operations.Operation) -> operations.Operation:
    done = client.wait(op, timeout=300)
    assert done.status == "Succeeded", done
    return done


def test_reimage_keeps_data_and_reruns_extensions_rollback_returns(lab: Lab) -> None:
    c = lab.client
    names = ["web-0", "web-1"]
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda n: run(c, c.put_instance(n, spec(lab, "1"))), names))
    first = {n: wait_view(c, n, healthy) for n in names}
    for v in first.values():
        assert v.current.image.version == "1"
        msg = marker_message(v)
        assert msg == f"version=1 marker=m-{v.current.instanceId}", msg
        ext = {e.name: e for e in v.extensions}["marker"]
        assert ext.instanceId == v.current.instanceId

    untouched = {n: Path(next(d.path for d in first[n].dataDisks if d.lun == 1)) for n in names}
    before = {n: sha256_file(p) for n, p in untouched.items()}

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda n: run(c, c.reimage(n, lab.images["2"])), names))
    second = {n: wait_view(c, n, healthy) for n in names}
    for n, v in second.items():
        assert v.current.image.version == "2"
        assert v.previous is not None and v.previous.generation == first[n].current.generation
        ext = {e.name: e for e in v.extensions}["marker"]
        # the extension ran again, under the new instance-id, and found the marker
        assert ext.instanceId == v.current.instanceId != first[n].current.instanceId
        assert marker_message(v) == f"version=2 marker=m-{first[n].current.instanceId}"

    run(c, c.rollback("web-0"))
    back = wait_view(c, "web-0", healthy)
    assert back.current.image.version == "1"
    assert back.current.instanceId == first["web-0"].current.instanceId
    assert back.previous is None
    assert marker_message(back) == f"version=1 marker=m-{first['web-0'].current.instanceId}"

    # what the guest says now (its console): booted from version 1
    console = (lab.root / "storage/instances/web-0/console.log").read_text(errors="replace")
    boots = [ln for ln in console.splitlines() if "kvmss-tiny: version" in ln]
    assert len(boots) >= 3 and boots[-1].rstrip().endswith("version 1"), boots

    for n in names:
        run(c, c.stop(n))
        assert sha256_file(untouched[n]) == before[n], f"{n}: lun1 bytes changed"
        run(c, c.delete(n, delete_data_disks=True))


def test_failing_extension_makes_the_instance_unhealthy_with_its_exit_code(lab: Lab) -> None:
    c = lab.client
    exts = [
        instancespec.Extension(name="broken", settings={"commandToExecute": "echo nope; exit 7"})
    ]
    run(c, c.put_instance("bad-0", spec(lab, "1", extensions=exts, probe=False)))
    v = wait_view(c, "bad-0", lambda v: v.health.state == "Unhealthy")
    ext = v.extensions[0]
    assert (ext.name, ext.status, ext.exitCode) == ("broken", "Failed", 7)
    assert "extension broken failed (exit code 7)" in v.health.reasons
    assert ext.message is not None and "nope" in ext.message
    run(c, c.delete("bad-0", delete_data_disks=True))


def test_probe_port_that_never_opens_is_unhealthy(lab: Lab) -> None:
    c = lab.client
    exts = [instancespec.Extension(name="noop", settings={"commandToExecute": "true"})]
    run(c, c.put_instance("closed-0", spec(lab, "1", extensions=exts)))
    v = wait_view(
        c,
        "closed-0",
        lambda v: v.extensions[0].status == "Succeeded" and v.health.state == "Unhealthy",
    )
    assert v.probe is not None and v.probe.healthy is False
    assert any("probe on port 8080 is failing" in r for r in v.health.reasons)
    run(c, c.delete("closed-0", delete_data_disks=True))


def test_healthy_within_interval_times_probes_of_service_start(lab: Lab) -> None:
    c = lab.client
    # the service starts 5 s after the extension ran; the guest reports when
    start_ext = (
        "mkdir -p /www && echo ok > /www/health && "
        "(sleep 5; busybox httpd -p 8080 -h /www) >/dev/null 2>&1 & echo started"
    )
    exts = [instancespec.Extension(name="late", settings={"commandToExecute": start_ext})]
    s = spec(lab, "1", extensions=exts)
    assert s.healthProbe is not None
    budget = s.healthProbe.intervalInSeconds * s.healthProbe.numberOfProbes
    run(c, c.put_instance("late-0", s))
    wait_view(c, "late-0", lambda v: v.extensions[0].status == "Succeeded")
    t_ext = time.monotonic()
    wait_view(c, "late-0", healthy, timeout=60)
    elapsed = time.monotonic() - t_ext
    # started 5 s after the extension reported; healthy within interval x probes
    # of that (plus the 0.5 s polling of this test and report latency)
    assert elapsed <= 5 + budget + 2.5, elapsed
    run(c, c.delete("late-0", delete_data_disks=True))


def test_application_health_extension_reports_from_inside(lab: Lab) -> None:
    c = lab.client
    exts = [
        instancespec.Extension(name="httpd", settings={"commandToExecute": HTTPD_EXT}),
        instancespec.Extension(
            name="health",
            type="ApplicationHealthLinux",
            settings={"protocol": "http", "port": 8080, "requestPath": "/health"},
            provisionAfterExtensions=["httpd"],
        ),
    ]
    run(c, c.put_instance("app-0", spec(lab, "1", extensions=exts, probe=False)))
    v = wait_view(c, "app-0", healthy)
    assert v.applicationHealth == "Healthy"
    assert v.probe is None
    run(c, c.delete("app-0", delete_data_disks=True))


@pytest.mark.parametrize("step", ["prepared", "stopped", "swapped", "started"])
def test_agent_sigkilled_after_each_reimage_step(lab: Lab, step: str) -> None:
    c = lab.client
    name = f"crash-{step}"
    run(c, c.put_instance(name, spec(lab, "1")))
    v1 = wait_view(c, name, healthy)
    lab.agent.stop()
    lab.agent.start(env={"KVMSS_AGENT_CRASH_AFTER": f"reimage:{step}"})
    op = c.reimage(name, lab.images["2"])
    assert lab.agent.wait_exit(timeout=180) == -9  # SIGKILL, by its own hand
    lab.agent.start()
    done = c.wait(op, timeout=300)
    swapped = step in ("swapped", "started")
    assert done.status == ("Succeeded" if swapped else "Failed"), done
    v = wait_view(c, name, healthy)
    assert v.current.image.version == ("2" if swapped else "1")
    assert v.powerState == "running"
    inst_dir = lab.root / "storage" / "instances" / name
    overlays = sorted(p.name for p in inst_dir.glob("os-*.qcow2"))
    seeds = sorted(p.name for p in inst_dir.glob("seed-*.iso"))
    expect = [v1.current.generation] + ([v1.current.generation + 1] if swapped else [])
    assert overlays == [f"os-{g}.qcow2" for g in expect]
    assert seeds == [f"seed-{g}.iso" for g in expect]
    run(c, c.delete(name, delete_data_disks=True))
