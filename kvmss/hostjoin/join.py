"""Joining a host over SSH and taking it out again: the steps behind
``kvmss host add NAME --ssh`` and ``kvmss host remove NAME --ssh``.

Join: build a kvmss wheel from this source checkout (or take ``--wheel``),
upload it with ``scripts/install-kvmss.sh``, the agent's unit file (pointed
at the host's directories), its configuration and a fresh token into a
private staging directory on the host, install, start the agent (systemd when
it runs the host; otherwise a detached process with a pidfile, which does not
come back after a reboot), wait until it answers from here, and register it
with the controller.

The token is generated here, travels only by SFTP into a 0700 directory and
then a 0600 file, and is never part of a command line, a message or a log.
"""

from __future__ import annotations

import ipaddress
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import requests
import yaml

from kvmss.base.clock import Clock
from kvmss.client.api import ApiClient, path_of, unreachable_reason
from kvmss.hostjoin.session import SshError, SshSession
from kvmss.hostjoin.unitfile import Relocation, check_path, retarget

AGENT_UNIT = "kvmss-agent.service"
# What the unit files in systemd/ say.
DEFAULT_PREFIX = PurePosixPath("/opt/kvmss")
DEFAULT_CONFIG_DIR = PurePosixPath("/etc/kvmss")
DEFAULT_STATE_DIR = PurePosixPath("/var/lib/kvmss")
DEFAULT_AGENT_PORT = 8090
WAIT_TIMEOUT = 90.0
INSTALL_TIMEOUT = 1800.0
# Longer than the agent's own shutdown_timeout (30 s by default).
STOP_TIMEOUT_S = 45
_SKIP = {".git", ".venv", "build", "dist", "node_modules", "__pycache__", ".vagrant"}
_SKIP_SUFFIXES = (".egg-info", "_cache")

Say = Callable[[str], None]


class JoinError(Exception):
    """A step failed; the message (one line) says which and why."""


@dataclass(frozen=True)
class HostLayout:
    """Where kvmss lives on the host."""

    prefix: PurePosixPath = DEFAULT_PREFIX
    config_dir: PurePosixPath = DEFAULT_CONFIG_DIR
    state_dir: PurePosixPath = DEFAULT_STATE_DIR

    @classmethod
    def of(cls, prefix: str, config_dir: str, state_dir: str) -> HostLayout:
        """Checked paths (ValueError names the option)."""
        return cls(
            check_path(prefix, "--prefix"),
            check_path(config_dir, "--config-dir"),
            check_path(state_dir, "--state-dir"),
        )

    @property
    def agent_bin(self) -> PurePosixPath:
        return self.prefix / "venv" / "bin" / "kvmss-agent"

    @property
    def config_file(self) -> PurePosixPath:
        return self.config_dir / "agent.yaml"

    @property
    def token_file(self) -> PurePosixPath:
        return self.config_dir / "agent.token"

    @property
    def storage_dir(self) -> PurePosixPath:
        return self.state_dir / "agent"

    @property
    def pid_file(self) -> PurePosixPath:
        return self.state_dir / "agent.pid"

    @property
    def log_file(self) -> PurePosixPath:
        return self.state_dir / "agent.log"

    @property
    def unit_file(self) -> PurePosixPath:
        return PurePosixPath("/etc/systemd/system") / AGENT_UNIT

    def relocation(self) -> Relocation:
        default = HostLayout()
        return Relocation(
            {
                default.prefix: self.prefix,
                default.config_dir: self.config_dir,
                default.state_dir: self.state_dir,
            }
        )


@dataclass(frozen=True)
class AgentSettings:
    """What goes into the agent's configuration, besides paths and token."""

    name: str
    address: str | None = None  # None: the address the SSH connection reached
    port: int = DEFAULT_AGENT_PORT
    bridge_name: str | None = None
    bridge_subnet: str | None = None
    libvirt_uri: str = "qemu:///system"

    def __post_init__(self) -> None:
        if (self.bridge_name is None) != (self.bridge_subnet is None):
            raise ValueError("--bridge-name and --bridge-subnet: give both or neither")
        if self.address is not None:
            try:
                ipaddress.ip_address(self.address)
            except ValueError:
                raise ValueError(
                    f"--agent-address {self.address!r}: must be an IP address of the host"
                ) from None
        if not 0 < self.port < 65536:
            raise ValueError(f"--agent-port {self.port}: not a TCP port")

    def config(self, layout: HostLayout, address: str) -> dict[str, Any]:
        """The agent's YAML configuration as a mapping (the token by file)."""
        host = f"[{address}]" if ":" in address else address
        doc: dict[str, Any] = {
            "name": self.name,
            "listen": f"{host}:{self.port}",
            "token_file": str(layout.token_file),
            "libvirt_uri": self.libvirt_uri,
            "storage_dir": str(layout.storage_dir),
        }
        if self.bridge_name is not None:
            doc["bridge"] = {"name": self.bridge_name, "subnet": self.bridge_subnet}
        return doc


def agent_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


def check_config(doc: dict[str, Any]) -> None:
    """The agent's own validation of ``doc``, here, before the host is
    touched (hostagent.daemon.config imports no libvirt)."""
    from hostagent.daemon.config import AgentConfig, ConfigError

    raw = {k: v for k, v in doc.items() if k != "token_file"}
    try:
        AgentConfig.from_dict({**raw, "token": "x" * 32})
    except ConfigError as e:
        raise JoinError(f"agent configuration: {e}") from None


# --- what is uploaded ---------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """The files a join uploads, found in the source checkout kvmss runs
    from, and where the host's pip takes dependencies from: PyPI, or only
    the wheelhouse ``find_links`` (a directory on the host)."""

    checkout: Path | None
    wheel: Path | None = None
    find_links: PurePosixPath | None = None

    @classmethod
    def find(cls, wheel: Path | None = None, find_links: str | None = None) -> Sources:
        """ValueError names a bad --find-links."""
        import kvmss

        root = Path(kvmss.__file__).resolve().parent.parent
        checkout = root if (root / "pyproject.toml").is_file() else None
        links = check_path(find_links, "--find-links") if find_links is not None else None
        return cls(checkout, wheel, links)

    @property
    def install_script(self) -> Path:
        script = self.checkout / "scripts" / "install-kvmss.sh" if self.checkout else None
        if script is None or not script.is_file():
            raise JoinError(
                "scripts/install-kvmss.sh not found: kvmss does not run from a source checkout"
            )
        return script

    @property
    def agent_unit(self) -> Path | None:
        unit = self.checkout / "systemd" / AGENT_UNIT if self.checkout else None
        return unit if unit is not None and unit.is_file() else None

    def the_wheel(self, workdir: Path, say: Say) -> Path:
        if self.wheel is not None:
            return self.wheel
        if self.checkout is None:
            raise JoinError("no source checkout to build kvmss from: give --wheel FILE")
        say(f"building a kvmss wheel from {self.checkout}")
        return build_wheel(self.checkout, workdir)


def _ignore(_dir: str, names: list[str]) -> set[str]:
    return {n for n in names if n in _SKIP or n.endswith(_SKIP_SUFFIXES)}


def build_wheel(checkout: Path, workdir: Path) -> Path:
    """A wheel of ``checkout``, built from a copy (pip builds in the tree it
    is given, and others may be working in this one)."""
    src, out = workdir / "src", workdir / "wheel"
    shutil.copytree(checkout, src, ignore=_ignore, symlinks=True)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir", str(out)]
    try:
        r = subprocess.run(
            [*cmd, str(src)], capture_output=True, text=True, timeout=600, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise JoinError(f"building the kvmss wheel: {e}") from None
    wheels = sorted(out.glob("kvmss-*.whl"))
    if r.returncode != 0 or not wheels:
        tail = " | ".join(r.stderr.strip().splitlines()[-3:])
        raise JoinError(f"building the kvmss wheel failed (pip wheel: {tail}); give --wheel FILE")
    return wheels[0]


# --- on the host --------------------------------------------------------------------


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


# --- join ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Joined:
    url: str
    token: str
    detached: bool

    def __repr__(self) -> str:  # never show the token
        return f"Joined(url={self.url!r}, detached={self.detached})"


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
    use_systemd = systemd_runs(ssh)
    unit = sources.agent_unit
    if use_systemd and unit is None:
        raise JoinError(f"systemd runs on the host but systemd/{AGENT_UNIT} is not in the checkout")
    script = sources.install_script
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="kvmss-join-") as tmp:
        wheel = sources.the_wheel(Path(tmp), say)
        stage = ssh.run("mktemp -d /tmp/kvmss-join.XXXXXX", what="mktemp").stdout.strip()
        if not stage.startswith("/tmp/kvmss-join."):
            raise JoinError(f"ssh {ssh.target}: mktemp answered {stage[:80]!r}")
        try:
            say(f"uploading {wheel.name} and install-kvmss.sh to {ssh.target.host}:{stage}")
            ssh.put_file(wheel, f"{stage}/{wheel.name}")
            ssh.put_file(script, f"{stage}/install-kvmss.sh", mode=0o755)
            ssh.run(f"mkdir {q(stage + '/units')}", what="mkdir")
            if unit is not None:
                text = retarget(unit.read_text(), layout.relocation())
                ssh.put_bytes(text.encode(), f"{stage}/units/{AGENT_UNIT}", mode=0o644)
            config = yaml.safe_dump(doc, sort_keys=False).encode()
            ssh.put_bytes(config, f"{stage}/agent.yaml", mode=0o644)
            ssh.put_bytes(token.encode() + b"\n", f"{stage}/agent.token", mode=0o600)
            say(f"installing kvmss into {layout.prefix}/venv (pip, may take a few minutes)")
            links = f" --find-links {q(sources.find_links)}" if sources.find_links else ""
            ssh.run(
                ssh.privileged(
                    f"bash {q(stage + '/install-kvmss.sh')} {q(stage + '/' + wheel.name)} "
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
        finally:
            ssh.run(f"rm -rf {q(stage)}", what="removing the staging directory", check=False)
    if use_systemd:
        say(f"starting {AGENT_UNIT} (systemctl enable, restart)")
        ssh.run(
            ssh.privileged(
                f"systemctl daemon-reload && systemctl enable {AGENT_UNIT} && "
                f"systemctl restart {AGENT_UNIT}"
            ),
            what=f"starting {AGENT_UNIT}",
        )
    else:
        if stop_detached(ssh, layout):
            say("stopped the agent that was running")
        start_detached(ssh, layout)
        say(
            f"systemd does not run on {ssh.target.host}: the agent runs detached (pid in "
            f"{layout.pid_file}, log in {layout.log_file}); it will not restart on reboot"
        )
    return Joined(agent_url(address, settings.port), token, not use_systemd)


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
    deadline = clock.monotonic() + timeout
    next_check = clock.monotonic() + 2.0
    endpoint = f"{url}/v1/host"
    last = "no answer yet"
    while True:
        try:
            r = requests.get(endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=5)
            if r.status_code == 200:
                doc = r.json()
                if isinstance(doc, dict) and doc.get("name") == name:
                    return doc
                got = doc.get("name") if isinstance(doc, dict) else None
                last = f"it answers as host {got!r}, not {name!r}"
            elif r.status_code in (401, 403):
                last = (
                    f"HTTP {r.status_code}: it refuses the new token (another agent on the port?)"
                )
            else:
                last = f"HTTP {r.status_code}"
        except requests.RequestException as e:
            last = unreachable_reason(e)
        except ValueError:
            last = "the answer is not JSON"
        now = clock.monotonic()
        if now >= next_check:
            next_check = now + 2.0
            reason = down()
            if reason is not None:
                raise JoinError(f"GET {endpoint}: {last}; {reason}")
        if now >= deadline:
            raise JoinError(f"GET {endpoint}: no answer within {timeout:.0f} s: {last}")
        clock.sleep(0.5)


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
            return detached_state(ssh, layout) if joined.detached else systemd_state(ssh)
        except SshError:
            return None

    wait_for_agent(joined.url, joined.token, settings.name, clock, wait_timeout, down)
    say(f"registering {settings.name} with the controller")
    return client.post(
        path_of("hosts"), {"name": settings.name, "url": joined.url, "token": joined.token}
    )
