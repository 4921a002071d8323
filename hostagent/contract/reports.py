"""What a guest reports to its own agent on the guest listener
(:mod:`hostagent.daemon.guestapi`), never on the management API.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from hostagent.contract.instancespec import WireModel


class ExtensionReport(WireModel):
    instanceId: Annotated[str, Field(min_length=1, max_length=128)]
    status: Literal["Transitioning", "Succeeded", "Failed"]
    exitCode: int | None = None
    outputBase64: Annotated[str, Field(max_length=65536)] | None = None


class HealthReport(WireModel):
    instanceId: Annotated[str, Field(min_length=1, max_length=128)]
    state: Literal["Healthy", "Unhealthy"]
