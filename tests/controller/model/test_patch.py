"""controller.model.scaleset: PATCH (JSON merge patch) of a scale set model, and the
model's immutability."""

from __future__ import annotations

import pytest

from controller.model.errors import ModelError
from controller.model.scaleset import (
    ScaleSetModel,
    parse_scale_set,
    patch_scale_set,
)
from tests.controller.model.test_valid import (
    EXTENSIONS,
    ROLLING,
    error_of,
    full_body,
    minimal_body,
    with_value,
)


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
