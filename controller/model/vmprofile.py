"""``properties.virtualMachineProfile`` of the scale set model: hardware,
storage (image reference and data disks), OS profile, network profile (the
health probe) and the extension profile.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from controller.model.extensionprofile import ExtensionProfile
from controller.model.fields import (
    REQUEST_PATH_RE,
    ImagePart,
    Rule,
    StrictModel,
    between,
    is_base64,
    matching,
    not_placeholder,
)
from controller.model.versions import is_version
from hostagent.contract import limits, names

COMPUTER_NAME_PREFIX_MAX_LENGTH = 15
COMPUTER_NAME_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$")


class HardwareProfile(StrictModel):
    """kvmss: the VM size is given directly rather than by a size name."""

    vCPUs: Annotated[int, between(limits.VCPUS_MIN, limits.VCPUS_MAX)] = 1
    memoryMB: Annotated[int, between(limits.MEMORY_MB_MIN, limits.MEMORY_MB_MAX)] = 512


class ImageReference(StrictModel):
    publisher: ImagePart
    offer: ImagePart
    sku: ImagePart
    version: str

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v != "latest" and not is_version(v):
            raise ValueError(
                "must be 'latest' or 1 to 4 dot-separated integers such as 2016.127.20180613"
            )
        return v


class DataDisk(StrictModel):
    lun: Annotated[int, between(limits.LUN_MIN, limits.LUN_MAX)]
    diskSizeGB: Annotated[int, between(limits.DISK_SIZE_GB_MIN, limits.DISK_SIZE_GB_MAX)]
    createOption: Literal["Empty"] = "Empty"


class StorageProfile(StrictModel):
    imageReference: ImageReference
    dataDisks: list[DataDisk] = Field(default_factory=list, max_length=limits.MAX_DATA_DISKS)

    @field_validator("dataDisks")
    @classmethod
    def _unique_luns(cls, v: list[DataDisk]) -> list[DataDisk]:
        seen: set[int] = set()
        for i, disk in enumerate(v):
            if disk.lun in seen:
                raise Rule((i, "lun"), f"lun {disk.lun} is already used by another data disk")
            seen.add(disk.lun)
        return v


class OsProfile(StrictModel):
    computerNamePrefix: (
        Annotated[
            str,
            matching(
                COMPUTER_NAME_PREFIX_RE,
                "must be 1-15 letters, digits or '-', starting with a letter or digit",
            ),
        ]
        | None
    ) = None
    adminUsername: (
        Annotated[
            str,
            matching(
                names.ADMIN_USERNAME_RE,
                "must be 1-32 lowercase letters, digits, '_' or '-', starting with a letter or '_'",
            ),
        ]
        | None
    ) = None
    # kvmss: Azure nests these as linuxConfiguration.ssh.publicKeys[].keyData.
    sshPublicKeys: list[str] = Field(
        default_factory=list, max_length=limits.SSH_PUBLIC_KEYS_MAX, repr=False
    )
    customData: str | None = Field(default=None, repr=False)

    @field_validator("adminUsername")
    @classmethod
    def _admin_not_reserved(cls, v: str | None) -> str | None:
        if v in names.RESERVED_USERNAMES:
            raise ValueError(f"{v!r} is a system account; choose another name")
        return v

    @field_validator("sshPublicKeys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for i, key in enumerate(v):
            if len(key) > limits.SSH_PUBLIC_KEY_MAX_LENGTH or not names.SSH_PUBLIC_KEY_RE.fullmatch(
                key
            ):
                raise Rule(
                    (i,),
                    "must be one OpenSSH public key line such as 'ssh-ed25519 AAAA... comment'",
                )
        return v

    @field_validator("customData")
    @classmethod
    def _custom_data(cls, v: str) -> str:
        not_placeholder(v)
        if len(v) > limits.CUSTOM_DATA_MAX_LENGTH:
            raise ValueError(
                f"must be at most {limits.CUSTOM_DATA_MAX_LENGTH} characters of base64"
            )
        if not is_base64(v):
            raise ValueError("must be base64-encoded")
        return v


class HealthProbe(StrictModel):
    """kvmss: the probe itself, which the host agent runs from the host side
    (Azure references a load balancer's probe by id)."""

    protocol: Literal["Http", "Tcp"]
    port: Annotated[int, between(1, 65535)]
    requestPath: str | None = None
    intervalInSeconds: Annotated[
        int, between(limits.PROBE_INTERVAL_SECONDS_MIN, limits.PROBE_INTERVAL_SECONDS_MAX)
    ] = 5
    numberOfProbes: Annotated[
        int, between(limits.NUMBER_OF_PROBES_MIN, limits.NUMBER_OF_PROBES_MAX)
    ] = 2

    @field_validator("requestPath")
    @classmethod
    def _path(cls, v: str) -> str:
        if (
            len(v) > limits.REQUEST_PATH_MAX_LENGTH
            or not v.startswith("/")
            or not REQUEST_PATH_RE.fullmatch(v)
        ):
            raise ValueError(
                f"must start with '/' and be at most {limits.REQUEST_PATH_MAX_LENGTH} printable"
                " ASCII characters without spaces"
            )
        return v

    @model_validator(mode="after")
    def _path_for_protocol(self) -> HealthProbe:
        if self.protocol == "Http" and self.requestPath is None:
            raise Rule(("requestPath",), "is required when protocol is Http")
        if self.protocol == "Tcp" and self.requestPath is not None:
            raise Rule(("requestPath",), "must be left out when protocol is Tcp")
        return self


class NetworkProfile(StrictModel):
    healthProbe: HealthProbe | None = None


class VirtualMachineProfile(StrictModel):
    hardwareProfile: HardwareProfile = Field(default_factory=HardwareProfile)
    storageProfile: StorageProfile
    osProfile: OsProfile = Field(default_factory=OsProfile)
    networkProfile: NetworkProfile = Field(default_factory=NetworkProfile)
    extensionProfile: ExtensionProfile = Field(default_factory=ExtensionProfile)

    @property
    def has_health_signal(self) -> bool:
        return self.networkProfile.healthProbe is not None or any(
            e.properties.type == "ApplicationHealthLinux" for e in self.extensionProfile.extensions
        )
