from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from hostagent.network.bridge import (
    BridgeError,
    bridge_addresses,
    bridge_exists,
    check_bridge_name,
    delete_bridge,
    ensure_bridge,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="creating bridges needs root")

IFF_UP = 0x1


@pytest.fixture
def bridge() -> Iterator[tuple[str, str]]:
    """A fresh bridge name and a host address in a random 10.200.X.0/24; always cleaned up."""
    name = "kvt" + secrets.token_hex(3)
    subnet = 10 + secrets.randbelow(240)
    try:
        yield name, f"10.200.{subnet}.1/24"
    finally:
        delete_bridge(name)


def _sysfs(name: str, attr: str) -> str:
    return Path(f"/sys/class/net/{name}/{attr}").read_text().strip()


@pytest.mark.parametrize("name", ["br0", "kvmss-br.1", "A_b", "x" * 15, "..."])
def test_valid_bridge_names(name: str) -> None:
    assert check_bridge_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", "x" * 16, "br 0", "br/0", "br0\n", "brü"])
def test_invalid_bridge_names(name: str) -> None:
    with pytest.raises(ValueError, match=r"bridge name .* is invalid"):
        check_bridge_name(name)
    with pytest.raises(ValueError, match="bridge name"):
        bridge_exists(name)
    with pytest.raises(ValueError, match="bridge name"):
        ensure_bridge(name, "10.200.1.1/24")
    with pytest.raises(ValueError, match="bridge name"):
        delete_bridge(name)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.200.1.1", "give address/prefix"),
        ("10.200.1.0/24", "network address"),
        ("10.200.1.1/33", "is invalid"),
        ("nope/24", "is invalid"),
    ],
)
def test_invalid_bridge_address_is_rejected_before_anything_happens(
    address: str, reason: str
) -> None:
    name = "kvt" + secrets.token_hex(3)
    with pytest.raises(ValueError, match=f"bridge address .*{reason}"):
        ensure_bridge(name, address)
    assert not Path(f"/sys/class/net/{name}").exists()


@needs_root
def test_ensure_bridge_creates_configures_and_is_idempotent(bridge: tuple[str, str]) -> None:
    name, cidr = bridge
    assert not bridge_exists(name)

    ensure_bridge(name, cidr)
    ensure_bridge(name, cidr)  # a second call changes nothing and does not fail

    assert bridge_exists(name)
    assert Path(f"/sys/class/net/{name}/bridge").is_dir()
    addrs = bridge_addresses(name)
    assert addrs[0] == cidr
    assert addrs.count(cidr) == 1
    assert all(":" in a for a in addrs[1:])  # at most the kernel's IPv6 link-local
    assert int(_sysfs(name, "flags"), 16) & IFF_UP
    assert _sysfs(name, "bridge/stp_state") == "0"
    assert _sysfs(name, "bridge/forward_delay") == "0"


@needs_root
def test_ensure_bridge_repairs_stp_forward_delay_and_down_state(bridge: tuple[str, str]) -> None:
    name, cidr = bridge
    ensure_bridge(name, cidr)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=index, kind="bridge", br_stp_state=1)
        ipr.link("set", index=index, kind="bridge", br_forward_delay=1500)
        ipr.link("set", index=index, state="down")
        ipr.addr("del", index=index, address=cidr.split("/")[0], prefixlen=24)
    assert _sysfs(name, "bridge/stp_state") == "1"
    assert _sysfs(name, "bridge/forward_delay") == "1500"
    assert cidr not in bridge_addresses(name)

    ensure_bridge(name, cidr)

    assert _sysfs(name, "bridge/stp_state") == "0"
    assert _sysfs(name, "bridge/forward_delay") == "0"
    assert int(_sysfs(name, "flags"), 16) & IFF_UP
    assert cidr in bridge_addresses(name)


@needs_root
def test_same_address_with_another_prefix_is_refused(bridge: tuple[str, str]) -> None:
    name, cidr = bridge
    ensure_bridge(name, cidr)
    other = cidr.replace("/24", "/16")
    with pytest.raises(BridgeError, match=r"already holds .*/24, not .*/16"):
        ensure_bridge(name, other)
    assert bridge_addresses(name).count(cidr) == 1
    assert other not in bridge_addresses(name)


@needs_root
def test_second_address_can_be_added(bridge: tuple[str, str]) -> None:
    name, cidr = bridge
    ensure_bridge(name, cidr)
    extra = cidr.replace(".1/24", ".254/24")
    ensure_bridge(name, extra)
    assert {cidr, extra} <= set(bridge_addresses(name))


@needs_root
def test_tcp_server_on_bridge_address_accepts_host_connections(bridge: tuple[str, str]) -> None:
    name, cidr = bridge
    ensure_bridge(name, cidr)
    addr = cidr.split("/")[0]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as srv:
        srv.bind((addr, 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        got: list[bytes] = []

        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                got.append(conn.recv(16))
                conn.sendall(b"pong")

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with socket.create_connection((addr, port), timeout=5) as c:
            c.sendall(b"ping")
            assert c.recv(16) == b"pong"
        t.join(5)
    assert got == [b"ping"]


@needs_root
def test_delete_bridge_removes_it_and_is_idempotent(bridge: tuple[str, str]) -> None:
    name, cidr = bridge
    ensure_bridge(name, cidr)
    delete_bridge(name)
    assert not bridge_exists(name)
    assert not Path(f"/sys/class/net/{name}").exists()
    delete_bridge(name)  # again: nothing to do
    with pytest.raises(BridgeError, match=f"bridge '{name}' does not exist"):
        bridge_addresses(name)


@needs_root
def test_non_bridge_link_is_never_touched() -> None:
    # 'lo' always exists and is not a bridge; every call must refuse before changing it.
    before = bridge_addresses_of_lo()
    assert not bridge_exists("lo")
    with pytest.raises(BridgeError, match="'lo' exists but is not a bridge"):
        ensure_bridge("lo", "10.200.250.1/24")
    with pytest.raises(BridgeError, match="'lo' exists but is not a bridge"):
        delete_bridge("lo")
    with pytest.raises(BridgeError, match="not a bridge"):
        bridge_addresses("lo")
    assert Path("/sys/class/net/lo").exists()
    assert bridge_addresses_of_lo() == before


def bridge_addresses_of_lo() -> set[str]:
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname="lo")[0]
        return {f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}" for m in ipr.get_addr(index=index)}
