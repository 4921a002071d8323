"""The guest-facing listener: bound only to the guest bridge address, it takes
extension and application-health reports from guests, each authenticated by
its instance's own token. It offers nothing else: the management API is never
reachable from a guest."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import FastAPI, Header, Request, Response

from hostagent import wire
from hostagent.operations import OperationFailed
from hostagent.service import Agent
from kvmss.httperrors import ApiError, install


def create_guest_app(agent: Agent) -> FastAPI:
    app = FastAPI(title="kvmss guest reports", version="1", openapi_url=None, docs_url=None)
    install(app)
    subnet = ipaddress.IPv4Network(agent.config.subnet)

    def instance_id_for(name: str, request: Request, authorization: str | None) -> str:
        try:
            wire.check_instance_name(name)
        except ValueError as e:
            raise ApiError(400, "InvalidName", str(e)) from None
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not agent.tokens.verify(name, given):
            raise ApiError(401, "Unauthorized", "invalid instance token")
        try:
            dom = agent.instances.domain(name)
        except OperationFailed as e:
            raise ApiError(404, e.code, e.message) from None
        meta = agent.instances.meta(dom)
        # Defence in depth: a report from the guest subnet must come from the
        # instance's own address.
        peer = request.client.host if request.client else ""
        try:
            from_guest_net = ipaddress.ip_address(peer) in subnet
        except ValueError:
            from_guest_net = False
        if from_guest_net and peer != meta.address:
            raise ApiError(403, "Forbidden", "report for another instance's address")
        return meta.current.instance_id

    @app.post("/v1/guest/instances/{name}/extensions/{ext}", status_code=204)
    def extension_report(
        name: str,
        ext: str,
        report: wire.ExtensionReport,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        current = instance_id_for(name, request, authorization)
        if report.instanceId != current:
            raise ApiError(409, "StaleInstanceId", "report for an instance-id that is not current")
        expected = agent.reports.expected(name, current) or []
        if ext not in expected:
            raise ApiError(404, "UnknownExtension", f"extension {ext[:64]!r} is not in the seed")
        try:
            agent.reports.record_extension(name, ext, report)
        except ValueError as e:
            raise ApiError(400, "InvalidRequest", str(e)) from None
        return Response(status_code=204)

    @app.post("/v1/guest/instances/{name}/health", status_code=204)
    def health_report(
        name: str,
        report: wire.HealthReport,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        current = instance_id_for(name, request, authorization)
        if report.instanceId != current:
            raise ApiError(409, "StaleInstanceId", "report for an instance-id that is not current")
        agent.reports.record_health(name, report)
        return Response(status_code=204)

    return app
