"""``kvmss controller``: serve the controller, back up its database (both
load the controller only when run).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import click

from kvmss.cli.state import CliState, pass_state

DEFAULT_CONTROLLER_CONFIG = Path("/etc/kvmss/controller.yaml")


@click.group()
def controller() -> None:
    """Run the controller."""


@controller.command("serve")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONTROLLER_CONFIG,
    show_default=True,
    help="Controller configuration (YAML).",
)
@pass_state
def controller_serve(state: CliState, config_path: Path) -> None:
    """Serve the controller's API and run its upgrades."""
    try:
        server = importlib.import_module("controller.daemon.server")
        serve_from_config = server.serve_from_config
    except (ImportError, AttributeError) as e:
        state.fail(f"controller server not available ({e})")
    serve_from_config(config_path)


@controller.command("backup")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONTROLLER_CONFIG,
    show_default=True,
    help="Controller configuration (YAML): where its database is.",
)
@pass_state
def controller_backup(state: CliState, out: Path, config_path: Path) -> None:
    """Copy the controller's database to OUT while it runs (consistent, 0600)."""
    from controller.daemon.server import ControllerConfig
    from controller.store.backup import BackupError, backup
    from kvmss.base.configfile import ConfigError

    try:
        result = backup(ControllerConfig.load(config_path).database, out)
    except (BackupError, ConfigError) as e:
        state.fail(str(e))
    click.echo(f"backed up {result.tables} tables ({result.size_bytes} bytes) to {result.path}")
