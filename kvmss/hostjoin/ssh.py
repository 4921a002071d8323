"""The ``--ssh`` side of ``kvmss host add`` and ``kvmss host remove``: their
options, and the order of the steps (connect, check, act on the host and on
the controller). The steps themselves are in :mod:`kvmss.hostjoin.join` and
:mod:`kvmss.hostjoin.leave`; paramiko is loaded only when ``--ssh`` is given, so
other commands start as fast as before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from click.core import ParameterSource

from kvmss.base.clock import Clock
from kvmss.client.api import ApiClient, ApiError, path_of

if TYPE_CHECKING:
    from kvmss.hostjoin.join import HostLayout
    from kvmss.hostjoin.session import HostKeyCheck, SshSession, SshTarget

F = TypeVar("F", bound=Callable[..., Any])
_file = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
# Options that mean nothing without --ssh.
SSH_ONLY = (
    "port", "key", "known_hosts", "host_key_fingerprint", "prefix", "config_dir", "state_dir",
    "agent_address", "agent_port", "bridge_name", "bridge_subnet", "wheel", "find_links",
    "purge",
)  # fmt: skip


class HostStepError(Exception):
    """A step on the host failed (one line, no secret)."""


def _apply(f: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        f = option(f)
    return f


def ssh_options(f: F) -> F:
    """How to reach the host and where kvmss lives on it."""
    return _apply(
        f,
        [
            click.option("--ssh", "ssh", metavar="USER@ADDRESS", help="Reach the host by SSH."),
            click.option("--port", default=22, show_default=True, help="SSH port."),
            click.option("--key", type=_file, help="Private key (default: ssh agent, ~/.ssh)."),
            click.option(
                "--known-hosts",
                type=click.Path(dir_okay=False, path_type=Path),
                help="Host keys to check against [default: ~/.ssh/known_hosts].",
            ),
            click.option(
                "--host-key-fingerprint",
                metavar="SHA256:...",
                help="Accept exactly this host key instead (ssh-keygen -lf format).",
            ),
            click.option(
                "--prefix", default="/opt/kvmss", show_default=True, help="kvmss's venv goes here."
            ),
            click.option(
                "--config-dir",
                default="/etc/kvmss",
                show_default=True,
                help="The agent's agent.yaml and agent.token.",
            ),
            click.option(
                "--state-dir",
                default="/var/lib/kvmss",
                show_default=True,
                help="The agent's images and disks (STATE/agent), pidfile and log.",
            ),
        ],
    )


def join_options(f: F) -> F:
    """The new agent's settings and what to install."""
    return _apply(
        f,
        [
            click.option("--agent-address", help="Address the agent listens on [default: SSH's]."),
            click.option("--agent-port", default=8090, show_default=True),
            click.option("--bridge-name", help="The agent's guest bridge [default: kvmss0]."),
            click.option("--bridge-subnet", help="Its subnet, CIDR [default: 10.77.0.0/24]."),
            click.option("--wheel", type=_file, help="Install this kvmss wheel (default: build)."),
            click.option(
                "--find-links",
                metavar="DIR",
                help="A wheelhouse on the host: pip installs from it alone, not from PyPI.",
            ),
        ],
    )


def check_ssh_only(params: dict[str, Any]) -> None:
    """A usage error for an SSH-only option given without --ssh."""
    ctx = click.get_current_context()
    if params.get("ssh") is None:
        for name in SSH_ONLY:
            if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                raise click.UsageError(f"--{name.replace('_', '-')}: needs --ssh")


@dataclass(frozen=True)
class Steps:
    """What the CLI lends the steps: the controller, time, and output."""

    client: ApiClient
    clock: Clock
    say: Callable[[str], None]
    add_secret: Callable[[str], None]


def _layout(params: dict[str, Any]) -> HostLayout:
    from kvmss.hostjoin.join import HostLayout

    try:
        return HostLayout.of(params["prefix"], params["config_dir"], params["state_dir"])
    except ValueError as e:
        raise click.UsageError(str(e)) from None


@dataclass(frozen=True)
class _Connection:
    target: SshTarget
    check: HostKeyCheck
    key: Path | None


def _connection(params: dict[str, Any]) -> _Connection:
    """The SSH options, checked before anything else happens."""
    from kvmss.hostjoin.session import HostKeyCheck, SshTarget

    known, fp = params["known_hosts"], params["host_key_fingerprint"]
    if known is not None and fp is not None:
        raise click.UsageError("give either --known-hosts or --host-key-fingerprint, not both")
    if not 0 < params["port"] < 65536:
        raise click.UsageError(f"--port {params['port']}: not a TCP port")
    try:
        target = SshTarget.parse(params["ssh"], params["port"])
    except ValueError as e:
        raise click.UsageError(f"--ssh {e}") from None
    try:
        check = HostKeyCheck(known, fp) if known is not None else HostKeyCheck(fingerprint=fp)
    except ValueError as e:
        raise click.UsageError(f"--host-key-fingerprint {e}") from None
    return _Connection(target, check, params["key"])


def _connect(conn: _Connection, steps: Steps) -> SshSession:
    from kvmss.hostjoin.session import SshError, SshSession

    steps.say(f"connecting to {conn.target}")
    try:
        return SshSession.connect(conn.target, conn.check, conn.key)
    except SshError as e:
        raise HostStepError(str(e)) from None


def add(name: str, params: dict[str, Any], steps: Steps) -> Any:
    """Install, start and register the agent of host ``name``; the
    controller's view of it."""
    from kvmss.hostjoin.join import AgentSettings, JoinError, Sources, join
    from kvmss.hostjoin.session import SshError

    layout = _layout(params)
    conn = _connection(params)
    try:
        settings = AgentSettings(
            name,
            params["agent_address"],
            params["agent_port"],
            params["bridge_name"],
            params["bridge_subnet"],
        )
        sources = Sources.find(params["wheel"], params["find_links"])
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    hosts = steps.client.get(path_of("hosts"))  # the controller answers before anything starts
    if any(h.get("name") == name for h in (hosts or {}).get("value", [])):
        raise HostStepError(f"host {name} is already registered (kvmss host remove {name} first)")
    with _connect(conn, steps) as ssh:
        try:
            return join(
                ssh, sources, layout, settings, steps.client, steps.clock, steps.say,
                on_token=steps.add_secret,
            )  # fmt: skip
        except (JoinError, SshError) as e:
            raise HostStepError(str(e)) from None


def remove(name: str, params: dict[str, Any], purge: bool, steps: Steps) -> None:
    """Deregister host ``name`` (the controller refuses while it has
    instances there), then stop and remove its agent over SSH."""
    from kvmss.hostjoin.join import JoinError
    from kvmss.hostjoin.leave import check_purge, leave
    from kvmss.hostjoin.session import SshError

    layout = _layout(params)
    with _connect(_connection(params), steps) as ssh:
        try:
            if purge:
                check_purge(ssh, layout)
            try:
                steps.client.delete(path_of("hosts", name))
                steps.say(f"host {name} removed from the controller")
            except ApiError as e:
                if e.status != 404:
                    raise
                steps.say(f"host {name} is not registered; removing its agent anyway")
            leave(ssh, layout, purge, steps.say)
        except (JoinError, SshError) as e:
            raise HostStepError(str(e)) from None
