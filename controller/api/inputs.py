"""What the API reads from request bodies: the models FastAPI validates, and
the scale set body read by hand (the model layer validates it, naming the
field at fault: docs/design.md "Errors")."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hostagent.contract import limits
from kvmss.base.httperrors import ApiError


class HostIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    token: Annotated[str, Field(min_length=16, max_length=4096, repr=False)]

    @field_validator("token")
    @classmethod
    def _token(cls, v: str) -> str:
        # it travels in an HTTP header: printable ASCII only
        if not v.isascii() or not v.isprintable() or " " in v:
            raise ValueError("must be printable ASCII without spaces")
        return v


class InstanceIds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instanceIds: Annotated[
        list[Annotated[str, Field(pattern=r"^[0-9]{1,18}$")]], Field(min_length=1, max_length=1000)
    ]


class ManualUpgradeIn(BaseModel):
    """manualUpgrade: instance ids, update domains, or both (at least one)."""

    model_config = ConfigDict(extra="forbid")
    instanceIds: Annotated[
        list[Annotated[str, Field(pattern=r"^[0-9]{1,18}$")]], Field(max_length=1000)
    ] = []
    updateDomains: Annotated[list[Annotated[int, Field(ge=0, le=19)]], Field(max_length=20)] = []


async def read_json(request: Request) -> Any:
    """The body as JSON, or a 400: not JSON, or nested too deep to be a model."""
    raw = await request.body()
    too_deep = f"the request body nests deeper than {limits.MAX_JSON_DEPTH} levels"
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "InvalidJson", too_deep) from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "InvalidJson", "the request body is not valid JSON") from None
    if limits.json_depth(body) > limits.MAX_JSON_DEPTH:
        raise ApiError(400, "InvalidJson", too_deep)
    return body
