from __future__ import annotations

import ipaddress
import re

import pytest

from hostagent.network.addresses import AddressPoolExhausted, Subnet, mac_for


def test_subnet_properties() -> None:
    s = Subnet("10.77.0.0/24")
    assert s.cidr == "10.77.0.0/24"
    assert s.gateway == "10.77.0.1"
    assert s.prefixlen == 24
    assert s.host_cidr == "10.77.0.1/24"
    assert s.netmask == "255.255.255.0"
    assert str(s) == "10.77.0.0/24"
    assert Subnet("10.77.0.0/24") == s
    assert Subnet("10.78.0.0/24") != s


@pytest.mark.parametrize(
    ("cidr", "reason"),
    [
        ("10.77.0.5/24", "has host bits set"),
        ("10.77.0.0/31", "/30 or shorter"),
        ("10.77.0.0/32", "/30 or shorter"),
        ("fd00::/64", "only IPv4"),
        ("not-a-net", "subnet 'not-a-net' is invalid"),
        ("", "subnet '' is invalid"),
    ],
)
def test_subnet_rejects(cidr: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        Subnet(cidr)


def test_allocate_lowest_free_after_gateway() -> None:
    s = Subnet("10.77.0.0/24")
    assert s.allocate(set()) == "10.77.0.2"
    assert s.allocate({"10.77.0.2"}) == "10.77.0.3"
    # a hole is reused before anything higher
    assert s.allocate({"10.77.0.2", "10.77.0.4", "10.77.0.5"}) == "10.77.0.3"
    assert s.allocate({"10.77.0.3"}) == "10.77.0.2"
    # the gateway and addresses of other subnets do not matter
    assert s.allocate({"10.77.0.1", "10.78.0.2", "192.168.1.2"}) == "10.77.0.2"


def test_allocate_never_hands_out_network_gateway_or_broadcast() -> None:
    s = Subnet("10.1.2.0/29")  # .0 network, .1 gateway, .2-.6 guests, .7 broadcast
    in_use: set[str] = set()
    for _ in range(5):
        in_use.add(s.allocate(in_use))
    assert in_use == {f"10.1.2.{i}" for i in range(2, 7)}
    with pytest.raises(AddressPoolExhausted, match=re.escape("subnet 10.1.2.0/29")):
        s.allocate(in_use)


def test_smallest_subnet_holds_one_guest() -> None:
    s = Subnet("10.9.9.8/30")
    assert s.gateway == "10.9.9.9"
    assert s.allocate(set()) == "10.9.9.10"
    with pytest.raises(AddressPoolExhausted):
        s.allocate({"10.9.9.10"})


def test_allocate_large_subnet_is_fast_enough() -> None:
    s = Subnet("10.64.0.0/16")
    in_use = {
        str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("10.64.0.2")) + i)) for i in range(5000)
    }
    assert s.allocate(in_use) == str(ipaddress.IPv4Address("10.64.0.2") + 5000)


def test_allocate_rejects_malformed_in_use() -> None:
    with pytest.raises(ValueError, match="in-use address 'bogus'"):
        Subnet("10.77.0.0/24").allocate({"bogus"})


def test_contains() -> None:
    s = Subnet("10.77.0.0/24")
    assert s.contains("10.77.0.0")
    assert s.contains("10.77.0.200")
    assert s.contains("10.77.0.255")
    assert not s.contains("10.77.1.1")
    assert not s.contains("10.78.0.5")
    with pytest.raises(ValueError, match="address 'x' is not an IP address"):
        s.contains("x")
    with pytest.raises(ValueError, match="not an IPv4 address"):
        s.contains("::1")


def test_mac_for_is_stable_local_and_from_last_three_bytes() -> None:
    assert mac_for("10.77.0.2") == "52:54:00:4d:00:02"
    assert mac_for("10.77.0.2") == mac_for("10.77.0.2")
    assert mac_for("10.255.254.253") == "52:54:00:ff:fe:fd"
    first = int(mac_for("10.0.0.1").split(":")[0], 16)
    assert first & 0x02  # locally administered
    assert not first & 0x01  # unicast


def test_mac_for_is_unique_within_a_slash_8() -> None:
    s = Subnet("10.77.0.0/22")
    in_use: set[str] = set()
    while True:
        try:
            a = s.allocate(in_use)
        except AddressPoolExhausted:
            break
        in_use.add(a)
    macs = {mac_for(a) for a in in_use}
    assert len(macs) == len(in_use) == 1021
    assert mac_for("10.1.2.3") != mac_for("10.3.2.1")
    assert mac_for("10.1.2.3") != mac_for("10.1.2.4")


def test_mac_for_rejects_non_ipv4() -> None:
    with pytest.raises(ValueError, match="address"):
        mac_for("fd00::1")
    with pytest.raises(ValueError, match="address"):
        mac_for("10.0.0")
