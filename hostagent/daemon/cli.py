"""``kvmss-agent serve --config FILE``: the host agent daemon."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from hostagent.daemon.config import AgentConfig, ConfigError


@click.group()
def main() -> None:
    """kvmss host agent."""


@main.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("/etc/kvmss/agent.yaml"),
    show_default=True,
    help="Agent configuration (YAML).",
)
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
def serve(config_path: Path, log_level: str) -> None:
    """Run the agent: settle half-done operations, then serve its APIs."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cfg = AgentConfig.load(config_path)
    except ConfigError as e:
        click.echo(f"kvmss-agent: {e}", err=True)
        sys.exit(2)
    from hostagent.daemon.server import AgentServer
    from hostagent.daemon.service import Agent

    try:
        agent = Agent.build(cfg)
        agent.start()
    except Exception as e:
        click.echo(f"kvmss-agent: cannot start: {e}", err=True)
        sys.exit(1)
    logging.getLogger("kvmss.agent").info(
        "agent %s serving on %s:%d (guests: %s:%d, domain type %s)",
        cfg.name,
        cfg.listen_host,
        cfg.listen_port,
        agent.subnet.gateway,
        cfg.guest_port,
        agent.domain_type,
    )
    try:
        AgentServer(agent).run()
    finally:
        agent.stop()


if __name__ == "__main__":
    main()
