"""Joining a host over SSH (``kvmss host add NAME --ssh``): upload kvmss, the
agent's unit, its configuration and a fresh token into a private staging
directory on the host, install, start the agent, wait until it answers from
here, and register it with the controller.

The token is generated here, travels only by SFTP into a 0700 directory and
then a 0600 file, and is never part of a command line, a message or a log.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from kvmss.base.clock import Clock
from kvmss.base.waiting import wait_for
from kvmss.client.api import ApiClient, path_of, unreachable_reason
from kvmss.hostjoin import agentproc
from kvmss.hostjoin.agentproc import q
from kvmss.hostjoin.layout import (
    AGENT_UNIT,
    AgentSettings,
    HostLayout,
    agent_url,
    check_config,
)
from kvmss.hostjoin.session import SshError, SshSession
from kvmss.hostjoin.sources import Sources
from kvmss.hostjoin.steps import JoinError, Say
from kvmss.hostjoin.unitfile import retarget

WAIT_TIMEOUT = 90.0
INSTALL_TIMEOUT = 1800.0
# How often, while waiting for the agent, the host is asked whether it still runs.
DOWN_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class Joined:
    url: str
    token: str
    detached: bool

    def __repr__(self) -> str:  # never show the token
        return f"Joined(url={self.url!r}, detached={self.detached})"


@dataclass(frozen=True)
class _Upload:
    """What goes into the staging directory on the host."""

    wheel: Path
    script: Path
    unit: str | None  # the agent's unit file, pointed at the host's directories
    config: bytes
    token: str = field(repr=False)

    def put(self, ssh: SshSession, stage: str) -> None:
        ssh.put_file(self.wheel, f"{stage}/{self.wheel.name}")
        ssh.put_file(self.script, f"{stage}/install-kvmss.sh", mode=0o755)
        ssh.run(f"mkdir {q(stage + '/units')}", what="mkdir")
        if self.unit is not None:
            ssh.put_bytes(self.unit.encode(), f"{stage}/units/{AGENT_UNIT}", mode=0o644)
        ssh.put_bytes(self.config, f"{stage}/agent.yaml", mode=0o644)
        ssh.put_bytes(self.token.encode() + b"\n", f"{stage}/agent.token", mode=0o600)


@contextmanager
def _staging(ssh: SshSession) -> Iterator[str]:
    """A fresh private directory on the host, removed afterwards."""
    stage = ssh.run("mktemp -d /tmp/kvmss-join.XXXXXX", what="mktemp").stdout.strip()
    if not stage.startswith("/tmp/kvmss-join."):
        raise JoinError(f"ssh {ssh.target}: mktemp answered {stage[:80]!r}")
    try:
        yield stage
    finally:
        ssh.run(f"rm -rf {q(stage)}", what="removing the staging directory", check=False)


def _install_staged(
    ssh: SshSession, stage: str, wheel: str, layout: HostLayout, sources: Sources, say: Say
) -> None:
    """Run the install script on the staged wheel, then put the staged
    configuration and token in place."""
    say(f"installing kvmss into {layout.prefix}/venv (pip, may take a few minutes)")
    links = f" --find-links {q(sources.find_links)}" if sources.find_links else ""
    ssh.run(
        ssh.privileged(
            f"bash {q(stage + '/install-kvmss.sh')} {q(stage + '/' + wheel)} "
            f"--prefix {q(layout.prefix)} --units {q(stage + '/units')}{links}"
        ),
        what="install-kvmss.sh",
        timeout=INSTALL_TIMEOUT,
    )
    say(f"writing {layout.config_file} and {layout.token_file}")
    ssh.run(
        ssh.privileged(
            f"install -d -m 0755 {q(layout.config_dir)} {q(layout.state_dir)} && "
            f"install -m 0600 {q(stage + '/agent.token')} {q(layout.token_file)} && "
            f"install -m 0644 {q(stage + '/agent.yaml')} {q(layout.config_file)}"
        ),
        what="writing the agent's configuration",
    )


def _start(ssh: SshSession, layout: HostLayout, use_systemd: bool, say: Say) -> None:
    if use_systemd:
        say(f"starting {AGENT_UNIT} (systemctl enable, restart)")
        agentproc.start_unit(ssh)
        return
    if agentproc.stop_detached(ssh, layout):
        say("stopped the agent that was running")
    agentproc.start_detached(ssh, layout)
    say(
        f"systemd does not run on {ssh.target.host}: the agent runs detached (pid in "
        f"{layout.pid_file}, log in {layout.log_file}); it will not restart on reboot"
    )


def install(
    ssh: SshSession,
    sources: Sources,
    layout: HostLayout,
    settings: AgentSettings,
    say: Say,
) -> Joined:
    """Install kvmss, write the agent's configuration and token, (re)start
    it; the agent's URL and its new token."""
    address = settings.address or ssh.peer_address
    doc = settings.config(layout, address)
    check_config(doc)
    use_systemd = agentproc.systemd_runs(ssh)
    unit = sources.agent_unit
    if use_systemd and unit is None:
        raise JoinError(f"systemd runs on the host but systemd/{AGENT_UNIT} is not in the checkout")
    script = sources.install_script
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="kvmss-join-") as tmp:
        wheel = sources.the_wheel(Path(tmp), say)
        upload = _Upload(
            wheel,
            script,
            retarget(unit.read_text(), layout.relocation()) if unit is not None else None,
            yaml.safe_dump(doc, sort_keys=False).encode(),
            token,
        )
        with _staging(ssh) as stage:
            say(f"uploading {wheel.name} and install-kvmss.sh to {ssh.target.host}:{stage}")
            upload.put(ssh, stage)
            _install_staged(ssh, stage, wheel.name, layout, sources, say)
    _start(ssh, layout, use_systemd, say)
    return Joined(agent_url(address, settings.port), token, not use_systemd)


def _ask(endpoint: str, token: str, name: str) -> tuple[dict[str, Any] | None, str]:
    """One ``GET`` of the agent's view of its host: the view when the agent
    answers as host ``name``, else None and why not."""
    try:
        r = requests.get(endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        if r.status_code == 200:
            doc = r.json()
            if isinstance(doc, dict) and doc.get("name") == name:
                return doc, ""
            got = doc.get("name") if isinstance(doc, dict) else None
            return None, f"it answers as host {got!r}, not {name!r}"
        if r.status_code in (401, 403):
            return None, (
                f"HTTP {r.status_code}: it refuses the new token (another agent on the port?)"
            )
        return None, f"HTTP {r.status_code}"
    except requests.RequestException as e:
        return None, unreachable_reason(e)
    except ValueError:
        return None, "the answer is not JSON"


def wait_for_agent(
    url: str,
    token: str,
    name: str,
    clock: Clock,
    timeout: float = WAIT_TIMEOUT,
    down: Callable[[], str | None] = lambda: None,
) -> dict[str, Any]:
    """Poll ``GET url/v1/host`` until the agent answers as ``name``; ``down``
    says why the agent cannot answer any more (checked every few seconds)."""
    endpoint = f"{url}/v1/host"
    last = "no answer yet"
    reason: str | None = None
    next_check = clock.monotonic() + DOWN_CHECK_SECONDS

    def attempt() -> dict[str, Any] | None:
        nonlocal last
        doc, last = _ask(endpoint, token, name)
        return doc

    def is_down() -> bool:
        nonlocal next_check, reason
        if clock.monotonic() < next_check:
            return False
        next_check = clock.monotonic() + DOWN_CHECK_SECONDS
        reason = down()
        return reason is not None

    doc = wait_for(clock, attempt, timeout=timeout, interval=0.5, stop=is_down)
    if doc is not None:
        return doc
    if reason is not None:
        raise JoinError(f"GET {endpoint}: {last}; {reason}")
    raise JoinError(f"GET {endpoint}: no answer within {timeout:.0f} s: {last}")


def join(
    ssh: SshSession,
    sources: Sources,
    layout: HostLayout,
    settings: AgentSettings,
    client: ApiClient,
    clock: Clock,
    say: Say,
    on_token: Callable[[str], None] = lambda _t: None,
    wait_timeout: float = WAIT_TIMEOUT,
) -> Any:
    """Install, start, wait for, then register the agent; the controller's
    view of the new host. ``on_token`` learns the token first (to scrub it)."""
    joined = install(ssh, sources, layout, settings, say)
    on_token(joined.token)
    say(f"waiting for the agent at {joined.url}")

    def down() -> str | None:
        try:
            if joined.detached:
                return agentproc.detached_state(ssh, layout)
            return agentproc.systemd_state(ssh)
        except SshError:
            return None

    wait_for_agent(joined.url, joined.token, settings.name, clock, wait_timeout, down)
    say(f"registering {settings.name} with the controller")
    return client.post(
        path_of("hosts"), {"name": settings.name, "url": joined.url, "token": joined.token}
    )
