"""The agent's management API (controller to agent), docs/design.md "The agent contract".

Every route but FastAPI's documentation of the API (/openapi.json, /docs,
/redoc) needs ``Authorization: Bearer <agent token>``. Long
operations answer 202 with the operation (and a Location header); bad input
is rejected before anything starts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request, Response
from starlette.responses import Response as StarletteResponse

from hostagent.contract import wire
from hostagent.daemon.service import Agent
from hostagent.disks.imagecache import ImageRejected
from hostagent.lifecycle.instances import InstanceManager
from hostagent.lifecycle.operations import Busy, OperationFailed
from kvmss.base.httperrors import ApiError, bearer_auth, error_response, install


def _name(name: str) -> str:
    try:
        return wire.check_instance_name(name)
    except ValueError as e:
        raise ApiError(400, "InvalidName", str(e)) from None


def _image(image: wire.ImageSpec) -> wire.ImageSpec:
    """Refuse what the domain XML cannot carry: the kernel command line goes
    into ``<cmdline>`` and the domain's metadata, where a NUL or another
    control character either breaks the definition half way or is changed
    by XML (a CR), so it must be printable (one line)."""
    if image.cmdline is not None and not image.cmdline.isprintable():
        raise ApiError(
            400, "InvalidRequest", "image.cmdline: must be one line of printable characters"
        )
    return image


def _extension_references(spec: wire.InstanceSpec) -> None:
    """provisionAfterExtensions may only hold extension names (the messages
    that say a name is unknown quote it)."""
    for i, ext in enumerate(spec.extensions):
        for dep in ext.provisionAfterExtensions:
            if not wire.EXTENSION_NAME_RE.fullmatch(dep):
                raise ApiError(
                    400,
                    "InvalidRequest",
                    f"extensions.{i}.provisionAfterExtensions: must hold extension names"
                    " (1-64 letters, digits, '.', '_' or '-')",
                )


def create_app(agent: Agent) -> FastAPI:
    app = FastAPI(title="kvmss host agent", version="1")
    install(app)
    mgr: InstanceManager = agent.instances
    guest_net = ipaddress.IPv4Network(agent.config.subnet)

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

    auth = bearer_auth(agent.config.token)

    authed = [Depends(auth)]

    def accepted(response: Response, op: wire.Operation) -> wire.Operation:
        response.headers["Location"] = f"/v1/operations/{op.id}"
        return op

    def submit(
        kind: str, name: str, work: Callable[[str], None], op_id: str | None
    ) -> wire.Operation:
        try:
            op, _created = agent.ops.submit(kind, name, work, op_id)
        except Busy as e:
            raise ApiError(409, "Conflict", str(e)) from None
        except ValueError as e:
            raise ApiError(409, "Conflict", str(e)) from None
        return op

    def existing(name: str) -> wire.InstanceView:
        try:
            return mgr.view(name)
        except OperationFailed as e:
            raise ApiError(404, e.code, e.message) from None

    def prefetch(image: wire.ImageSpec) -> None:
        """Prerequisite of create and reimage: the image is in the host's cache,
        verified. A bad image is a 422 and nothing is touched."""
        try:
            mgr.builder.fetch(image)
        except ImageRejected as e:
            status = 503 if e.transient else 422
            raise ApiError(status, f"Image{e.code}", str(e)) from None

    @app.get("/v1/host", dependencies=authed)
    def host() -> wire.HostView:
        return agent.host_view()

    @app.get("/v1/instances", dependencies=authed)
    def list_instances() -> wire.InstanceList:
        return wire.InstanceList(value=mgr.list())

    @app.get("/v1/instances/{name}", dependencies=authed)
    def get_instance(name: str) -> wire.InstanceView:
        return existing(_name(name))

    @app.put("/v1/instances/{name}", status_code=202, dependencies=authed)
    def put_instance(name: str, spec: wire.InstanceSpec, response: Response) -> wire.Operation:
        name = _name(name)
        _image(spec.image)
        _extension_references(spec)
        try:
            mgr.validate_spec(spec)
        except OperationFailed as e:
            raise ApiError(400, e.code, e.message) from None
        if agent.ops.get(spec.operationId or "") is None:
            prefetch(spec.image)
        op = submit("create", name, lambda op_id: mgr.create(op_id, name, spec), spec.operationId)
        return accepted(response, op)

    @app.post("/v1/instances/{name}/reimage", status_code=202, dependencies=authed)
    def reimage(name: str, req: wire.ReimageRequest, response: Response) -> wire.Operation:
        name = _name(name)
        _image(req.image)
        existing(name)
        if agent.ops.get(req.operationId or "") is None:
            prefetch(req.image)
        work = lambda op_id: mgr.reimage(op_id, name, req.image)  # noqa: E731
        return accepted(response, submit("reimage", name, work, req.operationId))

    @app.post("/v1/instances/{name}/rollback", status_code=202, dependencies=authed)
    def rollback(
        name: str, response: Response, req: wire.OperationRequest | None = None
    ) -> wire.Operation:
        name = _name(name)
        view = existing(name)
        op_id = req.operationId if req else None
        if view.previous is None and (op_id is None or agent.ops.get(op_id) is None):
            raise ApiError(
                409, "NoPreviousOsDisk", f"instance {name} has no previous OS disk to roll back to"
            )
        work = lambda op_id: mgr.rollback(op_id, name)  # noqa: E731
        return accepted(response, submit("rollback", name, work, op_id))

    def simple(kind: str, fn: Callable[[str, str], None]) -> None:
        @app.post(
            f"/v1/instances/{{name}}/{kind}",
            status_code=202,
            dependencies=authed,
            name=kind,
        )
        def _op(
            name: str, response: Response, req: wire.OperationRequest | None = None
        ) -> wire.Operation:
            name = _name(name)
            existing(name)
            work = lambda op_id: fn(op_id, name)  # noqa: E731
            return accepted(response, submit(kind, name, work, req.operationId if req else None))

    simple("commit", mgr.commit)
    simple("start", mgr.start)
    simple("stop", mgr.stop)

    @app.delete("/v1/instances/{name}", status_code=202, dependencies=authed)
    def delete_instance(
        name: str,
        response: Response,
        deleteDataDisks: Annotated[bool, Query()] = False,
        operationId: Annotated[str | None, Query(pattern=wire.OPERATION_ID_RE.pattern)] = None,
    ) -> wire.Operation:
        name = _name(name)
        work = lambda op_id: mgr.delete(op_id, name, deleteDataDisks)  # noqa: E731
        return accepted(response, submit("delete", name, work, operationId))

    @app.get("/v1/operations/{op_id}", dependencies=authed)
    def operation(op_id: str) -> wire.Operation:
        op = agent.ops.get(op_id)
        if op is None:
            raise ApiError(404, "NotFound", f"operation {op_id[:80]} does not exist")
        return op

    @app.post("/v1/operations/{op_id}/cancel", dependencies=authed)
    def cancel_operation(op_id: str, req: wire.CancelRequest) -> wire.Operation:
        """Make sure operation ``op_id`` never runs: an id not seen yet is
        recorded Cancelled (a request with it arriving later does nothing);
        a known operation is returned as it is, running or done."""
        if not wire.OPERATION_ID_RE.fullmatch(op_id):
            raise ApiError(400, "InvalidOperationId", "operationId: not a valid operation id")
        try:
            return agent.ops.cancel(op_id, req.kind, req.instance)
        except ValueError as e:
            raise ApiError(409, "Conflict", str(e)) from None

    @app.api_route(
        "/v1/instances/{rest:path}",
        methods=["GET", "PUT", "POST", "DELETE", "PATCH"],
        dependencies=authed,
        include_in_schema=False,
    )
    def malformed(rest: str) -> None:
        _name(rest.split("/", 1)[0])
        raise ApiError(404, "NotFound", "no such resource")

    return app
