"""controller.model.scaleset: secrets (customData, SSH keys, protected settings) never
shown in errors or reprs, redacted in bodies, and the placeholder refused."""

from __future__ import annotations

from typing import Any

import pytest

from controller.model.fields import REDACTED
from controller.model.scaleset import (
    parse_scale_set,
)
from tests.controller.model.test_valid import (
    EXTENSIONS,
    ROLLING,
    SECRET,
    SECRET_B64,
    SSH_KEY,
    VM,
    error_of,
    full_body,
    minimal_body,
    with_value,
)

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
