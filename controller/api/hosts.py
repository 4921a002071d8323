"""The host agents the controller drives (docs/design.md "Processes"):
registering one (its agent must answer to the name), listing, removing."""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Response, params

from controller.api.inputs import HostIn
from controller.api.responses import HostInfo, HostList, errors, send
from controller.service.controller import Controller


def router(ctl: Controller, authed: Sequence[params.Depends]) -> APIRouter:
    r = APIRouter(prefix="/v1/hosts", dependencies=authed, tags=["hosts"])

    @r.post("", status_code=201, response_model=HostInfo, responses=errors(400, 401, 409))
    def add_host(body: HostIn) -> Response:
        """The agent at ``url`` is asked who it is before it is registered."""
        return send(ctl.add_host(body.name, body.url, body.token), 201)

    @r.get("", response_model=HostList, responses=errors(401))
    def hosts() -> Response:
        """Every host, each as its agent describes itself now."""
        return send({"value": ctl.list_hosts()})

    @r.delete("/{name}", status_code=204, responses=errors(401, 404, 409))
    def remove_host(name: str) -> Response:
        """Only a host that runs no instance."""
        ctl.remove_host(name)
        return Response(status_code=204)

    return r
