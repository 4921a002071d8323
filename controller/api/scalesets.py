"""Scale set models (docs/design.md: Azure's virtualMachineScaleSets shape):
PUT creates or replaces, PATCH is a JSON merge patch, GET shows every
default with secrets redacted, DELETE removes the instances too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request, Response, params
from starlette.concurrency import run_in_threadpool

from controller.api.inputs import read_json
from controller.api.responses import errors, send
from controller.api.scalesetbody import VirtualMachineScaleSet, VirtualMachineScaleSetListResult
from controller.service.controller import Controller

_CREATED: dict[int | str, dict[str, Any]] = {
    201: {"model": VirtualMachineScaleSet, "description": "Created"}
}


def router(ctl: Controller, authed: Sequence[params.Depends]) -> APIRouter:
    r = APIRouter(prefix="/v1/scaleSets", dependencies=authed, tags=["scale sets"])
    one = "/{name}"

    @r.put(
        one,
        response_model=VirtualMachineScaleSet,
        responses={**_CREATED, **errors(400, 401, 404, 409)},
    )
    async def put_scale_set(name: str, request: Request) -> Response:
        """200 when it replaced one, 201 when it created it."""
        # The body is read on the event loop, the model stored on a worker
        # thread: a write can wait for the database, and must not stop the loop.
        body = await read_json(request)
        model, created = await run_in_threadpool(ctl.put_scale_set, name, body)
        return send(model.to_body(redact=True), 201 if created else 200)

    @r.patch(one, response_model=VirtualMachineScaleSet, responses=errors(400, 401, 404, 409))
    async def patch_scale_set(name: str, request: Request) -> Response:
        """Applied over the generation it was computed from, so no change is lost."""
        body = await read_json(request)
        return send((await run_in_threadpool(ctl.patch, name, body)).to_body(redact=True))

    @r.get(one, response_model=VirtualMachineScaleSet, responses=errors(401, 404))
    async def get_scale_set(name: str) -> Response:
        return send(ctl.body(name))

    @r.get("", response_model=VirtualMachineScaleSetListResult, responses=errors(401))
    async def list_scale_sets() -> Response:
        return send({"value": ctl.bodies()})

    @r.delete(one, status_code=204, responses=errors(401, 404, 409))
    def delete_scale_set(name: str) -> Response:
        """Refused while an upgrade runs."""
        ctl.delete_scale_set(name)
        return Response(status_code=204)

    return r
