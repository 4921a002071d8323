"""The agent's process on a joined host, over SSH: systemd's unit where
systemd runs the host, else a detached process known by its pidfile."""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath

from kvmss.hostjoin.layout import AGENT_UNIT, HostLayout
from kvmss.hostjoin.session import SshSession

# Longer than the agent's own shutdown_timeout (30 s by default).
STOP_TIMEOUT_S = 45


def q(path: PurePosixPath | str) -> str:
    return shlex.quote(str(path))


def systemd_runs(ssh: SshSession) -> bool:
    return (
        ssh.run("test -d /run/systemd/system", what="checking for systemd", check=False).status == 0
    )


def _is_agent(layout: HostLayout) -> str:
    """Shell: whether process $pid is this agent (one of its arguments is
    its configuration file; a zombie or a recycled pid has not)."""
    argv = "tr '\\0' '\\n' </proc/\"$pid\"/cmdline 2>/dev/null"
    return f"{argv} | grep -qxF -- {q(layout.config_file)}"


def _detached_pid(layout: HostLayout) -> str:
    """Shell: read $pid from the pidfile; true when it is this agent."""
    return f"pid=$(cat {q(layout.pid_file)} 2>/dev/null) && {_is_agent(layout)}"


def stop_detached(ssh: SshSession, layout: HostLayout) -> bool:
    """Stop the detached agent of the pidfile (TERM, then KILL after
    STOP_TIMEOUT_S); whether one was running."""
    ours = _is_agent(layout)
    script = (
        f'if {_detached_pid(layout)}; then kill -TERM "$pid"; '
        f"for _ in $(seq {STOP_TIMEOUT_S * 5}); do {ours} || break; sleep 0.2; done; "
        f'if {ours}; then kill -KILL "$pid"; fi; echo stopped; fi; '
        f"rm -f {q(layout.pid_file)}"
    )
    r = ssh.run(ssh.privileged(script), what="stopping the agent", timeout=STOP_TIMEOUT_S + 30)
    return "stopped" in r.stdout


def start_detached(ssh: SshSession, layout: HostLayout) -> None:
    """Start the agent in its own session, output to its log, pid in the
    pidfile (no restart on failure or reboot: that takes systemd). Only the
    agent's own command goes to the background, so $! is its pid."""
    script = (
        f"mkdir -p {q(layout.state_dir)} && cd / || exit 1; umask 022; "
        f"nohup setsid {q(layout.agent_bin)} serve --config {q(layout.config_file)} "
        f">>{q(layout.log_file)} 2>&1 </dev/null & echo $! >{q(layout.pid_file)}"
    )
    ssh.run(ssh.privileged(script), what="starting the agent")


def start_unit(ssh: SshSession) -> None:
    """Enable the agent's unit and (re)start it."""
    ssh.run(
        ssh.privileged(
            f"systemctl daemon-reload && systemctl enable {AGENT_UNIT} && "
            f"systemctl restart {AGENT_UNIT}"
        ),
        what=f"starting {AGENT_UNIT}",
    )


def detached_state(ssh: SshSession, layout: HostLayout) -> str | None:
    """None while the detached agent runs; else why not, with its log's tail."""
    alive = ssh.run(ssh.privileged(_detached_pid(layout)), what="checking the agent", check=False)
    if alive.status == 0:
        return None
    log = ssh.run(
        ssh.privileged(f"tail -n 5 {q(layout.log_file)}"), what="reading the log", check=False
    )
    tail = " | ".join(line for line in log.stdout.strip().splitlines() if line.strip())
    return f"the agent exited ({layout.log_file}: {tail or 'empty'})"


def systemd_state(ssh: SshSession) -> str | None:
    r = ssh.run(f"systemctl is-active {AGENT_UNIT}", what="systemctl is-active", check=False)
    state = r.stdout.strip()
    if state in ("active", "activating", "reloading"):
        return None
    return f"{AGENT_UNIT} is {state or 'not running'} (journalctl -u {AGENT_UNIT})"
