"""The guest bridge: a Linux bridge holding the host's address on the guest subnet.

Guests' taps are enslaved to it by libvirt (``<interface type='bridge'>``);
the agent probes guests and listens for their reports on its address. All of
it goes through netlink (pyroute2); nothing shells out to ``ip``.
"""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hostagent.network import firewall

BRIDGE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


class BridgeError(RuntimeError):
    """A bridge could not be inspected, created, changed or deleted."""


def check_bridge_name(name: str) -> str:
    """Return ``name`` or raise ValueError saying why it cannot name a bridge."""
    if not BRIDGE_NAME_RE.fullmatch(name) or name in (".", ".."):
        raise ValueError(
            f"bridge name {name[:80]!r} is invalid: use 1-15 letters, digits, '_', '.' or '-'"
            " (not '.' or '..')"
        )
    return name


def _parse_interface(address_cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if "/" not in address_cidr:
        raise ValueError(
            f"bridge address {address_cidr[:80]!r} is invalid: give address/prefix,"
            " e.g. 10.77.0.1/24"
        )
    try:
        iface = ipaddress.ip_interface(address_cidr)
    except ValueError as e:
        raise ValueError(f"bridge address {address_cidr[:80]!r} is invalid: {e}") from None
    if iface.ip == iface.network.network_address and iface.network.prefixlen < iface.max_prefixlen:
        raise ValueError(
            f"bridge address {address_cidr[:80]!r} is invalid: it is the network address,"
            " give a host address such as the first one"
        )
    return iface


def _netlink_reason(e: NetlinkError) -> str:
    reason = e.args[1] if len(e.args) > 1 and isinstance(e.args[1], str) else str(e)
    if e.code == errno.EPERM:
        reason += " (needs root or CAP_NET_ADMIN)"
    return reason


def _find_link(ipr: Any, name: str) -> tuple[int, str | None] | None:
    """(index, kind) of the link called ``name``, or None when there is none."""
    indexes = ipr.link_lookup(ifname=name)
    if not indexes:
        return None
    index = int(indexes[0])
    try:
        link = ipr.link("get", index=index)[0]
    except NetlinkError as e:
        if e.code == errno.ENODEV:  # deleted between lookup and get
            return None
        raise
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return index, kind


def _bridge_index(ipr: Any, name: str) -> int | None:
    """Index of bridge ``name``; None when missing; BridgeError when not a bridge."""
    found = _find_link(ipr, name)
    if found is None:
        return None
    index, kind = found
    if kind != "bridge":
        what = f" (it is a {kind} link)" if kind else ""
        raise BridgeError(
            f"link {name!r} exists but is not a bridge{what}; choose another bridge name"
        )
    return index


def _addresses(ipr: Any, index: int) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for msg in ipr.get_addr(index=index):
        addr = msg.get_attr("IFA_ADDRESS")
        if addr is None:
            continue
        out.append((str(ipaddress.ip_address(addr)), int(msg["prefixlen"])))
    return out


def bridge_exists(name: str) -> bool:
    """Whether a bridge called ``name`` exists (a link of another kind does not count)."""
    check_bridge_name(name)
    with IPRoute() as ipr:
        found = _find_link(ipr, name)
    return found is not None and found[1] == "bridge"


def bridge_addresses(name: str) -> list[str]:
    """Every address on bridge ``name`` as ``address/prefix`` (IPv4 first).

    The kernel's own IPv6 link-local address is included when it has one.
    """
    check_bridge_name(name)
    with IPRoute() as ipr:
        index = _bridge_index(ipr, name)
        if index is None:
            raise BridgeError(f"bridge {name!r} does not exist")
        pairs = _addresses(ipr, index)
    pairs.sort(key=lambda p: ":" in p[0])
    return [f"{a}/{p}" for a, p in pairs]


def _ensure_link(ipr: Any, name: str) -> int:
    """Index of bridge ``name``, created when missing, forwarding at once."""
    index = _bridge_index(ipr, name)
    if index is None:
        try:
            ipr.link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
        except NetlinkError as e:
            if e.code != errno.EEXIST:  # else someone created it meanwhile
                raise
        index = _bridge_index(ipr, name)
        if index is None:
            raise BridgeError(f"bridge {name!r} vanished right after it was created")
    # Two messages: the kernel applies the forward delay before the STP state,
    # and refuses a delay under 2 s while STP is still on.
    ipr.link("set", index=index, kind="bridge", br_stp_state=0)
    ipr.link("set", index=index, kind="bridge", br_forward_delay=0)
    return index


def ensure_bridge(name: str, address_cidr: str | None) -> None:
    """Make bridge ``name`` exist, hold ``address_cidr``, forward at once, and be up.

    Idempotent: each step is done only when missing. Spanning tree is turned off
    and the forward delay set to 0, so a guest's tap forwards from its first
    frame instead of after 15 s of listening and learning. ``address_cidr``
    None makes an L2-only bridge (its L3 side in a namespace,
    :mod:`hostagent.network.netns`). Raises BridgeError
    when a link of another kind has that name, or when the bridge already holds
    the same address with another prefix length (the configured subnet changed).
    """
    check_bridge_name(name)
    iface = _parse_interface(address_cidr) if address_cidr is not None else None
    with IPRoute() as ipr:
        try:
            index = _ensure_link(ipr, name)
            if iface is not None:
                _ensure_address(ipr, name, index, iface)
            ipr.link("set", index=index, state="up")
        except NetlinkError as e:
            raise BridgeError(
                f"cannot set up bridge {name!r} with {address_cidr}: {_netlink_reason(e)}"
            ) from None


def _ensure_address(
    ipr: Any, name: str, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> None:
    want_addr, want_prefix = str(iface.ip), iface.network.prefixlen
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    held = _addresses(ipr, index)
    if (want_addr, want_prefix) in held:
        return
    other = [p for a, p in held if a == want_addr]
    if other:
        raise BridgeError(
            f"bridge {name!r} already holds {want_addr}/{other[0]}, not"
            f" {iface}; remove that address or fix the configured subnet"
        )
    try:
        ipr.addr("add", index=index, address=want_addr, prefixlen=want_prefix, family=family)
    except NetlinkError as e:
        if e.code != errno.EEXIST:
            raise


def delete_bridge(name: str) -> None:
    """Delete bridge ``name`` if it exists, and the agent's guest isolation table
    for it (:mod:`hostagent.network.firewall`). A link of another kind is left
    alone (BridgeError)."""
    check_bridge_name(name)
    try:
        firewall.remove(name)
    except firewall.FirewallError as e:
        raise BridgeError(str(e)) from None
    with IPRoute() as ipr:
        try:
            index = _bridge_index(ipr, name)
            if index is None:
                return
            try:
                ipr.link("del", index=index)
            except NetlinkError as e:
                if e.code != errno.ENODEV:  # else deleted meanwhile
                    raise
        except NetlinkError as e:
            raise BridgeError(f"cannot delete bridge {name!r}: {_netlink_reason(e)}") from None
