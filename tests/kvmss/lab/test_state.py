"""kvmss.lab.state and kvmss.lab.net: the lab's state file, bridge names and
subnet picking (pure parts; no process, no bridge)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from kvmss.lab import net
from kvmss.lab import state as labstate
from kvmss.lab.state import HostSlot, LabState, LabStateError


def state(root: Path) -> LabState:
    return LabState(
        root=root,
        scale_set="demo",
        controller_port=41000,
        hosts=(
            HostSlot("host1", 41001, 41002, net.bridge_name(root, 1), "10.100.1.0/24"),
            HostSlot("host2", 41003, 41004, net.bridge_name(root, 2), "10.100.2.0/24"),
        ),
    )


def test_state_round_trips_through_lab_json(tmp_path: Path) -> None:
    s = state(tmp_path)
    labstate.save(s)
    assert labstate.load(tmp_path) == s
    assert s.url == "http://127.0.0.1:41000"
    assert s.hosts[1].url == "http://127.0.0.1:41003"
    assert s.host(s.hosts[0]).token == tmp_path / "host1" / "agent.token"
    assert s.controller.pid == tmp_path / "controller" / "controller.pid"
    # no token in the state file
    assert "token" not in json.dumps(s.to_json()).replace("token_file", "")


def test_no_state_file_is_no_lab(tmp_path: Path) -> None:
    assert labstate.load(tmp_path) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(version=7), "version: must be 1"),
        (lambda d: d["hosts"][1].update(port=70000), "hosts[1].port: must be a TCP port number"),
        (lambda d: d["hosts"][0].update(name="x"), "hosts[0].name: must be host<N>"),
        (lambda d: d.update(hosts=[]), "hosts: must be a non-empty list"),
        (lambda d: d["controller"].update(port="80"), "controller.port: must be a TCP port"),
        (lambda d: d.update(dir="/elsewhere"), "dir: names '/elsewhere'"),
    ],
)
def test_a_wrong_state_file_names_the_field(tmp_path: Path, change: object, message: str) -> None:
    doc = state(tmp_path).to_json()
    change(doc)  # type: ignore[operator]
    (tmp_path / "lab.json").write_text(json.dumps(doc))
    with pytest.raises(LabStateError) as e:
        labstate.load(tmp_path)
    assert message in str(e.value)
    assert str(tmp_path / "lab.json") in str(e.value)


def test_not_json_is_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "lab.json").write_text("{")
    with pytest.raises(LabStateError, match="not JSON"):
        labstate.load(tmp_path)


def test_host_dirs_are_only_hostN(tmp_path: Path) -> None:
    for name in ("host1", "host12", "hostx", "controller", "other"):
        (tmp_path / name).mkdir()
    (tmp_path / "host3").write_text("a file")
    assert [p.name for p in labstate.host_dirs(tmp_path)] == ["host1", "host12"]


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
    import socket

    port = net.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
