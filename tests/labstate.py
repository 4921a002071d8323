"""What a guest lab that got stuck looked like: each agent's view of its
instances, the controller's listing and the ends of the logs, for the message
of a test that timed out waiting on it (CI keeps nothing else)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.agentproc import AgentProcess

TAIL_LINES = 15


def describe_lab(
    agents: Sequence[AgentProcess],
    vms: Callable[[], list[dict[str, Any]]],
    logs: Sequence[Path] = (),
) -> str:
    lines = []
    for a in agents:
        lines.append(f"agent {a.name} ({'running' if running(a) else 'not running'}):")
        lines += [f"  {line}" for line in agent_views(a)]
        lines += [f"  libvirt: {line}" for line in domain_states(a.root)]
        st = os.statvfs(a.root)
        lines.append(f"  {st.f_bavail * st.f_frsize // 2**20} MiB free under {a.root}")
    lines.append("controller listing:")
    lines += [f"  {line}" for line in listing(vms)]
    for log in [*logs, *(a.log for a in agents)]:
        lines.append(f"last lines of {log.name} ({log.parent.name}):")
        lines += [f"  {line}" for line in tail(log)]
    return "\n".join(lines)


def domain_states(root: Path) -> list[str]:
    """Each libvirt domain with a disk under ``root``: its state and why
    (a guest paused on an I/O error shows here and nowhere else)."""
    import libvirt

    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as e:
        return [f"no connection: {e}"]
    try:
        out = []
        for dom in conn.listAllDomains(0):
            if str(root) in dom.XMLDesc(0):
                state, reason = dom.state()
                line = f"{dom.name()}: {STATES[state]} (reason {reason})"
                if state == libvirt.VIR_DOMAIN_PAUSED:
                    line += f", disk errors {dom.diskErrors()}"  # 2: no space
                out.append(line)
        return out
    finally:
        conn.close()


STATES = ("nostate", "running", "blocked", "paused", "shutdown", "shutoff", "crashed", "pmsusp")


def running(a: AgentProcess) -> bool:
    return a.proc is not None and a.proc.poll() is None


def agent_views(a: AgentProcess) -> list[str]:
    try:
        views = a.client.instances()
    except Exception as e:  # an agent that is down is part of the answer
        return [f"no answer: {e}"]
    return [
        f"{v.name}: {v.powerState} {v.health.state} {v.health.reasons} on "
        f"{v.current.image.version}, operation {v.operation}, extensions "
        f"{[(e.name, e.status, e.exitCode) for e in v.extensions]}"
        for v in views
    ] or ["no instances"]


def listing(vms: Callable[[], list[dict[str, Any]]]) -> list[str]:
    try:
        rows = vms()
    except Exception as e:  # a controller that is down is part of the answer
        return [f"no answer: {e}"]
    return [
        f"{v.get('name')} on {v.get('host')}: {v.get('provisioningState')} "
        f"{v.get('powerState')} {v.get('health')} {v.get('healthReasons')} "
        f"on {v.get('imageVersion')}"
        for v in rows
    ] or ["no instances"]


def tail(path: Path) -> list[str]:
    if not path.exists():
        return ["(none)"]
    return path.read_text(errors="replace").splitlines()[-TAIL_LINES:]


def explained(explain: Callable[[], str] | None) -> str:
    """What ``explain`` tells, on a line of its own, for a timeout's message."""
    if explain is None:
        return ""
    try:
        return "\n" + explain()
    except Exception as e:  # a failure to explain must not hide the timeout
        return f"\n(could not tell the state: {e!r})"
