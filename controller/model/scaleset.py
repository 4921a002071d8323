"""The scale set model: the body of PUT /v1/scaleSets/{name}, validated.

The shape and field names follow Azure's Microsoft.Compute
virtualMachineScaleSets (``sku.capacity``, ``properties.upgradePolicy``,
``properties.virtualMachineProfile``); kvmss extensions are marked where they
are declared. :func:`parse_scale_set` is the only way in: it turns any
problem into a :class:`ModelError` naming the dotted field and the reason,
and never echoes customData, protectedSettings or sshPublicKeys.

JSON ``null`` means "not given" everywhere, as in a JSON merge patch, so a
field set to null takes its default.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from controller.model.body import IDENTITY_FIELDS, ScaleSetBody
from controller.model.errors import ModelError, model_error
from controller.model.fields import REDACTED
from controller.model.mergepatch import merge_patch
from controller.model.upgradepolicy import RollingPolicy, UpgradeMode
from controller.model.vmprofile import (
    COMPUTER_NAME_PREFIX_MAX_LENGTH,
    OsProfile,
    VirtualMachineProfile,
)
from hostagent.contract import instancespec

RESOURCE_TYPE = "Microsoft.Compute/virtualMachineScaleSets"

# Instance names are "<scale set name>-<instance id>" and must be libvirt
# domain names (names.INSTANCE_NAME_RE: at most 63 characters), so the scale
# set name leaves room for '-' and an instance id of up to 6 digits.
INSTANCE_ID_DIGITS = 6
NAME_MAX_LENGTH = 63 - 1 - INSTANCE_ID_DIGITS
NAME_RE = re.compile(rf"^[a-z0-9](?:[a-z0-9-]{{0,{NAME_MAX_LENGTH - 2}}}[a-z0-9])?$")


# ---- the model the controller works with ------------------------------------------


@dataclass(frozen=True)
class AutomaticPolicy:
    """properties.upgradePolicy.automaticOSUpgradePolicy with defaults applied."""

    enable: bool
    disable_rollback: bool
    use_rolling_upgrade_policy: bool


@dataclass(frozen=True, repr=False, eq=False)
class ScaleSetModel:
    """A validated scale set. Make one with :func:`parse_scale_set`.

    Two models are equal when they have the same name and the same effective
    settings (defaults filled in), however they were written.
    """

    name: str
    spec: ScaleSetBody

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScaleSetModel):
            return NotImplemented
        return self.name == other.name and self.to_body() == other.to_body()

    def __repr__(self) -> str:
        ref = self.image_reference
        return (
            f"ScaleSetModel(name={self.name!r}, capacity={self.capacity}, mode={self.mode},"
            f" image={ref.publisher}/{ref.offer}/{ref.sku}/{ref.version})"
        )

    @property
    def id(self) -> str:
        return f"/scaleSets/{self.name}"

    @property
    def location(self) -> str:
        return self.spec.location

    @property
    def capacity(self) -> int:
        return self.spec.sku.capacity

    @property
    def mode(self) -> UpgradeMode:
        return self.spec.properties.upgradePolicy.mode

    @property
    def rolling(self) -> RollingPolicy:
        return self.spec.properties.upgradePolicy.rolling_policy()

    @property
    def automatic(self) -> AutomaticPolicy:
        p = self.spec.properties.upgradePolicy.automaticOSUpgradePolicy
        return AutomaticPolicy(
            enable=p.enableAutomaticOSUpgrade,
            disable_rollback=p.disableAutomaticRollback,
            use_rolling_upgrade_policy=p.useRollingUpgradePolicy,
        )

    @property
    def _vm(self) -> VirtualMachineProfile:
        return self.spec.properties.virtualMachineProfile

    @property
    def vcpus(self) -> int:
        return self._vm.hardwareProfile.vCPUs

    @property
    def memory_mb(self) -> int:
        return self._vm.hardwareProfile.memoryMB

    @property
    def image_reference(self) -> instancespec.ImageReference:
        ref = self._vm.storageProfile.imageReference
        return instancespec.ImageReference(
            publisher=ref.publisher, offer=ref.offer, sku=ref.sku, version=ref.version
        )

    @property
    def data_disks(self) -> list[instancespec.DataDisk]:
        return [
            instancespec.DataDisk(lun=d.lun, diskSizeGB=d.diskSizeGB)
            for d in self._vm.storageProfile.dataDisks
        ]

    @property
    def computer_name_prefix(self) -> str:
        given = self._vm.osProfile.computerNamePrefix
        return given if given is not None else self.name[:COMPUTER_NAME_PREFIX_MAX_LENGTH]

    @property
    def os_profile(self) -> OsProfile:
        return self._vm.osProfile

    @property
    def health_probe(self) -> instancespec.HealthProbe | None:
        p = self._vm.networkProfile.healthProbe
        if p is None:
            return None
        return instancespec.HealthProbe(
            protocol=p.protocol,
            port=p.port,
            requestPath=p.requestPath,
            intervalInSeconds=p.intervalInSeconds,
            numberOfProbes=p.numberOfProbes,
        )

    @property
    def extensions(self) -> list[instancespec.Extension]:
        """In model order (the agent orders them by provisionAfterExtensions);
        copies, so changing one does not change the model."""
        return [
            instancespec.Extension(
                name=e.name,
                type=e.properties.type,
                settings=copy.deepcopy(e.properties.settings),
                protectedSettings=copy.deepcopy(e.properties.protectedSettings),
                provisionAfterExtensions=list(e.properties.provisionAfterExtensions),
            )
            for e in self._vm.extensionProfile.extensions
        ]

    @property
    def has_health_signal(self) -> bool:
        """A health probe or an ApplicationHealthLinux extension."""
        return self._vm.has_health_signal

    def to_body(self, *, redact: bool = False, defaults: bool = True) -> dict[str, Any]:
        """The Azure-shaped JSON body, with ``name``, ``id`` and ``type``.

        ``defaults=True`` (GET responses) fills every default in;
        ``defaults=False`` gives only what was given, the form to store and
        to apply a PATCH to, so that defaults stay defaults (Azure's
        maxBatchInstancePercent <= maxUnhealthyInstancePercent rule applies
        only to values given explicitly). ``redact=True`` replaces customData
        and non-empty protectedSettings with "(redacted)" for API responses.
        """
        if defaults:
            data = self.spec.model_dump(mode="json", exclude_none=True)
            vm = data["properties"]["virtualMachineProfile"]
            vm["osProfile"] = {"computerNamePrefix": self.computer_name_prefix, **vm["osProfile"]}
        else:
            data = self.spec.model_dump(mode="json", exclude_unset=True)
        body = {"name": self.name, "id": self.id, "type": RESOURCE_TYPE, **data}
        if redact:
            _redact(body)
        return body


def _redact(body: dict[str, Any]) -> None:
    vm = body.get("properties", {}).get("virtualMachineProfile", {})
    os_profile = vm.get("osProfile", {})
    if os_profile.get("customData") is not None:
        os_profile["customData"] = REDACTED
    for ext in vm.get("extensionProfile", {}).get("extensions", []):
        props = ext.get("properties", {})
        if props.get("protectedSettings"):
            props["protectedSettings"] = REDACTED


# ---- parsing -----------------------------------------------------------------------


def parse_scale_set(name: str, body: Any) -> ScaleSetModel:
    """The scale set ``name`` (from the URL) with the PUT ``body`` (parsed JSON);
    ModelError naming the first field at fault otherwise."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise ModelError(
            "name",
            f"must be 1-{NAME_MAX_LENGTH} lowercase letters, digits or '-', starting and"
            " ending with a letter or digit",
        )
    if isinstance(body, dict):
        _check_identity(name, body)
        body = {k: v for k, v in body.items() if k not in IDENTITY_FIELDS}
    spec = _validate(body)
    if isinstance(spec, ModelError):
        raise spec  # raised here, outside the except block: no input values in __context__
    return ScaleSetModel(name=name, spec=spec)


def _check_identity(name: str, body: Mapping[str, Any]) -> None:
    expected = {"name": name, "id": f"/scaleSets/{name}", "type": RESOURCE_TYPE}
    for key in IDENTITY_FIELDS:
        value = body.get(key)
        if value is not None and value != expected[key]:
            what = "the scale set's name in the URL" if key == "name" else "read-only"
            raise ModelError(key, f"must be {expected[key]!r} ({what})")


def patch_scale_set(model: ScaleSetModel, patch: Any) -> ScaleSetModel:
    """PATCH: the JSON merge patch ``patch`` applied to ``model`` as it was
    given (defaults stay defaults), validated again as a whole."""
    if not isinstance(patch, dict):
        raise ModelError("body", "must be a JSON object (a JSON merge patch)")
    return parse_scale_set(model.name, merge_patch(model.to_body(defaults=False), patch))


def _validate(body: Any) -> ScaleSetBody | ModelError:
    try:
        return ScaleSetBody.model_validate(body)
    except ValidationError as e:
        return model_error(e)
