"""What a local lab is made of, and where it keeps it.

A lab lives in one directory (``DIR``)::

    DIR/lab.json                   this state: ports, bridges, subnets, scale set name
    DIR/controller/                controller.yaml, controller.token (0600),
                                   controller.pid, controller.log, kvmss.db, images/
    DIR/host1/ ...                 agent.yaml, agent.token (0600), agent.pid,
                                   agent.log, storage/ (disks, seeds, image cache)

``lab.json`` holds no secret: tokens live in their own files.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvmss.base import atomicfile

STATE_FILE = "lab.json"
STATE_VERSION = 1
CONTROLLER_DIR = "controller"
HOST_DIR_RE = re.compile(r"^host[0-9]{1,3}$")
DEFAULT_SCALE_SET = "demo"


class LabError(Exception):
    """The lab cannot do what was asked; the message says what and why, in one line."""


class LabStateError(LabError, ValueError):
    """lab.json is missing a field or holds a wrong one; the message names it."""


@dataclass(frozen=True)
class ProcessPaths:
    """The files of one daemon of the lab."""

    dir: Path
    config: Path
    token: Path
    pid: Path
    log: Path


def controller_paths(root: Path) -> ProcessPaths:
    d = root / CONTROLLER_DIR
    return ProcessPaths(
        d, d / "controller.yaml", d / "controller.token", d / "controller.pid", d / "controller.log"
    )


def host_paths(root: Path, name: str) -> ProcessPaths:
    d = root / name
    return ProcessPaths(d, d / "agent.yaml", d / "agent.token", d / "agent.pid", d / "agent.log")


def host_dirs(root: Path) -> list[Path]:
    """The ``hostN`` directories under ``root`` (with or without lab.json)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and HOST_DIR_RE.fullmatch(p.name))


@dataclass(frozen=True)
class HostSlot:
    """One agent of the lab: its own "host" with its own bridge and subnet."""

    name: str
    port: int
    guest_port: int
    bridge: str
    subnet: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def storage(self, root: Path) -> Path:
        return root / self.name / "storage"


@dataclass(frozen=True)
class LabState:
    root: Path
    scale_set: str
    controller_port: int
    hosts: tuple[HostSlot, ...]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.controller_port}"

    @property
    def controller(self) -> ProcessPaths:
        return controller_paths(self.root)

    def host(self, slot: HostSlot) -> ProcessPaths:
        return host_paths(self.root, slot.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "dir": str(self.root),
            "scaleSet": self.scale_set,
            "controller": {"port": self.controller_port},
            "hosts": [
                {
                    "name": h.name,
                    "port": h.port,
                    "guestPort": h.guest_port,
                    "bridge": h.bridge,
                    "subnet": h.subnet,
                }
                for h in self.hosts
            ],
        }

    @classmethod
    def from_json(cls, root: Path, doc: Any) -> LabState:
        if not isinstance(doc, dict):
            raise LabStateError("must be a JSON object")
        if doc.get("version") != STATE_VERSION:
            raise LabStateError(f"version: must be {STATE_VERSION}")
        if doc.get("dir") != str(root):
            raise LabStateError(f"dir: names {doc.get('dir')!r}, not {str(root)!r}")
        controller = doc.get("controller")
        if not isinstance(controller, dict):
            raise LabStateError("controller: must be an object")
        hosts = doc.get("hosts")
        if not isinstance(hosts, list) or not hosts:
            raise LabStateError("hosts: must be a non-empty list")
        slots = []
        for i, h in enumerate(hosts):
            where = f"hosts[{i}]"
            if not isinstance(h, dict):
                raise LabStateError(f"{where}: must be an object")
            name = _str(h, "name", where)
            if not HOST_DIR_RE.fullmatch(name):
                raise LabStateError(f"{where}.name: must be host<N>")
            slots.append(
                HostSlot(
                    name=name,
                    port=_port(h, "port", where),
                    guest_port=_port(h, "guestPort", where),
                    bridge=_str(h, "bridge", where),
                    subnet=_str(h, "subnet", where),
                )
            )
        return cls(
            root=root,
            scale_set=_str(doc, "scaleSet", ""),
            controller_port=_port(controller, "port", "controller"),
            hosts=tuple(slots),
        )


def _str(doc: dict[str, Any], key: str, where: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise LabStateError(f"{where + '.' if where else ''}{key}: must be a non-empty string")
    return value


def _port(doc: dict[str, Any], key: str, where: str) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise LabStateError(f"{where}.{key}: must be a TCP port number")
    return value


def state_path(root: Path) -> Path:
    return root / STATE_FILE


def load(root: Path) -> LabState | None:
    """The lab in ``root``, or None when there is no lab.json."""
    path = state_path(root)
    try:
        doc = atomicfile.read_json(path)
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not JSON"
        raise LabStateError(f"{path}: cannot read: {reason}") from None
    try:
        return LabState.from_json(root, doc)
    except LabStateError as e:
        raise LabStateError(f"{path}: {e}") from None


def save(state: LabState) -> None:
    atomicfile.write_json(state_path(state.root), state.to_json(), mode=0o644)
