"""The whole body of PUT /v1/scaleSets/{name} as pydantic parts: ``location``,
``tags``, ``sku`` and ``properties`` (upgrade policy and virtual machine
profile); :mod:`controller.model.scaleset` turns it into a ScaleSetModel.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from controller.model.fields import ImagePart, Rule, StrictModel, between, matching
from controller.model.upgradepolicy import UpgradePolicy
from controller.model.vmprofile import VirtualMachineProfile

LOCATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")

# Read-only fields of a GET response, accepted back in a PUT when they match.
IDENTITY_FIELDS = ("name", "id", "type")


class Properties(StrictModel):
    upgradePolicy: UpgradePolicy = Field(default_factory=UpgradePolicy)
    virtualMachineProfile: VirtualMachineProfile

    @model_validator(mode="after")
    def _automatic_needs_health(self) -> Properties:
        automatic = self.upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade
        if automatic and not self.virtualMachineProfile.has_health_signal:
            raise Rule(
                ("upgradePolicy", "automaticOSUpgradePolicy", "enableAutomaticOSUpgrade"),
                "needs a health signal: add properties.virtualMachineProfile.networkProfile"
                ".healthProbe or an ApplicationHealthLinux extension",
            )
        return self


class Sku(StrictModel):
    # Azure's size name and tier: labels here (hardwareProfile gives the size).
    name: ImagePart | None = None
    tier: ImagePart | None = None
    capacity: Annotated[int, between(0, 1000)]


class ScaleSetBody(StrictModel):
    """The whole PUT body but its read-only ``name``, ``id`` and ``type``, which
    :func:`parse_scale_set` checks against the name in the URL."""

    location: Annotated[
        str, matching(LOCATION_RE, "must be 1-64 letters, digits or '-', starting with one")
    ] = "local"
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)
    sku: Sku
    properties: Properties

    @field_validator("tags")
    @classmethod
    def _tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not 1 <= len(key) <= 512:
                raise ValueError("tag names must be 1-512 characters")
            if len(value) > 256:
                raise Rule((key,), "must be at most 256 characters")
        return v
