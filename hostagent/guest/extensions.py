"""Extensions: the order they run in, and the guest script that runs them.

The script is NoCloud ``user-data`` (cloud-init runs it once per instance-id,
as does the tiny image's init), POSIX sh for busybox ash and dash from the
``guest_*.sh`` templates beside this module. Every value that comes from the
model or the agent (names, commands, scripts, the instance-id, the report
URL and token) enters the script as base64 inside single quotes and is
decoded at run time; only integers and fixed words of this module are
written as shell text.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from hostagent.contract import instancespec
from hostagent.contract.names import check_instance_name

STATE_DIR = "/var/lib/kvmss"
# Entries of <STATE_DIR>/extensions that are not extension directories.
RESERVED_NAMES = frozenset({"status"})
HEALTH_INTERVAL_SECONDS = 5

# RFC 6750 b64token: what may follow "Bearer ".
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/-]+=*$")
_URL_RE = re.compile(r"^https?://[A-Za-z0-9._~:/%@\[\]-]+$")
_BASE64_RE = re.compile(r"^[A-Za-z0-9+/=]*$")
_SHELL_WORD_RE = re.compile(r"^[a-z0-9 ]*$")
_REQUEST_PATH_RE = re.compile(r"^/[!-~]*$")

StepKind = Literal["command", "script", "health"]


class ExtensionOrderError(ValueError):
    """provisionAfterExtensions names an unknown extension, itself, or a cycle."""


def order(extensions: Sequence[instancespec.Extension]) -> list[instancespec.Extension]:
    """The extensions in provisioning order: each after every extension its
    ``provisionAfterExtensions`` names; otherwise in model order."""
    by_name: dict[str, instancespec.Extension] = {}
    for ext in extensions:
        if ext.name in by_name:
            raise ExtensionOrderError(f"extension name {ext.name!r} appears more than once")
        by_name[ext.name] = ext
    for ext in extensions:
        for dep in ext.provisionAfterExtensions:
            if dep == ext.name:
                raise ExtensionOrderError(
                    f"extension {ext.name!r} names itself in provisionAfterExtensions"
                )
            if dep not in by_name:
                raise ExtensionOrderError(
                    f"extension {ext.name!r} names unknown extension {dep!r}"
                    " in provisionAfterExtensions"
                )
    placed: set[str] = set()
    result: list[instancespec.Extension] = []
    remaining = list(extensions)
    while remaining:
        ready = next(
            (e for e in remaining if all(d in placed for d in e.provisionAfterExtensions)),
            None,
        )
        if ready is None:
            cycle = _find_cycle(remaining, by_name, placed)
            raise ExtensionOrderError(
                "provisionAfterExtensions has a cycle: "
                + " -> ".join(cycle)
                + " (each waits for the next)"
            )
        placed.add(ready.name)
        result.append(ready)
        remaining.remove(ready)
    return result


def _find_cycle(
    blocked: list[instancespec.Extension],
    by_name: Mapping[str, instancespec.Extension],
    placed: set[str],
) -> list[str]:
    """A cycle among ``blocked`` (every one waits for an unplaced one), as
    names from the model-earliest member back to it."""
    position = {e.name: i for i, e in enumerate(blocked)}
    path: list[str] = []
    seen: dict[str, int] = {}
    name = blocked[0].name
    while name not in seen:
        seen[name] = len(path)
        path.append(name)
        name = next(d for d in by_name[name].provisionAfterExtensions if d not in placed)
    cycle = path[seen[name] :]
    start = min(range(len(cycle)), key=lambda i: position[cycle[i]])
    cycle = cycle[start:] + cycle[:start]
    return [*cycle, cycle[0]]


@dataclass(frozen=True)
class _Step:
    """One extension as the guest script runs it."""

    kind: StepKind
    payload: bytes


def user_data_script(
    *,
    instance: str,
    instance_id: str,
    extensions: Sequence[instancespec.Extension],
    report_url: str,
    token: str,
    custom_data: str | None,
) -> str:
    """The user-data script for one OS disk generation of ``instance``.

    ``extensions`` run in :func:`order`; ``custom_data`` (base64, as Azure's
    customData) lands decoded in /var/lib/kvmss/custom-data. Raises
    ValueError naming the field when a value cannot be delivered (the
    message never contains the token or settings values).
    """
    url = _check_delivery(instance, instance_id, report_url, token)
    custom = None if custom_data is None else _decode_base64(custom_data, "osProfile.customData")
    calls = _extension_calls(
        order(extensions), instance_id=instance_id, report_url=url, token=token
    )
    header = "".join(
        [
            "#!/bin/sh\n",
            "# kvmss guest script: runs this instance's extensions and reports to its\n",
            "# host agent. Generated; every value is base64, decoded at run time.\n",
            _assign("KVMSS_INSTANCE_B64", _b64(instance)),
            _assign("KVMSS_INSTANCE_ID_B64", _b64(instance_id)),
            *_report_assignments(instance_id, url, token),
            _assign("KVMSS_HAS_CUSTOM_DATA", "0" if custom is None else "1"),
            _assign("KVMSS_CUSTOM_DATA_B64", "" if custom is None else _b64(custom)),
        ]
    )
    return (
        header
        + _template("guest_lib.sh")
        + _template("guest_extensions.sh")
        + "\n# ---- extensions, in provisioning order ----\n"
        + "".join(calls)
        + "kvmss_finish\n"
    )


def _check_delivery(instance: str, instance_id: str, report_url: str, token: str) -> str:
    """The report URL without its trailing slash, once every value the
    script carries is one it can deliver."""
    check_instance_name(instance)
    if not 1 <= len(instance_id) <= 128 or not instance_id.isprintable():
        raise ValueError("instance_id must be 1-128 printable characters")
    url = report_url.rstrip("/")
    if not _URL_RE.fullmatch(url):
        raise ValueError(f"report_url {report_url[:200]!r} is not a plain http(s) URL")
    if not _TOKEN_RE.fullmatch(token) or len(token) > 1024:
        raise ValueError("token must be 1-1024 characters of a bearer token (RFC 6750 b64token)")
    return url


def _extension_calls(
    ordered: Sequence[instancespec.Extension], *, instance_id: str, report_url: str, token: str
) -> list[str]:
    """One ``kvmss_extension`` line per extension, dependencies as indexes."""
    index = {e.name: i for i, e in enumerate(ordered, start=1)}
    calls: list[str] = []
    for i, ext in enumerate(ordered, start=1):
        if ext.name in RESERVED_NAMES:
            raise ValueError(
                f"extension {ext.name!r}: the name is reserved"
                f" ({STATE_DIR}/extensions/{ext.name} is kvmss's own file)"
            )
        step = _step(ext, instance_id=instance_id, report_url=report_url, token=token)
        deps = " ".join(str(index[d]) for d in dict.fromkeys(ext.provisionAfterExtensions))
        calls.append(
            f"kvmss_extension {i} {_quoted(_b64(ext.name))} {_word(step.kind)}"
            f" {_quoted(_b64(step.payload))} {_quoted(_word(deps))}\n"
        )
    return calls


def _step(ext: instancespec.Extension, *, instance_id: str, report_url: str, token: str) -> _Step:
    if ext.type == "CustomScript":
        return _custom_script(ext)
    return _Step("health", _health_script(ext, instance_id, report_url, token).encode())


def _custom_script(ext: instancespec.Extension) -> _Step:
    """protectedSettings win over settings; one of commandToExecute or script."""
    for field, settings in (
        ("protectedSettings", ext.protectedSettings),
        ("settings", ext.settings),
    ):
        where = f"extension {ext.name!r}: {field}"
        if "fileUris" in settings:
            raise ValueError(
                f"{where}.fileUris is not supported (guests download nothing);"
                " embed the script as base64 in 'script'"
            )
        has_command = "commandToExecute" in settings
        has_script = "script" in settings
        if has_command and has_script:
            raise ValueError(f"{where} has both commandToExecute and script; give one")
        if has_command:
            command = settings["commandToExecute"]
            if not isinstance(command, str) or not command.strip():
                raise ValueError(f"{where}.commandToExecute must be a non-empty string")
            return _Step("command", command.encode())
        if has_script:
            return _Step("script", _decode_base64(settings["script"], f"{where}.script"))
    raise ValueError(
        f"extension {ext.name!r}: CustomScript needs commandToExecute or script"
        " in settings or protectedSettings"
    )


def _health_script(
    ext: instancespec.Extension, instance_id: str, report_url: str, token: str
) -> str:
    where = f"extension {ext.name!r}: settings"
    settings = ext.settings
    protocol = settings.get("protocol")
    if not isinstance(protocol, str) or protocol.lower() not in ("http", "https", "tcp"):
        raise ValueError(f"{where}.protocol must be 'http', 'https' or 'tcp'")
    protocol = protocol.lower()
    port = _int_setting(settings, "port", where, None, 1, 65535)
    interval = _int_setting(settings, "intervalInSeconds", where, HEALTH_INTERVAL_SECONDS, 1, 3600)
    path = "/"
    if protocol != "tcp":
        raw = settings.get("requestPath", "/")
        if not isinstance(raw, str) or len(raw) > 1024:
            raise ValueError(f"{where}.requestPath must be a string of at most 1024 characters")
        path = raw if raw.startswith("/") else "/" + raw
        if not _REQUEST_PATH_RE.fullmatch(path):
            raise ValueError(
                f"{where}.requestPath must be printable ASCII without spaces (URL-encode them)"
            )
    header = "".join(
        [
            "#!/bin/sh\n",
            "# kvmss application health loop. Generated; values are base64 or integers.\n",
            *_report_assignments(instance_id, report_url, token),
            _assign("KVMSS_HEALTH_PROTOCOL", protocol),
            _assign("KVMSS_HEALTH_PORT", str(port)),
            _assign("KVMSS_HEALTH_INTERVAL", str(interval)),
            _assign("KVMSS_HEALTH_PATH_B64", _b64(path)),
        ]
    )
    return header + _template("guest_lib.sh") + _template("guest_health.sh")


def _int_setting(
    settings: Mapping[str, Any], key: str, where: str, default: int | None, low: int, high: int
) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where}.{key} must be an integer from {low} to {high}")
    return value


def _report_assignments(instance_id: str, report_url: str, token: str) -> list[str]:
    return [
        _assign("KVMSS_REPORT_URL_B64", _b64(report_url)),
        _assign("KVMSS_TOKEN_B64", _b64(token)),
        _assign("KVMSS_ID_JSON_B64", _b64(json.dumps(instance_id))),
    ]


def _decode_base64(value: object, field: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{field} must be a base64 string")
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{field} is not valid base64") from None


def _b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def _quoted(b64: str) -> str:
    """``b64`` in single quotes; only base64 characters may go there."""
    if not _BASE64_RE.fullmatch(b64):
        raise AssertionError("only base64 text may be quoted into the guest script")
    return f"'{b64}'"


def _word(text: str) -> str:
    """A fixed word or list of integers written as shell text."""
    if not _SHELL_WORD_RE.fullmatch(text):
        raise AssertionError("only lowercase words and integers may be shell text")
    return text


def _assign(variable: str, value: str) -> str:
    return f"{variable}={_quoted(value)}\n"


def _template(name: str) -> str:
    return resources.files("hostagent.guest").joinpath(name).read_text(encoding="utf-8")
