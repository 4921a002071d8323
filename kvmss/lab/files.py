"""The files of a local lab: its directory (every level searchable by
libvirt's QEMU user), the daemons' configurations, and their tokens (0600)."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kvmss.base import atomicfile
from kvmss.lab import net
from kvmss.lab import state as labstate
from kvmss.lab.state import HostSlot, LabError, LabState

REPO = Path(__file__).resolve().parents[2]
AGENT_SHUTDOWN_TIMEOUT = 20


def default_dir() -> Path:
    """``build/lab`` in the source checkout."""
    return REPO / "build" / "lab"


def resolve_dir(path: Path | None) -> Path:
    return (path if path is not None else default_dir()).expanduser().resolve()


def make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents, each 0755 (libvirt's QEMU user
    must traverse them to reach the disks)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for p in reversed(missing):
        p.mkdir()
        os.chmod(p, 0o755)


def check_root(root: Path) -> None:
    """``root`` can hold a lab: empty or a lab already, every ancestor
    searchable by other users (libvirt's QEMU user reads the disks there)."""
    if root.exists() and not root.is_dir():
        raise LabError(f"--dir {root}: exists and is not a directory")
    if root.is_dir() and any(root.iterdir()) and not labstate.state_path(root).exists():
        raise LabError(f"--dir {root}: not empty and holds no lab (no lab.json); choose another")
    for p in (root, *root.parents):
        if p.exists() and not p.stat().st_mode & stat.S_IXOTH:
            raise LabError(
                f"--dir {root}: {p} is not searchable by other users, so libvirt's QEMU user"
                " cannot reach the disks (chmod o+x it, or choose another --dir)"
            )


def _write_token(path: Path) -> None:
    if not path.exists():
        atomicfile.write_bytes(path, secrets.token_urlsafe(32).encode() + b"\n", mode=0o600)


def _write_yaml(path: Path, doc: Mapping[str, Any]) -> None:
    atomicfile.write_bytes(path, yaml.safe_dump(dict(doc), sort_keys=False).encode(), mode=0o644)


def new_state(root: Path, hosts: int, scale_set: str) -> LabState:
    """Ports, bridges and subnets for a new lab (nothing started yet)."""
    try:
        subnets = net.pick_subnets(hosts, net.used_networks(), str(root))
    except RuntimeError as e:
        raise LabError(str(e)) from None
    slots = tuple(
        HostSlot(
            name=f"host{i}",
            port=net.free_port(),
            guest_port=net.free_port(),
            bridge=net.bridge_name(root, i),
            subnet=str(subnets[i - 1]),
        )
        for i in range(1, hosts + 1)
    )
    return LabState(root, scale_set, net.free_port(), slots)


def write_files(state: LabState) -> None:
    """Directories, tokens (0600) and configurations of every process."""
    ctl = state.controller
    make_dirs(ctl.dir)
    os.chmod(ctl.dir, 0o700)  # its database holds the agents' tokens
    _write_token(ctl.token)
    _write_yaml(
        ctl.config,
        {
            "listen": f"127.0.0.1:{state.controller_port}",
            "token_file": str(ctl.token),
            "database": str(ctl.dir / "kvmss.db"),
            "blob_dir": str(ctl.dir / "images"),
            "public_url": state.url,
            "poll_seconds": 1,
        },
    )
    for slot in state.hosts:
        paths = state.host(slot)
        make_dirs(slot.storage(state.root))
        _write_token(paths.token)
        _write_yaml(
            paths.config,
            {
                "name": slot.name,
                "listen": f"127.0.0.1:{slot.port}",
                "token_file": str(paths.token),
                "libvirt_uri": "qemu:///system",
                "storage_dir": str(slot.storage(state.root)),
                "bridge": {"name": slot.bridge, "subnet": slot.subnet},
                "guest_port": slot.guest_port,
                "shutdown_timeout": AGENT_SHUTDOWN_TIMEOUT,
            },
        )


def read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as e:
        raise LabError(f"{path}: cannot read the token: {e.strerror}") from None
