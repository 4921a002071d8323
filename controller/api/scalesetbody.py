"""A scale set as GET, PUT and PATCH answer it: Azure's
Microsoft.Compute/virtualMachineScaleSets shape (docs/design.md), every
default filled in, customData and non-empty protectedSettings redacted.

It is what :meth:`controller.model.scaleset.ScaleSetModel.to_body` gives with
``redact=True``; the request model (:mod:`controller.model.body`) differs in
what may be left out, so it is not reused (a test keeps their fields alike).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from controller.api.responses import Absent, Body, ImageReference
from controller.model.extensionprofile import ExtensionType
from controller.model.upgradepolicy import UpgradeMode

# What an answer shows instead of a secret.
Redacted = Literal["(redacted)"]


class Sku(Body):
    name: str | Absent = None
    tier: str | Absent = None
    capacity: int


class RollingUpgradePolicy(Body):
    maxBatchInstancePercent: int
    maxUnhealthyInstancePercent: int
    maxUnhealthyUpgradedInstancePercent: int
    pauseTimeBetweenBatches: str
    prioritizeUnhealthyInstances: bool
    healthTimeout: str


class AutomaticOSUpgradePolicy(Body):
    enableAutomaticOSUpgrade: bool
    disableAutomaticRollback: bool
    useRollingUpgradePolicy: bool


class UpgradePolicy(Body):
    mode: UpgradeMode
    rollingUpgradePolicy: RollingUpgradePolicy
    automaticOSUpgradePolicy: AutomaticOSUpgradePolicy


class VirtualMachineScaleSetHardwareProfile(Body):
    vCPUs: int
    memoryMB: int


class VirtualMachineScaleSetDataDisk(Body):
    lun: int
    diskSizeGB: int
    createOption: Literal["Empty"]


class VirtualMachineScaleSetStorageProfile(Body):
    imageReference: ImageReference
    dataDisks: list[VirtualMachineScaleSetDataDisk]


class VirtualMachineScaleSetOSProfile(Body):
    computerNamePrefix: str
    adminUsername: str | Absent = None
    sshPublicKeys: list[str]
    customData: Redacted | Absent = None


class HealthProbe(Body):
    protocol: Literal["Http", "Tcp"]
    port: int
    requestPath: str | Absent = None
    intervalInSeconds: int
    numberOfProbes: int


class VirtualMachineScaleSetNetworkProfile(Body):
    healthProbe: HealthProbe | Absent = None


class VirtualMachineScaleSetExtensionProperties(Body):
    type: ExtensionType
    publisher: str | Absent = None
    typeHandlerVersion: str | Absent = None
    autoUpgradeMinorVersion: bool | Absent = None
    settings: dict[str, Any]
    protectedSettings: dict[str, Any] | Redacted
    provisionAfterExtensions: list[str]


class VirtualMachineScaleSetExtension(Body):
    name: str
    properties: VirtualMachineScaleSetExtensionProperties


class VirtualMachineScaleSetExtensionProfile(Body):
    extensions: list[VirtualMachineScaleSetExtension]


class VirtualMachineScaleSetVMProfile(Body):
    hardwareProfile: VirtualMachineScaleSetHardwareProfile
    storageProfile: VirtualMachineScaleSetStorageProfile
    osProfile: VirtualMachineScaleSetOSProfile
    networkProfile: VirtualMachineScaleSetNetworkProfile
    extensionProfile: VirtualMachineScaleSetExtensionProfile


class VirtualMachineScaleSetProperties(Body):
    upgradePolicy: UpgradePolicy
    virtualMachineProfile: VirtualMachineScaleSetVMProfile


class VirtualMachineScaleSet(Body):
    name: str
    id: str
    type: Literal["Microsoft.Compute/virtualMachineScaleSets"]
    location: str
    tags: dict[str, str]
    sku: Sku
    properties: VirtualMachineScaleSetProperties


class VirtualMachineScaleSetListResult(Body):
    value: list[VirtualMachineScaleSet] = Field(description="by name")
