"""Every call the controller and the lab make of a host agent, declared once,
in the manner of Ganeti's ``lib/rpc_defs.py``: its name, HTTP method, path,
request and response model, success status and timeout class.

The agent registers its routes from this table (:mod:`hostagent.daemon.api`),
:class:`~hostagent.contract.client.AgentClient` sends only what it declares,
and tests hold the controller's agent port and the test and bench doubles to
it, docs/design.md "The agent contract".
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel

from hostagent.contract.instancespec import InstanceSpec
from hostagent.contract.operations import (
    CancelRequest,
    Operation,
    OperationRequest,
    ReimageRequest,
)
from hostagent.contract.views import HostView, InstanceList, InstanceView


@dataclass(frozen=True)
class TimeoutClass:
    """How long a caller waits for an agent's answer, by what the agent does
    before it answers (Ganeti's TMO_* classes)."""

    name: str
    seconds: float


# A view built from libvirt and the agent's memory.
TMO_READ = TimeoutClass("read", 15.0)
# Checks, then the image fetched and verified if the host lacks it, then the
# operation recorded: the longest an agent works before answering.
TMO_START = TimeoutClass("start", 30.0)
# An operation looked up or cancelled: a table lookup, asked again and again.
TMO_POLL = TimeoutClass("poll", 10.0)

Method = Literal["GET", "PUT", "POST", "DELETE"]
R = TypeVar("R", bound=BaseModel)


@dataclass(frozen=True)
class Call(Generic[R]):
    """One call: ``path`` is a template whose ``{fields}`` are path parameters;
    ``query`` names the query parameters it takes."""

    name: str
    method: Method
    path: str
    request: type[BaseModel] | None
    response: type[R]
    status: int
    timeout: TimeoutClass
    query: tuple[str, ...] = ()
    _pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = "".join(
            re.escape(text) + (f"(?P<{name}>[^/]+)" if name else "")
            for text, name, _spec, _conv in string.Formatter().parse(self.path)
        )
        object.__setattr__(self, "_pattern", re.compile(regex))

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(self._pattern.groupindex)

    def url_path(self, **params: str) -> str:
        """The path with its parameters filled in (exactly those of the template)."""
        if set(params) != set(self.path_params):
            raise ValueError(f"{self.name} takes path parameters {self.path_params}")
        return self.path.format(**params)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters if ``method path`` is this call, else None."""
        found = self._pattern.fullmatch(path) if method == self.method else None
        return None if found is None else found.groupdict()


# name, method, path, request, response, success status, timeout class
HOST = Call("host", "GET", "/v1/host", None, HostView, 200, TMO_READ)
INSTANCES = Call("instances", "GET", "/v1/instances", None, InstanceList, 200, TMO_READ)
INSTANCE = Call("instance", "GET", "/v1/instances/{name}", None, InstanceView, 200, TMO_READ)
PUT_INSTANCE = Call(
    "put_instance", "PUT", "/v1/instances/{name}", InstanceSpec, Operation, 202, TMO_START
)
REIMAGE = Call(
    "reimage", "POST", "/v1/instances/{name}/reimage", ReimageRequest, Operation, 202, TMO_START
)
ROLLBACK = Call(
    "rollback", "POST", "/v1/instances/{name}/rollback", OperationRequest, Operation, 202, TMO_START
)
COMMIT = Call(
    "commit", "POST", "/v1/instances/{name}/commit", OperationRequest, Operation, 202, TMO_START
)
START = Call(
    "start", "POST", "/v1/instances/{name}/start", OperationRequest, Operation, 202, TMO_START
)
STOP = Call(
    "stop", "POST", "/v1/instances/{name}/stop", OperationRequest, Operation, 202, TMO_START
)
DELETE = Call(
    "delete",
    "DELETE",
    "/v1/instances/{name}",
    None,
    Operation,
    202,
    TMO_START,
    query=("deleteDataDisks", "operationId"),
)
OPERATION = Call("operation", "GET", "/v1/operations/{op_id}", None, Operation, 200, TMO_POLL)
CANCEL = Call(
    "cancel", "POST", "/v1/operations/{op_id}/cancel", CancelRequest, Operation, 200, TMO_POLL
)

CALLS: tuple[Call[Any], ...] = (
    HOST,
    INSTANCES,
    INSTANCE,
    PUT_INSTANCE,
    REIMAGE,
    ROLLBACK,
    COMMIT,
    START,
    STOP,
    DELETE,
    OPERATION,
    CANCEL,
)
BY_NAME: dict[str, Call[Any]] = {c.name: c for c in CALLS}


def route(method: str, path: str) -> tuple[Call[Any], dict[str, str]] | None:
    """The call ``method path`` is, and its path parameters; None if none is."""
    for call in CALLS:
        params = call.match(method, path)
        if params is not None:
            return call, params
    return None
