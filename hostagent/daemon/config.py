"""The agent's configuration file (YAML), e.g. /etc/kvmss/agent.yaml::

name: host1
listen: 127.0.0.1:8090
token_file: /etc/kvmss/agent.token     # or token: "..."
libvirt_uri: qemu:///system
storage_dir: /var/lib/kvmss/agent
bridge:
  name: kvmss0
  subnet: 10.77.0.0/24
guest_port: 8091
shutdown_timeout: 30
guest_isolation: true    # nftables table kvmss_<bridge>: guests reach only guest_port
network_namespace: kvmss-lab1   # optional; default none: the host's own namespace

``guest_isolation`` (default true) makes the agent install, at every start, an
nftables table for its bridge (:mod:`hostagent.network.firewall`): traffic from
the guest bridge to this host is dropped except the guest report port on the
bridge address (and ping), and nothing from the bridge is forwarded, so guests
reach neither the management API nor a controller on this host, nor anything
beyond it. It needs ``nft`` (Debian package nftables). ``false`` removes the
table; use it only when the host's own firewall does the same.

``network_namespace`` (a lab's, :mod:`hostagent.network.netns`) puts the L3
side of the guest network in that namespace, created when missing: the
bridge keeps no address, a veth pair joins it to the namespace, where the
gateway address, the isolation table, the guest report listener and the
probes' sockets live. The management API stays on ``listen`` in the
agent's own namespace.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvmss.base import configfile
from kvmss.base.configfile import ConfigError

__all__ = ["AgentConfig", "ConfigError"]

KNOWN = {
    "name", "listen", "token", "token_file", "libvirt_uri", "storage_dir",
    "bridge", "guest_port", "shutdown_timeout", "guest_isolation", "network_namespace",
}  # fmt: skip
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
BRIDGE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$")
NETNS_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class AgentConfig:
    name: str
    listen_host: str
    listen_port: int
    token: str = field(repr=False)  # the management API's secret: never in a log
    libvirt_uri: str
    storage_dir: Path
    bridge_name: str
    subnet: str
    guest_port: int = 8091
    shutdown_timeout: float = 30.0
    manage_bridge: bool = True
    guest_isolation: bool = True
    network_namespace: str | None = None

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        return cls.from_dict(configfile.load_mapping(path, KNOWN), base=path.parent)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], base: Path = Path(".")) -> AgentConfig:
        configfile.check_known(raw, KNOWN)
        name = _str(raw, "name")
        if not HOST_NAME_RE.fullmatch(name):
            raise ConfigError("name: must be a host name (letters, digits, '-')")
        host, port = configfile.listen_address(raw.get("listen"), "127.0.0.1:8090")
        token = configfile.token(raw, base)
        bridge = raw.get("bridge") or {}
        if not isinstance(bridge, dict):
            raise ConfigError("bridge: must be a mapping with name and subnet")
        bname = str(bridge.get("name", "kvmss0"))
        if not BRIDGE_NAME_RE.fullmatch(bname):
            raise ConfigError("bridge.name: 1-15 letters, digits, '_', '.', '-'")
        subnet = str(bridge.get("subnet", "10.77.0.0/24"))
        try:
            net = ipaddress.IPv4Network(subnet, strict=True)
        except ValueError as e:
            raise ConfigError(f"bridge.subnet: {e}") from None
        if net.num_addresses < 8:
            raise ConfigError("bridge.subnet: needs at least a /29")
        guest_port = raw.get("guest_port", 8091)
        if not isinstance(guest_port, int) or not 0 < guest_port < 65536:
            raise ConfigError("guest_port: must be a TCP port number")
        timeout = raw.get("shutdown_timeout", 30)
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigError("shutdown_timeout: must be a positive number of seconds")
        isolation = raw.get("guest_isolation", True)
        if not isinstance(isolation, bool):
            raise ConfigError("guest_isolation: must be true or false")
        namespace = raw.get("network_namespace")
        if namespace is not None and (
            not isinstance(namespace, str) or not NETNS_NAME_RE.fullmatch(namespace)
        ):
            raise ConfigError("network_namespace: 1-64 letters, digits, '_', '.', '-'")
        storage = Path(_str(raw, "storage_dir", "/var/lib/kvmss/agent"))
        if not storage.is_absolute():
            storage = (base / storage).resolve()
        return cls(
            name=name,
            listen_host=host,
            listen_port=port,
            token=token,
            libvirt_uri=_str(raw, "libvirt_uri", "qemu:///system"),
            storage_dir=storage,
            bridge_name=bname,
            subnet=subnet,
            guest_port=guest_port,
            shutdown_timeout=float(timeout),
            manage_bridge=bool(bridge.get("manage", True)),
            guest_isolation=isolation,
            network_namespace=namespace,
        )


def _str(raw: dict[str, Any], key: str, default: str | None = None) -> str:
    v = raw.get(key, default)
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{key}: required, a non-empty string")
    return v
