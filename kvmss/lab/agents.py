"""The lab's calls to its host agents: are they answering, which instances
are theirs, delete those.

Every agent on a machine sees every kvmss domain of the machine's libvirt,
so "ours" is decided by where the OS disk lives: under that agent's storage
directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hostagent.contract.client import AgentClient, AgentError
from kvmss.base.clock import Clock

DELETE_TIMEOUT = 120.0


@dataclass(frozen=True)
class AgentInstance:
    name: str
    os_disk: Path


def client(url: str, token: str, timeout: float = 10.0, clock: Clock | None = None) -> AgentClient:
    return AgentClient(url, token, timeout=timeout, clock=clock)


def answers(url: str, token: str) -> bool:
    """Whether the agent at ``url`` answers ``GET /v1/host``."""
    try:
        client(url, token, timeout=2.0).host()
    except AgentError:
        return False
    return True


def instances(url: str, token: str) -> list[AgentInstance]:
    """Every kvmss instance the agent at ``url`` sees (its own and others')."""
    return [AgentInstance(v.name, Path(v.current.osDisk)) for v in client(url, token).instances()]


def is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def delete_instances(
    url: str, token: str, storage: Path, clock: Clock, timeout: float = DELETE_TIMEOUT
) -> tuple[list[str], list[str]]:
    """Delete (data disks too) every instance whose OS disk is under
    ``storage``; return (deleted names, one-line errors). Errors are
    returned, not raised: what the agent cannot delete is left for libvirt."""
    agent = client(url, token, timeout=30.0, clock=clock)
    ops = []
    errors: list[str] = []
    try:
        found = instances(url, token)
    except AgentError as e:
        return [], [f"cannot list instances: {e.code}: {e.message}"]
    for inst in found:
        if not is_under(inst.os_disk, storage):
            continue
        try:
            ops.append((inst.name, agent.delete(inst.name, delete_data_disks=True)))
        except AgentError as e:
            errors.append(f"{inst.name}: {e.code}: {e.message}")
    deleted = []
    for name, op in ops:
        try:
            done = agent.wait(op, timeout=timeout)
        except (AgentError, TimeoutError) as e:
            errors.append(f"{name}: {e}")
            continue
        if done.status == "Succeeded":
            deleted.append(name)
        else:
            reason = f": {done.error.message}" if done.error is not None else ""
            errors.append(f"{name}: delete {done.status}{reason}")
    return deleted, errors
