"""The guest-facing listener: bound only to the guest bridge address, it takes
extension and application-health reports from guests, each authenticated by
its instance's own token. It offers nothing else: the management API is never
reachable from a guest."""

from __future__ import annotations

import ipaddress
from typing import Annotated

from fastapi import FastAPI, Header, Request, Response

from hostagent.contract.names import check_instance_name
from hostagent.contract.reports import ExtensionReport, HealthReport
from hostagent.daemon.service import Agent
from hostagent.lifecycle.operations import OperationFailed
from kvmss.base.httperrors import ApiError, install

# Headers by which a proxy names the client it forwards for.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")


def _is_ip_address(peer: str) -> bool:
    """Whether ``peer`` is an IP address: always over TCP; an in-process
    transport (a test client) has no address to check."""
    try:
        ipaddress.ip_address(peer)
    except ValueError:
        return False
    return True


def _current_instance_id(
    agent: Agent, name: str, request: Request, authorization: str | None, claimed: str
) -> str:
    """The current instance-id of ``name``, once the request is its guest's
    own and reports on that instance-id (``claimed``)."""
    try:
        check_instance_name(name)
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
    # Defence in depth, should a token leak: a report comes straight from
    # the instance's own address. Guests use no proxy, and a forwarding
    # header from a trusted peer would make the server rewrite the peer.
    if any(h in request.headers for h in FORWARDING_HEADERS):
        raise ApiError(403, "Forbidden", "reports come straight from the guest, not by proxy")
    peer = request.client.host if request.client else ""
    if _is_ip_address(peer) and peer != meta.address:
        raise ApiError(403, "Forbidden", "report from an address that is not the instance's")
    if claimed != meta.current.instance_id:
        raise ApiError(409, "StaleInstanceId", "report for an instance-id that is not current")
    return meta.current.instance_id


def create_guest_app(agent: Agent) -> FastAPI:
    app = FastAPI(title="kvmss guest reports", version="1", openapi_url=None, docs_url=None)
    install(app)

    @app.post("/v1/guest/instances/{name}/extensions/{ext}", status_code=204)
    def extension_report(
        name: str,
        ext: str,
        report: ExtensionReport,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        current = _current_instance_id(agent, name, request, authorization, report.instanceId)
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
        report: HealthReport,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Response:
        _current_instance_id(agent, name, request, authorization, report.instanceId)
        agent.reports.record_health(name, report)
        return Response(status_code=204)

    return app
