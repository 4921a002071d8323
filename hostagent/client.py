"""The controller's client for a host agent (the only way the controller talks
to agents). Errors come back as :class:`AgentError` with the agent's code."""

from __future__ import annotations

from typing import Any, TypeVar

import requests
from pydantic import BaseModel, ValidationError

from hostagent import wire
from kvmss.clock import Clock, SystemClock


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


def _parse(model: type[M], data: Any) -> M:
    """``data`` as a ``model``, or an AgentError: what answered is no agent."""
    try:
        return model.model_validate(data)
    except ValidationError:
        raise AgentError(0, "InvalidResponse", f"the answer is not a {model.__name__}") from None


class AgentClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 15.0,
        session: requests.Session | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self.timeout = timeout
        self.session = session or requests.Session()
        self.clock = clock or SystemClock()

    def __repr__(self) -> str:  # never show the token
        return f"AgentClient({self.base_url!r})"

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> Any:
        url = self.base_url + path
        try:
            r = self.session.request(
                method, url, json=json, params=params, headers=self._headers, timeout=self.timeout
            )
        except requests.RequestException as e:
            raise AgentUnreachable(self.base_url, type(e).__name__) from None
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
                raise AgentError(r.status_code, str(err["code"]), str(err["message"]))
            except (ValueError, KeyError, TypeError):
                raise AgentError(r.status_code, "HttpError", r.text[:200]) from None
        if r.status_code == 204 or not r.content:
            return None
        try:
            return r.json()
        except ValueError:
            raise AgentError(0, "InvalidResponse", f"{self.base_url}: answered no JSON") from None

    # -- reads -------------------------------------------------------------------

    def host(self) -> wire.HostView:
        return _parse(wire.HostView, self._call("GET", "/v1/host"))

    def instances(self) -> list[wire.InstanceView]:
        return _parse(wire.InstanceList, self._call("GET", "/v1/instances")).value

    def instance(self, name: str) -> wire.InstanceView | None:
        try:
            return _parse(wire.InstanceView, self._call("GET", f"/v1/instances/{name}"))
        except AgentError as e:
            if e.status == 404:
                return None
            raise

    def operation(self, op_id: str) -> wire.Operation:
        return _parse(wire.Operation, self._call("GET", f"/v1/operations/{op_id}"))

    # -- long operations ---------------------------------------------------------

    def put_instance(self, name: str, spec: wire.InstanceSpec) -> wire.Operation:
        body = spec.model_dump(mode="json", exclude_none=True)
        return _parse(wire.Operation, self._call("PUT", f"/v1/instances/{name}", json=body))

    def reimage(
        self, name: str, image: wire.ImageSpec, operation_id: str | None = None
    ) -> wire.Operation:
        body = wire.ReimageRequest(image=image, operationId=operation_id)
        return self._post(name, "reimage", body)

    def rollback(self, name: str, operation_id: str | None = None) -> wire.Operation:
        return self._post(name, "rollback", wire.OperationRequest(operationId=operation_id))

    def commit(self, name: str, operation_id: str | None = None) -> wire.Operation:
        return self._post(name, "commit", wire.OperationRequest(operationId=operation_id))

    def start(self, name: str, operation_id: str | None = None) -> wire.Operation:
        return self._post(name, "start", wire.OperationRequest(operationId=operation_id))

    def stop(self, name: str, operation_id: str | None = None) -> wire.Operation:
        return self._post(name, "stop", wire.OperationRequest(operationId=operation_id))

    def delete(
        self, name: str, *, delete_data_disks: bool = False, operation_id: str | None = None
    ) -> wire.Operation:
        params = {"deleteDataDisks": "true" if delete_data_disks else "false"}
        if operation_id:
            params["operationId"] = operation_id
        return _parse(wire.Operation, self._call("DELETE", f"/v1/instances/{name}", params=params))

    def _post(self, name: str, action: str, body: wire.WireModel) -> wire.Operation:
        payload = body.model_dump(mode="json", exclude_none=True)
        return _parse(
            wire.Operation, self._call("POST", f"/v1/instances/{name}/{action}", json=payload)
        )

    def wait(self, op: wire.Operation, timeout: float = 600.0, poll: float = 0.5) -> wire.Operation:
        """Poll until the operation is no longer InProgress (or raise TimeoutError)."""
        deadline = self.clock.monotonic() + timeout
        while op.status == "InProgress":
            if self.clock.monotonic() > deadline:
                raise TimeoutError(f"operation {op.id} ({op.kind}) still running after {timeout}s")
            self.clock.sleep(poll)
            op = self.operation(op.id)
        return op
