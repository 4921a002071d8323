"""The lab's daemons: a controller and one agent per host, started as
detached processes and waited for until they answer."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path

import requests

from kvmss.base.clock import Clock
from kvmss.base.waiting import wait_until
from kvmss.client.screen import Screen
from kvmss.lab import agents, procs
from kvmss.lab.files import REPO, read_token
from kvmss.lab.state import LabError, LabState, ProcessPaths

ANSWER_TIMEOUT = 90.0


def controller_argv(paths: ProcessPaths) -> list[str]:
    return [sys.executable, "-m", "controller.daemon.server", "--config", str(paths.config)]


def agent_argv(paths: ProcessPaths) -> list[str]:
    return [sys.executable, "-m", "hostagent.daemon.cli", "serve", "--config", str(paths.config)]


def ensure_running(what: str, paths: ProcessPaths, argv: list[str], screen: Screen) -> None:
    pid = procs.running_pid(paths.pid, str(paths.config))
    if pid is not None:
        screen.say(f"{what}: running (pid {pid})")
        return
    pid = procs.start_detached(argv, log=paths.log, pid_file=paths.pid, cwd=REPO)
    screen.say(f"{what}: started (pid {pid}, log {paths.log})")


def _last_log_line(log: Path) -> str:
    try:
        lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return "no log"
    return lines[-1].strip()[:300] if lines else "no output"


def controller_answers(state: LabState) -> bool:
    try:
        return requests.get(state.url + "/healthz", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def wait_answering(state: LabState, clock: Clock, timeout: float = ANSWER_TIMEOUT) -> None:
    """Until the controller and every agent answer; a process that exits
    meanwhile is reported with the last line of its log."""
    waiting: dict[str, tuple[ProcessPaths, Callable[[], bool]]] = {
        "controller": (state.controller, lambda: controller_answers(state))
    }
    for slot in state.hosts:
        paths = state.host(slot)
        token = read_token(paths.token)
        waiting[slot.name] = (paths, functools.partial(agents.answers, slot.url, token))

    def all_answer() -> bool:
        for name, (paths, ready) in list(waiting.items()):
            if procs.running_pid(paths.pid, str(paths.config)) is None:
                raise LabError(f"{name} exited: {_last_log_line(paths.log)} (log: {paths.log})")
            if ready():
                del waiting[name]
        return not waiting

    if not wait_until(clock, all_answer, timeout=timeout, interval=0.2):
        name = next(iter(waiting))
        raise LabError(f"{name} did not answer within {timeout:.0f}s (log: {waiting[name][0].log})")


def start(state: LabState, screen: Screen, clock: Clock) -> None:
    """Start what does not run, then wait until everything answers."""
    ensure_running("controller", state.controller, controller_argv(state.controller), screen)
    for slot in state.hosts:
        paths = state.host(slot)
        ensure_running(
            f"{slot.name} agent ({slot.bridge} {slot.subnet})", paths, agent_argv(paths), screen
        )
    wait_answering(state, clock)
    n = len(state.hosts)
    screen.say(f"controller and {n} agent{'s' if n != 1 else ''} answering")
