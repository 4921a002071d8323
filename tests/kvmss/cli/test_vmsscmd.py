"""``kvmss vmss``: models from files and --set, show, list, delete, instances
(against the stand-in controller of tests.kvmss.cli.fakecontroller)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.scalesets import image_reference
from kvmss.cli.vmsscmd import merge_patch_from_sets
from tests.kvmss.cli.fakecontroller import FakeController, Reply, rows, run

SCALE_SET = {
    "name": "web",
    "location": "local",
    "sku": {"name": "kvm", "capacity": 4},
    "properties": {
        "upgradePolicy": {
            "mode": "Rolling",
            "automaticOSUpgradePolicy": {"enableAutomaticOSUpgrade": True},
        },
        "virtualMachineProfile": {
            "storageProfile": {"imageReference": image_reference("kvmss", "tiny", "1")}
        },
        "provisioningState": "Succeeded",
    },
}


def test_vmss_create_puts_the_model_file(api: FakeController, tmp_path: Path) -> None:
    model = tmp_path / "model.json"
    model.write_text(json.dumps(SCALE_SET))
    api.on("PUT", "/v1/scaleSets/web", Reply(201, SCALE_SET))
    r = run(api, "vmss", "create", "web", "--file", str(model))
    assert r.exit_code == 0, r.output
    req = api.only()
    assert req.json() == SCALE_SET
    assert req.headers["content-type"] == "application/json"
    assert rows(r.stdout)[2] == ["web", "4", "kvmss:tiny:1:latest", "Rolling", "yes", "Succeeded"]


def test_vmss_create_rejects_a_file_that_is_not_json(api: FakeController, tmp_path: Path) -> None:
    model = tmp_path / "model.json"
    model.write_text('{"sku": ')
    r = run(api, "vmss", "create", "web", "--file", str(model))
    assert r.exit_code == 2
    assert "not JSON" in r.output and "line 1" in r.output
    assert api.requests == []


def test_vmss_update_sends_a_merge_patch(api: FakeController) -> None:
    api.on("PATCH", "/v1/scaleSets/web", Reply(200, SCALE_SET))
    r = run(
        api, "vmss", "update", "web",
        "--set", "properties.upgradePolicy.mode=Rolling",
        "--set", "sku.capacity=6",
        "--set", "properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent=25",
        "--set", "tags=null",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    req = api.only()
    assert req.headers["content-type"] == "application/merge-patch+json"
    assert req.json() == {
        "properties": {
            "upgradePolicy": {
                "mode": "Rolling",
                "rollingUpgradePolicy": {"maxBatchInstancePercent": 25},
            }
        },
        "sku": {"capacity": 6},
        "tags": None,
    }


def test_set_values_are_json_when_they_parse_else_text() -> None:
    assert merge_patch_from_sets(["a.b=1"]) == {"a": {"b": 1}}
    assert merge_patch_from_sets(["x=null"]) == {"x": None}
    assert merge_patch_from_sets(["y=text"]) == {"y": "text"}
    assert merge_patch_from_sets(["y=true", "z=1.5", "w=[1,2]"]) == {
        "y": True,
        "z": 1.5,
        "w": [1, 2],
    }
    assert merge_patch_from_sets(['o={"k": "v"}', "o.n=2"]) == {"o": {"k": "v", "n": 2}}
    assert merge_patch_from_sets(['s="42"', "t=01", "u=", "v=NaN", "e=a=b"]) == {
        "s": "42",
        "t": "01",
        "u": "",
        "v": "NaN",
        "e": "a=b",
    }


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["novalue"], "novalue: expected path=value"),
        (["a..b=1"], "a..b: the path has an empty name"),
        (["=1"], "(empty): the path has an empty name"),
        (["a=1", "a.b=2"], "a.b: a is already set to a value"),
        (["a.b=1", "a.b=2"], "a.b: set more than once"),
    ],
)
def test_bad_set_is_a_usage_error(api: FakeController, sets: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        merge_patch_from_sets(sets)
    args = [a for s in sets for a in ("--set", s)]
    r = run(api, "vmss", "update", "web", *args)
    assert r.exit_code == 2
    assert message in r.output
    assert api.requests == []


def test_set_errors_never_show_the_value(api: FakeController) -> None:
    r = run(
        api, "vmss", "update", "web",
        "--set", "properties.virtualMachineProfile.osProfile.customData=c2VjcmV0LXZhbHVl",
        "--set", "properties.virtualMachineProfile.osProfile.customData=c2VjcmV0LXZhbHVl",
    )  # fmt: skip
    assert r.exit_code == 2
    assert "set more than once" in r.output
    assert "c2VjcmV0LXZhbHVl" not in r.output


def test_vmss_show_list_delete(api: FakeController) -> None:
    api.on("GET", "/v1/scaleSets/web", Reply(200, SCALE_SET))
    api.on("GET", "/v1/scaleSets", Reply(200, {"value": [SCALE_SET, {"name": "db"}]}))
    api.on("DELETE", "/v1/scaleSets/web", Reply(202))
    api.on("GET", "/v1/scaleSets/a%20b", Reply(200, {"name": "a b"}))

    r = run(api, "vmss", "show", "web")
    assert r.exit_code == 0
    assert ["properties.upgradePolicy.mode", "Rolling"] in rows(r.stdout)
    assert ["sku.capacity", "4"] in rows(r.stdout)

    r = run(api, "vmss", "list")
    assert rows(r.stdout)[2:] == [
        ["web", "4", "kvmss:tiny:1:latest", "Rolling", "yes", "Succeeded"],
        ["db", "-", "-", "-", "no", "-"],
    ]
    r = run(api, "vmss", "delete", "web")
    assert r.exit_code == 0 and r.stdout == ""
    assert (api.requests[-1].method, api.requests[-1].path) == ("DELETE", "/v1/scaleSets/web")

    r = run(api, "vmss", "show", "a b")  # a name never adds a path level
    assert r.exit_code == 0
    assert api.requests[-1].path == "/v1/scaleSets/a%20b"


def test_vmss_list_instances_table(api: FakeController) -> None:
    views = [
        {
            "instanceId": "0",
            "name": "web-0",
            "host": "host1",
            "updateDomain": 0,
            "faultDomain": 0,
            "imageVersion": "2.0.0",
            "powerState": "Running",
            "health": "Healthy",
            "healthReasons": [],
            "extensions": [{"name": "app", "status": "Succeeded", "exitCode": 0}],
        },
        {
            "instanceId": "1",
            "name": "web-1",
            "host": "host2",
            "updateDomain": 1,
            "faultDomain": 1,
            "imageVersion": None,
            "powerState": "Stopped",
            "health": "Unhealthy",
            "healthReasons": ["not running"],
            "extensions": [],
        },
    ]
    api.on("GET", "/v1/scaleSets/web/virtualMachines", Reply(200, {"value": views}))
    r = run(api, "vmss", "list-instances", "web")
    assert r.exit_code == 0
    assert rows(r.stdout) == [
        ["INSTANCE", "HOST", "UD", "FD", "VERSION", "POWER", "HEALTH"],
        ["--------", "-----", "--", "--", "-------", "-------", "-" * 23],
        ["0", "host1", "0", "0", "2.0.0", "Running", "Healthy"],
        ["1", "host2", "1", "1", "-", "Stopped", "Unhealthy (not running)"],
    ]
