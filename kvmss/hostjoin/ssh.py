"""``kvmss host add --ssh`` and ``kvmss host remove --ssh``: the SSH options
checked, then the order of the steps (connect, check, act on the host and
on the controller)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from kvmss.client.api import ApiError, path_of
from kvmss.hostjoin.join import join
from kvmss.hostjoin.layout import AgentSettings, HostLayout
from kvmss.hostjoin.leave import check_purge, leave
from kvmss.hostjoin.session import HostKeyCheck, SshError, SshSession, SshTarget
from kvmss.hostjoin.sources import Sources
from kvmss.hostjoin.steps import HostStepError, JoinError, Steps


def _layout(params: dict[str, Any]) -> HostLayout:
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
    steps.say(f"connecting to {conn.target}")
    try:
        return SshSession.connect(conn.target, conn.check, conn.key, clock=steps.clock)
    except SshError as e:
        raise HostStepError(str(e)) from None


def add(name: str, params: dict[str, Any], steps: Steps) -> Any:
    """Install, start and register the agent of host ``name``; the
    controller's view of it."""
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
