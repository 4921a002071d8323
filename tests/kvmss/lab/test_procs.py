"""kvmss.lab.procs: detached processes known by pid files, with real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from kvmss.base.clock import SystemClock
from kvmss.base.waiting import wait_until
from kvmss.lab import procs

SLEEPER = "import sys, time; print('started', flush=True); time.sleep(60)"
STUBBORN = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('started', flush=True); time.sleep(60)"
)


def start(tmp_path: Path, code: str, marker: str) -> int:
    pid = procs.start_detached(
        [sys.executable, "-c", code, marker],
        log=tmp_path / "p.log",
        pid_file=tmp_path / "p.pid",
        cwd=tmp_path,
    )
    log = tmp_path / "p.log"
    started = wait_until(
        SystemClock(), lambda: "started" in log.read_text(), timeout=10, interval=0.05
    )
    assert started, "the process did not start"
    return pid


def test_started_process_is_detached_logged_and_stopped_by_sigterm(tmp_path: Path) -> None:
    marker = str(tmp_path / "cfg.yaml")
    pid = start(tmp_path, SLEEPER, marker)
    assert procs.read_pid(tmp_path / "p.pid") == pid
    assert procs.running_pid(tmp_path / "p.pid", marker) == pid
    assert os.getsid(pid) == pid  # its own session: Ctrl-C here does not reach it
    assert procs.stop(tmp_path / "p.pid", marker) == pid
    assert not procs.alive(pid, marker)
    assert not (tmp_path / "p.pid").exists()
    assert procs.stop(tmp_path / "p.pid", marker) is None  # nothing left to stop


def test_a_process_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    marker = str(tmp_path / "cfg.yaml")
    pid = start(tmp_path, STUBBORN, marker)
    t0 = time.monotonic()
    assert procs.stop(tmp_path / "p.pid", marker, term_timeout=0.5) == pid
    assert time.monotonic() - t0 < 5
    assert not procs.alive(pid, marker)


def test_a_pid_file_naming_another_process_is_left_alone(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "p.pid").write_text(f"{other.pid}\n")
        marker = str(tmp_path / "cfg.yaml")  # not in the other process's command line
        assert procs.running_pid(tmp_path / "p.pid", marker) is None
        assert procs.stop(tmp_path / "p.pid", marker) is None
        assert other.poll() is None  # still running: never signalled
    finally:
        other.kill()
        other.wait()


def test_garbage_pid_files_count_as_nothing(tmp_path: Path) -> None:
    for text in ("", "abc", "-3", "0"):
        (tmp_path / "p.pid").write_text(text)
        assert procs.read_pid(tmp_path / "p.pid") is None
    assert procs.read_pid(tmp_path / "missing.pid") is None
