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

import base64
import binascii
import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from controller.durations import DurationError, format_duration, parse_duration
from controller.mergepatch import merge_patch
from controller.versions import is_version
from hostagent import wire

RESOURCE_TYPE = "Microsoft.Compute/virtualMachineScaleSets"
REDACTED = "(redacted)"

# Instance names are "<scale set name>-<instance id>" and must be libvirt
# domain names (wire.INSTANCE_NAME_RE: at most 63 characters), so the scale
# set name leaves room for '-' and an instance id of up to 6 digits.
INSTANCE_ID_DIGITS = 6
NAME_MAX_LENGTH = 63 - 1 - INSTANCE_ID_DIGITS
NAME_RE = re.compile(rf"^[a-z0-9](?:[a-z0-9-]{{0,{NAME_MAX_LENGTH - 2}}}[a-z0-9])?$")
COMPUTER_NAME_PREFIX_MAX_LENGTH = 15
COMPUTER_NAME_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,14}$")
LOCATION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
# The agent keeps its own files next to the extensions' directories.
RESERVED_EXTENSION_NAMES = frozenset({"status"})
_REQUEST_PATH_RE = re.compile(r"^/?[!-~]*$")
_PLAIN_KEY_RE = re.compile(r"^[A-Za-z0-9_$@-]{1,64}$")

CUSTOM_DATA_MAX_LENGTH = 65536
MAX_EXTENSIONS = 50
MAX_DATA_DISKS = 16

UpgradeMode = Literal["Manual", "Automatic", "Rolling"]
ExtensionType = Literal["CustomScript", "ApplicationHealthLinux"]


class ModelError(ValueError):
    """A scale set body that is not a valid model.

    ``field`` is the dotted path (``properties.upgradePolicy.mode``), ``reason``
    what is wrong with it, ``message`` the one line "<field>: <reason>". None of
    them contains a secret value of the body.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        self.message = f"{field}: {reason}"
        super().__init__(self.message)


class _Rule(ValueError):
    """A rule broken at ``path`` below the model or field being validated.

    Pydantic places a validator's error at the field (or model) it validates;
    this says which member below it is at fault, so the message can name it.
    """

    def __init__(self, path: tuple[str | int, ...], reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


def _between(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return AfterValidator(check)


def _matching(pattern: re.Pattern[str], reason: str) -> AfterValidator:
    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(reason)
        return value

    return AfterValidator(check)


_PART_REASON = "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
ImagePart = Annotated[str, _matching(wire.IMAGE_PART_RE, _PART_REASON)]


def _duration_within(text: str, low: float, high: float) -> str:
    try:
        seconds = parse_duration(text, "duration")
    except DurationError as e:
        raise ValueError(e.reason) from None
    if not low <= seconds <= high:
        raise ValueError(f"must be between {format_duration(low)} and {format_duration(high)}")
    return text


def _not_placeholder(value: object) -> None:
    if value == REDACTED:
        raise ValueError(
            f'holds the placeholder "{REDACTED}" from an API response; send the real value'
        )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# ---- upgrade policy --------------------------------------------------------------


class RollingUpgradePolicy(_Model):
    maxBatchInstancePercent: Annotated[int, _between(5, 100)] = 20
    maxUnhealthyInstancePercent: Annotated[int, _between(5, 100)] = 20
    maxUnhealthyUpgradedInstancePercent: Annotated[int, _between(0, 100)] = 20
    pauseTimeBetweenBatches: str = "PT0S"
    prioritizeUnhealthyInstances: bool = False
    # kvmss: how long a reimaged instance has to become healthy.
    healthTimeout: str = "PT5M"

    @field_validator("pauseTimeBetweenBatches")
    @classmethod
    def _pause(cls, v: str) -> str:
        return _duration_within(v, 0, 3600)

    @field_validator("healthTimeout")
    @classmethod
    def _timeout(cls, v: str) -> str:
        return _duration_within(v, 10, 7200)

    @model_validator(mode="after")
    def _batch_within_unhealthy(self) -> RollingUpgradePolicy:
        # Azure: "If both maxBatchInstancePercent and maxUnhealthyInstancePercent
        # are assigned with value, the value of maxBatchInstancePercent should
        # not be more than maxUnhealthyInstancePercent."
        both = {"maxBatchInstancePercent", "maxUnhealthyInstancePercent"} <= self.model_fields_set
        if both and self.maxBatchInstancePercent > self.maxUnhealthyInstancePercent:
            raise _Rule(
                ("maxBatchInstancePercent",),
                "must not be more than maxUnhealthyInstancePercent"
                f" ({self.maxUnhealthyInstancePercent})",
            )
        return self


class AutomaticOSUpgradePolicy(_Model):
    enableAutomaticOSUpgrade: bool = False
    disableAutomaticRollback: bool = False
    # Accepted for Azure compatibility; kvmss always upgrades in rolling batches.
    useRollingUpgradePolicy: bool = False


class UpgradePolicy(_Model):
    mode: UpgradeMode = "Manual"
    rollingUpgradePolicy: RollingUpgradePolicy = Field(default_factory=RollingUpgradePolicy)
    automaticOSUpgradePolicy: AutomaticOSUpgradePolicy = Field(
        default_factory=AutomaticOSUpgradePolicy
    )


# ---- virtual machine profile ------------------------------------------------------


class HardwareProfile(_Model):
    """kvmss: the VM size is given directly rather than by a size name."""

    vCPUs: Annotated[int, _between(1, 64)] = 1
    memoryMB: Annotated[int, _between(64, 1048576)] = 512


class ImageReference(_Model):
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


class DataDisk(_Model):
    lun: Annotated[int, _between(0, 15)]
    diskSizeGB: Annotated[int, _between(1, 4096)]
    createOption: Literal["Empty"] = "Empty"


class StorageProfile(_Model):
    imageReference: ImageReference
    dataDisks: list[DataDisk] = Field(default_factory=list, max_length=MAX_DATA_DISKS)

    @field_validator("dataDisks")
    @classmethod
    def _unique_luns(cls, v: list[DataDisk]) -> list[DataDisk]:
        seen: set[int] = set()
        for i, disk in enumerate(v):
            if disk.lun in seen:
                raise _Rule((i, "lun"), f"lun {disk.lun} is already used by another data disk")
            seen.add(disk.lun)
        return v


class OsProfile(_Model):
    computerNamePrefix: (
        Annotated[
            str,
            _matching(
                COMPUTER_NAME_PREFIX_RE,
                "must be 1-15 letters, digits or '-', starting with a letter or digit",
            ),
        ]
        | None
    ) = None
    adminUsername: (
        Annotated[
            str,
            _matching(
                wire.ADMIN_USERNAME_RE,
                "must be 1-32 lowercase letters, digits, '_' or '-', starting with a letter or '_'",
            ),
        ]
        | None
    ) = None
    # kvmss: Azure nests these as linuxConfiguration.ssh.publicKeys[].keyData.
    sshPublicKeys: list[str] = Field(default_factory=list, max_length=32, repr=False)
    customData: str | None = Field(default=None, repr=False)

    @field_validator("adminUsername")
    @classmethod
    def _admin_not_reserved(cls, v: str | None) -> str | None:
        if v in wire.RESERVED_USERNAMES:
            raise ValueError(f"{v!r} is a system account; choose another name")
        return v

    @field_validator("sshPublicKeys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for i, key in enumerate(v):
            if len(key) > wire.SSH_PUBLIC_KEY_MAX_LENGTH or not wire.SSH_PUBLIC_KEY_RE.fullmatch(
                key
            ):
                raise _Rule(
                    (i,),
                    "must be one OpenSSH public key line such as 'ssh-ed25519 AAAA... comment'",
                )
        return v

    @field_validator("customData")
    @classmethod
    def _custom_data(cls, v: str) -> str:
        _not_placeholder(v)
        if len(v) > CUSTOM_DATA_MAX_LENGTH:
            raise ValueError(f"must be at most {CUSTOM_DATA_MAX_LENGTH} characters of base64")
        if not _is_base64(v):
            raise ValueError("must be base64-encoded")
        return v


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class HealthProbe(_Model):
    """kvmss: the probe itself, which the host agent runs from the host side
    (Azure references a load balancer's probe by id)."""

    protocol: Literal["Http", "Tcp"]
    port: Annotated[int, _between(1, 65535)]
    requestPath: str | None = None
    intervalInSeconds: Annotated[int, _between(1, 3600)] = 5
    numberOfProbes: Annotated[int, _between(1, 100)] = 2

    @field_validator("requestPath")
    @classmethod
    def _path(cls, v: str) -> str:
        if len(v) > 1024 or not v.startswith("/") or not _REQUEST_PATH_RE.fullmatch(v):
            raise ValueError(
                "must start with '/' and be at most 1024 printable ASCII characters without spaces"
            )
        return v

    @model_validator(mode="after")
    def _path_for_protocol(self) -> HealthProbe:
        if self.protocol == "Http" and self.requestPath is None:
            raise _Rule(("requestPath",), "is required when protocol is Http")
        if self.protocol == "Tcp" and self.requestPath is not None:
            raise _Rule(("requestPath",), "must be left out when protocol is Tcp")
        return self


class NetworkProfile(_Model):
    healthProbe: HealthProbe | None = None


class ExtensionProperties(_Model):
    type: ExtensionType
    # Azure's publisher, handler version and minor-version flag: accepted and
    # returned, not used (kvmss runs its own implementation of each type).
    publisher: ImagePart | None = None
    typeHandlerVersion: ImagePart | None = None
    autoUpgradeMinorVersion: bool | None = None
    settings: dict[str, Any] = Field(default_factory=dict)
    protectedSettings: dict[str, Any] = Field(default_factory=dict, repr=False)
    provisionAfterExtensions: list[str] = Field(default_factory=list, max_length=MAX_EXTENSIONS)

    @field_validator("protectedSettings", mode="before")
    @classmethod
    def _protected_placeholder(cls, v: Any) -> Any:
        _not_placeholder(v)
        return v

    @model_validator(mode="after")
    def _settings_for_type(self) -> ExtensionProperties:
        if self.type == "CustomScript":
            _check_custom_script(self.settings, self.protectedSettings)
        else:
            _check_application_health(self.settings, self.protectedSettings)
        return self


def _check_custom_script(settings: Mapping[str, Any], protected: Mapping[str, Any]) -> None:
    """What the agent can deliver: one of commandToExecute (a shell command) or
    script (base64), in settings or protectedSettings (protectedSettings win)."""
    found = False
    for where, values in (("protectedSettings", protected), ("settings", settings)):
        if "fileUris" in values:
            raise _Rule(
                (where, "fileUris"),
                "is not supported (guests download nothing); embed the script as base64"
                " in 'script'",
            )
        if "commandToExecute" in values and "script" in values:
            raise _Rule((where,), "has both commandToExecute and script; give one")
        if "commandToExecute" in values:
            command = values["commandToExecute"]
            if not isinstance(command, str) or not command.strip():
                raise _Rule((where, "commandToExecute"), "must be a non-empty string")
            found = True
        if "script" in values:
            script = values["script"]
            if not isinstance(script, str) or not script or not _is_base64(script):
                raise _Rule((where, "script"), "must be a base64-encoded script")
            found = True
    if not found:
        raise _Rule(
            ("settings",),
            "CustomScript needs commandToExecute or script in settings or protectedSettings",
        )


def _check_application_health(settings: Mapping[str, Any], protected: Mapping[str, Any]) -> None:
    """The settings the agent's in-guest health loop reads."""
    if protected:
        raise _Rule(("protectedSettings",), "must be empty for ApplicationHealthLinux")
    protocol = settings.get("protocol")
    if not isinstance(protocol, str) or protocol.lower() not in ("http", "https", "tcp"):
        raise _Rule(("settings", "protocol"), "must be 'http', 'https' or 'tcp'")
    for key, low, high, required in (
        ("port", 1, 65535, True),
        ("intervalInSeconds", 1, 3600, False),
    ):
        if key not in settings and not required:
            continue
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Rule(("settings", key), f"must be an integer between {low} and {high}")
    if protocol.lower() != "tcp" and "requestPath" in settings:
        path = settings["requestPath"]
        if not isinstance(path, str) or len(path) > 1024 or not _REQUEST_PATH_RE.fullmatch(path):
            raise _Rule(
                ("settings", "requestPath"),
                "must be at most 1024 printable ASCII characters without spaces",
            )


class Extension(_Model):
    name: Annotated[
        str,
        _matching(
            wire.EXTENSION_NAME_RE,
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        ),
    ]
    properties: ExtensionProperties

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, v: str) -> str:
        if v in RESERVED_EXTENSION_NAMES:
            raise ValueError(f"{v!r} is reserved by the host agent")
        return v


class ExtensionProfile(_Model):
    extensions: list[Extension] = Field(default_factory=list, max_length=MAX_EXTENSIONS)

    @field_validator("extensions")
    @classmethod
    def _graph(cls, v: list[Extension]) -> list[Extension]:
        _check_extension_graph(v)
        return v


def _check_extension_graph(extensions: Sequence[Extension]) -> None:
    """Unique names, provisionAfterExtensions naming only other known
    extensions, no cycles, at most one ApplicationHealthLinux."""
    index: dict[str, int] = {}
    for i, ext in enumerate(extensions):
        if ext.name in index:
            raise _Rule(
                (i, "name"), f"{ext.name!r} is already the name of extension {index[ext.name]}"
            )
        index[ext.name] = i
    health = [i for i, e in enumerate(extensions) if e.properties.type == "ApplicationHealthLinux"]
    if len(health) > 1:
        raise _Rule((health[1], "properties", "type"), "only one ApplicationHealthLinux is allowed")
    deps_path: tuple[str, ...] = ("properties", "provisionAfterExtensions")
    for i, ext in enumerate(extensions):
        for dep in ext.properties.provisionAfterExtensions:
            if dep == ext.name:
                raise _Rule((i, *deps_path), f"names the extension itself ({dep!r})")
            if dep not in index:
                raise _Rule((i, *deps_path), f"names unknown extension {dep[:64]!r}")
    cycle = _find_cycle({e.name: e.properties.provisionAfterExtensions for e in extensions})
    if cycle:
        raise _Rule(
            (index[cycle[0]], *deps_path),
            "forms a cycle: " + " -> ".join(cycle) + " (each waits for the next)",
        )


def _find_cycle(after: Mapping[str, Sequence[str]]) -> list[str]:
    """A cycle in the "waits for" graph ``after`` (every name it mentions is a
    key), as names from its earliest key back to that key; [] when acyclic."""
    placed: set[str] = set()
    remaining = list(after)
    while remaining:
        ready = [n for n in remaining if all(d in placed for d in after[n])]
        if not ready:
            # Every remaining name waits for another remaining one: walk from
            # the first until a name repeats.
            path: list[str] = []
            name = remaining[0]
            while name not in path:
                path.append(name)
                name = next(d for d in after[name] if d not in placed)
            cycle = path[path.index(name) :]
            first = min(range(len(cycle)), key=lambda i: remaining.index(cycle[i]))
            cycle = cycle[first:] + cycle[:first]
            return [*cycle, cycle[0]]
        placed.update(ready)
        remaining = [n for n in remaining if n not in placed]
    return []


class VirtualMachineProfile(_Model):
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


class Properties(_Model):
    upgradePolicy: UpgradePolicy = Field(default_factory=UpgradePolicy)
    virtualMachineProfile: VirtualMachineProfile

    @model_validator(mode="after")
    def _automatic_needs_health(self) -> Properties:
        automatic = self.upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade
        if automatic and not self.virtualMachineProfile.has_health_signal:
            raise _Rule(
                ("upgradePolicy", "automaticOSUpgradePolicy", "enableAutomaticOSUpgrade"),
                "needs a health signal: add properties.virtualMachineProfile.networkProfile"
                ".healthProbe or an ApplicationHealthLinux extension",
            )
        return self


class Sku(_Model):
    # Azure's size name and tier: labels here (hardwareProfile gives the size).
    name: ImagePart | None = None
    tier: ImagePart | None = None
    capacity: Annotated[int, _between(0, 1000)]


class ScaleSetBody(_Model):
    """The whole PUT body but its read-only ``name``, ``id`` and ``type``, which
    :func:`parse_scale_set` checks against the name in the URL."""

    location: Annotated[
        str, _matching(LOCATION_RE, "must be 1-64 letters, digits or '-', starting with one")
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
                raise _Rule((key,), "must be at most 256 characters")
        return v


# ---- the model the controller works with ------------------------------------------


@dataclass(frozen=True)
class RollingPolicy:
    """properties.upgradePolicy.rollingUpgradePolicy with defaults applied."""

    max_batch_instance_percent: int
    max_unhealthy_instance_percent: int
    max_unhealthy_upgraded_instance_percent: int
    pause_seconds: float
    prioritize_unhealthy_instances: bool
    health_timeout_seconds: float


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

    __hash__ = None  # type: ignore[assignment]

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
        p = self.spec.properties.upgradePolicy.rollingUpgradePolicy
        return RollingPolicy(
            max_batch_instance_percent=p.maxBatchInstancePercent,
            max_unhealthy_instance_percent=p.maxUnhealthyInstancePercent,
            max_unhealthy_upgraded_instance_percent=p.maxUnhealthyUpgradedInstancePercent,
            pause_seconds=parse_duration(p.pauseTimeBetweenBatches, "pauseTimeBetweenBatches"),
            prioritize_unhealthy_instances=p.prioritizeUnhealthyInstances,
            health_timeout_seconds=parse_duration(p.healthTimeout, "healthTimeout"),
        )

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
    def image_reference(self) -> wire.ImageReference:
        ref = self._vm.storageProfile.imageReference
        return wire.ImageReference(
            publisher=ref.publisher, offer=ref.offer, sku=ref.sku, version=ref.version
        )

    @property
    def data_disks(self) -> list[wire.DataDisk]:
        return [
            wire.DataDisk(lun=d.lun, diskSizeGB=d.diskSizeGB)
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
    def health_probe(self) -> wire.HealthProbe | None:
        p = self._vm.networkProfile.healthProbe
        if p is None:
            return None
        return wire.HealthProbe(
            protocol=p.protocol,
            port=p.port,
            requestPath=p.requestPath,
            intervalInSeconds=p.intervalInSeconds,
            numberOfProbes=p.numberOfProbes,
        )

    @property
    def extensions(self) -> list[wire.Extension]:
        """In model order (the agent orders them by provisionAfterExtensions);
        copies, so changing one does not change the model."""
        return [
            wire.Extension(
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
        body = {k: v for k, v in body.items() if k not in _IDENTITY_FIELDS}
    spec = _validate(body)
    if isinstance(spec, ModelError):
        raise spec  # raised here, outside the except block: no input values in __context__
    return ScaleSetModel(name=name, spec=spec)


# Read-only fields of a GET response, accepted back in a PUT when they match.
_IDENTITY_FIELDS = ("name", "id", "type")


def _check_identity(name: str, body: Mapping[str, Any]) -> None:
    expected = {"name": name, "id": f"/scaleSets/{name}", "type": RESOURCE_TYPE}
    for key in _IDENTITY_FIELDS:
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
        return _model_error(e)


def _model_error(e: ValidationError) -> ModelError:
    """The first error of ``e`` as a ModelError, built from its location, type
    and context only (pydantic's own text may carry the input)."""
    err = e.errors(include_url=False, include_input=False)[0]
    loc: tuple[str | int, ...] = tuple(err["loc"])
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    kind = err["type"]
    cause = ctx.get("error")
    if isinstance(cause, _Rule):
        return ModelError(_field(loc + cause.path), cause.reason)
    if kind in ("value_error", "assertion_error") and cause is not None:
        return ModelError(_field(loc), str(cause))
    if kind == "extra_forbidden":
        known = _known_fields(loc[:-1])
        hint = f" (known fields here: {', '.join(known)})" if known else ""
        return ModelError(_field(loc), "is not a field of the scale set model" + hint)
    return ModelError(_field(loc), _REASONS.get(kind, _generic_reason)(ctx))


def _generic_reason(ctx: Mapping[str, Any]) -> str:
    return "is invalid"


_REASONS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "missing": lambda c: "is required",
    "int_type": lambda c: "must be an integer",
    "bool_type": lambda c: "must be true or false",
    "string_type": lambda c: "must be a string",
    "dict_type": lambda c: "must be an object",
    "model_type": lambda c: "must be an object",
    "model_attributes_type": lambda c: "must be an object",
    "list_type": lambda c: "must be an array",
    "literal_error": lambda c: f"must be {c.get('expected', 'one of the allowed values')}",
    "too_long": lambda c: f"must have at most {c.get('max_length')} items",
    "too_short": lambda c: f"must have at least {c.get('min_length')} items",
    "string_too_long": lambda c: f"must be at most {c.get('max_length')} characters",
    "string_too_short": lambda c: f"must be at least {c.get('min_length')} characters",
}


def _field(loc: Sequence[str | int]) -> str:
    return ".".join(_loc_part(p) for p in loc) if loc else "body"


def _loc_part(part: str | int) -> str:
    """A location step as it appears in a dotted path: plain names as they
    are, anything else quoted on one line and cut to 64 characters."""
    if isinstance(part, int) or _PLAIN_KEY_RE.fullmatch(part):
        return str(part)
    return json.dumps(part[:64])


def _known_fields(loc: Sequence[str | int]) -> list[str]:
    """The fields of the model at ``loc`` (list indices skipped); [] when
    ``loc`` does not lead to a model."""
    cls: type[BaseModel] = ScaleSetBody
    for part in loc:
        if isinstance(part, int):
            continue
        info = cls.model_fields.get(part)
        inner = _model_in(info.annotation) if info is not None else None
        if inner is None:
            return []
        cls = inner
    fields = list(cls.model_fields)
    return fields if loc else [*_IDENTITY_FIELDS, *fields]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
