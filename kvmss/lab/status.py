"""``kvmss lab status``: what runs in a lab, its instances and its latest
rolling upgrade."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from kvmss.client.api import ApiClient, ApiError, path_of
from kvmss.client.progress import running_code
from kvmss.client.screen import Screen
from kvmss.client.tables import instances_table
from kvmss.lab import agents, daemons, procs
from kvmss.lab import state as labstate
from kvmss.lab.files import read_token
from kvmss.lab.run import latest_upgrade
from kvmss.lab.state import ProcessPaths
from kvmss.lab.view import sorted_vms, target_version


def _process_line(label: str, url: str, paths: ProcessPaths, answers: Callable[[], bool]) -> str:
    pid = procs.running_pid(paths.pid, str(paths.config))
    if pid is None:
        return f"{label:<11} {url}  not running (log: {paths.log})"
    return f"{label:<11} {url}  pid {pid}, {'answering' if answers() else 'NOT answering'}"


def status(root: Path, screen: Screen) -> bool:
    """Print what runs in the lab at ``root``; False when there is no lab."""
    state = labstate.load(root)
    if state is None:
        screen.say(f"no lab in {root} (start one with: kvmss lab up)")
        return False
    screen.say(f"lab in {root}, scale set {state.scale_set}")
    screen.say(
        _process_line(
            "controller", state.url, state.controller, lambda: daemons.controller_answers(state)
        )
    )
    for slot in state.hosts:
        paths = state.host(slot)
        token = read_token(paths.token) if paths.token.exists() else ""
        line = _process_line(
            slot.name, slot.url, paths, functools.partial(agents.answers, slot.url, token)
        )
        screen.say(f"{line}; bridge {slot.bridge} {slot.subnet}")
    if not daemons.controller_answers(state):
        return True
    client = ApiClient(state.url, read_token(state.controller.token))
    try:
        vms = client.get(path_of("scaleSets", state.scale_set, "virtualMachines"))
    except ApiError as e:
        screen.say(f"scale set {state.scale_set}: {e.message}")
        return True
    screen.say("")
    screen.say(instances_table({"value": sorted_vms(vms)}))
    latest = latest_upgrade(client, state.scale_set)
    if latest is not None:
        screen.say("")
        screen.say(
            f"latest rolling upgrade: {running_code(latest)} to version"
            f" {target_version(latest) or '-'}"
        )
    return True
