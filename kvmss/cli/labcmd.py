"""``kvmss lab up|down|status``: the command line of a local lab.

Errors and Ctrl-C are one line on stderr (``kvmss: ...``), never a
traceback: exit status 1 for errors, 130 for an interrupt (the lab is left
as it is, and ``kvmss lab down`` removes it).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import click

from kvmss.base.configfile import ConfigError
from kvmss.client.api import ApiError, ControllerUnreachable
from kvmss.client.screen import Screen
from kvmss.client.tables import one_line
from kvmss.lab.files import resolve_dir
from kvmss.lab.hints import take_down
from kvmss.lab.state import DEFAULT_SCALE_SET, LabError

T = TypeVar("T")

_dir_option = click.option(
    "--dir",
    "lab_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="The lab's directory (default: build/lab in the source checkout).",
)


def _fail(screen: Screen, message: str, status: int = 1) -> NoReturn:
    screen.settle()
    click.echo(f"kvmss: {one_line(message)}", err=True)
    raise click.exceptions.Exit(status)


def run(screen: Screen, root: Path, action: Callable[[], T]) -> T:
    """``action()`` with every error it can meet as one line."""
    try:
        return action()
    except KeyboardInterrupt:
        _fail(
            screen,
            f"interrupted; the lab in {root} is left as it is; remove it with: {take_down(root)}",
            130,
        )
    except ApiError as e:
        _fail(screen, f"controller: {e.message} ({e.code})")
    except (LabError, ControllerUnreachable, ConfigError) as e:
        _fail(screen, str(e))
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        _fail(screen, f"{where}{e.strerror or e}")
    except Exception as e:  # a bug, or a library error not foreseen: still one line
        _fail(screen, f"unexpected {type(e).__name__}: {e}")


@click.group()
def lab() -> None:
    """A local lab on this machine: a controller, host agents, a demo scale set."""


@lab.command("up")
@click.option(
    "--hosts", type=click.IntRange(1, 16), default=2, show_default=True, help="Host agents."
)
@click.option(
    "--instances",
    type=click.IntRange(1, 100),
    default=6,
    show_default=True,
    help="Instances of the scale set.",
)
@click.option(
    "--name",
    default=DEFAULT_SCALE_SET,
    show_default=True,
    help="The scale set's name (libvirt domains are NAME-<id>).",
)
@_dir_option
def lab_up(hosts: int, instances: int, name: str, lab_dir: Path | None) -> None:
    """Start the lab, create the demo scale set from examples/demo.json, and
    show an automatic rolling upgrade to a newly published image live.

    Steps already done are skipped, so it can be run again. The lab keeps
    running until `kvmss lab down`.
    """
    # The lab's modules load the agent's contract: only when run, not for `kvmss --help`
    from kvmss.lab.run import UpOptions, up

    root = resolve_dir(lab_dir)
    screen = Screen(sys.stdout)
    opts = UpOptions(root=root, hosts=hosts, instances=instances, scale_set=name)
    result = run(screen, root, lambda: up(opts, screen))
    if result.code != "Completed":
        _fail(screen, f"the latest rolling upgrade of {name} ended {result.code}")


@lab.command("down")
@_dir_option
def lab_down(lab_dir: Path | None) -> None:
    """Stop every process of the lab, delete its domains, disks and bridges."""
    # libvirt and the agent's bridge code load only when run, not for `kvmss --help`
    from kvmss.lab.down import down

    root = resolve_dir(lab_dir)
    screen = Screen(sys.stdout)
    run(screen, root, lambda: down(root, screen))


@lab.command("status")
@_dir_option
def lab_status(lab_dir: Path | None) -> None:
    """What runs in the lab: processes, instances, the latest upgrade."""
    # The lab's modules load the agent's contract: only when run, not for `kvmss --help`
    from kvmss.lab.status import status

    root = resolve_dir(lab_dir)
    screen = Screen(sys.stdout)
    if not run(screen, root, lambda: status(root, screen)):
        raise click.exceptions.Exit(1)
