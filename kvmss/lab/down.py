"""``kvmss lab down``: stop the lab's processes, delete its instances
through their agents while they run, then any libvirt domain left whose
disks live under the lab's directory, delete its bridges and remove its
files.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import libvirt

from hostagent.network.bridge import BridgeError, delete_bridge
from kvmss.base.clock import Clock, SystemClock
from kvmss.client.screen import Screen
from kvmss.lab import agents as labagents
from kvmss.lab import net, procs
from kvmss.lab import state as labstate
from kvmss.lab.files import read_token
from kvmss.lab.state import LabError, LabState


def _domains_under(root: Path) -> list[str]:
    """Destroy and undefine every libvirt domain whose XML names a path
    under ``root``; return their names."""
    prefix = str(root).rstrip("/") + "/"
    removed = []
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as e:
        raise LabError(
            f"cannot connect to libvirt (qemu:///system): {e.get_error_message()}"
        ) from None
    try:
        for dom in conn.listAllDomains(0):
            try:
                if prefix not in dom.XMLDesc(0):
                    continue
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError as e:
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue  # went away meanwhile
                raise LabError(f"libvirt domain {dom.name()}: {e.get_error_message()}") from None
            removed.append(dom.name())
    finally:
        conn.close()
    return removed


def _delete_bridges(root: Path, state: LabState | None) -> list[str]:
    names = set(net.links_named(net.bridge_prefix(root)))
    if state is not None:
        names.update(s.bridge for s in state.hosts)
    removed = []
    for n in sorted(names):
        try:
            delete_bridge(n)
        except BridgeError as e:
            raise LabError(str(e)) from None
        removed.append(n)
    return removed


def _remove_files(root: Path) -> bool:
    """Remove what a lab keeps in ``root``; ``root`` too when nothing else is
    left. True when ``root`` is gone."""
    for d in (labstate.controller_paths(root).dir, *labstate.host_dirs(root)):
        shutil.rmtree(d, ignore_errors=True)
    labstate.state_path(root).unlink(missing_ok=True)
    try:
        root.rmdir()
    except OSError:
        return not root.exists()
    return True


def down(root: Path, screen: Screen, clock: Clock | None = None) -> bool:
    """Take the lab in ``root`` down; False when there was none."""
    clock = clock or SystemClock()
    hosts = labstate.host_dirs(root)
    ctl = labstate.controller_paths(root)
    if not labstate.state_path(root).exists() and not hosts and not ctl.dir.exists():
        screen.say(f"no lab in {root}")
        return False
    try:
        state = labstate.load(root)
    except labstate.LabStateError as e:
        screen.say(f"{e}; taking down what the directory holds")
        state = None

    # The controller first: it would create instances again as they go.
    pid = procs.stop(ctl.pid, str(ctl.config), clock=clock)
    if pid is not None:
        screen.say(f"controller: stopped (pid {pid})")
    for slot in state.hosts if state is not None else ():
        paths = labstate.host_paths(root, slot.name)
        if procs.running_pid(paths.pid, str(paths.config)) is None:
            continue
        deleted, errors = labagents.delete_instances(
            slot.url, read_token(paths.token), slot.storage(root), clock
        )
        if deleted:
            n = len(deleted)
            screen.say(
                f"{slot.name}: deleted {n} instance{'s' if n != 1 else ''} ({', '.join(deleted)})"
            )
        for err in errors:
            screen.say(f"{slot.name}: {err}")
    for d in hosts:
        paths = labstate.host_paths(root, d.name)
        pid = procs.stop(paths.pid, str(paths.config), clock=clock)
        if pid is not None:
            screen.say(f"{d.name} agent: stopped (pid {pid})")
    leftovers = _domains_under(root)
    if leftovers:
        screen.say(f"libvirt: destroyed and undefined {', '.join(leftovers)}")
    for b in _delete_bridges(root, state):
        screen.say(f"bridge {b}: deleted")
    if _remove_files(root):
        screen.say(f"removed {root}")
    else:
        screen.say(f"removed the lab's files; {root} holds other files, left in place")
    return True
