"""The lab's daemons as detached background processes, known by pid files.

A process is started in its own session (Ctrl-C in the terminal that started
it does not reach it), with stdout and stderr appended to a log file, and its
pid written next to it. A pid file only counts while that pid still runs a
command line naming the process's configuration file, so a pid reused by an
unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from kvmss.base import atomicfile
from kvmss.base.clock import Clock, SystemClock
from kvmss.base.waiting import wait_until

TERM_TIMEOUT = 20.0
KILL_TIMEOUT = 5.0
POLL = 0.1

# Processes this Python process started: kept so they are reaped (not left as
# zombies) when stopped from the same process, as the lab's tests do.
_children: dict[int, subprocess.Popen[bytes]] = {}


def start_detached(argv: Sequence[str], *, log: Path, pid_file: Path, cwd: Path) -> int:
    """Start ``argv`` in a new session, output appended to ``log``; write
    ``pid_file`` at once and return the pid."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    _children[proc.pid] = proc
    atomicfile.write_bytes(pid_file, f"{proc.pid}\n".encode(), mode=0o644)
    return proc.pid


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # "pid (comm) S ...": the state follows the last ')'.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        del _children[pid]


def alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs (not a zombie) a command line with ``marker`` in it."""
    _reap(pid)
    argv = _cmdline(pid)
    if not argv or _is_zombie(pid):
        return False
    return any(marker in a for a in argv)


def running_pid(pid_file: Path, marker: str) -> int | None:
    """The pid in ``pid_file`` if that process still runs (see :func:`alive`)."""
    pid = read_pid(pid_file)
    return pid if pid is not None and alive(pid, marker) else None


def _wait_gone(pid: int, marker: str, timeout: float, clock: Clock) -> bool:
    return wait_until(clock, lambda: not alive(pid, marker), timeout=timeout, interval=POLL)


def stop(
    pid_file: Path,
    marker: str,
    *,
    term_timeout: float = TERM_TIMEOUT,
    clock: Clock | None = None,
) -> int | None:
    """Stop the process of ``pid_file`` (SIGTERM, then SIGKILL after
    ``term_timeout``), remove the pid file, and return the pid it stopped
    (None when nothing ran). Raises RuntimeError when it survives SIGKILL."""
    clock = clock or SystemClock()
    pid = running_pid(pid_file, marker)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, marker, term_timeout, clock):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_gone(pid, marker, KILL_TIMEOUT, clock):
                raise RuntimeError(f"process {pid} ({pid_file.name}) survived SIGKILL")
    pid_file.unlink(missing_ok=True)
    return pid
