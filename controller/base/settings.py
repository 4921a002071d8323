"""How the controller is run: where agents reach it, and how often it looks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# How often an agent's operation and a running upgrade are looked at.
POLL_SECONDS: Final = 1.0
# The longest an agent's operation (create, delete, reimage) is waited for.
OP_TIMEOUT_SECONDS: Final = 900.0
# How often listings' instance views are refreshed from each host.
VIEW_REFRESH_SECONDS: Final = 5.0


@dataclass(frozen=True)
class Settings:
    public_url: str  # how agents reach this controller (blob downloads)
    blob_secret: bytes = field(repr=False)  # signs blob URLs handed to agents
    poll_seconds: float = POLL_SECONDS
    op_timeout_seconds: float = OP_TIMEOUT_SECONDS
    view_refresh_seconds: float = VIEW_REFRESH_SECONDS
