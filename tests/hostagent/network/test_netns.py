"""The namespace plumbing on real links (root): an L2 bridge in the machine's
namespace, a veth into a lab namespace holding the gateway, sockets made in
that namespace, and nothing of it left in the machine's addresses or routes."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute, NetNS

from hostagent.network import firewall, netns
from hostagent.network.bridge import bridge_addresses, delete_bridge, ensure_bridge
from tests.hostagent.network.standins import guest_on

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root")


def _host_l3() -> tuple[str, str]:
    addrs = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True)
    return addrs.stdout, routes.stdout


@pytest.fixture
def lab() -> Iterator[tuple[str, str, str]]:
    """(namespace, bridge, guest namespace): removed afterwards, whatever happened."""
    tag = secrets.token_hex(3)
    ns, guest, br = f"kvmss-t{tag}", f"kvmss-t{tag}-g", f"kvt{tag}"
    try:
        yield ns, br, guest
    finally:
        netns.remove(guest)
        netns.remove(ns)
        delete_bridge(br)


def test_names_are_checked() -> None:
    with pytest.raises(ValueError, match="network namespace"):
        netns.check_name("../etc")
    assert netns.veth_names("kvl123abc1") != netns.veth_names("kvl123abc2")
    assert all(len(n) <= 15 for n in netns.veth_names("a" * 15))


def test_uplink_keeps_the_machine_namespace_unchanged(lab: tuple[str, str, str]) -> None:
    ns, br, _ = lab
    before = _host_l3()
    ensure_bridge(br, None)
    inner = netns.ensure_uplink(br, ns, "10.203.7.1/24")
    netns.ensure_uplink(br, ns, "10.203.7.1/24")  # again: nothing doubles
    assert _host_l3() == before
    assert [a for a in bridge_addresses(br) if "." in a] == []
    with NetNS(ns) as n:
        addrs = [m.get_attr("IFA_ADDRESS") for m in n.get_addr(label=inner)]
    assert addrs == ["10.203.7.1"]
    assert ns in netns.names("kvmss-t")


def test_a_guest_reaches_a_listener_made_in_the_namespace(lab: tuple[str, str, str]) -> None:
    ns, br, guest = lab
    ensure_bridge(br, None)
    inner = netns.ensure_uplink(br, ns, "10.203.8.1/24")
    firewall.apply(br, "10.203.8.1", 18091, namespace=ns, iface=inner)
    listener = netns.socket_in(ns)
    listener.bind(("10.203.8.1", 18091))  # the address exists only in the namespace
    listener.listen()
    with pytest.raises(OSError):
        socket.socket().bind(("10.203.8.1", 18091))
    guest_on(br, guest, "10.203.8.2")

    def connect(port: int) -> None:
        with socket.create_connection(("10.203.8.1", port), timeout=3):
            pass

    netns.run_in(guest, lambda: connect(18091))
    other = netns.socket_in(ns)
    other.bind(("10.203.8.1", 18092))
    other.listen()
    with pytest.raises(TimeoutError):  # isolation: dropped, not refused
        netns.run_in(guest, lambda: connect(18092))
    listing = firewall.listing(br, namespace=ns)
    assert listing is not None and inner in listing
    assert firewall.listing(br) is None  # not in the machine's namespace
    listener.close()
    other.close()


def test_remove_takes_the_veth_and_the_table_along(lab: tuple[str, str, str]) -> None:
    ns, br, _ = lab
    ensure_bridge(br, None)
    netns.ensure_uplink(br, ns, "10.203.9.1/24")
    firewall.apply(br, "10.203.9.1", 18091, namespace=ns, iface=netns.veth_names(br)[1])
    netns.remove(ns)
    netns.remove(ns)  # again: nothing left to do
    assert not netns.exists(ns)
    with IPRoute() as ipr:
        assert not ipr.link_lookup(ifname=netns.veth_names(br)[0])
