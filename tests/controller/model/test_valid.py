"""controller.model.scaleset: parsing, validating and rendering scale set bodies."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from bench import scalesets
from controller.model.errors import ModelError
from controller.model.scaleset import (
    NAME_MAX_LENGTH,
    RESOURCE_TYPE,
    AutomaticPolicy,
    parse_scale_set,
)
from controller.model.upgradepolicy import RollingPolicy
from hostagent.contract import instancespec, names

SECRET = "SECRET-abc"
SECRET_B64 = base64.b64encode(f"#!/bin/sh\necho {SECRET}\n".encode()).decode()
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHkSomeKeyMaterialHere me@example"

VM = "properties.virtualMachineProfile"
ROLLING = "properties.upgradePolicy.rollingUpgradePolicy"
EXTENSIONS = f"{VM}.extensionProfile.extensions"


def full_body() -> dict[str, Any]:
    """Every field of the model, set explicitly (the brief's example): the
    shared builder's body with the fields it leaves out added."""
    body = scalesets.scale_set_body(
        6,
        ("kvmss", "tiny", "1"),
        prefix="web",
        memory_mb=256,
        data_disks=1,
        health_timeout="PT5M",
        probe=scalesets.http_probe(interval=5, probes=2),
        extensions=[
            scalesets.custom_script("app", "echo app", after=["base"]),
            scalesets.custom_script("base", "echo base"),
        ],
    )
    body = {"location": "local", "tags": {"team": "web"}, **body}
    body["sku"]["tier"] = "Standard"
    policy = body["properties"]["upgradePolicy"]
    policy["rollingUpgradePolicy"]["prioritizeUnhealthyInstances"] = False
    policy["automaticOSUpgradePolicy"].update(
        disableAutomaticRollback=False, useRollingUpgradePolicy=True
    )
    vm = body["properties"]["virtualMachineProfile"]
    vm["storageProfile"]["dataDisks"][0]["createOption"] = "Empty"
    vm["osProfile"].update(
        adminUsername="azureuser",
        sshPublicKeys=[SSH_KEY],
        customData=base64.b64encode(SECRET.encode()).decode(),
    )
    app, base = (e["properties"] for e in vm["extensionProfile"]["extensions"])
    app.update(
        publisher="Microsoft.Azure.Extensions",
        typeHandlerVersion="2.1",
        autoUpgradeMinorVersion=True,
        protectedSettings={"script": SECRET_B64},
    )
    base.update(protectedSettings={}, provisionAfterExtensions=[])
    return body


def minimal_body() -> dict[str, Any]:
    return {
        "sku": {"capacity": 2},
        "properties": {
            "virtualMachineProfile": {
                "storageProfile": {
                    "imageReference": scalesets.image_reference("kvmss", "tiny", "1")
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
        health_timeout_seconds=300.0,
        prioritize_unhealthy=False,
        automatic_rollback=True,
    )
    assert model.automatic == AutomaticPolicy(
        enable=True, disable_rollback=False, use_rolling_upgrade_policy=True
    )
    assert model.image_reference == instancespec.ImageReference(
        publisher="kvmss", offer="tiny", sku="1", version="latest"
    )
    assert model.data_disks == [instancespec.DataDisk(lun=0, diskSizeGB=1)]
    assert model.health_probe == instancespec.HealthProbe(
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
    assert model.rolling == RollingPolicy(20, 20, 20, 0.0, 300.0, False, True)
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
    names.check_instance_name(f"{model.name}-999999")
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
