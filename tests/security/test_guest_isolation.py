"""From inside a real guest: the agent's management API and the controller are
out of reach, the agent's guest report port is not.

A real agent (qemu:///system, its management API on 0.0.0.0) and a real
controller (on 0.0.0.0) on this host; one tiny TCG guest whose extension
tries wget and nc against the management port, the controller's port and the
report port on the bridge's gateway and on every other IPv4 address of the
host, and prints what each got. Its report arriving (with that output) is
the allowed path working; the probe of the report port getting an HTTP
answer shows the guest's tools and network work; every other probe gets
nothing. Then, as a control, the isolation table is removed and the guest
reimaged: the same probes now get the management API's 403 and the
controller's 401.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from bench.served import FileServer, tiny_image_spec
from hostagent.contract import instancespec, operations
from hostagent.network import bridge, firewall
from images.tiny.build import build
from tests.agentproc import REPO
from tests.fixtures import storage_root
from tests.security.hostnet import host_ipv4_addresses, random_subnet
from tests.security.services import AgentServe, served_controller

pytestmark = pytest.mark.guest

IMAGES = REPO / "build" / "images"
# One line per target that got anything back (what wget and nc got, cut
# short; a dropped probe prints nothing), in the order given, then how many
# probes ended. The agent keeps the last 4 KiB of an extension's output: the
# targets that matter most go last (see targets()), so they survive however
# many addresses the host has.
PROBE = r"""
probe() {
    w=$(timeout 5 wget -q -O - "http://$1:$2/v1/scaleSets" 2>&1 | head -c 24 | tr '\n' ' ')
    n=$(printf 'GET /v1/scaleSets HTTP/1.0\r\n\r\n' | timeout 5 nc "$1" "$2" 2>&1 |
        head -n 1 | tr -d '\r\n' | head -c 32)
    [ -n "$w$n" ] && echo "R $1:$2 wget[$w] nc[$n]"
    echo "$1:$2" >> /tmp/kvmss-probe/ended
}
mkdir -p /tmp/kvmss-probe
for t in TARGETS; do probe "${t%:*}" "${t#*:}" > "/tmp/kvmss-probe/$t" & done
wait
for t in TARGETS; do cat "/tmp/kvmss-probe/$t"; done
echo "P $(wc -l < /tmp/kvmss-probe/ended)"
"""
RESULT_RE = re.compile(r"^R (\S+) wget\[(.*)\] nc\[(.*)\]$")
ENDED_RE = re.compile(r"^P (\d+)$", re.MULTILINE)


@dataclass
class Lab:
    agent: AgentServe
    image: instancespec.ImageSpec
    ctl_port: int
    gateway: str


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    build("1", IMAGES / "tiny-1")
    subnet = random_subnet()
    with storage_root("sec-iso") as root:
        files = FileServer(IMAGES)
        (root / "agent").mkdir()
        agent = AgentServe(
            root / "agent",
            {
                "name": "host-iso",
                "token": "agent-token-iso-" + os.urandom(8).hex(),
                "libvirt_uri": "qemu:///system",
                "bridge": {"name": f"kvi{os.urandom(3).hex()}", "subnet": subnet},
            },
            listen_host="0.0.0.0",
        )
        try:
            with served_controller(root, "ctl-token-iso-" + os.urandom(8).hex(), "0.0.0.0") as c:
                agent.start()
                gateway = str(next(ipaddress.IPv4Network(subnet).hosts()))
                image = tiny_image_spec(files.base_url, "1", IMAGES / "tiny-1")
                yield Lab(agent, image, c.port, gateway)
        finally:
            agent.stop()
            agent.remove_domains()
            bridge.delete_bridge(agent.settings["bridge"]["name"])
            files.close()


def probe_results(
    lab: Lab, name: str, op: operations.Operation
) -> tuple[dict[str, tuple[str, str]], int]:
    """Run ``op`` (a create or reimage of ``name``) and wait for the probe
    extension's report: target -> (what wget got, what nc got) for the targets
    that got anything, and how many probes ended."""
    done = lab.agent.client.wait(op, timeout=300)
    assert done.status == "Succeeded", done
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        view = lab.agent.client.instance(name)
        assert view is not None
        ext = view.extensions[0]
        if ext.instanceId == view.current.instanceId and ext.status in ("Succeeded", "Failed"):
            assert ext.status == "Succeeded", ext
            assert ext.message is not None
            ended = ENDED_RE.search(ext.message)
            assert ended, f"no count of ended probes in {ext.message!r}"
            lines = [m for line in ext.message.splitlines() if (m := RESULT_RE.match(line))]
            return {m.group(1): (m.group(2), m.group(3)) for m in lines}, int(ended.group(1))
        time.sleep(1)
    raise AssertionError(f"no report from {name}: {lab.agent.client.instance(name)}")


def targets(addresses: list[str], gateway: str, ports: tuple[int, ...]) -> list[str]:
    """Every address and port, the gateway's last (see PROBE)."""
    ordered = [a for a in addresses if a != gateway] + [gateway]
    return [f"{a}:{p}" for a in ordered for p in ports]


def answered(got: tuple[str, str]) -> bool:
    return any("HTTP/1." in g for g in got)


def test_a_guest_reaches_only_its_agents_report_port(lab: Lab) -> None:
    mgmt, report = lab.agent.port, lab.agent.guest_port
    addresses = host_ipv4_addresses()
    assert lab.gateway in addresses and len(addresses) >= 2
    probed = targets(addresses, lab.gateway, (mgmt, lab.ctl_port, report))
    spec = instancespec.InstanceSpec(
        image=lab.image,
        vcpus=1,
        memoryMB=192,
        osProfile=instancespec.OsProfile(computerName="iso"),
        extensions=[
            instancespec.Extension(
                name="probe",
                settings={"commandToExecute": PROBE.replace("TARGETS", " ".join(probed))},
            )
        ],
    )
    bridge_name = lab.agent.settings["bridge"]["name"]
    started = time.monotonic()
    isolated, ended = probe_results(lab, "iso-0", lab.agent.client.put_instance("iso-0", spec))
    booted = time.monotonic() - started
    assert ended == len(probed), (ended, probed)
    allowed = f"{lab.gateway}:{report}"
    assert allowed in isolated, isolated
    assert answered(isolated.pop(allowed)), "the report port answers (the tools work)"
    assert not isolated, f"the guest got answers from {isolated}"
    assert firewall.listing(bridge_name) is not None

    # control: without the table the same probes reach both services
    firewall.remove(bridge_name)
    op = lab.agent.client.reimage("iso-0", lab.image, None)
    opened, ended = probe_results(lab, "iso-0", op)
    assert ended == len(probed), (ended, probed)
    assert "403 Forbidden" in opened[f"{lab.gateway}:{mgmt}"][1], opened
    assert "401 Unauthorized" in opened[f"{lab.gateway}:{lab.ctl_port}"][1], opened
    print(f"guest isolation: {len(probed)} targets, first report after {booted:.0f}s")
