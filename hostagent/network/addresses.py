"""Static guest addresses on the host's guest subnet, and the MAC each one gets.

The agent's bridge holds the first host address of the subnet (the gateway);
guests get the lowest free address after it. A guest's MAC is derived from its
address, so a domain redefined after a reimage keeps the same MAC and the
same address without any lookup table.
"""

from __future__ import annotations

import ipaddress

# QEMU's own OUI; 0x52 has the "locally administered" bit set and is unicast.
MAC_PREFIX = "52:54:00"


class AddressPoolExhausted(RuntimeError):
    """Every guest address of a subnet is in use."""


def _parse_ipv4(value: str, field: str) -> ipaddress.IPv4Address:
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{field} {value[:80]!r} is not an IP address") from None
    if not isinstance(addr, ipaddress.IPv4Address):
        raise ValueError(f"{field} {value[:80]!r} is not an IPv4 address")
    return addr


class Subnet:
    """An IPv4 guest subnet such as ``10.77.0.0/24``.

    The first host address is the gateway (the bridge's own address); the rest,
    up to but not including the broadcast address, are for guests.
    """

    def __init__(self, cidr: str) -> None:
        try:
            net = ipaddress.ip_network(cidr, strict=True)
        except ValueError as e:
            raise ValueError(f"subnet {cidr[:80]!r} is invalid: {e}") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError(f"subnet {cidr[:80]!r} is invalid: only IPv4 subnets are supported")
        if net.prefixlen > 30:
            raise ValueError(
                f"subnet {cidr[:80]!r} is invalid: the prefix must be /30 or shorter"
                " to hold a gateway and at least one guest"
            )
        self._net = net

    @property
    def cidr(self) -> str:
        """The network in CIDR form, e.g. ``10.77.0.0/24``."""
        return str(self._net)

    @property
    def prefixlen(self) -> int:
        return self._net.prefixlen

    @property
    def gateway(self) -> str:
        """The first host address: the bridge's address and the guests' gateway."""
        return str(self._net.network_address + 1)

    @property
    def host_cidr(self) -> str:
        """The gateway with the prefix length, as assigned to the bridge: ``10.77.0.1/24``."""
        return f"{self.gateway}/{self.prefixlen}"

    @property
    def netmask(self) -> str:
        return str(self._net.netmask)

    def contains(self, addr: str) -> bool:
        """Whether ``addr`` lies in this subnet (network and broadcast addresses included).

        Raises ValueError when ``addr`` is not an IPv4 address at all.
        """
        return _parse_ipv4(addr, "address") in self._net

    def allocate(self, in_use: set[str]) -> str:
        """The lowest guest address after the gateway that is not in ``in_use``.

        Addresses in ``in_use`` that lie outside the subnet are ignored; a
        malformed one raises ValueError.
        """
        first = int(self._net.network_address) + 2
        last = int(self._net.broadcast_address) - 1
        taken = sorted(
            n for n in (int(_parse_ipv4(a, "in-use address")) for a in in_use) if first <= n <= last
        )
        candidate = first
        for n in taken:
            if n > candidate:
                break
            if n == candidate:
                candidate += 1
        if candidate > last:
            raise AddressPoolExhausted(
                f"subnet {self.cidr} has no free guest address"
                f" ({last - first + 1} addresses, all in use)"
            )
        return str(ipaddress.IPv4Address(candidate))

    def __str__(self) -> str:
        return self.cidr

    def __repr__(self) -> str:
        return f"Subnet({self.cidr!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Subnet) and other._net == self._net

    def __hash__(self) -> int:
        return hash(self._net)


def mac_for(address: str) -> str:
    """The guest MAC for an IPv4 address: ``52:54:00`` + the address's last three bytes.

    Stable across reimages and unique per address within any /8.
    """
    packed = _parse_ipv4(address, "address").packed
    return MAC_PREFIX + "".join(f":{b:02x}" for b in packed[1:])
