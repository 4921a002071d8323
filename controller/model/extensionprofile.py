"""``properties.virtualMachineProfile.extensionProfile`` of the scale set
model: the extensions, the settings each type needs, and the
provisionAfterExtensions graph (known names, no cycles).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from controller.model.fields import (
    REQUEST_PATH_RE,
    ImagePart,
    Rule,
    StrictModel,
    is_base64,
    matching,
    not_placeholder,
)
from hostagent.contract import limits, names

# The agent keeps its own files next to the extensions' directories.
RESERVED_EXTENSION_NAMES = frozenset({"status"})
MAX_EXTENSIONS = 50

ExtensionType = Literal["CustomScript", "ApplicationHealthLinux"]


class ExtensionProperties(StrictModel):
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
        not_placeholder(v)
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
            raise Rule(
                (where, "fileUris"),
                "is not supported (guests download nothing); embed the script as base64"
                " in 'script'",
            )
        if "commandToExecute" in values and "script" in values:
            raise Rule((where,), "has both commandToExecute and script; give one")
        if "commandToExecute" in values:
            command = values["commandToExecute"]
            if not isinstance(command, str) or not command.strip():
                raise Rule((where, "commandToExecute"), "must be a non-empty string")
            found = True
        if "script" in values:
            script = values["script"]
            if not isinstance(script, str) or not script or not is_base64(script):
                raise Rule((where, "script"), "must be a base64-encoded script")
            found = True
    if not found:
        raise Rule(
            ("settings",),
            "CustomScript needs commandToExecute or script in settings or protectedSettings",
        )


def _check_application_health(settings: Mapping[str, Any], protected: Mapping[str, Any]) -> None:
    """The settings the agent's in-guest health loop reads."""
    if protected:
        raise Rule(("protectedSettings",), "must be empty for ApplicationHealthLinux")
    protocol = settings.get("protocol")
    if not isinstance(protocol, str) or protocol.lower() not in ("http", "https", "tcp"):
        raise Rule(("settings", "protocol"), "must be 'http', 'https' or 'tcp'")
    for key, low, high, required in (
        ("port", 1, 65535, True),
        (
            "intervalInSeconds",
            limits.PROBE_INTERVAL_SECONDS_MIN,
            limits.PROBE_INTERVAL_SECONDS_MAX,
            False,
        ),
    ):
        if key not in settings and not required:
            continue
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise Rule(("settings", key), f"must be an integer between {low} and {high}")
    if protocol.lower() != "tcp" and "requestPath" in settings:
        path = settings["requestPath"]
        if (
            not isinstance(path, str)
            or len(path) > limits.REQUEST_PATH_MAX_LENGTH
            or not REQUEST_PATH_RE.fullmatch(path)
        ):
            raise Rule(
                ("settings", "requestPath"),
                f"must be at most {limits.REQUEST_PATH_MAX_LENGTH} printable ASCII characters"
                " without spaces",
            )


class Extension(StrictModel):
    name: Annotated[
        str,
        matching(
            names.EXTENSION_NAME_RE,
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


class ExtensionProfile(StrictModel):
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
            raise Rule(
                (i, "name"), f"{ext.name!r} is already the name of extension {index[ext.name]}"
            )
        index[ext.name] = i
    health = [i for i, e in enumerate(extensions) if e.properties.type == "ApplicationHealthLinux"]
    if len(health) > 1:
        raise Rule((health[1], "properties", "type"), "only one ApplicationHealthLinux is allowed")
    deps_path: tuple[str, ...] = ("properties", "provisionAfterExtensions")
    for i, ext in enumerate(extensions):
        for dep in ext.properties.provisionAfterExtensions:
            if dep == ext.name:
                raise Rule((i, *deps_path), f"names the extension itself ({dep!r})")
            if dep not in index:
                raise Rule((i, *deps_path), f"names unknown extension {dep[:64]!r}")
    cycle = _find_cycle({e.name: e.properties.provisionAfterExtensions for e in extensions})
    if cycle:
        raise Rule(
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
