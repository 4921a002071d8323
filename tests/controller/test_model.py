"""controller.model: parsing, validating and rendering scale set bodies."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from controller.model import (
    NAME_MAX_LENGTH,
    RESOURCE_TYPE,
    AutomaticPolicy,
    RollingPolicy,
    ScaleSetModel,
    parse_scale_set,
    patch_scale_set,
)
from controller.modelerrors import ModelError
from controller.modelfields import REDACTED
from hostagent import wire

SECRET = "SECRET-abc"
SECRET_B64 = base64.b64encode(f"#!/bin/sh\necho {SECRET}\n".encode()).decode()
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkSomeKeyMaterialHere me@example"

VM = "properties.virtualMachineProfile"
ROLLING = "properties.upgradePolicy.rollingUpgradePolicy"
EXTENSIONS = f"{VM}.extensionProfile.extensions"


def full_body() -> dict[str, Any]:
    """Every field of the model, set explicitly (the brief's example)."""
    return {
        "location": "local",
        "tags": {"team": "web"},
        "sku": {"name": "tiny", "tier": "Standard", "capacity": 6},
        "properties": {
            "upgradePolicy": {
                "mode": "Rolling",
                "rollingUpgradePolicy": {
                    "maxBatchInstancePercent": 20,
                    "maxUnhealthyInstancePercent": 20,
                    "maxUnhealthyUpgradedInstancePercent": 20,
                    "pauseTimeBetweenBatches": "PT0S",
                    "prioritizeUnhealthyInstances": False,
                    "healthTimeout": "PT5M",
                },
                "automaticOSUpgradePolicy": {
                    "enableAutomaticOSUpgrade": True,
                    "disableAutomaticRollback": False,
                    "useRollingUpgradePolicy": True,
                },
            },
            "virtualMachineProfile": {
                "hardwareProfile": {"vCPUs": 1, "memoryMB": 256},
                "storageProfile": {
                    "imageReference": {
                        "publisher": "kvmss",
                        "offer": "tiny",
                        "sku": "1",
                        "version": "latest",
                    },
                    "dataDisks": [{"lun": 0, "diskSizeGB": 1, "createOption": "Empty"}],
                },
                "osProfile": {
                    "computerNamePrefix": "web",
                    "adminUsername": "azureuser",
                    "sshPublicKeys": [SSH_KEY],
                    "customData": base64.b64encode(SECRET.encode()).decode(),
                },
                "networkProfile": {
                    "healthProbe": {
                        "protocol": "Http",
                        "port": 8080,
                        "requestPath": "/health",
                        "intervalInSeconds": 5,
                        "numberOfProbes": 2,
                    }
                },
                "extensionProfile": {
                    "extensions": [
                        {
                            "name": "app",
                            "properties": {
                                "type": "CustomScript",
                                "publisher": "Microsoft.Azure.Extensions",
                                "typeHandlerVersion": "2.1",
                                "autoUpgradeMinorVersion": True,
                                "settings": {"commandToExecute": "echo app"},
                                "protectedSettings": {"script": SECRET_B64},
                                "provisionAfterExtensions": ["base"],
                            },
                        },
                        {
                            "name": "base",
                            "properties": {
                                "type": "CustomScript",
                                "settings": {"commandToExecute": "echo base"},
                                "protectedSettings": {},
                                "provisionAfterExtensions": [],
                            },
                        },
                    ]
                },
            },
        },
    }


def minimal_body() -> dict[str, Any]:
    return {
        "sku": {"capacity": 2},
        "properties": {
            "virtualMachineProfile": {
                "storageProfile": {
                    "imageReference": {
                        "publisher": "kvmss",
                        "offer": "tiny",
                        "sku": "1",
                        "version": "latest",
                    }
                }
            }
        },
    }


def with_value(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``body`` with the dotted ``path`` set (list indices as numbers)."""
    out = copy.deepcopy(body)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def without(body: dict[str, Any], path: str) -> dict[str, Any]:
    out = copy.deepcopy(body)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    del node[parts[-1]]
    return out


def error_of(body: Any, name: str = "web") -> ModelError:
    with pytest.raises(ModelError) as info:
        parse_scale_set(name, body)
    return info.value


def custom_script(name: str, after: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "properties": {
            "type": "CustomScript",
            "settings": {"commandToExecute": f"echo {name}"},
            "provisionAfterExtensions": after or [],
        },
    }


def app_health(name: str = "health") -> dict[str, Any]:
    return {
        "name": name,
        "properties": {
            "type": "ApplicationHealthLinux",
            "settings": {"protocol": "http", "port": 8080, "requestPath": "/healthz"},
        },
    }


# ---- valid bodies ---------------------------------------------------------------


def test_full_body_round_trips() -> None:
    body = full_body()
    model = parse_scale_set("web", body)
    header = {"name": "web", "id": "/scaleSets/web", "type": RESOURCE_TYPE}
    # As given: exactly the input plus the read-only identity fields.
    assert model.to_body(defaults=False) == {**header, **body}
    # With defaults: nothing to fill, so the same again.
    assert model.to_body() == {**header, **body}
    # A body as GET returns it can be PUT back unchanged.
    again = parse_scale_set("web", model.to_body())
    assert again == model
    assert again.to_body() == model.to_body()


def test_filled_in_body_gives_an_equal_model() -> None:
    model = parse_scale_set("web", minimal_body())
    assert parse_scale_set("web", model.to_body()) == model


def test_full_body_accessors() -> None:
    model = parse_scale_set("web", full_body())
    assert model.name == "web"
    assert model.id == "/scaleSets/web"
    assert model.capacity == 6
    assert model.mode == "Rolling"
    assert model.location == "local"
    assert model.rolling == RollingPolicy(
        max_batch_instance_percent=20,
        max_unhealthy_instance_percent=20,
        max_unhealthy_upgraded_instance_percent=20,
        pause_seconds=0.0,
        prioritize_unhealthy_instances=False,
        health_timeout_seconds=300.0,
    )
    assert model.automatic == AutomaticPolicy(
        enable=True, disable_rollback=False, use_rolling_upgrade_policy=True
    )
    assert model.image_reference == wire.ImageReference(
        publisher="kvmss", offer="tiny", sku="1", version="latest"
    )
    assert model.data_disks == [wire.DataDisk(lun=0, diskSizeGB=1)]
    assert model.health_probe == wire.HealthProbe(
        protocol="Http", port=8080, requestPath="/health", intervalInSeconds=5, numberOfProbes=2
    )
    assert [e.name for e in model.extensions] == ["app", "base"]
    app = model.extensions[0]
    assert app.type == "CustomScript"
    assert app.settings == {"commandToExecute": "echo app"}
    assert app.protectedSettings == {"script": SECRET_B64}
    assert app.provisionAfterExtensions == ["base"]
    assert model.vcpus == 1
    assert model.memory_mb == 256
    assert model.computer_name_prefix == "web"
    assert model.has_health_signal


def test_defaults_are_filled() -> None:
    model = parse_scale_set("my-scale-set-with-a-long-name", minimal_body())
    assert model.mode == "Manual"
    assert model.location == "local"
    assert model.rolling == RollingPolicy(20, 20, 20, 0.0, False, 300.0)
    assert model.automatic == AutomaticPolicy(False, False, False)
    assert model.data_disks == []
    assert model.health_probe is None
    assert model.extensions == []
    assert model.vcpus == 1
    assert model.memory_mb == 512
    assert model.computer_name_prefix == "my-scale-set-wi"  # the name cut to 15
    assert not model.has_health_signal

    body = model.to_body()
    assert body["name"] == "my-scale-set-with-a-long-name"
    assert body["id"] == "/scaleSets/my-scale-set-with-a-long-name"
    assert body["type"] == RESOURCE_TYPE
    assert body["location"] == "local"
    assert body["sku"] == {"capacity": 2}
    assert body["properties"]["upgradePolicy"] == {
        "mode": "Manual",
        "rollingUpgradePolicy": {
            "maxBatchInstancePercent": 20,
            "maxUnhealthyInstancePercent": 20,
            "maxUnhealthyUpgradedInstancePercent": 20,
            "pauseTimeBetweenBatches": "PT0S",
            "prioritizeUnhealthyInstances": False,
            "healthTimeout": "PT5M",
        },
        "automaticOSUpgradePolicy": {
            "enableAutomaticOSUpgrade": False,
            "disableAutomaticRollback": False,
            "useRollingUpgradePolicy": False,
        },
    }
    vm = body["properties"]["virtualMachineProfile"]
    assert vm["hardwareProfile"] == {"vCPUs": 1, "memoryMB": 512}
    assert vm["storageProfile"]["dataDisks"] == []
    assert vm["osProfile"] == {"computerNamePrefix": "my-scale-set-wi", "sshPublicKeys": []}
    assert vm["networkProfile"] == {}
    assert vm["extensionProfile"] == {"extensions": []}
    # The stored form keeps only what was given.
    assert model.to_body(defaults=False) == {
        "name": "my-scale-set-with-a-long-name",
        "id": "/scaleSets/my-scale-set-with-a-long-name",
        "type": RESOURCE_TYPE,
        **minimal_body(),
    }
    # And the filled-in body is itself a valid body for the same model.
    assert parse_scale_set(model.name, body).to_body() == body


def test_durations_become_seconds() -> None:
    body = with_value(minimal_body(), f"{ROLLING}.pauseTimeBetweenBatches", "PT1M30S")
    body = with_value(body, f"{ROLLING}.healthTimeout", "PT1H")
    rolling = parse_scale_set("web", body).rolling
    assert rolling.pause_seconds == 90.0
    assert rolling.health_timeout_seconds == 3600.0


def test_null_means_not_given() -> None:
    body = with_value(minimal_body(), f"{ROLLING}.maxBatchInstancePercent", None)
    body = with_value(body, f"{VM}.osProfile.customData", None)
    body = with_value(body, "location", None)
    model = parse_scale_set("web", body)
    assert model.rolling.max_batch_instance_percent == 20
    assert model.location == "local"
    assert model.os_profile.customData is None


def test_identity_fields_may_be_sent_back() -> None:
    body = {**minimal_body(), "name": "web", "id": "/scaleSets/web", "type": RESOURCE_TYPE}
    assert parse_scale_set("web", body).name == "web"


def test_longest_name_still_makes_valid_instance_names() -> None:
    name = "a" * NAME_MAX_LENGTH
    model = parse_scale_set(name, minimal_body())
    wire.check_instance_name(f"{model.name}-999999")
    assert error_of(minimal_body(), name="a" * (NAME_MAX_LENGTH + 1)).field == "name"


def test_automatic_upgrade_accepts_application_health_extension() -> None:
    body = with_value(
        minimal_body(),
        "properties.upgradePolicy.automaticOSUpgradePolicy.enableAutomaticOSUpgrade",
        True,
    )
    body = with_value(body, f"{VM}.extensionProfile.extensions", [app_health()])
    model = parse_scale_set("web", body)
    assert model.automatic.enable
    assert model.has_health_signal
    assert model.extensions[0].type == "ApplicationHealthLinux"


def test_batch_above_unhealthy_is_fine_when_only_one_is_given() -> None:
    # Azure's rule applies only when both values are given explicitly.
    body = with_value(minimal_body(), f"{ROLLING}.maxBatchInstancePercent", 50)
    model = parse_scale_set("web", body)
    assert model.rolling.max_batch_instance_percent == 50
    assert model.rolling.max_unhealthy_instance_percent == 20
    body = with_value(minimal_body(), f"{ROLLING}.maxUnhealthyInstancePercent", 5)
    assert parse_scale_set("web", body).rolling.max_unhealthy_instance_percent == 5


def test_batch_equal_to_unhealthy_is_fine() -> None:
    body = with_value(minimal_body(), f"{ROLLING}.maxBatchInstancePercent", 40)
    body = with_value(body, f"{ROLLING}.maxUnhealthyInstancePercent", 40)
    assert parse_scale_set("web", body).rolling.max_batch_instance_percent == 40


@pytest.mark.parametrize("version", ["latest", "1", "1.0", "2016.127.20180613", "1.2.3.4"])
def test_image_versions(version: str) -> None:
    body = with_value(minimal_body(), f"{VM}.storageProfile.imageReference.version", version)
    assert parse_scale_set("web", body).image_reference.version == version


def test_extension_order_may_point_forward_and_chain() -> None:
    body = with_value(
        minimal_body(),
        f"{VM}.extensionProfile.extensions",
        [custom_script("c", ["b"]), custom_script("b", ["a"]), custom_script("a")],
    )
    assert [e.name for e in parse_scale_set("web", body).extensions] == ["c", "b", "a"]


def test_models_compare_by_value() -> None:
    assert parse_scale_set("web", full_body()) == parse_scale_set("web", full_body())
    other = with_value(full_body(), "sku.capacity", 7)
    assert parse_scale_set("web", full_body()) != parse_scale_set("web", other)


# ---- invalid bodies -------------------------------------------------------------

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


# ---- secrets ----------------------------------------------------------------------

SECRET_CASES: list[tuple[str, Any]] = [
    # Other fields invalid while the body holds secrets...
    ("sku.capacity", -1),
    ("sku.capacity", "SECRET-abc"),
    ("properties.upgradePolicy.mode", "bogus"),
    (f"{VM}.storageProfile.osDisk", {"x": 1}),
    (f"{EXTENSIONS}.0.properties.provisionAfterExtensions", ["nope"]),
    (f"{ROLLING}.maxBatchInstancePercent", 90),
    (f"{VM}.networkProfile.healthProbe", None),
    # ...and the secret fields themselves invalid.
    (f"{VM}.osProfile.customData", SECRET + "!"),
    (f"{VM}.osProfile.customData", SECRET * 10000),
    (f"{VM}.osProfile.customData", [SECRET]),
    (f"{VM}.osProfile.customData", {"value": SECRET}),
    (f"{VM}.osProfile.sshPublicKeys", [SECRET]),
    (f"{VM}.osProfile.sshPublicKeys", [f"ssh-ed25519 {SECRET}"]),
    (f"{VM}.osProfile.sshPublicKeys", [SSH_KEY + "\n" + SECRET]),
    (f"{VM}.osProfile.sshPublicKeys", SECRET),
    (f"{VM}.osProfile.sshPublicKeys", [5, SECRET]),
    (f"{EXTENSIONS}.0.properties.protectedSettings", SECRET),
    (f"{EXTENSIONS}.0.properties.protectedSettings", [SECRET]),
    (f"{EXTENSIONS}.0.properties.protectedSettings", {"commandToExecute": ""}),
    (f"{EXTENSIONS}.0.properties.protectedSettings", {"script": SECRET}),
    (
        f"{EXTENSIONS}.0.properties.protectedSettings",
        {"commandToExecute": SECRET, "script": SECRET},
    ),
    (f"{EXTENSIONS}.0.properties.protectedSettings", {"fileUris": [SECRET], "script": SECRET}),
    (f"{EXTENSIONS}.0.properties.protectedSettings", {"commandToExecute": [SECRET]}),
]


@pytest.mark.parametrize(("path", "value"), SECRET_CASES)
def test_secrets_never_appear_in_errors(path: str, value: Any) -> None:
    body = with_value(full_body(), f"{VM}.osProfile.customData", SECRET_B64)
    body = with_value(body, f"{VM}.osProfile.sshPublicKeys", [SSH_KEY + " " + SECRET])
    body = with_value(body, f"{EXTENSIONS}.0.properties.protectedSettings", {"script": SECRET_B64})
    body = with_value(body, path, value)
    err = error_of(body)
    for text in (err.message, err.reason, err.field, str(err), repr(err), repr(err.args)):
        assert SECRET not in text
        assert SECRET_B64 not in text
        assert "AAAAC3NzaC1lZDI1NTE5" not in text
    assert err.__context__ is None


def test_secrets_never_appear_in_reprs() -> None:
    body = with_value(full_body(), f"{VM}.osProfile.customData", SECRET_B64)
    body = with_value(body, f"{VM}.osProfile.sshPublicKeys", [SSH_KEY + " " + SECRET])
    model = parse_scale_set("web", body)
    vm = model.spec.properties.virtualMachineProfile
    for obj in (
        model,
        model.spec,
        vm,
        vm.osProfile,
        model.os_profile,
        vm.extensionProfile,
        model.extensions,
    ):
        assert SECRET not in repr(obj)
        assert SECRET_B64 not in repr(obj)
    assert repr(model).startswith("ScaleSetModel(name='web'")


def test_redacted_body() -> None:
    model = parse_scale_set(
        "web", with_value(full_body(), f"{VM}.osProfile.customData", SECRET_B64)
    )
    plain = model.to_body()
    redacted = model.to_body(redact=True)
    assert plain["properties"]["virtualMachineProfile"]["osProfile"]["customData"] == SECRET_B64
    assert SECRET_B64 not in repr(redacted)
    vm = redacted["properties"]["virtualMachineProfile"]
    assert vm["osProfile"]["customData"] == REDACTED
    exts = vm["extensionProfile"]["extensions"]
    assert exts[0]["properties"]["protectedSettings"] == REDACTED
    assert exts[1]["properties"]["protectedSettings"] == {}  # nothing to hide
    assert exts[0]["properties"]["settings"] == {"commandToExecute": "echo app"}
    # Redaction works on a copy: the model still holds the values.
    assert model.to_body() == plain
    # The stored (as-given) form can be redacted too.
    stored = model.to_body(defaults=False, redact=True)
    assert stored["properties"]["virtualMachineProfile"]["osProfile"]["customData"] == REDACTED


def test_redacted_body_without_secrets_is_unchanged() -> None:
    model = parse_scale_set("web", minimal_body())
    assert model.to_body(redact=True) == model.to_body()


@pytest.mark.parametrize(
    ("path", "field"),
    [
        (f"{VM}.osProfile.customData", f"{VM}.osProfile.customData"),
        (
            f"{EXTENSIONS}.0.properties.protectedSettings",
            f"{EXTENSIONS}.0.properties.protectedSettings",
        ),
    ],
)
def test_redacted_placeholder_sent_back_is_refused(path: str, field: str) -> None:
    err = error_of(with_value(full_body(), path, REDACTED))
    assert err.field == field
    assert "placeholder" in err.reason


def test_redacted_get_response_cannot_be_put_back_unchanged() -> None:
    body = parse_scale_set("web", full_body()).to_body(redact=True)
    err = error_of(body)
    assert err.field == f"{VM}.osProfile.customData"
    assert "placeholder" in err.reason


# ---- PATCH --------------------------------------------------------------------------


def test_patch_changes_only_what_it_names() -> None:
    model = parse_scale_set("web", full_body())
    patched = patch_scale_set(model, {"sku": {"capacity": 10}})
    assert patched.capacity == 10
    assert patched.to_body() == with_value(model.to_body(), "sku.capacity", 10)
    assert model.capacity == 6  # the original is untouched


def test_patch_keeps_defaults_as_defaults() -> None:
    model = parse_scale_set("web", minimal_body())
    # maxUnhealthyInstancePercent is still the default, so Azure's rule does not apply.
    patched = patch_scale_set(
        model,
        {
            "properties": {
                "upgradePolicy": {"rollingUpgradePolicy": {"maxBatchInstancePercent": 50}}
            }
        },
    )
    assert patched.rolling.max_batch_instance_percent == 50
    assert (
        "maxUnhealthyInstancePercent"
        not in (
            patched.to_body(defaults=False)["properties"]["upgradePolicy"]["rollingUpgradePolicy"]
        )
    )


def test_patch_null_removes_back_to_default() -> None:
    model = parse_scale_set("web", full_body())
    patched = patch_scale_set(
        model, {"properties": {"virtualMachineProfile": {"osProfile": {"customData": None}}}}
    )
    assert patched.os_profile.customData is None
    patched = patch_scale_set(model, {"properties": {"upgradePolicy": {"mode": None}}})
    assert patched.mode == "Manual"


def test_patch_result_is_validated() -> None:
    model = parse_scale_set("web", full_body())
    with pytest.raises(ModelError) as info:
        patch_scale_set(model, {"sku": {"capacity": 5000}})
    assert info.value.field == "sku.capacity"
    with pytest.raises(ModelError) as info:
        patch_scale_set(model, {"sku": None})
    assert info.value.field == "sku"
    with pytest.raises(ModelError) as info:
        patch_scale_set(model, {"name": "other"})
    assert info.value.field == "name"


def test_patch_must_be_an_object() -> None:
    model = parse_scale_set("web", full_body())
    with pytest.raises(ModelError) as info:
        patch_scale_set(model, [1])
    assert info.value.field == "body"


def test_scale_set_model_is_immutable() -> None:
    model = parse_scale_set("web", full_body())
    with pytest.raises(AttributeError):
        model.name = "x"  # type: ignore[misc]
    assert isinstance(model, ScaleSetModel)


def test_filled_in_defaults_count_as_given_when_put_back() -> None:
    # GET fills maxUnhealthyInstancePercent in; PUT back, it is given explicitly,
    # so Azure's both-given rule applies. PATCH does not have this problem.
    model = parse_scale_set(
        "web", with_value(minimal_body(), f"{ROLLING}.maxBatchInstancePercent", 50)
    )
    err = error_of(model.to_body())
    assert err.field == f"{ROLLING}.maxBatchInstancePercent"
    assert patch_scale_set(model, {"sku": {"capacity": 3}}).capacity == 3


def test_accessors_return_copies() -> None:
    body = with_value(
        full_body(),
        f"{EXTENSIONS}.1.properties.settings",
        {"commandToExecute": "x", "env": {"A": "1"}},
    )
    model = parse_scale_set("web", body)
    ext = model.extensions[1]
    ext.settings["env"]["A"] = "changed"
    ext.provisionAfterExtensions.append("app")
    assert model.extensions[1].settings == {"commandToExecute": "x", "env": {"A": "1"}}
    assert model.extensions[1].provisionAfterExtensions == []
    model.to_body()["sku"]["capacity"] = 99
    assert model.capacity == 6
