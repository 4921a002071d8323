"""A scale set's instances: their views (what the store has and their agents
last reported) and reimaging named ones (docs/design.md "Words": reimage)."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Response, params
from starlette.concurrency import run_in_threadpool

from controller.api.inputs import InstanceIds
from controller.api.responses import (
    InstanceView,
    InstanceViewList,
    ReimageAccepted,
    errors,
    send,
)
from controller.service.controller import Controller

_ACCEPTED = ReimageAccepted(status="Accepted")


def router(ctl: Controller, authed: Sequence[params.Depends]) -> APIRouter:
    r = APIRouter(prefix="/v1/scaleSets/{name}", dependencies=authed, tags=["instances"])

    @r.get("/virtualMachines", response_model=InstanceViewList, responses=errors(401, 404))
    async def list_instances(name: str) -> Response:
        """Views a few seconds old at most, from each host's snapshot."""
        known = ctl.known_instance_views(name)
        if known is None:  # an agent must be asked: on a worker
            known = await run_in_threadpool(ctl.instance_views, name)
        return send({"value": known})

    @r.get("/virtualMachines/{iid}", response_model=InstanceView, responses=errors(401, 404))
    async def instance(name: str, iid: str) -> Response:
        """As fresh as a listing; its agent is asked when the snapshot is older."""
        inst = ctl.instance_record(name, iid)
        known = ctl.known_instance_view(inst)
        if known is None:  # its agent must be asked: on a worker
            known = await run_in_threadpool(ctl.instance_view, inst)
        return send(known)

    @r.post(
        "/reimage",
        status_code=202,
        response_model=ReimageAccepted,
        responses=errors(400, 401, 404),
    )
    def reimage(name: str, body: InstanceIds) -> Response:
        """A fresh OS disk of the version each runs now; data disks kept."""
        ctl.reimage(name, body.instanceIds)
        return send(_ACCEPTED, 202)

    return r
