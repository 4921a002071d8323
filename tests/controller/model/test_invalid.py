"""controller.model.scaleset: invalid scale set bodies are refused with an error that
names the field and the reason."""

from __future__ import annotations

from typing import Any

import pytest

from controller.model.scaleset import (
    NAME_MAX_LENGTH,
    RESOURCE_TYPE,
    parse_scale_set,
)
from tests.controller.model.test_valid import (
    EXTENSIONS,
    ROLLING,
    SECRET,
    VM,
    app_health,
    custom_script,
    error_of,
    full_body,
    minimal_body,
    with_value,
    without,
)

INVALID: list[tuple[str, Any, str, str]] = [
    # (dotted path to set, value, field named in the error, part of the reason)
    ("sku.capacity", 1001, "sku.capacity", "must be between 0 and 1000"),
    ("sku.capacity", -1, "sku.capacity", "must be between 0 and 1000"),
    ("sku.capacity", "6", "sku.capacity", "must be an integer"),
    ("sku.capacity", 6.0, "sku.capacity", "must be an integer"),
    ("sku.capacity", True, "sku.capacity", "must be an integer"),
    ("sku.name", "bad name", "sku.name", "letters, digits"),
    ("location", "", "location", "must be 1-64"),
    ("tags", {"team": "x" * 257}, "tags.team", "at most 256"),
    ("properties.upgradePolicy.mode", "rolling", "properties.upgradePolicy.mode", "'Rolling'"),
    (
        f"{ROLLING}.maxBatchInstancePercent",
        4,
        f"{ROLLING}.maxBatchInstancePercent",
        "must be between 5 and 100",
    ),
    (
        f"{ROLLING}.maxBatchInstancePercent",
        101,
        f"{ROLLING}.maxBatchInstancePercent",
        "must be between 5 and 100",
    ),
    (
        f"{ROLLING}.maxUnhealthyInstancePercent",
        4,
        f"{ROLLING}.maxUnhealthyInstancePercent",
        "must be between 5 and 100",
    ),
    (
        f"{ROLLING}.maxUnhealthyUpgradedInstancePercent",
        -1,
        f"{ROLLING}.maxUnhealthyUpgradedInstancePercent",
        "must be between 0 and 100",
    ),
    (
        f"{ROLLING}.pauseTimeBetweenBatches",
        "5 minutes",
        f"{ROLLING}.pauseTimeBetweenBatches",
        "must be an ISO 8601 duration such as PT5M",
    ),
    (
        f"{ROLLING}.pauseTimeBetweenBatches",
        "PT1H0.5S",
        f"{ROLLING}.pauseTimeBetweenBatches",
        "must be between PT0S and PT1H",
    ),
    (f"{ROLLING}.pauseTimeBetweenBatches", "P1M", f"{ROLLING}.pauseTimeBetweenBatches", "ISO 8601"),
    (
        f"{ROLLING}.healthTimeout",
        "PT9S",
        f"{ROLLING}.healthTimeout",
        "must be between PT10S and PT2H",
    ),
    (
        f"{ROLLING}.healthTimeout",
        "PT2H1S",
        f"{ROLLING}.healthTimeout",
        "must be between PT10S and PT2H",
    ),
    (
        f"{ROLLING}.prioritizeUnhealthyInstances",
        1,
        f"{ROLLING}.prioritizeUnhealthyInstances",
        "must be true or false",
    ),
    (f"{ROLLING}.maxSurge", True, f"{ROLLING}.maxSurge", "is not a field"),
    (
        "properties.upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade",
        "yes",
        "properties.upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade",
        "must be true or false",
    ),
    (f"{VM}.hardwareProfile.vCPUs", 0, f"{VM}.hardwareProfile.vCPUs", "between 1 and 64"),
    (f"{VM}.hardwareProfile.vCPUs", 65, f"{VM}.hardwareProfile.vCPUs", "between 1 and 64"),
    (
        f"{VM}.hardwareProfile.memoryMB",
        63,
        f"{VM}.hardwareProfile.memoryMB",
        "between 64 and 1048576",
    ),
    (
        f"{VM}.hardwareProfile.vmSize",
        "Standard_B1s",
        f"{VM}.hardwareProfile.vmSize",
        "is not a field",
    ),
    (
        f"{VM}.storageProfile.imageReference.version",
        "1.2.3.4.5",
        f"{VM}.storageProfile.imageReference.version",
        "'latest' or 1 to 4",
    ),
    (
        f"{VM}.storageProfile.imageReference.version",
        "1.x",
        f"{VM}.storageProfile.imageReference.version",
        "'latest' or 1 to 4",
    ),
    (
        f"{VM}.storageProfile.imageReference.version",
        "Latest",
        f"{VM}.storageProfile.imageReference.version",
        "'latest' or 1 to 4",
    ),
    (
        f"{VM}.storageProfile.imageReference.version",
        "1..2",
        f"{VM}.storageProfile.imageReference.version",
        "'latest' or 1 to 4",
    ),
    (
        f"{VM}.storageProfile.imageReference.publisher",
        "-kvmss",
        f"{VM}.storageProfile.imageReference.publisher",
        "letters, digits",
    ),
    (
        f"{VM}.storageProfile.imageReference.offer",
        "a/b",
        f"{VM}.storageProfile.imageReference.offer",
        "letters, digits",
    ),
    (
        f"{VM}.storageProfile.imageReference.sku",
        "x" * 65,
        f"{VM}.storageProfile.imageReference.sku",
        "letters, digits",
    ),
    (
        f"{VM}.storageProfile.imageReference.id",
        "/images/x",
        f"{VM}.storageProfile.imageReference.id",
        "is not a field",
    ),
    (
        f"{VM}.storageProfile.dataDisks.0.lun",
        16,
        f"{VM}.storageProfile.dataDisks.0.lun",
        "between 0 and 15",
    ),
    (
        f"{VM}.storageProfile.dataDisks.0.diskSizeGB",
        0,
        f"{VM}.storageProfile.dataDisks.0.diskSizeGB",
        "between 1 and 4096",
    ),
    (
        f"{VM}.storageProfile.dataDisks.0.diskSizeGB",
        4097,
        f"{VM}.storageProfile.dataDisks.0.diskSizeGB",
        "between 1 and 4096",
    ),
    (
        f"{VM}.storageProfile.dataDisks.0.createOption",
        "FromImage",
        f"{VM}.storageProfile.dataDisks.0.createOption",
        "'Empty'",
    ),
    (
        f"{VM}.storageProfile.dataDisks",
        [{"lun": 1, "diskSizeGB": 1}, {"lun": 1, "diskSizeGB": 2}],
        f"{VM}.storageProfile.dataDisks.1.lun",
        "lun 1 is already used",
    ),
    (
        f"{VM}.storageProfile.dataDisks",
        [{"lun": i % 16, "diskSizeGB": 1} for i in range(17)],
        f"{VM}.storageProfile.dataDisks",
        "at most 16 items",
    ),
    (
        f"{VM}.storageProfile.dataDisks",
        {"lun": 0},
        f"{VM}.storageProfile.dataDisks",
        "must be an array",
    ),
    (
        f"{VM}.osProfile.computerNamePrefix",
        "x" * 16,
        f"{VM}.osProfile.computerNamePrefix",
        "1-15 letters",
    ),
    (
        f"{VM}.osProfile.computerNamePrefix",
        "-web",
        f"{VM}.osProfile.computerNamePrefix",
        "1-15 letters",
    ),
    (
        f"{VM}.osProfile.computerNamePrefix",
        "web_1",
        f"{VM}.osProfile.computerNamePrefix",
        "1-15 letters",
    ),
    (
        f"{VM}.osProfile.computerNamePrefix",
        "",
        f"{VM}.osProfile.computerNamePrefix",
        "1-15 letters",
    ),
    (
        f"{VM}.osProfile.adminUsername",
        "Admin User",
        f"{VM}.osProfile.adminUsername",
        "lowercase letters",
    ),
    (
        f"{VM}.networkProfile.healthProbe.protocol",
        "Https",
        f"{VM}.networkProfile.healthProbe.protocol",
        "'Http' or 'Tcp'",
    ),
    (
        f"{VM}.networkProfile.healthProbe.port",
        0,
        f"{VM}.networkProfile.healthProbe.port",
        "between 1 and 65535",
    ),
    (
        f"{VM}.networkProfile.healthProbe.requestPath",
        "health",
        f"{VM}.networkProfile.healthProbe.requestPath",
        "must start with '/'",
    ),
    (
        f"{VM}.networkProfile.healthProbe.requestPath",
        "/a b",
        f"{VM}.networkProfile.healthProbe.requestPath",
        "without spaces",
    ),
    (
        f"{VM}.networkProfile.healthProbe",
        {"protocol": "Http", "port": 80},
        f"{VM}.networkProfile.healthProbe.requestPath",
        "is required when protocol is Http",
    ),
    (
        f"{VM}.networkProfile.healthProbe",
        {"protocol": "Tcp", "port": 80, "requestPath": "/"},
        f"{VM}.networkProfile.healthProbe.requestPath",
        "must be left out when protocol is Tcp",
    ),
    (
        f"{VM}.networkProfile.healthProbe.intervalInSeconds",
        0,
        f"{VM}.networkProfile.healthProbe.intervalInSeconds",
        "between 1 and 3600",
    ),
    (
        f"{VM}.networkProfile.healthProbe.numberOfProbes",
        101,
        f"{VM}.networkProfile.healthProbe.numberOfProbes",
        "between 1 and 100",
    ),
    (f"{EXTENSIONS}.0.name", "bad name", f"{EXTENSIONS}.0.name", "letters, digits"),
    (f"{EXTENSIONS}.0.name", "status", f"{EXTENSIONS}.0.name", "reserved"),
    (f"{EXTENSIONS}.1.name", "app", f"{EXTENSIONS}.1.name", "'app' is already the name"),
    (
        f"{EXTENSIONS}.0.properties.type",
        "DockerExtension",
        f"{EXTENSIONS}.0.properties.type",
        "'CustomScript' or 'ApplicationHealthLinux'",
    ),
    (
        f"{EXTENSIONS}.0.properties.provisionAfterExtensions",
        ["nope"],
        f"{EXTENSIONS}.0.properties.provisionAfterExtensions",
        "names unknown extension 'nope'",
    ),
    (
        f"{EXTENSIONS}.0.properties.provisionAfterExtensions",
        ["app"],
        f"{EXTENSIONS}.0.properties.provisionAfterExtensions",
        "names the extension itself",
    ),
    (
        f"{EXTENSIONS}.1.properties.provisionAfterExtensions",
        ["app"],
        f"{EXTENSIONS}.0.properties.provisionAfterExtensions",
        "forms a cycle: app -> base -> app",
    ),
    (
        f"{EXTENSIONS}.1.properties.settings",
        {},
        f"{EXTENSIONS}.1.properties.settings",
        "CustomScript needs commandToExecute or script",
    ),
    (
        f"{EXTENSIONS}.1.properties.settings",
        {"commandToExecute": "  "},
        f"{EXTENSIONS}.1.properties.settings.commandToExecute",
        "non-empty string",
    ),
    (
        f"{EXTENSIONS}.1.properties.settings",
        {"commandToExecute": "a", "script": "YQ=="},
        f"{EXTENSIONS}.1.properties.settings",
        "both commandToExecute and script",
    ),
    (
        f"{EXTENSIONS}.1.properties.settings",
        {"script": "not base64!"},
        f"{EXTENSIONS}.1.properties.settings.script",
        "base64",
    ),
    (
        f"{EXTENSIONS}.1.properties.settings",
        {"fileUris": ["http://x/y"], "commandToExecute": "y"},
        f"{EXTENSIONS}.1.properties.settings.fileUris",
        "is not supported",
    ),
    (
        f"{EXTENSIONS}.1.properties.settings",
        "echo",
        f"{EXTENSIONS}.1.properties.settings",
        "must be an object",
    ),
    (
        f"{EXTENSIONS}.1.properties.forceUpdateTag",
        "x",
        f"{EXTENSIONS}.1.properties.forceUpdateTag",
        "is not a field",
    ),
    (
        "properties.virtualMachineProfile.storageProfile.osDisk",
        {},
        f"{VM}.storageProfile.osDisk",
        "is not a field of the scale set model",
    ),
    ("properties.overprovision", False, "properties.overprovision", "is not a field"),
    ("plan", {}, "plan", "is not a field"),
    ("name", "other", "name", "must be 'web'"),
    ("id", "/scaleSets/other", "id", "must be '/scaleSets/web'"),
    ("type", "Microsoft.Compute/virtualMachines", "type", RESOURCE_TYPE),
]


@pytest.mark.parametrize(("path", "value", "field", "reason"), INVALID)
def test_invalid_value_names_the_field(path: str, value: Any, field: str, reason: str) -> None:
    err = error_of(with_value(full_body(), path, value))
    assert err.field == field
    assert reason in err.reason
    assert err.message == f"{field}: {err.reason}"
    assert str(err) == err.message
    assert "\n" not in err.message


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("sku", "sku"),
        ("sku.capacity", "sku.capacity"),
        ("properties", "properties"),
        (f"{VM}.storageProfile", f"{VM}.storageProfile"),
        (f"{VM}.storageProfile.imageReference", f"{VM}.storageProfile.imageReference"),
        (
            f"{VM}.storageProfile.imageReference.version",
            f"{VM}.storageProfile.imageReference.version",
        ),
        (f"{EXTENSIONS}.0.properties.type", f"{EXTENSIONS}.0.properties.type"),
        (f"{VM}.networkProfile.healthProbe.port", f"{VM}.networkProfile.healthProbe.port"),
    ],
)
def test_missing_required_field(path: str, field: str) -> None:
    err = error_of(without(full_body(), path))
    assert err.field == field
    assert err.reason == "is required"


def test_unknown_field_error_lists_the_known_ones() -> None:
    err = error_of(with_value(full_body(), f"{VM}.hardwareProfile.cpus", 2))
    assert err.field == f"{VM}.hardwareProfile.cpus"
    assert "vCPUs, memoryMB" in err.reason


def test_strange_unknown_field_names_stay_on_one_line() -> None:
    err = error_of(with_value(full_body(), "sku.a\nb", 1))
    assert err.field == 'sku."a\\nb"'
    assert "\n" not in err.message


@pytest.mark.parametrize("body", [[], "text", 5, None])
def test_body_must_be_an_object(body: Any) -> None:
    err = error_of(body)
    assert err.field == "body"
    assert err.reason == "must be an object"


@pytest.mark.parametrize(
    "name",
    ["", "Web", "web_1", "-web", "web-", "a" * (NAME_MAX_LENGTH + 1), "web.1", "wéb"],
)
def test_invalid_scale_set_name(name: str) -> None:
    err = error_of(minimal_body(), name=name)
    assert err.field == "name"
    assert "lowercase letters, digits or '-'" in err.reason


def test_batch_above_unhealthy_when_both_given() -> None:
    body = with_value(full_body(), f"{ROLLING}.maxBatchInstancePercent", 30)
    err = error_of(body)
    assert err.field == f"{ROLLING}.maxBatchInstancePercent"
    assert err.reason == "must not be more than maxUnhealthyInstancePercent (20)"


def test_automatic_upgrade_needs_a_health_signal() -> None:
    body = without(full_body(), f"{VM}.networkProfile.healthProbe")
    err = error_of(body)
    assert err.field == "properties.upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade"
    assert "health" in err.reason
    # Without automatic upgrades the same body is fine.
    body = with_value(
        body, "properties.upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade", False
    )
    assert not parse_scale_set("web", body).has_health_signal


def test_three_extension_cycle_is_reported_from_its_earliest_member() -> None:
    exts = [
        custom_script("x"),
        custom_script("a", ["c"]),
        custom_script("b", ["a"]),
        custom_script("c", ["b", "x"]),
    ]
    err = error_of(with_value(minimal_body(), f"{VM}.extensionProfile.extensions", exts))
    assert err.field == f"{EXTENSIONS}.1.properties.provisionAfterExtensions"
    assert "a -> c -> b -> a" in err.reason


def test_only_one_application_health_extension() -> None:
    exts = [app_health("h1"), app_health("h2")]
    err = error_of(with_value(minimal_body(), f"{VM}.extensionProfile.extensions", exts))
    assert err.field == f"{EXTENSIONS}.1.properties.type"


@pytest.mark.parametrize(
    ("settings", "field", "reason"),
    [
        ({"port": 80}, "settings.protocol", "'http', 'https' or 'tcp'"),
        ({"protocol": "udp", "port": 80}, "settings.protocol", "'http', 'https' or 'tcp'"),
        ({"protocol": "tcp"}, "settings.port", "between 1 and 65535"),
        ({"protocol": "tcp", "port": "80"}, "settings.port", "between 1 and 65535"),
        (
            {"protocol": "tcp", "port": 80, "intervalInSeconds": 0},
            "settings.intervalInSeconds",
            "between 1 and 3600",
        ),
        (
            {"protocol": "http", "port": 80, "requestPath": "/a b"},
            "settings.requestPath",
            "without spaces",
        ),
    ],
)
def test_application_health_settings(settings: dict[str, Any], field: str, reason: str) -> None:
    ext = {"name": "h", "properties": {"type": "ApplicationHealthLinux", "settings": settings}}
    err = error_of(with_value(minimal_body(), f"{VM}.extensionProfile.extensions", [ext]))
    assert err.field == f"{EXTENSIONS}.0.properties.{field}"
    assert reason in err.reason


def test_application_health_takes_no_protected_settings() -> None:
    ext = app_health()
    ext["properties"]["protectedSettings"] = {"token": SECRET}
    err = error_of(with_value(minimal_body(), f"{VM}.extensionProfile.extensions", [ext]))
    assert err.field == f"{EXTENSIONS}.0.properties.protectedSettings"
    assert SECRET not in err.message


def test_custom_script_from_protected_settings_only() -> None:
    ext = {
        "name": "s",
        "properties": {"type": "CustomScript", "protectedSettings": {"commandToExecute": SECRET}},
    }
    model = parse_scale_set(
        "web", with_value(minimal_body(), f"{VM}.extensionProfile.extensions", [ext])
    )
    assert model.extensions[0].protectedSettings == {"commandToExecute": SECRET}


def test_first_error_wins_in_field_order() -> None:
    body = with_value(full_body(), "sku.capacity", -1)
    body = with_value(body, f"{VM}.hardwareProfile.vCPUs", 0)
    assert error_of(body).field == "sku.capacity"


def test_error_does_not_carry_the_validation_error() -> None:
    err = error_of(with_value(full_body(), "sku.capacity", -1))
    assert err.__cause__ is None
    assert err.__context__ is None
