"""The scale set body the API documents has the fields of the model it is
made from (controller.model.body), part by part, so that a field added to
the model cannot go undocumented."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from controller.api.scalesetbody import VirtualMachineScaleSet
from controller.model.body import IDENTITY_FIELDS, ScaleSetBody

Schema = dict[str, Any]


def _part(prop: Schema, defs: dict[str, Schema]) -> Schema | None:
    """The object a property's schema holds (itself, in an array, optional)."""
    if "$ref" in prop:
        return defs[prop["$ref"].rsplit("/", 1)[1]]
    for inner in [*([prop["items"]] if "items" in prop else []), *prop.get("anyOf", [])]:
        found = _part(inner, defs)
        if found is not None:
            return found
    return None


def _walk(shown: Schema, given: Schema, defs: tuple[dict[str, Schema], ...], at: str) -> list[str]:
    a, b = shown.get("properties", {}), given.get("properties", {})
    out = [f"{at}{n}: not in the model" for n in sorted(set(a) - set(b))]
    out += [f"{at}{n}: not documented" for n in sorted(set(b) - set(a))]
    for name in sorted(set(a) & set(b)):
        pa, pb = _part(a[name], defs[0]), _part(b[name], defs[1])
        if (pa is None) != (pb is None):
            out.append(f"{at}{name}: an object on one side only")
        elif pa is not None and pb is not None:
            out += _walk(pa, pb, defs, f"{at}{name}.")
    return out


def differences(shown: type[BaseModel], given: type[BaseModel]) -> list[str]:
    """Where the fields of the answer ``shown`` and the body ``given`` differ
    (the answer also has the read-only identity fields)."""
    a = shown.model_json_schema(mode="serialization")
    b = given.model_json_schema()
    b["properties"] = {**{k: {"type": "string"} for k in IDENTITY_FIELDS}, **b["properties"]}
    return _walk(a, b, (a.get("$defs", {}), b.get("$defs", {})), "")


def test_the_documented_body_has_the_fields_of_the_model() -> None:
    assert differences(VirtualMachineScaleSet, ScaleSetBody) == []


def test_a_field_the_documented_body_lacks_is_found() -> None:
    class Probe(BaseModel):
        protocol: str

    class Network(BaseModel):
        healthProbe: Probe | None = None

    class Profile(BaseModel):
        networkProfile: Network
        extra: int

    class Props(BaseModel):
        virtualMachineProfile: Profile

    class Short(BaseModel):
        name: str
        id: str
        type: str
        location: str
        tags: dict[str, str]
        sku: int
        properties: Props

    got = differences(Short, ScaleSetBody)
    assert "sku: an object on one side only" in got
    assert "properties.upgradePolicy: not documented" in got
    assert "properties.virtualMachineProfile.extra: not in the model" in got
    assert "properties.virtualMachineProfile.networkProfile.healthProbe.port: not documented" in got
