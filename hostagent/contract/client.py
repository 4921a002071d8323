"""The controller's client for a host agent (the only way the controller talks
to agents). Every request is a call of :mod:`hostagent.contract.calls`, sent
with that call's timeout class; errors come back as :class:`AgentError` with
the agent's code.

It speaks HTTP through urllib3 directly, not requests: the controller makes
hundreds of these calls a second while upgrades run, each under the GIL that
its API requests need too, and requests' session machinery (hooks, cookies,
adapters, re-encoding) doubled their CPU."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

import urllib3
from pydantic import BaseModel, ValidationError
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ReadTimeoutError,
)

from hostagent.contract import calls, instancespec, operations, views
from hostagent.contract.calls import Call
from kvmss.base.clock import Clock, SystemClock
from kvmss.base.waiting import wait_for


class AgentError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message


class AgentUnreachable(AgentError):
    def __init__(self, url: str, reason: str) -> None:
        super().__init__(0, "AgentUnreachable", f"{url}: {reason}")


M = TypeVar("M", bound=BaseModel)

# Connections kept per agent: one per concurrent caller (the view watcher,
# every running upgrade, API requests asking one instance).
POOL_SIZE = 16


def _unreachable_reason(e: HTTPError) -> str:
    """A short word for why the agent did not answer (never the URL's query)."""
    for err in (e, getattr(e, "reason", None)):  # (what a pool error wraps)
        # (urllib3's NewConnectionError, a refused connection, is a ConnectTimeoutError)
        if isinstance(err, NewConnectionError):
            return "ConnectionError"
        if isinstance(err, ConnectTimeoutError):
            return "ConnectTimeout"
        if isinstance(err, ReadTimeoutError):
            return "ReadTimeout"
    return "ConnectionError"


def _parse(model: type[M], data: Any) -> M:
    """``data`` as a ``model``, or an AgentError: what answered is no agent."""
    try:
        return model.model_validate(data)
    except ValidationError:
        raise AgentError(0, "InvalidResponse", f"the answer is not a {model.__name__}") from None


def _checked(call: Call[Any], body: BaseModel | None, query: Mapping[str, str]) -> None:
    """Refuse what the table does not declare, before anything is sent."""
    if calls.BY_NAME.get(call.name) is not call:
        raise ValueError(f"{call.name!r} is not a call of hostagent.contract.calls")
    if type(body) is not (type(None) if call.request is None else call.request):
        wanted = "no body" if call.request is None else call.request.__name__
        raise TypeError(f"call {call.name} takes {wanted}, not {type(body).__name__}")
    if not set(query) <= set(call.query):
        raise ValueError(f"call {call.name} takes query parameters {call.query}")


class AgentClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float | None = None,
        clock: Clock | None = None,
    ) -> None:
        """``timeout``: seconds every call waits, whatever its class (a caller
        with its own deadline); None waits each call's timeout class."""
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout
        self._pool = urllib3.PoolManager(maxsize=POOL_SIZE, retries=False)
        self.clock = clock or SystemClock()

    def __repr__(self) -> str:  # never show the token
        return f"AgentClient({self.base_url!r})"

    def send(
        self,
        call: Call[M],
        *,
        body: BaseModel | None = None,
        query: Mapping[str, str] | None = None,
        **path: str,
    ) -> M:
        """Make ``call`` (path parameters by name) and parse its answer."""
        return _parse(call.response, self._request(call, path, body, query or {}))

    def _request(
        self,
        call: Call[Any],
        path: Mapping[str, str],
        body: BaseModel | None,
        query: Mapping[str, str],
    ) -> Any:
        """The JSON ``call`` answers (None for an empty answer)."""
        _checked(call, body, query)
        url = self.base_url + call.url_path(**path)
        if query:
            url += "?" + urlencode(query)
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = jsonlib.dumps(body.model_dump(mode="json", exclude_none=True)).encode()
            headers["Content-Type"] = "application/json"
        seconds = call.timeout.seconds if self.timeout is None else self.timeout
        try:
            r = self._pool.request(
                call.method,
                url,
                body=data,
                headers=headers,
                timeout=urllib3.Timeout(connect=seconds, read=seconds),
                redirect=False,
            )
        except HTTPError as e:
            raise AgentUnreachable(self.base_url, _unreachable_reason(e)) from None
        return self._answer(r)

    def _answer(self, r: urllib3.BaseHTTPResponse) -> Any:
        if r.status >= 400:
            try:
                err = jsonlib.loads(r.data)["error"]
                raise AgentError(r.status, str(err["code"]), str(err["message"]))
            except (ValueError, KeyError, TypeError):
                text = r.data.decode("utf-8", "replace")[:200]
                raise AgentError(r.status, "HttpError", text) from None
        if r.status == 204 or not r.data:
            return None
        try:
            return jsonlib.loads(r.data)
        except ValueError:
            raise AgentError(0, "InvalidResponse", f"{self.base_url}: answered no JSON") from None

    # -- reads -------------------------------------------------------------------

    def host(self) -> views.HostView:
        return self.send(calls.HOST)

    def instances(self) -> list[views.InstanceView]:
        """Every instance of the host. Validated one view at a time: a host's
        hundreds of views in one call held the GIL for tens of milliseconds,
        and every other thread of the caller (a controller's API) waited."""
        data = self._request(calls.INSTANCES, {}, None, {})
        items = data.get("value") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise AgentError(0, "InvalidResponse", "the answer is not a InstanceList")
        return [_parse(views.InstanceView, item) for item in items]

    def instance(self, name: str) -> views.InstanceView | None:
        """The instance's view; None when it is not on this host (a 404)."""
        try:
            return self.send(calls.INSTANCE, name=name)
        except AgentError as e:
            if e.status == 404:
                return None
            raise

    def operation(self, op_id: str) -> operations.Operation:
        return self.send(calls.OPERATION, op_id=op_id)

    def cancel(
        self, op_id: str, kind: operations.OperationKind, instance: str
    ) -> operations.Operation:
        """Operation ``op_id`` (a ``kind`` of ``instance``) never runs if it
        has not started; returns it as the agent has it."""
        body = operations.CancelRequest(kind=kind, instance=instance)
        return self.send(calls.CANCEL, body=body, op_id=op_id)

    # -- long operations ---------------------------------------------------------

    def put_instance(self, name: str, spec: instancespec.InstanceSpec) -> operations.Operation:
        return self.send(calls.PUT_INSTANCE, body=spec, name=name)

    def reimage(
        self, name: str, image: instancespec.ImageSpec, operation_id: str | None = None
    ) -> operations.Operation:
        body = operations.ReimageRequest(image=image, operationId=operation_id)
        return self.send(calls.REIMAGE, body=body, name=name)

    def rollback(self, name: str, operation_id: str | None = None) -> operations.Operation:
        return self._simple(calls.ROLLBACK, name, operation_id)

    def commit(self, name: str, operation_id: str | None = None) -> operations.Operation:
        return self._simple(calls.COMMIT, name, operation_id)

    def start(self, name: str, operation_id: str | None = None) -> operations.Operation:
        return self._simple(calls.START, name, operation_id)

    def stop(self, name: str, operation_id: str | None = None) -> operations.Operation:
        return self._simple(calls.STOP, name, operation_id)

    def delete(
        self, name: str, *, delete_data_disks: bool = False, operation_id: str | None = None
    ) -> operations.Operation:
        query = {"deleteDataDisks": "true" if delete_data_disks else "false"}
        if operation_id:
            query["operationId"] = operation_id
        return self.send(calls.DELETE, query=query, name=name)

    def _simple(
        self, call: Call[operations.Operation], name: str, operation_id: str | None
    ) -> operations.Operation:
        body = operations.OperationRequest(operationId=operation_id)
        return self.send(call, body=body, name=name)

    def wait(
        self, op: operations.Operation, timeout: float = 600.0, poll: float = 0.5
    ) -> operations.Operation:
        """Poll until the operation is no longer InProgress (or raise TimeoutError)."""
        if op.status != "InProgress":
            return op

        def ended() -> operations.Operation | None:
            now = self.operation(op.id)
            return None if now.status == "InProgress" else now

        done = wait_for(self.clock, ended, timeout=timeout, interval=poll)
        if done is None:
            raise TimeoutError(f"operation {op.id} ({op.kind}) still running after {timeout}s")
        return done
