"""The bodies the controller's API answers with, as pydantic models, so that
/openapi.json documents every answer (docs/design.md: Azure's field names
where Azure has the field), and :func:`send`, how a handler answers.

Handlers send what the controller built (dicts, views shared between
requests) as it is, serialized as FastAPI would, without validating it: a
listing of a thousand instance views is on the load benchmark's hot path,
and validating one costs several times what serializing it does; the tests
check the answers against the models instead. A body this package builds
itself is one of these models, validated when it is made.
The scale set body and the upgrade status have modules of their own
(:mod:`controller.api.scalesetbody`, :mod:`controller.api.upgradestatus`).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.json_schema import SkipJsonSchema

from hostagent.contract.views import ExtensionState, HealthState, HostCapacity

# A field left out of the body when it has no value (never sent as null).
Absent = SkipJsonSchema[None]

_JSON: TypeAdapter[Any] = TypeAdapter(Any)


class Body(BaseModel):
    """A response body: exactly these fields (the schema says so too)."""

    model_config = ConfigDict(extra="forbid")


def send(body: BaseModel | dict[str, Any], status_code: int = 200) -> Response:
    """``body`` as the JSON FastAPI would send for it (compact, UTF-8)."""
    return Response(_JSON.dump_json(body), status_code=status_code, media_type="application/json")


# -- errors (docs/design.md "Errors") --------------------------------------------


class ErrorDetail(Body):
    code: str = Field(examples=["NotFound"])
    message: str = Field(description="one line, naming the field at fault and the reason")


class ErrorResponse(Body):
    """Every error, whatever its status; a 5xx is a bug."""

    error: ErrorDetail


_ERROR_REASONS = {
    400: "Bad input: the message names the field and the reason",
    401: "No bearer token, or not this controller's",
    404: "What the path names does not exist",
    409: "Refused in the current state (try again, or cancel what runs)",
    413: "The upload is larger than 64 GiB",
    422: "The upload's sha256 is not the one given",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error answers a route gives, for its OpenAPI document; ``default``
    (any other status, same shape) also keeps FastAPI from documenting a 422
    of its own, which this API never sends (bad input is a 400)."""
    out: dict[int | str, dict[str, Any]] = {
        s: {"model": ErrorResponse, "description": _ERROR_REASONS[s]} for s in statuses
    }
    out["default"] = {"model": ErrorResponse, "description": "Any other error, in the same shape"}
    return out


# -- small bodies ------------------------------------------------------------------


class Health(Body):
    status: Literal["ok"]


class ImageReference(Body):
    publisher: str
    offer: str
    sku: str
    version: str = Field(description="a dotted version, or 'latest' in a scale set model")


# -- images ---------------------------------------------------------------------------


class ImageManifest(Body):
    """One published version (Catalog.manifest); never the blob's local path."""

    publisher: str
    offer: str
    sku: str
    version: str
    sha256: str
    sizeBytes: int
    virtualSizeBytes: int
    publishedAt: str
    kernelSha256: str | Absent = None
    initrdSha256: str | Absent = None
    cmdline: str | Absent = None


class ImageManifestList(Body):
    value: list[ImageManifest] = Field(description="newest first")


class ImageSku(Body):
    publisher: str
    offer: str
    sku: str
    versions: list[str] = Field(description="newest first")
    latest: str


class ImageSkuList(Body):
    value: list[ImageSku]


# -- hosts ----------------------------------------------------------------------------


class HostInfo(Body):
    """A registered host as its agent describes itself now; when the agent
    does not answer, ``reachable`` is false and ``error`` says why."""

    name: str
    url: str
    reachable: bool
    hypervisor: Literal["kvm", "qemu", "test"] | Absent = None
    capacity: HostCapacity | Absent = None
    instanceCount: int | Absent = None
    libvirtVersion: str | Absent = None
    error: str | Absent = Field(default=None, description="the agent client's error code")


class HostList(Body):
    value: list[HostInfo]


# -- instances ----------------------------------------------------------------------


class InstanceExtension(Body):
    name: str
    status: ExtensionState
    exitCode: int | None


class InstanceView(Body):
    """An instance as the store has it and its agent last reported it; when
    the agent could not say, powerState is "unknown" and healthReasons why."""

    instanceId: str
    name: str
    host: str
    updateDomain: int
    faultDomain: int
    imageVersion: str | None = Field(description="null while unknown")
    provisioningState: str
    powerState: str
    health: HealthState
    healthReasons: list[str]
    extensions: list[InstanceExtension]
    address: str | Absent = None


class InstanceViewList(Body):
    value: list[InstanceView] = Field(description="by instance id")


# -- what an action started -----------------------------------------------------------


class ReimageAccepted(Body):
    status: Literal["Accepted"]
