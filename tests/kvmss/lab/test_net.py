"""kvmss.lab.net: bridge names, subnet picking, loopback ports (no bridge made)."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from kvmss.lab import net


def test_bridge_names_fit_the_kernel_limit_and_differ_per_lab() -> None:
    a, b = Path("/work/main/build/lab"), Path("/var/tmp/lab3")
    names = [net.bridge_name(a, i) for i in (1, 2, 16, 999)]
    assert all(len(n) <= 15 and n.startswith("kvl") for n in names)
    assert len(set(names)) == 4
    assert net.bridge_name(a, 1) == net.bridge_name(a, 1)
    assert net.bridge_name(a, 1) != net.bridge_name(b, 1)
    assert all(n.startswith(net.bridge_prefix(a)) for n in names)
    with pytest.raises(ValueError, match="host index 0"):
        net.bridge_name(a, 0)


def test_subnets_avoid_used_networks_and_each_other() -> None:
    used = [ipaddress.IPv4Network("10.0.0.0/8")]  # every candidate
    with pytest.raises(RuntimeError, match="no free"):
        net.pick_subnets(1, used, "seed")
    first = net.pick_subnets(3, [], "seed")
    assert len(set(first)) == 3
    assert all(n.prefixlen == 24 and str(n).startswith("10.") for n in first)
    assert net.pick_subnets(3, [], "seed") == first  # stable for the same lab
    # the first pick taken by an interface: the next free ones are picked
    taken = ipaddress.IPv4Network(f"{first[0].network_address}/16", strict=False)
    again = net.pick_subnets(3, [taken], "seed")
    assert not any(n.overlaps(taken) for n in again)
    for n in again:
        assert 96 <= int(str(n).split(".")[1]) < 160


def test_used_networks_include_loopback() -> None:
    nets = net.used_networks()
    assert any(n.overlaps(ipaddress.IPv4Network("127.0.0.0/8")) for n in nets)


def test_free_port_is_bindable() -> None:
    port = net.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
