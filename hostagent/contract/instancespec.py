"""The instance spec the controller sends to an agent (PUT
/v1/instances/{name}): image, size, data disks, OS profile, extensions and
health probe. Field names follow Azure's Compute API where there is one to
follow; bounds are in :mod:`hostagent.contract.limits`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hostagent.contract import limits, names


class WireModel(BaseModel):
    """A body an agent accepts: a field it does not know is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Artifact(WireModel):
    """A file the agent downloads and verifies by sha256 (kernel, initrd)."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not names.SHA256_RE.fullmatch(v):
            raise ValueError("must be 64 lowercase hex digits")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not (v.startswith("http://") or v.startswith("https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v


class ImageReference(WireModel):
    publisher: str
    offer: str
    sku: str
    version: str

    @field_validator("publisher", "offer", "sku", "version")
    @classmethod
    def _part(cls, v: str) -> str:
        if not names.IMAGE_PART_RE.fullmatch(v):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return v


class ImageSpec(Artifact):
    """A resolved image version: where to fetch its qcow2 and how to boot it.

    ``kernel``/``initrd``/``cmdline`` select direct kernel boot; without them
    the guest boots from its own disk through the firmware.
    """

    reference: ImageReference
    kernel: Artifact | None = None
    initrd: Artifact | None = None
    cmdline: Annotated[str, Field(max_length=1024)] | None = None

    @model_validator(mode="after")
    def _boot(self) -> ImageSpec:
        if self.initrd is not None and self.kernel is None:
            raise ValueError("initrd needs a kernel")
        if self.cmdline is not None and self.kernel is None:
            raise ValueError("cmdline needs a kernel")
        return self


class DataDisk(WireModel):
    lun: Annotated[int, Field(ge=limits.LUN_MIN, le=limits.LUN_MAX)]
    diskSizeGB: Annotated[int, Field(ge=limits.DISK_SIZE_GB_MIN, le=limits.DISK_SIZE_GB_MAX)]


class Extension(WireModel):
    """An extension run by cloud-init in the guest.

    ``CustomScript``: settings ``commandToExecute`` (a shell command) or
    ``script`` (base64 of a script); ``protectedSettings`` may hold the same
    keys and is never echoed back. ``ApplicationHealthLinux``: settings
    ``protocol`` (http|tcp), ``port``, ``requestPath``; the guest probes
    itself and reports to its agent.
    """

    name: str
    type: Literal["CustomScript", "ApplicationHealthLinux"] = "CustomScript"
    settings: dict[str, Any] = Field(default_factory=dict)
    protectedSettings: dict[str, Any] = Field(default_factory=dict, repr=False)
    provisionAfterExtensions: list[str] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not names.EXTENSION_NAME_RE.fullmatch(v):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return v

    @field_validator("settings", "protectedSettings")
    @classmethod
    def _shallow(cls, v: dict[str, Any]) -> dict[str, Any]:
        if limits.json_depth(v) > limits.MAX_JSON_DEPTH:
            raise ValueError(f"must not nest deeper than {limits.MAX_JSON_DEPTH} levels")
        return v


class HealthProbe(WireModel):
    protocol: Literal["Http", "Tcp"]
    port: Annotated[int, Field(ge=1, le=65535)]
    requestPath: Annotated[str, Field(max_length=limits.REQUEST_PATH_MAX_LENGTH)] | None = None
    intervalInSeconds: Annotated[
        int,
        Field(ge=limits.PROBE_INTERVAL_SECONDS_MIN, le=limits.PROBE_INTERVAL_SECONDS_MAX),
    ] = 5
    numberOfProbes: Annotated[
        int, Field(ge=limits.NUMBER_OF_PROBES_MIN, le=limits.NUMBER_OF_PROBES_MAX)
    ] = 2

    @model_validator(mode="after")
    def _path(self) -> HealthProbe:
        if self.protocol == "Http":
            if self.requestPath is None:
                raise ValueError("requestPath is required for protocol Http")
            if not self.requestPath.startswith("/"):
                raise ValueError("requestPath must start with '/'")
        return self


class OsProfile(WireModel):
    computerName: Annotated[str, Field(min_length=1, max_length=63)]
    adminUsername: Annotated[str, Field(max_length=32)] | None = None
    sshPublicKeys: list[str] = Field(
        default_factory=list, max_length=limits.SSH_PUBLIC_KEYS_MAX, repr=False
    )
    customData: Annotated[str, Field(max_length=limits.CUSTOM_DATA_MAX_LENGTH)] | None = Field(
        default=None, repr=False
    )

    @field_validator("computerName")
    @classmethod
    def _host(cls, v: str) -> str:
        if not names.INSTANCE_NAME_RE.fullmatch(v.lower()):
            raise ValueError("must be a host name (letters, digits and '-')")
        return v

    @field_validator("adminUsername")
    @classmethod
    def _admin(cls, v: str | None) -> str | None:
        return None if v is None else names.check_admin_username(v)

    @field_validator("sshPublicKeys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        return [names.check_ssh_public_key(k, i) for i, k in enumerate(v)]


class InstanceSpec(WireModel):
    """PUT /v1/instances/{name}: create the instance or converge it to this spec."""

    image: ImageSpec
    vcpus: Annotated[int, Field(ge=limits.VCPUS_MIN, le=limits.VCPUS_MAX)] = 1
    memoryMB: Annotated[int, Field(ge=limits.MEMORY_MB_MIN, le=limits.MEMORY_MB_MAX)] = 256
    dataDisks: list[DataDisk] = Field(default_factory=list, max_length=limits.MAX_DATA_DISKS)
    osProfile: OsProfile
    extensions: list[Extension] = Field(default_factory=list)
    healthProbe: HealthProbe | None = None
    operationId: str | None = None

    @field_validator("operationId")
    @classmethod
    def _opid(cls, v: str | None) -> str | None:
        return names.check_operation_id(v)

    @field_validator("dataDisks")
    @classmethod
    def _luns(cls, v: list[DataDisk]) -> list[DataDisk]:
        _once_each([d.lun for d in v], "each lun may appear once")
        return v

    @field_validator("extensions")
    @classmethod
    def _ext_names(cls, v: list[Extension]) -> list[Extension]:
        _once_each([e.name for e in v], "extension names must be unique")
        return v


def _once_each(keys: list[int] | list[str], message: str) -> None:
    if len(set(keys)) != len(keys):
        raise ValueError(message)
