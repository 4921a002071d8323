"""Guest isolation (hostagent/network/firewall.py), without booting a guest.

The agent installs one nftables table per bridge at every start, exactly the
expected ruleset, never twice, repaired when tampered with, removed when
isolation is turned off or the bridge is deleted. A network namespace
plugged into the bridge with a guest's address stands in for a guest: it
reaches the agent's guest report port and nothing else of the host (the
management API and a controller both listening on every address), while
the host still reaches it (the health probes' path), and so does another
"guest" on the same bridge; with the table removed
the same probes get answers, so they do detect reachability.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from bench.served import free_port
from hostagent.daemon.config import AgentConfig
from hostagent.daemon.server import AgentServer
from hostagent.daemon.service import Agent
from hostagent.network import bridge
from hostagent.network import firewall as guestfirewall
from tests.fixtures import storage_root
from tests.security.hostnet import HostBridge, host_ipv4_addresses, netns_guest, random_subnet
from tests.security.services import served_controller

EXPECTED = """table inet kvmss_{bridge} {{
	chain input {{
		type filter hook input priority filter - 10; policy accept;
		iifname != "{bridge}" accept
		ct state established,related accept
		ip daddr {gateway} tcp dport {port} accept
		ip daddr {gateway} icmp type echo-request accept
		icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} accept
		counter drop
	}}

	chain forward {{
		type filter hook forward priority filter - 10; policy accept;
		iifname "{bridge}" oifname != "{bridge}" counter drop
	}}
}}
"""
COUNTER_RE = re.compile(r"counter packets \d+ bytes \d+")


@dataclass
class Host:
    root: Path
    raw: dict[str, Any]
    agent: Agent | None = None

    @property
    def config(self) -> AgentConfig:
        return AgentConfig.from_dict(self.raw)

    @property
    def bridge(self) -> str:
        return str(self.raw["bridge"]["name"])

    @property
    def net(self) -> HostBridge:
        return HostBridge(self.bridge, ipaddress.IPv4Network(self.raw["bridge"]["subnet"]))

    def start(self, **changes: Any) -> Agent:
        """A new agent process's start on the same configuration (plus ``changes``)."""
        self.stop()
        self.raw.update(changes)
        self.agent = Agent.build(self.config)
        self.agent.start()
        return self.agent

    def stop(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    def expected(self) -> str:
        return EXPECTED.format(
            bridge=self.bridge, gateway=self.net.gateway, port=self.raw["guest_port"]
        )

    def listing(self) -> str | None:
        text = guestfirewall.listing(self.bridge)
        return None if text is None else COUNTER_RE.sub("counter", text)


@contextmanager
def host(listen: str = "127.0.0.1") -> Iterator[Host]:
    with storage_root("sec-fw") as root:
        h = Host(
            root,
            {
                "name": "host-fw",
                "listen": f"{listen}:{free_port()}",
                "token": "agent-token-fw-0123456789abcdef",
                "libvirt_uri": "qemu:///system",
                "storage_dir": str(root / "agent"),
                "bridge": {"name": f"kvf{os.urandom(3).hex()}", "subnet": random_subnet()},
                "guest_port": free_port(),
            },
        )
        try:
            yield h
        finally:
            h.stop()
            bridge.delete_bridge(h.bridge)


def tables() -> list[str]:
    out = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_the_agent_installs_its_table_once_repairs_and_removes_it() -> None:
    with host() as h:
        h.start()
        assert h.listing() == h.expected()
        assert bridge.bridge_exists(h.bridge)
        h.start()  # a restart: replaced, not doubled
        assert h.listing() == h.expected()
        assert tables().count(f"table inet kvmss_{h.bridge}") == 1
        # a rule slipped in (or a stale ruleset) is gone after the next start
        subprocess.run(
            ["nft", "insert", "rule", "inet", f"kvmss_{h.bridge}", "input", "accept"], check=True
        )
        assert h.listing() != h.expected()
        h.start()
        assert h.listing() == h.expected()
        h.start(guest_isolation=False)
        assert h.listing() is None
        h.start(guest_isolation=True)
        assert h.listing() == h.expected()
        h.stop()
        bridge.delete_bridge(h.bridge)
        assert h.listing() is None
        assert not bridge.bridge_exists(h.bridge)


def test_an_agent_that_cannot_isolate_its_guests_does_not_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with host() as h:
        monkeypatch.setenv("PATH", str(h.root))  # no nft
        with pytest.raises(guestfirewall.FirewallError, match="nftables"):
            h.start()
        assert not bridge.bridge_exists(h.bridge), "no bridge, so no guest runs unfiltered"
        h.start(guest_isolation=False)  # then nothing needs nft
        assert bridge.bridge_exists(h.bridge)


def input_drops(bridge_name: str) -> int:
    out = subprocess.run(
        ["nft", "-j", "list", "chain", "inet", f"kvmss_{bridge_name}", "input"],
        capture_output=True,
        text=True,
        check=True,
    )
    for item in json.loads(out.stdout)["nftables"]:
        for expr in item.get("rule", {}).get("expr", []):
            if "counter" in expr:
                return int(expr["counter"]["packets"])
    raise AssertionError("no counter in the input chain")


def test_a_guest_reaches_the_report_port_and_nothing_else_of_its_host() -> None:
    with (
        host(listen="0.0.0.0") as h,
        storage_root("sec-fw-ctl") as ctl_root,
        served_controller(ctl_root, "ctl-token-fw-0123456789abcdef", "0.0.0.0") as ctl,
    ):
        agent = h.start()
        server = AgentServer(agent)
        server.start_background()
        try:
            net = h.net
            mgmt = int(str(h.raw["listen"]).rsplit(":", 1)[1])
            guest_addr = str(net.subnet.network_address + 9)
            neighbour_addr = str(net.subnet.network_address + 10)
            with netns_guest(net, guest_addr) as guest, netns_guest(net, neighbour_addr) as nb:
                web = guest.serve_http(8080)
                neighbour_web = nb.serve_http(8080)
                try:
                    isolated = _reachability(guest, net, mgmt, ctl.port, int(h.raw["guest_port"]))
                    # the host reaches the guest (the health probes' way)
                    assert _host_gets(f"http://{guest_addr}:8080/") == 200
                    # guests on the same bridge reach each other (bridged, not routed)
                    assert nb.connect(guest_addr, 8080).startswith("answered HTTP/1.0 200 OK")
                    assert guest.connect(neighbour_addr, 8080).startswith(
                        "answered HTTP/1.0 200 OK"
                    )
                finally:
                    for w in (web, neighbour_web):
                        w.terminate()
                        w.wait(10)
                drops = input_drops(h.bridge)
                guestfirewall.remove(h.bridge)
                open_ = _reachability(guest, net, mgmt, ctl.port, int(h.raw["guest_port"]))
        finally:
            server.stop()
    report = f"{net.gateway}:{h.raw['guest_port']}"
    assert isolated.pop(report).startswith("answered HTTP/1.1 "), isolated
    assert set(isolated.values()) == {"timeout"}, isolated
    assert drops >= len(isolated)
    # without the table the same probes get through: the management API
    # refuses a guest peer itself (403), the controller wants its token (401)
    assert open_.pop(report).startswith("answered HTTP/1.1 ")
    assert open_[f"{net.gateway}:{mgmt}"] == "answered HTTP/1.1 403 Forbidden", open_
    assert open_[f"{net.gateway}:{ctl.port}"] == "answered HTTP/1.1 401 Unauthorized", open_


def _reachability(guest: Any, net: HostBridge, *ports: int) -> dict[str, str]:
    """What the guest gets from each of the host's addresses on each port."""
    targets = [(addr, port) for addr in host_ipv4_addresses() for port in ports]
    targets = [(a, p) for a, p in targets if a != guest.address]
    assert (net.gateway, ports[0]) in targets
    with ThreadPoolExecutor(16) as pool:
        got = pool.map(lambda t: guest.connect(t[0], t[1], 1.5), targets)
        return {f"{a}:{p}": r for (a, p), r in zip(targets, got, strict=True)}


def _host_gets(url: str) -> int:
    deadline = time.monotonic() + 20
    while True:
        try:
            return requests.get(url, timeout=3).status_code
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
