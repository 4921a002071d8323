"""controller.fleet.specs: the scale set model as a host agent's InstanceSpec."""

from __future__ import annotations

import pytest

from controller.fleet.specs import SpecError, instance_spec
from controller.model.scaleset import parse_scale_set
from hostagent.contract import instancespec
from tests.controller.model.test_valid import (
    SECRET,
    SECRET_B64,
    SSH_KEY,
    VM,
    full_body,
    minimal_body,
    with_value,
)

SHA = "ab" * 32


def image(version: str = "3") -> instancespec.ImageSpec:
    return instancespec.ImageSpec(
        url=f"http://controller:8080/v1/images/kvmss/tiny/1/{version}/blob",
        sha256=SHA,
        reference=instancespec.ImageReference(
            publisher="kvmss", offer="tiny", sku="1", version=version
        ),
    )


def test_full_model_becomes_the_wire_spec() -> None:
    model = parse_scale_set("web", full_body())
    spec = instance_spec(model, "web-7", image(), "web000007", operation_id="op-1")
    assert spec == instancespec.InstanceSpec(
        image=image(),
        vcpus=1,
        memoryMB=256,
        dataDisks=[instancespec.DataDisk(lun=0, diskSizeGB=1)],
        osProfile=instancespec.OsProfile(
            computerName="web000007",
            adminUsername="azureuser",
            sshPublicKeys=[SSH_KEY],
            customData=full_body()["properties"]["virtualMachineProfile"]["osProfile"][
                "customData"
            ],
        ),
        extensions=[
            instancespec.Extension(
                name="app",
                type="CustomScript",
                settings={"commandToExecute": "echo app"},
                protectedSettings={"script": SECRET_B64},
                provisionAfterExtensions=["base"],
            ),
            instancespec.Extension(
                name="base",
                type="CustomScript",
                settings={"commandToExecute": "echo base"},
            ),
        ],
        healthProbe=instancespec.HealthProbe(
            protocol="Http", port=8080, requestPath="/health", intervalInSeconds=5, numberOfProbes=2
        ),
        operationId="op-1",
    )
    # What the controller sends is what the agent parses back.
    assert instancespec.InstanceSpec.model_validate(spec.model_dump(mode="json")) == spec


def test_minimal_model_uses_defaults() -> None:
    model = parse_scale_set("web", minimal_body())
    spec = instance_spec(model, "web-0", image("1.0"), "web000000")
    assert spec.vcpus == 1
    assert spec.memoryMB == 512
    assert spec.dataDisks == []
    assert spec.extensions == []
    assert spec.healthProbe is None
    assert spec.operationId is None
    assert spec.osProfile == instancespec.OsProfile(computerName="web000000")
    assert spec.image.reference.version == "1.0"


def test_image_is_the_callers_choice() -> None:
    # A pinned model may still put an instance on another (e.g. previous) image.
    body = with_value(minimal_body(), f"{VM}.storageProfile.imageReference.version", "5")
    spec = instance_spec(parse_scale_set("web", body), "web-1", image("4"), "web000001")
    assert spec.image.reference.version == "4"


@pytest.mark.parametrize("name", ["other-1", "web", "webx-1", "web1"])
def test_instance_must_belong_to_the_scale_set(name: str) -> None:
    with pytest.raises(SpecError, match="does not belong to scale set 'web'"):
        instance_spec(parse_scale_set("web", minimal_body()), name, image(), "web000001")


def test_instance_name_must_be_a_domain_name() -> None:
    with pytest.raises(ValueError, match="instance name"):
        instance_spec(parse_scale_set("web", minimal_body()), "web_1", image(), "web000001")


@pytest.mark.parametrize("computer_name", ["", "web_1", "-web", "x" * 64])
def test_bad_computer_name_names_the_field_but_not_secrets(computer_name: str) -> None:
    body = with_value(full_body(), f"{VM}.osProfile.customData", SECRET_B64)
    model = parse_scale_set("web", body)
    with pytest.raises(SpecError) as info:
        instance_spec(model, "web-1", image(), computer_name)
    err = info.value
    assert str(err).startswith("osProfile.computerName: ")
    for text in (str(err), repr(err)):
        assert SECRET not in text
        assert SECRET_B64 not in text
    assert err.__context__ is None


def test_bad_operation_id() -> None:
    with pytest.raises(SpecError, match=r"^operationId: "):
        instance_spec(
            parse_scale_set("web", minimal_body()), "web-1", image(), "web1", operation_id="a b"
        )


def test_spec_repr_hides_custom_data_and_protected_settings() -> None:
    body = with_value(full_body(), f"{VM}.osProfile.customData", SECRET_B64)
    spec = instance_spec(parse_scale_set("web", body), "web-1", image(), "web000001")
    assert SECRET_B64 not in repr(spec)
