"""What a killed test run leaves behind, found and removed by the next run.

A guest test's directory under the test root (tests.fixtures.storage_root)
carries an owner mark: the pid and start time of the pytest process that
made it. A run killed before its teardown (SIGKILL, a machine stopping the
session) leaves its directory with a dead owner, and with it libvirt domains
defined on its disks, agent processes serving from it, the agents' bridges
and their nftables tables, and tmpfs mounts. The next run's labs would then
trip over them: an agent refuses to create an instance whose name another
agent's leftover domain holds (409), so the guests of the next lab of that
name never exist, and every leftover bridge is one more host address a
guest probes. :func:`sweep` removes all of it, for directories whose owner
is gone only: a run going on beside this one keeps its labs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

OWNER = ".owner"


def mark_owner(d: Path) -> None:
    """Mark ``d`` as this process's (see :func:`sweep`)."""
    (d / OWNER).write_text(json.dumps({"pid": os.getpid(), "start": start_time(os.getpid())}))


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (None: no such
    process): with the pid, names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def stale(d: Path) -> bool:
    """Whether ``d`` has an owner mark whose process is gone."""
    try:
        owner = json.loads((d / OWNER).read_text())
    except (OSError, ValueError):
        return False  # not a marked directory (a cache, or made by hand)
    return bool(start_time(int(owner["pid"])) != owner["start"])


def sweep(root: Path) -> list[str]:
    """Remove what dead runs left under ``root``; return what was removed."""
    if not root.is_dir():
        return []
    removed: list[str] = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and stale(p)):
        removed += remove_domains(d)
        removed += kill_processes(d)
        removed += remove_bridges(d)
        removed += unmount(d)
        shutil.rmtree(d, ignore_errors=True)
        removed.append(f"directory {d}")
    for what in removed:
        log.warning("removed a dead test run's leftover: %s", what)
    return removed


def kill_processes(d: Path) -> list[str]:
    """Agents and controllers still serving from ``d`` (their --config is in
    it); QEMU is libvirt's to stop (:func:`remove_domains`)."""
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qemu-system" in argv[0]:
            continue
        if any(arg.decode(errors="replace").startswith(f"{d}/") for arg in argv):
            try:
                os.kill(int(proc.name), signal.SIGKILL)
                out.append(f"process {proc.name}")
            except ProcessLookupError:
                pass
    return out


def remove_domains(d: Path) -> list[str]:
    """libvirt domains with a disk (or anything else) under ``d``."""
    import libvirt

    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError:
        return []  # no libvirtd: no domains either
    out = []
    try:
        for dom in conn.listAllDomains(0):
            try:
                if f"{d}/" not in dom.XMLDesc(0):
                    continue
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
                out.append(f"domain {dom.name()}")
            except libvirt.libvirtError as e:
                log.warning("could not remove domain %s: %s", dom.name(), e)
    finally:
        conn.close()
    return out


def remove_bridges(d: Path) -> list[str]:
    """The bridges (and isolation tables) of the agents configured in ``d``."""
    from hostagent.network import bridge

    out = []
    for config in d.rglob("agent.yaml"):
        try:
            name = yaml.safe_load(config.read_text())["bridge"]["name"]
            bridge.delete_bridge(name)
        except (OSError, KeyError, TypeError, yaml.YAMLError, bridge.BridgeError) as e:
            log.warning("could not remove the bridge of %s: %s", config, e)
            continue
        out.append(f"bridge {name}")
    return out


def unmount(d: Path) -> list[str]:
    """Mounts under ``d`` (a fault lab's tmpfs), deepest first."""
    mounts = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        target = line.split()[1].encode().decode("unicode_escape")
        if target.startswith(f"{d}/"):
            mounts.append(target)
    for m in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False)
    return [f"mount {m}" for m in mounts]
