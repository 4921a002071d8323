"""What the steps on a host are lent by the CLI (the controller, time,
output) and the errors they end with; loads no SSH code, so the CLI can
import it at start."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kvmss.base.clock import Clock
from kvmss.client.api import ApiClient

Say = Callable[[str], None]


class JoinError(Exception):
    """A step failed; the message (one line) says which and why."""


class HostStepError(Exception):
    """A step on the host failed (one line, no secret)."""


@dataclass(frozen=True)
class Steps:
    """What the CLI lends the steps: the controller, time, and output."""

    client: ApiClient
    clock: Clock
    say: Say
    add_secret: Callable[[str], None]
