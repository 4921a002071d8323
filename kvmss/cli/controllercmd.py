"""``kvmss controller``: serve the controller, back up its database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from kvmss.base.configfile import ConfigError
from kvmss.cli.state import CliState, pass_state

DEFAULT_CONTROLLER_CONFIG = Path("/etc/kvmss/controller.yaml")
F = TypeVar("F", bound=Callable[..., Any])


def _config_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        default=DEFAULT_CONTROLLER_CONFIG,
        show_default=True,
        help=help_text,
    )


@click.group()
def controller() -> None:
    """Run the controller."""


@controller.command("serve")
@_config_option("Controller configuration (YAML).")
@pass_state
def controller_serve(state: CliState, config_path: Path) -> None:
    """Serve the controller's API and run its upgrades."""
    try:
        # The web stack loads only to serve, so `kvmss --help` and the client commands start fast
        from controller.daemon.server import serve_from_config
    except ImportError as e:
        state.fail(f"controller server not available ({e})")
    serve_from_config(config_path)


@controller.command("backup")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@_config_option("Controller configuration (YAML): where its database is.")
@pass_state
def controller_backup(state: CliState, out: Path, config_path: Path) -> None:
    """Copy the controller's database to OUT while it runs (consistent, 0600)."""
    # The controller loads only when run: the client commands import none of it
    from controller.daemon.server import ControllerConfig
    from controller.store.backup import BackupError, backup

    try:
        result = backup(ControllerConfig.load(config_path).database, out)
    except (BackupError, ConfigError) as e:
        state.fail(str(e))
    click.echo(f"backed up {result.tables} tables ({result.size_bytes} bytes) to {result.path}")
