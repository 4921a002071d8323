"""Long operations: the bodies that start or cancel one and the operation an
agent answers with, docs/design.md "The agent contract".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, field_validator

from hostagent.contract import names
from hostagent.contract.instancespec import ImageSpec, WireModel

OperationKind = Literal["create", "reimage", "rollback", "commit", "start", "stop", "delete"]
OperationStatus = Literal["InProgress", "Succeeded", "Failed"]


class OperationRequest(WireModel):
    """Body of start/stop/rollback/commit; all fields optional."""

    operationId: str | None = None

    @field_validator("operationId")
    @classmethod
    def _opid(cls, v: str | None) -> str | None:
        return names.check_operation_id(v)


class ReimageRequest(OperationRequest):
    image: ImageSpec


class CancelRequest(WireModel):
    """Body of POST /v1/operations/{id}/cancel: the operation the id would
    be if a request with it arrived (it may still be on its way)."""

    kind: OperationKind
    instance: str

    @field_validator("instance")
    @classmethod
    def _instance(cls, v: str) -> str:
        return names.check_instance_name(v)


class ErrorInfo(BaseModel):
    code: str
    message: str


class Operation(BaseModel):
    id: str
    kind: str
    instance: str
    status: OperationStatus
    startTime: str
    endTime: str | None = None
    error: ErrorInfo | None = None
