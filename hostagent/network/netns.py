"""Network namespaces holding the L3 side of a guest network.

libvirtd attaches a guest's tap to a bridge of the machine's own namespace, so
with a namespace the bridge there carries no address (L2 only) and a veth pair
carries the guests' traffic into the namespace, whose end holds the gateway
address; the agent's guest listener and probes open their sockets in the
namespace (:func:`run_in`), its management API stays where it is.

Namespaces are named ``/run/netns/<name>`` (``ip netns`` sees them too).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import ipaddress
import os
import re
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from pyroute2 import IPRoute, NetNS, netns
from pyroute2.netlink.exceptions import NetlinkError

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
VETH_HOST_PREFIX = "kvh"
VETH_NS_PREFIX = "kvn"
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd: int, kind: int) -> None:
    """setns(2) for the calling thread (os.setns arrives in Python 3.12)."""
    if _libc.setns(fd, kind) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NamespaceError(RuntimeError):
    """A namespace, or a link in it, could not be created, entered or removed."""


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise ValueError(
            f"network namespace {name[:80]!r} is invalid: 1-64 letters, digits, '_', '.', '-'"
        )
    return name


def exists(name: str) -> bool:
    return (NETNS_DIR / check_name(name)).exists()


def names(prefix: str = "") -> list[str]:
    """Namespaces whose name starts with ``prefix``."""
    return sorted(n for n in netns.listnetns() if n.startswith(prefix))


def create(name: str) -> None:
    """Make namespace ``name`` exist with its loopback up (idempotent)."""
    if not exists(name):
        try:
            netns.create(name)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise NamespaceError(f"cannot create network namespace {name!r}: {e}") from None
    with NetNS(name) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")


def remove(name: str) -> None:
    """Remove namespace ``name`` with every link in it; nothing when missing.

    The veth ends in it go with it, and with them their peers in the
    machine's namespace; so do its nftables tables."""
    if not exists(name):
        return
    try:
        # The kernel frees a namespace's links lazily, after its last user is
        # gone; deleting them first takes their peers along at once.
        with NetNS(name) as ns:
            for link in ns.get_links():
                if link.get_attr("IFLA_IFNAME") != "lo":
                    ns.link("del", index=link["index"])
        netns.remove(name)
    except NetlinkError as e:
        raise NamespaceError(f"cannot empty network namespace {name!r}: {e}") from None
    except OSError as e:
        if e.errno != errno.ENOENT:
            raise NamespaceError(f"cannot remove network namespace {name!r}: {e}") from None


def run_in(name: str, fn: Callable[[], T]) -> T:
    """``fn()`` run in a thread that has entered namespace ``name``.

    A socket keeps the namespace it was created in, so a socket made here
    binds and connects inside ``name`` wherever it is used afterwards."""
    fd = os.open(NETNS_DIR / check_name(name), os.O_RDONLY | os.O_CLOEXEC)
    values: list[T] = []
    errors: list[BaseException] = []

    def enter() -> None:
        try:
            setns(fd, CLONE_NEWNET)
            values.append(fn())
        except BaseException as e:  # handed to the caller's thread
            errors.append(e)

    try:
        t = threading.Thread(target=enter, name=f"netns-{name}", daemon=True)
        t.start()
        t.join()
    finally:
        os.close(fd)
    if errors:
        raise errors[0]
    return values[0]


def socket_in(name: str | None, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket of namespace ``name`` (None: the caller's own)."""
    if name is None:
        return socket.socket(family, socket.SOCK_STREAM)
    return run_in(name, lambda: socket.socket(family, socket.SOCK_STREAM))


def veth_names(bridge: str) -> tuple[str, str]:
    """(end on the bridge, end in the namespace) of ``bridge``'s uplink veth."""
    h = hashlib.sha256(bridge.encode()).hexdigest()[:10]
    return VETH_HOST_PREFIX + h, VETH_NS_PREFIX + h


def ensure_uplink(bridge: str, name: str, address_cidr: str) -> str:
    """Join L2 bridge ``bridge`` (of the machine's namespace) to namespace
    ``name`` over a veth pair whose end in the namespace holds
    ``address_cidr``; return that end's name. Idempotent; the bridge must exist."""
    create(name)
    outer, inner = veth_names(bridge)
    iface = ipaddress.IPv4Interface(address_cidr)
    try:
        with IPRoute() as ipr:
            br = ipr.link_lookup(ifname=bridge)
            if not br:
                raise NamespaceError(f"bridge {bridge!r} does not exist")
            if not ipr.link_lookup(ifname=outer):
                with NetNS(name) as ns:
                    if ns.link_lookup(ifname=inner):  # our end left without its peer
                        ns.link("del", index=ns.link_lookup(ifname=inner)[0])
                ipr.link("add", ifname=outer, kind="veth", peer=inner)
                ipr.link("set", index=ipr.link_lookup(ifname=inner)[0], net_ns_fd=name)
            index = ipr.link_lookup(ifname=outer)[0]
            ipr.link("set", index=index, master=br[0], state="up")
        with NetNS(name) as ns:
            idx = ns.link_lookup(ifname=inner)
            if not idx:
                raise NamespaceError(f"veth {inner!r} is not in network namespace {name!r}")
            held = {
                (str(m.get_attr("IFA_ADDRESS")), int(m["prefixlen"]))
                for m in ns.get_addr(index=idx[0], family=socket.AF_INET)
            }
            if (str(iface.ip), iface.network.prefixlen) not in held:
                ns.addr(
                    "add", index=idx[0], address=str(iface.ip), prefixlen=iface.network.prefixlen
                )
            ns.link("set", index=idx[0], state="up")
    except NetlinkError as e:
        raise NamespaceError(
            f"cannot join bridge {bridge!r} to network namespace {name!r}: {e}"
        ) from None
    return inner
