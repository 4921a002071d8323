"""The ``kvmss`` command line: ``az vmss``-style verbs over the controller's
REST API, and the commands that run the daemons here (``kvmss controller``,
``kvmss lab``), which load them only when run.

Tables for people by default; ``-o json`` prints the API's JSON for scripts.
Errors are one line on stderr, ``kvmss: <message> (<code>)``, exit status 1
(2 for usage errors); never a traceback, never the token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from kvmss.cli.controllercmd import controller
from kvmss.cli.hostcmd import host
from kvmss.cli.imagecmd import image
from kvmss.cli.labcmd import lab
from kvmss.cli.state import DEFAULT_URL, MIN_SCRUB, OUTPUT_FORMATS, CliState, check_url, state_of
from kvmss.cli.vmsscmd import vmss
from kvmss.client.api import ApiError, ControllerUnreachable
from kvmss.client.progress import WatchError
from kvmss.hostjoin.steps import HostStepError


class _Main(click.Group):
    """Turns API and connection errors into one line on stderr, exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as e:
            state_of(ctx).fail(f"{e.message} ({e.code})")
        except (ControllerUnreachable, WatchError, HostStepError) as e:
            state_of(ctx).fail(str(e))
        except OSError as e:  # a local file went away or became unreadable
            where = f"{e.filename}: " if e.filename else ""
            state_of(ctx).fail(f"{where}{e.strerror or e}")


@click.group(cls=_Main)
@click.version_option(package_name="kvmss")
@click.option(
    "--url",
    envvar="KVMSS_URL",
    default=DEFAULT_URL,
    show_default=True,
    show_envvar=True,
    help="The controller's URL.",
)
@click.option(
    "--token",
    envvar="KVMSS_TOKEN",
    show_envvar=True,
    help="Bearer token (prefer --token-file: arguments are visible to other users).",
)
@click.option(
    "--token-file",
    envvar="KVMSS_TOKEN_FILE",
    show_envvar=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="File holding the bearer token.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(OUTPUT_FORMATS),
    default="table",
    show_default=True,
    help="Tables for people, or the API's JSON for scripts.",
)
@click.pass_context
def main(
    ctx: click.Context, url: str, token: str | None, token_file: Path | None, output: str
) -> None:
    """kvmss: scale sets for libvirt/QEMU hosts."""
    check_url(url, "--url")
    if token is not None and token_file is not None:
        src_token = ctx.get_parameter_source("token")
        src_file = ctx.get_parameter_source("token_file")
        if src_token == src_file:
            raise click.UsageError("give either --token or --token-file, not both")
        # A command-line option beats an environment variable.
        if src_file == ParameterSource.COMMANDLINE:
            token = None
        else:
            token_file = None
    state = ctx.ensure_object(CliState)
    state.url = url.rstrip("/")
    state.token = token
    state.token_file = token_file
    state.output = output
    if token is not None and len(token.strip()) >= MIN_SCRUB:
        state.secrets.append(token.strip())


main.add_command(controller)
main.add_command(image)
main.add_command(host)
main.add_command(vmss)
main.add_command(lab)


if __name__ == "__main__":
    main()
