"""Guest isolation: an nftables table per guest bridge, so a guest reaches
nothing on or beyond its host but the agent's guest report listener.

Traffic that enters the host from the bridge is dropped, except

- packets of connections the host opened (its health probes and their replies),
- TCP to the guest report port on the bridge's own address (the guest listener),
- ICMP echo requests to the bridge's address, and IPv6 neighbour discovery;

and nothing from the bridge is forwarded to another interface (guests on the
same bridge still reach each other: that is bridging, not routing). The
management API and the controller may listen on every address of the host;
a guest cannot open a connection to either.

The table is ``inet kvmss_<bridge>``. :func:`apply` replaces it in one
``nft -f`` transaction (create if missing, delete, define), so applying it
again, at every agent start, never leaves a moment without the rules and
never doubles them. The rules match the bridge by name, so they may be
installed before the bridge exists.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess

NFT = "nft"
TABLE_FAMILY = "inet"
TABLE_PREFIX = "kvmss_"
# Linux interface names the agent uses (hostagent.network.bridge.BRIDGE_NAME_RE):
# nothing here needs quoting inside an nft string or identifier.
_BRIDGE_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
# Before the usual filter chains (priority 0): our drops come first, and an
# accept elsewhere cannot undo a drop here.
PRIORITY = "filter - 10"
NFT_TIMEOUT = 30.0


class FirewallError(RuntimeError):
    """The guest isolation rules could not be installed, read or removed."""


def table_name(bridge: str) -> str:
    """The nftables table that isolates the guests on ``bridge``."""
    if not _BRIDGE_NAME_RE.fullmatch(bridge):
        raise ValueError(f"bridge name {bridge[:80]!r} is not a Linux interface name kvmss uses")
    return TABLE_PREFIX + bridge


def ruleset(bridge: str, gateway: str, guest_port: int, iface: str | None = None) -> str:
    """The table for ``bridge`` whose address is ``gateway`` (IPv4), with the
    guest report listener on ``guest_port``, in nft's syntax. ``iface`` is
    the link guests' traffic comes in by when it is not the bridge (the
    veth end in a namespace, :mod:`hostagent.network.netns`)."""
    table = table_name(bridge)
    link = iface or bridge
    if not _BRIDGE_NAME_RE.fullmatch(link):
        raise ValueError(f"interface {link[:80]!r} is not a Linux interface name kvmss uses")
    gw = ipaddress.IPv4Address(gateway)  # ValueError when it is not one
    if not 0 < guest_port < 65536:
        raise ValueError(f"guest port {guest_port} is not a TCP port number")
    return (
        f"table {TABLE_FAMILY} {table} {{\n"
        "\tchain input {\n"
        f"\t\ttype filter hook input priority {PRIORITY}; policy accept;\n"
        f'\t\tiifname != "{link}" accept\n'
        "\t\tct state established,related accept\n"
        f"\t\tip daddr {gw} tcp dport {guest_port} accept\n"
        f"\t\tip daddr {gw} icmp type echo-request accept\n"
        "\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n"
        "\t\tcounter drop\n"
        "\t}\n"
        "\tchain forward {\n"
        f"\t\ttype filter hook forward priority {PRIORITY}; policy accept;\n"
        f'\t\tiifname "{link}" oifname != "{link}" counter drop\n'
        "\t}\n"
        "}\n"
    )


def _nft(
    args: list[str], script: str | None = None, namespace: str | None = None
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which(NFT)
    if exe is None:
        raise FirewallError(
            "guest isolation needs the nft command (Debian package nftables);"
            " install it, or set guest_isolation: false in the agent's configuration"
        )
    # nsenter rather than a preexec setns: the agent runs threads
    enter = [] if namespace is None else ["nsenter", f"--net=/run/netns/{namespace}"]
    try:
        return subprocess.run(
            [*enter, exe, *args],
            input=script,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
            check=False,
            env={**os.environ, "LC_ALL": "C"},  # its messages are matched below
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FirewallError(f"running {NFT} {' '.join(args)}: {e}") from None


def apply(
    bridge: str,
    gateway: str,
    guest_port: int,
    namespace: str | None = None,
    iface: str | None = None,
) -> None:
    """Install (or replace, atomically) the isolation table of ``bridge``, in
    network namespace ``namespace`` (None: the caller's own)."""
    table = table_name(bridge)
    rules = ruleset(bridge, gateway, guest_port, iface)
    script = f"table {TABLE_FAMILY} {table} {{}}\ndelete table {TABLE_FAMILY} {table}\n{rules}"
    proc = _nft(["-f", "-"], script, namespace)
    if proc.returncode != 0:
        raise FirewallError(
            f"cannot install the guest isolation table {table}: {proc.stderr.strip()[:2000]}"
            + (" (needs root or CAP_NET_ADMIN)" if "ermission" in proc.stderr else "")
        )


def listing(bridge: str, namespace: str | None = None) -> str | None:
    """``nft list table`` of the isolation table of ``bridge``; None when there is none."""
    table = table_name(bridge)
    if shutil.which(NFT) is None:
        return None
    proc = _nft(["list", "table", TABLE_FAMILY, table], namespace=namespace)
    if proc.returncode != 0:
        if "No such file or directory" in proc.stderr:
            return None
        raise FirewallError(f"cannot list the guest isolation table {table}: {proc.stderr}")
    return proc.stdout


def remove(bridge: str, namespace: str | None = None) -> None:
    """Remove the isolation table of ``bridge``; nothing to do when there is none
    (or when nft is not even installed: then there cannot be one)."""
    table = table_name(bridge)
    if shutil.which(NFT) is None:
        return
    proc = _nft(["delete", "table", TABLE_FAMILY, table], namespace=namespace)
    if proc.returncode != 0 and "No such file or directory" not in proc.stderr:
        raise FirewallError(
            f"cannot remove the guest isolation table {table}: {proc.stderr.strip()[:2000]}"
        )
