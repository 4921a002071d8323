"""The options of ``kvmss host add|remove --ssh``: how to reach the host,
where kvmss lives on it, and the new agent's settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

F = TypeVar("F", bound=Callable[..., Any])
_file = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
# Options that mean nothing without --ssh.
SSH_ONLY = (
    "port", "key", "known_hosts", "host_key_fingerprint", "prefix", "config_dir", "state_dir",
    "agent_address", "agent_port", "bridge_name", "bridge_subnet", "wheel", "find_links",
    "purge",
)  # fmt: skip


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
