"""A stand-in guest for namespace tests: a namespace on a bridge by a veth."""

from __future__ import annotations

import hashlib

from pyroute2 import IPRoute, NetNS

from hostagent.network import netns


def guest_on(bridge: str, guest: str, address: str, prefixlen: int = 24) -> None:
    """Namespace ``guest`` joined to ``bridge`` by a veth; its eth0 holds ``address``.
    Removing the namespace (:func:`netns.remove`) removes the veth too."""
    netns.create(guest)
    h = hashlib.sha256(guest.encode()).hexdigest()[:10]
    outer, inner = "kvg" + h, "kvi" + h
    with IPRoute() as ipr:
        ipr.link("add", ifname=outer, kind="veth", peer=inner)
        ipr.link("set", index=ipr.link_lookup(ifname=inner)[0], net_ns_fd=guest)
        br = ipr.link_lookup(ifname=bridge)[0]
        ipr.link("set", index=ipr.link_lookup(ifname=outer)[0], master=br, state="up")
    with NetNS(guest) as g:
        idx = g.link_lookup(ifname=inner)[0]
        g.link("set", index=idx, ifname="eth0")
        g.addr("add", index=idx, address=address, prefixlen=prefixlen)
        g.link("set", index=idx, state="up")
