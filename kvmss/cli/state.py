"""What every ``kvmss`` command shares: :class:`CliState` (the global
options, the API client, output and scrubbing of secrets), the checks of
tokens and URLs, and the ``-o`` and state decorators the command groups use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from kvmss.base.clock import Clock, SystemClock
from kvmss.client.api import ApiClient
from kvmss.client.tables import one_line

DEFAULT_URL = "http://127.0.0.1:8080"
OUTPUT_FORMATS = ("table", "json")
# Secrets shorter than this are not scrubbed from output (it would mangle it).
MIN_SCRUB = 6
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class CliState:
    """What the global options decided; tests pass one in (``obj=``) to
    inject a :class:`~kvmss.base.clock.FakeClock`."""

    clock: Clock = field(default_factory=SystemClock)
    url: str = DEFAULT_URL
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    output: str = "table"
    secrets: list[str] = field(default_factory=list, repr=False)
    _client: ApiClient | None = field(default=None, repr=False)

    def client(self) -> ApiClient:
        if self._client is None:
            token = self._resolve_token()
            self.secrets.append(token)
            self._client = ApiClient(self.url, token)
        return self._client

    def _resolve_token(self) -> str:
        if self.token_file is not None:
            return read_secret_file(self.token_file, "--token-file")
        if self.token is not None:
            return check_token(self.token, "--token")
        raise click.UsageError(
            "no token: give --token-file (or KVMSS_TOKEN_FILE) or --token (or KVMSS_TOKEN)"
        )

    def scrub(self, text: str) -> str:
        for s in self.secrets:
            if len(s) >= MIN_SCRUB:
                text = text.replace(s, "***")
        return text

    def echo(self, text: str, *, err: bool = False) -> None:
        click.echo(self.scrub(text), err=err)

    def fail(self, message: str, status: int = 1) -> NoReturn:
        click.echo(f"kvmss: {self.scrub(one_line(message))}", err=True)
        raise click.exceptions.Exit(status)

    @property
    def json(self) -> bool:
        return self.output == "json"

    def print_json(self, doc: Any) -> None:
        self.echo(json.dumps(doc, indent=2))

    def show(self, doc: Any, render: Callable[[Any], str], empty: str | None = None) -> None:
        """``doc`` as JSON or through ``render``; ``empty`` (people only) when
        the API answered without a body."""
        if doc is None:
            if empty is not None and not self.json:
                self.echo(empty)
            return
        if self.json:
            self.print_json(doc)
        else:
            self.echo(render(doc))


def check_token(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise click.UsageError(f"{source}: the token is empty")
    if not _TOKEN_RE.fullmatch(token):
        # Never echo it: say what is wrong, not what it is.
        raise click.UsageError(f"{source}: the token has spaces or non-printable characters")
    return token


def check_url(url: str, option: str) -> None:
    if not re.match(r"https?://[^/]", url):
        raise click.BadParameter(f"{url!r}: must start with http:// or https://", param_hint=option)


def read_secret_file(path: Path, option: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise click.UsageError(f"{option} {path}: cannot read: {reason}") from None
    return check_token(text, f"{option} {path}")


def state_of(ctx: click.Context) -> CliState:
    return ctx.find_object(CliState) or ctx.ensure_object(CliState)


def _set_output(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        state_of(ctx).output = value


def output_option(f: F) -> F:
    """``-o/--output`` on a command too, as in ``kvmss vmss list -o json``."""
    return click.option(
        "-o",
        "--output",
        type=click.Choice(OUTPUT_FORMATS),
        default=None,
        expose_value=False,
        callback=_set_output,
        help="Output format (overrides the global -o).",
    )(f)


pass_state = click.make_pass_decorator(CliState, ensure=True)


existing_file = click.Path(exists=True, dir_okay=False, readable=True, path_type=Path)
