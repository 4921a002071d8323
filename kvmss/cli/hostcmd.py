"""``kvmss host``: register, list and remove host agents (directly, or
over SSH with the agent installed, started or removed too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kvmss.cli.hostoptions import check_ssh_only, join_options, ssh_options
from kvmss.cli.state import (
    CliState,
    check_url,
    existing_file,
    output_option,
    pass_state,
    read_secret_file,
)
from kvmss.client.api import path_of
from kvmss.client.tables import hosts_table, render_fields
from kvmss.hostjoin.steps import Steps


@click.group()
def host() -> None:
    """Register and list host agents."""


@host.command("add")
@click.argument("name")
@click.option("--url", "agent_url", help="The management URL of an agent already running.")
@click.option(
    "--agent-token-file",
    type=existing_file,
    help="File holding that agent's bearer token.",
)
@ssh_options
@join_options
@output_option
@pass_state
def host_add(
    state: CliState,
    /,
    name: str,
    agent_url: str | None,
    agent_token_file: Path | None,
    **ssh: Any,
) -> None:
    """Register the agent of host NAME: one already running (--url and
    --agent-token-file), or one installed, started and registered over SSH
    (--ssh USER@ADDRESS)."""
    check_ssh_only(ssh)
    if ssh["ssh"] is not None:
        if agent_url is not None or agent_token_file is not None:
            raise click.UsageError("give either --ssh or --url and --agent-token-file, not both")
        # paramiko loads only for --ssh, so the other host commands start fast
        from kvmss.hostjoin import ssh as hostssh

        doc = hostssh.add(name, ssh, _host_steps(state))
        state.show(doc, render_fields, empty=f"host {name} added")
        return
    if agent_url is None or agent_token_file is None:
        raise click.UsageError("give --url and --agent-token-file, or --ssh USER@ADDRESS")
    check_url(agent_url, "--url")
    agent_token = read_secret_file(agent_token_file, "--agent-token-file")
    state.secrets.append(agent_token)
    doc = state.client().post(
        path_of("hosts"), {"name": name, "url": agent_url, "token": agent_token}
    )
    state.show(doc, render_fields, empty=f"host {name} added")


@host.command("list")
@output_option
@pass_state
def host_list(state: CliState) -> None:
    """Registered hosts and whether the controller reaches them."""
    state.show(state.client().get(path_of("hosts")), hosts_table)


@host.command("remove")
@click.argument("name")
@ssh_options
@click.option("--purge", is_flag=True, help="With --ssh: also delete the agent's state-dir data.")
@output_option
@pass_state
def host_remove(state: CliState, /, name: str, purge: bool, **ssh: Any) -> None:
    """Remove host NAME; with --ssh, also stop its agent and remove its unit
    and configuration."""
    check_ssh_only({**ssh, "purge": purge})
    if ssh["ssh"] is not None:
        # paramiko loads only for --ssh, so the other host commands start fast
        from kvmss.hostjoin import ssh as hostssh

        hostssh.remove(name, ssh, purge, _host_steps(state))
        return
    doc = state.client().delete(path_of("hosts", name))
    state.show(doc, render_fields)


def _host_steps(state: CliState) -> Steps:
    def say(message: str) -> None:
        state.echo(message, err=True)

    return Steps(state.client(), state.clock, say, state.secrets.append)
