"""Networking for the local lab: loopback ports, guest subnets nobody on this
machine uses, and the lab's bridge names.
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# Guest subnets are picked among 10.96.0.0/24 .. 10.159.255.0/24 (the test
# suite's agents pick theirs from 10.160.0.0 and up).
SUBNET_FIRST_OCTET = range(96, 160)
BRIDGE_PREFIX = "kvl"
MAX_BRIDGE_NAME = 15


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lab_tag(root: Path) -> str:
    """Six hex digits naming the lab at ``root`` (stable for the same path)."""
    return hashlib.sha256(str(root).encode()).hexdigest()[:6]


def bridge_prefix(root: Path) -> str:
    """``kvl<tag>``: every bridge of the lab at ``root`` starts with it."""
    return f"{BRIDGE_PREFIX}{lab_tag(root)}"


def bridge_name(root: Path, index: int) -> str:
    """The bridge of host ``index`` (from 1): ``kvl<tag><index>``, at most 15 characters."""
    if not 1 <= index <= 999:
        raise ValueError(f"host index {index}: must be between 1 and 999")
    name = f"{bridge_prefix(root)}{index}"
    assert len(name) <= MAX_BRIDGE_NAME
    return name


def pick_subnets(
    count: int, used: Iterable[ipaddress.IPv4Network], seed: str
) -> list[ipaddress.IPv4Network]:
    """``count`` distinct 10.x.y.0/24 subnets overlapping none of ``used``.

    The search starts at a place derived from ``seed`` (the lab's directory),
    so the same lab tends to get the same subnets again.
    """
    taken = list(used)
    candidates = [(a, b) for a in SUBNET_FIRST_OCTET for b in range(256)]
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % len(candidates)
    out: list[ipaddress.IPv4Network] = []
    for k in range(len(candidates)):
        if len(out) == count:
            break
        a, b = candidates[(start + k) % len(candidates)]
        net = ipaddress.IPv4Network(f"10.{a}.{b}.0/24")
        if any(net.overlaps(t) for t in taken):
            continue
        out.append(net)
        taken.append(net)
    if len(out) < count:
        raise RuntimeError(f"no free 10.x.y.0/24 subnet left for {count} lab hosts")
    return out


def used_networks() -> list[ipaddress.IPv4Network]:
    """IPv4 networks this machine already uses: every interface address's
    network and every route's destination (the default route excepted)."""
    # pyroute2 loads only here: the kvmss CLI imports this module at start
    from pyroute2 import IPRoute

    out: list[ipaddress.IPv4Network] = []
    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET):
            addr = msg.get_attr("IFA_ADDRESS")
            if addr:
                out.append(_network(addr, msg["prefixlen"]))
        for msg in ipr.get_routes(family=socket.AF_INET):
            dst = msg.get_attr("RTA_DST")
            if dst and msg["dst_len"] > 0:
                out.append(_network(dst, msg["dst_len"]))
    return out


def _network(addr: Any, prefixlen: Any) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{addr}/{int(prefixlen)}", strict=False)


def links_named(prefix: str) -> list[str]:
    """Names of the network links starting with ``prefix``."""
    # pyroute2 loads only here: the kvmss CLI imports this module at start
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        names = [str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()]
    return sorted(n for n in names if n.startswith(prefix))
