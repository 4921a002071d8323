"""An agent with ``network_namespace``: its guest report listener and its
probes live in that namespace, its management API on the machine's loopback
(root: real namespaces, links and sockets; libvirt's test driver)."""

from __future__ import annotations

import http.client
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.served import free_port
from hostagent.contract import instancespec
from hostagent.daemon.config import AgentConfig
from hostagent.daemon.server import AgentServer
from hostagent.daemon.service import Agent, probe_from
from hostagent.network import bridge, netns
from kvmss.base.clock import SystemClock
from tests.hostagent.network.standins import guest_on

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")

TOKEN = "namespace-agent-token-0123456789"


@dataclass(frozen=True)
class Lab:
    ns: str
    guest: str
    bridge: str
    agent: Agent


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    tag = secrets.token_hex(3)
    ns, guest, br = f"kvmss-t{tag}", f"kvmss-t{tag}-g", f"kvt{tag}"
    cfg = AgentConfig.from_dict(
        {
            "name": "host-ns",
            "token": TOKEN,
            "listen": f"127.0.0.1:{free_port()}",
            "libvirt_uri": "test:///default",
            "storage_dir": str(tmp_path / "agent"),
            "bridge": {"name": br, "subnet": "10.204.3.0/24"},
            "guest_port": 18191,
            "network_namespace": ns,
        }
    )
    agent = Agent.build(cfg, SystemClock())
    try:
        # the test driver's agent leaves the network alone: set it up as start() would
        netns.create(ns)
        agent.isolate_guests()
        bridge.ensure_bridge(br, None)
        netns.ensure_uplink(br, ns, agent.subnet.host_cidr)
        guest_on(br, guest, "10.204.3.50")
        yield Lab(ns, guest, br, agent)
    finally:
        agent.stop()
        netns.remove(guest)
        netns.remove(ns)
        bridge.delete_bridge(br)


def test_the_guest_listener_is_in_the_namespace(lab: Lab) -> None:
    server = AgentServer(lab.agent)
    server.start_background()
    try:
        gw = lab.agent.subnet.gateway

        def ask() -> int:
            conn = http.client.HTTPConnection(gw, 18191, timeout=5)
            conn.request("GET", "/no-such-path")
            return conn.getresponse().status

        assert netns.run_in(lab.guest, ask) == 404  # the guest API answers the guest
        listening = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        assert f"{gw}:18191" not in listening  # ... and not in the machine's namespace
        api = (server.api.config.host, server.api.config.port)
        assert api[0] == "127.0.0.1"
    finally:
        server.stop()


def test_probes_run_from_the_namespace(lab: Lab) -> None:
    listener = netns.run_in(lab.guest, lambda: socket.create_server(("10.204.3.50", 8080)))
    probe = instancespec.HealthProbe(protocol="Tcp", port=8080)
    try:
        assert probe_from(lab.ns)(probe, "10.204.3.50", 3.0).ok
        closed = instancespec.HealthProbe(protocol="Tcp", port=8081)
        assert probe_from(lab.ns)(closed, "10.204.3.50", 3.0).error == "connection refused"
    finally:
        listener.close()
