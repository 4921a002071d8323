"""A bridge holding a guest subnet's gateway (and, to speak as a guest, guests'
addresses) on this host, and HTTP from a chosen source address."""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

from hostagent.network import bridge


@dataclass(frozen=True)
class HostBridge:
    name: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        return str(next(self.subnet.hosts()))

    def add_address(self, address: str) -> None:
        """Hold ``address`` too, so this process can send from it as a guest would."""
        with IPRoute() as ipr:
            index = ipr.link_lookup(ifname=self.name)[0]
            ipr.addr("add", index=index, address=address, prefixlen=self.subnet.prefixlen)


def random_subnet() -> str:
    return f"10.{random.randint(120, 159)}.{random.randint(0, 255)}.0/24"


@contextmanager
def host_bridge(subnet: str | None = None) -> Iterator[HostBridge]:
    net = ipaddress.IPv4Network(subnet or random_subnet())
    b = HostBridge(f"kvs{os.urandom(3).hex()}", net)
    bridge.ensure_bridge(b.name, f"{b.gateway}/{net.prefixlen}")
    try:
        yield b
    finally:
        bridge.delete_bridge(b.name)


def post_from(
    source: str,
    host: str,
    port: int,
    path: str,
    body: Any,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """POST ``body`` as JSON to http://host:port/path from ``source``: (status, parsed body)."""
    conn = http.client.HTTPConnection(host, port, timeout=15, source_address=(source, 0))
    try:
        conn.request(
            "POST",
            path,
            body=json.dumps(body),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    return resp.status, (json.loads(data) if data else None)


def host_ipv4_addresses() -> list[str]:
    """Every IPv4 address of this host but loopback."""
    out = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET):
            addr = msg.get_attr("IFA_ADDRESS")
            if addr and not ipaddress.IPv4Address(addr).is_loopback:
                out.append(str(addr))
    return sorted(set(out))


# Run inside a network namespace: connect to HOST:PORT, send an HTTP request,
# print what came back ("answered <status line>", "refused" or "timeout").
_CONNECT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
except ConnectionRefusedError:
    print("refused")
except OSError:
    print("timeout")
else:
    s.settimeout(float(sys.argv[3]))
    s.sendall(b"GET /v1/scaleSets HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
    try:
        print("answered " + s.recv(200).decode("latin-1").splitlines()[0])
    except OSError:
        print("timeout")
"""


# Run inside a network namespace: answer every connection to ADDRESS:PORT with 200.
_SERVE = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    c, _ = s.accept()
    try:
        c.settimeout(5)
        c.recv(4096)
        c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    except OSError:
        pass
    c.close()
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@dataclass(frozen=True)
class NetnsGuest:
    """A network namespace on the bridge with a guest's address: a guest
    without a VM, for testing what the host lets guests reach."""

    ns: str
    address: str

    def python(self, *argv: str) -> list[str]:
        """The command line that runs this interpreter with ``argv`` in the namespace."""
        return ["ip", "netns", "exec", self.ns, sys.executable, *argv]

    def connect(self, host: str, port: int, timeout: float = 2.0) -> str:
        proc = subprocess.run(
            self.python("-c", _CONNECT, host, str(port), str(timeout)),
            capture_output=True,
            text=True,
            timeout=timeout + 30,
            check=True,
        )
        return proc.stdout.strip()

    def serve_http(self, port: int) -> subprocess.Popen[bytes]:
        """An HTTP server in the namespace (as a guest's service the host probes).
        Not http.server: it looks its own address up in DNS, unreachable from here."""
        return subprocess.Popen(
            self.python("-c", _SERVE, self.address, str(port)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )


@contextmanager
def netns_guest(net: HostBridge, address: str) -> Iterator[NetnsGuest]:
    tag = os.urandom(3).hex()
    ns, host_end = f"kvsg{tag}", f"kvsv{tag}"
    _ip("netns", "add", ns)
    try:
        _ip("link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _ip("link", "set", host_end, "master", net.name, "up")
        _ip("-n", ns, "addr", "add", f"{address}/{net.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "route", "add", "default", "via", net.gateway)
        yield NetnsGuest(ns, address)
    finally:
        _ip("netns", "del", ns)  # takes the veth pair with it
