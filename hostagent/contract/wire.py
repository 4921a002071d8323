"""The host agent's wire contract: what the controller sends and gets back.

This module is shared with the controller (through :mod:`hostagent.contract.client`)
and imports nothing of the agent's libvirt code. Field names follow Azure's
Compute API where there is one to follow.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Instance names become file names and libvirt domain names: a DNS label.
INSTANCE_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
EXTENSION_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
IMAGE_PART_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
OPERATION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# A Linux user name cloud-init can create; the accounts of a Debian base
# system are refused (cloud-init would change root's or a daemon's login).
ADMIN_USERNAME_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
RESERVED_USERNAMES = frozenset(
    {"root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp",
     "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "_apt", "messagebus",
     "sshd", "systemd-network", "systemd-resolve", "systemd-timesync", "polkitd"}
)  # fmt: skip
# One OpenSSH public key line: type, base64 blob, optional comment.
SSH_PUBLIC_KEY_RE = re.compile(
    r"^(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)"
    r"|sk-(?:ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}(?: [^\x00-\x1f\x7f]*)?$"
)
SSH_PUBLIC_KEY_MAX_LENGTH = 16384


# Extension settings are free-form JSON; this bounds how deeply they (and
# the controller's request bodies) may nest, well inside what pydantic
# serialises (255 levels) and what Python's recursion limit allows.
MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests JSON objects and arrays (a scalar is 0).
    Iterative, so no value is too deep to measure."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, depth + 1)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def check_instance_name(name: str) -> str:
    """Return ``name`` or raise ValueError saying why it is not an instance name."""
    if not INSTANCE_NAME_RE.fullmatch(name):
        raise ValueError(
            f"instance name {name[:80]!r} is invalid: use 1-63 lowercase letters, digits"
            " and '-', starting and ending with a letter or digit"
        )
    return name


def check_admin_username(name: str) -> str:
    """Return ``name`` or raise ValueError saying why cloud-init must not create it."""
    if not ADMIN_USERNAME_RE.fullmatch(name):
        raise ValueError(
            "adminUsername must be 1-32 lowercase letters, digits, '_' or '-',"
            " starting with a letter or '_'"
        )
    if name in RESERVED_USERNAMES:
        raise ValueError(f"adminUsername {name!r} is a system account; choose another name")
    return name


def check_ssh_public_key(key: str, index: int) -> str:
    """Return ``key`` or raise ValueError (naming its index, never its text)."""
    if len(key) > SSH_PUBLIC_KEY_MAX_LENGTH or not SSH_PUBLIC_KEY_RE.fullmatch(key):
        raise ValueError(
            f"sshPublicKeys[{index}] must be one OpenSSH public key line"
            " such as 'ssh-ed25519 AAAA... comment'"
        )
    return key


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Artifact(WireModel):
    """A file the agent downloads and verifies by sha256 (kernel, initrd)."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not SHA256_RE.fullmatch(v):
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
        if not IMAGE_PART_RE.fullmatch(v):
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
    lun: Annotated[int, Field(ge=0, le=15)]
    diskSizeGB: Annotated[int, Field(ge=1, le=4096)]


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
        if not EXTENSION_NAME_RE.fullmatch(v):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return v

    @field_validator("settings", "protectedSettings")
    @classmethod
    def _shallow(cls, v: dict[str, Any]) -> dict[str, Any]:
        if json_depth(v) > MAX_JSON_DEPTH:
            raise ValueError(f"must not nest deeper than {MAX_JSON_DEPTH} levels")
        return v


class HealthProbe(WireModel):
    protocol: Literal["Http", "Tcp"]
    port: Annotated[int, Field(ge=1, le=65535)]
    requestPath: Annotated[str, Field(max_length=1024)] | None = None
    intervalInSeconds: Annotated[int, Field(ge=1, le=3600)] = 5
    numberOfProbes: Annotated[int, Field(ge=1, le=100)] = 2

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
    sshPublicKeys: list[str] = Field(default_factory=list, max_length=32, repr=False)
    customData: Annotated[str, Field(max_length=65536)] | None = Field(default=None, repr=False)

    @field_validator("computerName")
    @classmethod
    def _host(cls, v: str) -> str:
        if not INSTANCE_NAME_RE.fullmatch(v.lower()):
            raise ValueError("must be a host name (letters, digits and '-')")
        return v

    @field_validator("adminUsername")
    @classmethod
    def _admin(cls, v: str | None) -> str | None:
        return None if v is None else check_admin_username(v)

    @field_validator("sshPublicKeys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        return [check_ssh_public_key(k, i) for i, k in enumerate(v)]


class InstanceSpec(WireModel):
    """PUT /v1/instances/{name}: create the instance or converge it to this spec."""

    image: ImageSpec
    vcpus: Annotated[int, Field(ge=1, le=64)] = 1
    memoryMB: Annotated[int, Field(ge=64, le=1048576)] = 256
    dataDisks: list[DataDisk] = Field(default_factory=list)
    osProfile: OsProfile
    extensions: list[Extension] = Field(default_factory=list)
    healthProbe: HealthProbe | None = None
    operationId: str | None = None

    @field_validator("operationId")
    @classmethod
    def _opid(cls, v: str | None) -> str | None:
        return _check_operation_id(v)

    @field_validator("dataDisks")
    @classmethod
    def _luns(cls, v: list[DataDisk]) -> list[DataDisk]:
        luns = [d.lun for d in v]
        if len(set(luns)) != len(luns):
            raise ValueError("each lun may appear once")
        return v

    @field_validator("extensions")
    @classmethod
    def _ext_names(cls, v: list[Extension]) -> list[Extension]:
        names = [e.name for e in v]
        if len(set(names)) != len(names):
            raise ValueError("extension names must be unique")
        return v


def _check_operation_id(v: str | None) -> str | None:
    if v is not None and not OPERATION_ID_RE.fullmatch(v):
        raise ValueError("must be 1-64 letters, digits, '_' or '-'")
    return v


class OperationRequest(WireModel):
    """Body of start/stop/rollback/commit/delete; all fields optional."""

    operationId: str | None = None

    @field_validator("operationId")
    @classmethod
    def _opid(cls, v: str | None) -> str | None:
        return _check_operation_id(v)


class ReimageRequest(OperationRequest):
    image: ImageSpec


class DeleteRequest(OperationRequest):
    deleteDataDisks: bool = False


OperationKind = Literal["create", "reimage", "rollback", "commit", "start", "stop", "delete"]


class CancelRequest(WireModel):
    """Body of POST /v1/operations/{id}/cancel: the operation the id would
    be if a request with it arrived (it may still be on its way)."""

    kind: OperationKind
    instance: str

    @field_validator("instance")
    @classmethod
    def _instance(cls, v: str) -> str:
        return check_instance_name(v)


# ---- views -----------------------------------------------------------------

OperationStatus = Literal["InProgress", "Succeeded", "Failed"]
ExtensionState = Literal["NotStarted", "Transitioning", "Succeeded", "Failed"]
HealthState = Literal["Healthy", "Unhealthy", "Unknown"]


class ErrorInfo(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorInfo


class Operation(BaseModel):
    id: str
    kind: str
    instance: str
    status: OperationStatus
    startTime: str
    endTime: str | None = None
    error: ErrorInfo | None = None


class ExtensionStatus(BaseModel):
    name: str
    status: ExtensionState
    exitCode: int | None = None
    message: str | None = None
    instanceId: str | None = None
    time: str | None = None


class ProbeStatus(BaseModel):
    healthy: bool | None = None
    consecutiveSuccesses: int = 0
    consecutiveFailures: int = 0
    lastError: str | None = None
    lastProbeTime: str | None = None


class Health(BaseModel):
    state: HealthState
    reasons: list[str] = Field(default_factory=list)


class GenerationView(BaseModel):
    generation: int
    instanceId: str
    image: ImageReference
    imageSha256: str
    osDisk: str


class DataDiskView(BaseModel):
    lun: int
    diskSizeGB: int
    path: str


class InstanceView(BaseModel):
    name: str
    powerState: str
    address: str
    current: GenerationView
    previous: GenerationView | None = None
    dataDisks: list[DataDiskView] = Field(default_factory=list)
    extensions: list[ExtensionStatus] = Field(default_factory=list)
    probe: ProbeStatus | None = None
    applicationHealth: str | None = None
    health: Health
    operation: str | None = None


class InstanceList(BaseModel):
    value: list[InstanceView]


class HostCapacity(BaseModel):
    vcpus: int
    memoryMB: int
    diskFreeGB: float


class HostView(BaseModel):
    name: str
    hypervisor: Literal["kvm", "qemu", "test"]
    libvirtVersion: str
    capacity: HostCapacity
    instanceCount: int
    bridge: str
    subnet: str


# ---- guest-facing reports ------------------------------------------------------


class ExtensionReport(WireModel):
    instanceId: Annotated[str, Field(min_length=1, max_length=128)]
    status: Literal["Transitioning", "Succeeded", "Failed"]
    exitCode: int | None = None
    outputBase64: Annotated[str, Field(max_length=65536)] | None = None


class HealthReport(WireModel):
    instanceId: Annotated[str, Field(min_length=1, max_length=128)]
    state: Literal["Healthy", "Unhealthy"]
