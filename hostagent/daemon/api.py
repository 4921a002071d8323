"""The agent's management API (controller to agent), docs/design.md "The agent contract".

Its routes are the calls of :mod:`hostagent.contract.calls`: each is
registered from its table entry (method, path, success status, response
model) with the method of :class:`Handlers` of the same name, so the agent
serves no call the table lacks. Every route but FastAPI's documentation of
the API (/openapi.json, /docs, /redoc) needs ``Authorization: Bearer <agent
token>``. Long operations answer 202 with the operation (and a Location
header); bad input is rejected before anything starts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from starlette.responses import Response as StarletteResponse

from hostagent.contract import calls, instancespec, names, operations, views
from hostagent.daemon.service import Agent
from hostagent.disks.imagecache import ImageRejected
from hostagent.lifecycle.operations import Busy, OperationFailed
from kvmss.base.httperrors import ApiError, bearer_auth, error_response, install

# The one route that is no call: what falls through under /v1/instances/.
FALLBACK_ROUTE = "malformed"


def _name(name: str) -> str:
    try:
        return names.check_instance_name(name)
    except ValueError as e:
        raise ApiError(400, "InvalidName", str(e)) from None


def _image(image: instancespec.ImageSpec) -> instancespec.ImageSpec:
    """Refuse what the domain XML cannot carry: the kernel command line goes
    into ``<cmdline>`` and the domain's metadata, where a NUL or another
    control character either breaks the definition half way or is changed
    by XML (a CR), so it must be printable (one line)."""
    if image.cmdline is not None and not image.cmdline.isprintable():
        raise ApiError(
            400, "InvalidRequest", "image.cmdline: must be one line of printable characters"
        )
    return image


def _extension_references(spec: instancespec.InstanceSpec) -> None:
    """provisionAfterExtensions may only hold extension names (the messages
    that say a name is unknown quote it)."""
    for i, ext in enumerate(spec.extensions):
        for dep in ext.provisionAfterExtensions:
            if not names.EXTENSION_NAME_RE.fullmatch(dep):
                raise ApiError(
                    400,
                    "InvalidRequest",
                    f"extensions.{i}.provisionAfterExtensions: must hold extension names"
                    " (1-64 letters, digits, '.', '_' or '-')",
                )


def _accepted(response: Response, op: operations.Operation) -> operations.Operation:
    response.headers["Location"] = f"/v1/operations/{op.id}"
    return op


class Handlers:
    """One method per call of :mod:`hostagent.contract.calls`, named as the
    call; its parameters are what FastAPI reads of the request."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._mgr = agent.instances

    # -- reads -------------------------------------------------------------------

    def host(self) -> views.HostView:
        return self._agent.host_view()

    def instances(self) -> views.InstanceList:
        return views.InstanceList(value=self._mgr.list())

    def instance(self, name: str) -> views.InstanceView:
        return self._existing(_name(name))

    def operation(self, op_id: str) -> operations.Operation:
        op = self._agent.ops.get(op_id)
        if op is None:
            raise ApiError(404, "NotFound", f"operation {op_id[:80]} does not exist")
        return op

    def cancel(self, op_id: str, req: operations.CancelRequest) -> operations.Operation:
        """Make sure operation ``op_id`` never runs: an id not seen yet is
        recorded Cancelled (a request with it arriving later does nothing);
        a known operation is returned as it is, running or done."""
        if not names.OPERATION_ID_RE.fullmatch(op_id):
            raise ApiError(400, "InvalidOperationId", "operationId: not a valid operation id")
        try:
            return self._agent.ops.cancel(op_id, req.kind, req.instance)
        except ValueError as e:
            raise ApiError(409, "Conflict", str(e)) from None

    # -- long operations ---------------------------------------------------------

    def put_instance(
        self, name: str, spec: instancespec.InstanceSpec, response: Response
    ) -> operations.Operation:
        name = _name(name)
        _image(spec.image)
        _extension_references(spec)
        try:
            self._mgr.validate_spec(spec)
        except OperationFailed as e:
            raise ApiError(400, e.code, e.message) from None
        if self._agent.ops.get(spec.operationId or "") is None:
            self._prefetch(spec.image)
        work = lambda op_id: self._mgr.create(op_id, name, spec)  # noqa: E731
        return _accepted(response, self._submit("create", name, work, spec.operationId))

    def reimage(
        self, name: str, req: operations.ReimageRequest, response: Response
    ) -> operations.Operation:
        name = _name(name)
        _image(req.image)
        self._existing(name)
        if self._agent.ops.get(req.operationId or "") is None:
            self._prefetch(req.image)
        work = lambda op_id: self._mgr.reimage(op_id, name, req.image)  # noqa: E731
        return _accepted(response, self._submit("reimage", name, work, req.operationId))

    def rollback(
        self, name: str, response: Response, req: operations.OperationRequest | None = None
    ) -> operations.Operation:
        name = _name(name)
        view = self._existing(name)
        op_id = req.operationId if req else None
        if view.previous is None and (op_id is None or self._agent.ops.get(op_id) is None):
            raise ApiError(
                409, "NoPreviousOsDisk", f"instance {name} has no previous OS disk to roll back to"
            )
        work = lambda op_id: self._mgr.rollback(op_id, name)  # noqa: E731
        return _accepted(response, self._submit("rollback", name, work, op_id))

    def commit(
        self, name: str, response: Response, req: operations.OperationRequest | None = None
    ) -> operations.Operation:
        return self._simple("commit", self._mgr.commit, name, response, req)

    def start(
        self, name: str, response: Response, req: operations.OperationRequest | None = None
    ) -> operations.Operation:
        return self._simple("start", self._mgr.start, name, response, req)

    def stop(
        self, name: str, response: Response, req: operations.OperationRequest | None = None
    ) -> operations.Operation:
        return self._simple("stop", self._mgr.stop, name, response, req)

    def delete(
        self,
        name: str,
        response: Response,
        deleteDataDisks: Annotated[bool, Query()] = False,
        operationId: Annotated[str | None, Query(pattern=names.OPERATION_ID_RE.pattern)] = None,
    ) -> operations.Operation:
        name = _name(name)
        work = lambda op_id: self._mgr.delete(op_id, name, deleteDataDisks)  # noqa: E731
        return _accepted(response, self._submit("delete", name, work, operationId))

    # -- what the handlers share ---------------------------------------------------

    def _simple(
        self,
        kind: str,
        fn: Callable[[str, str], None],
        name: str,
        response: Response,
        req: operations.OperationRequest | None,
    ) -> operations.Operation:
        name = _name(name)
        self._existing(name)
        work = lambda op_id: fn(op_id, name)  # noqa: E731
        return _accepted(response, self._submit(kind, name, work, req.operationId if req else None))

    def _submit(
        self, kind: str, name: str, work: Callable[[str], None], op_id: str | None
    ) -> operations.Operation:
        try:
            op, _created = self._agent.ops.submit(kind, name, work, op_id)
        except Busy as e:
            raise ApiError(409, "Conflict", str(e)) from None
        except ValueError as e:
            raise ApiError(409, "Conflict", str(e)) from None
        return op

    def _existing(self, name: str) -> views.InstanceView:
        try:
            return self._mgr.view(name)
        except OperationFailed as e:
            raise ApiError(404, e.code, e.message) from None

    def _prefetch(self, image: instancespec.ImageSpec) -> None:
        """Prerequisite of create and reimage: the image is in the host's cache,
        verified. A bad image is a 422 and nothing is touched."""
        try:
            self._mgr.builder.fetch(image)
        except ImageRejected as e:
            status = 503 if e.transient else 422
            raise ApiError(status, f"Image{e.code}", str(e)) from None


def _refuse_guests(app: FastAPI, guest_net: ipaddress.IPv4Network) -> None:
    @app.middleware("http")
    async def no_guests(
        request: Request, call_next: Callable[[Request], Awaitable[StarletteResponse]]
    ) -> StarletteResponse:
        # Even when listening on all addresses, the management API never
        # answers a guest (a peer on the guest subnet).
        peer = request.client.host if request.client else ""
        try:
            from_guest = ipaddress.ip_address(peer) in guest_net
        except ValueError:
            from_guest = False
        if from_guest:
            return error_response(403, "Forbidden", "the management API is not served to guests")
        return await call_next(request)


def register_calls(app: FastAPI, handlers: Handlers, dependencies: list[Any]) -> None:
    """A route for every call of the table, in its order; a call without a
    handler stops the agent from starting."""
    for call in calls.CALLS:
        app.add_api_route(
            call.path,
            getattr(handlers, call.name),
            methods=[call.method],
            status_code=call.status,
            response_model=call.response,
            name=call.name,
            dependencies=dependencies,
        )


def _fallback(app: FastAPI, dependencies: list[Any]) -> None:
    """Under /v1/instances/, a path no call has: 400 for a malformed instance
    name (it names the name), 404 otherwise. Registered last, after every call."""

    @app.api_route(
        "/v1/instances/{rest:path}",
        methods=["GET", "PUT", "POST", "DELETE", "PATCH"],
        dependencies=dependencies,
        include_in_schema=False,
        name=FALLBACK_ROUTE,
    )
    def malformed(rest: str) -> None:
        _name(rest.split("/", 1)[0])
        raise ApiError(404, "NotFound", "no such resource")


def create_app(agent: Agent) -> FastAPI:
    app = FastAPI(title="kvmss host agent", version="1")
    install(app)
    _refuse_guests(app, ipaddress.IPv4Network(agent.config.subnet))
    authed = [Depends(bearer_auth(agent.config.token))]
    register_calls(app, Handlers(agent), authed)
    _fallback(app, authed)
    return app
