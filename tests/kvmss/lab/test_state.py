"""kvmss.lab.state: the lab's state file (pure parts; no process)."""

from __future__ import annotations

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
