"""Every endpoint of the controller, of the agent's management API and of the
agent's guest listener refuses a request without the right credentials.

Endpoints are enumerated from the apps themselves (their OpenAPI documents
and their routing tables, so routes left out of the document count too): a
new endpoint is covered without touching this file, and one that is neither
authenticated nor listed below as public with its reason fails the suite.
Each refused request must also leave no trace (databases, files, domains).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hostagent.daemon.api import create_app as create_agent_app
from hostagent.daemon.guestapi import create_guest_app
from tests.fixtures import storage_root
from tests.security.agentenv import AGENT_AUTH, AGENT_TOKEN, AgentEnv, agent_env
from tests.security.ctlapp import (
    CONTROLLER_AUTH,
    CONTROLLER_TOKEN,
    CONTROLLER_VALUES,
    ControllerEnv,
    controller_env,
    model,
)
from tests.security.routes import (
    DOCS_REASON,
    Endpoint,
    assert_unauthorized,
    bad_authorizations,
    documented,
    files_under,
    fill,
    routed,
)

DOCS = ("/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc")


# FastAPI serves its documentation to GET and HEAD.
DOCS_PUBLIC: dict[Endpoint, str] = {(m, p): DOCS_REASON for p in DOCS for m in ("GET", "HEAD")}
# Served to anyone, and why.
CONTROLLER_PUBLIC: dict[Endpoint, str] = {
    ("GET", "/healthz"): "liveness for systemd, load balancers and the lab; says only 'ok'",
    ("GET", "/metrics"): "scraped by Prometheus without credentials; counts by scale set name",
    **DOCS_PUBLIC,
}
# Public only with a valid ?sig= (the URL the controller hands to agents,
# signed per sha256); without one they need the token like any other.
CONTROLLER_SIGNED: dict[Endpoint, str] = {
    ("GET", f"/v1/images/{{p}}/{{o}}/{{s}}/{{v}}/{part}"): "agents download images by signed URL"
    for part in ("blob", "kernel", "initrd")
}
AGENT_PUBLIC: dict[Endpoint, str] = dict(DOCS_PUBLIC)
# The guest listener has no public endpoint and no documentation: every route
# takes the per-instance token of the instance in its path.

AGENT_VALUES = {"name": "x1", "op_id": "x1", "rest": "x1/reimage"}
GUEST_VALUES = {"name": "x1", "ext": "app"}


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerEnv]:
    with controller_env(tmp_path) as env:
        yield env


@pytest.fixture
def agent() -> Iterator[AgentEnv]:
    with storage_root("sec-auth") as root, agent_env(root) as env:
        env.create("x1")
        yield env


def _check_endpoints(
    client: TestClient,
    app: FastAPI,
    *,
    token: str,
    good: dict[str, str],
    public: dict[Endpoint, str],
    signed: dict[Endpoint, str],
    values: dict[str, str],
    body: Any,
    state: Callable[[], Any],
) -> int:
    """Every routed endpoint but the public ones refuses every bad
    Authorization (401, the error shape, WWW-Authenticate) even with a body
    that would change something, and ``state()`` stays as it was; then each
    answers the good one with something else (the route is reached).
    Returns how many requests were refused."""
    routes = routed(app)
    assert documented(app) <= routes, "documented operations the app does not route"
    assert set(public) <= routes, f"public endpoints that no longer exist: {set(public) - routes}"
    checked = sorted(routes - set(public))
    refused = 0
    before = state()
    for method, path in checked:
        url = fill(path, values)
        for authorization in bad_authorizations(token):
            headers = {} if authorization is None else {"Authorization": authorization}
            r = client.request(method, url, headers=headers, json=body)
            what = f"{method} {url} with Authorization {authorization!r:.40}"
            if method == "HEAD":  # no body to look at
                assert r.status_code == 401, what
            else:
                assert_unauthorized(what, r.status_code, r.json(), r.headers, token)
            refused += 1
        if (method, path) in signed:
            for sig in ("0" * 64, "", "caf\u00e9"):
                r = client.request(method, url, params={"sig": sig})
                assert r.status_code == 401, (method, url, sig, r.text)
        assert state() == before, f"a refused {method} {url} changed something"
    for method, path in checked:
        r = client.request(method, fill(path, values), headers=good, json={})
        assert r.status_code not in (401, 403) and r.status_code < 500, (method, path, r.text)
    for method, path in public:
        r = client.request(method, fill(path, values))
        assert r.status_code == 200, f"public {method} {path} answers {r.status_code}"
    return refused


def test_every_controller_endpoint_but_the_public_ones_needs_the_token(
    controller: ControllerEnv,
) -> None:
    before = controller.state()
    refused = _check_endpoints(
        controller.api,
        controller.app,
        token=CONTROLLER_TOKEN,
        good=CONTROLLER_AUTH,
        public=CONTROLLER_PUBLIC,
        signed=CONTROLLER_SIGNED,
        values=CONTROLLER_VALUES,
        body=model(capacity=3),
        state=controller.state,
    )
    assert refused >= 25 * len(bad_authorizations(CONTROLLER_TOKEN))
    assert controller.state() != before  # the authorised requests did reach the handlers


def test_every_agent_endpoint_but_the_docs_needs_the_agent_token(agent: AgentEnv) -> None:
    app = create_agent_app(agent.agent)
    storage, hv = agent.root / "agent", agent.agent.hv

    def state() -> Any:
        return files_under(storage), {d.name: d.to_xml() for d in hv.owned()}

    before = state()
    refused = _check_endpoints(
        TestClient(app),
        app,
        token=AGENT_TOKEN,
        good=AGENT_AUTH,
        public=AGENT_PUBLIC,
        signed={},
        values=AGENT_VALUES,
        body=agent.spec("2"),
        state=state,
    )
    assert refused >= 11 * len(bad_authorizations(AGENT_TOKEN))
    assert ("POST", "/v1/instances/{rest:path}") in routed(app)  # undocumented, still checked
    assert state() != before


def test_every_guest_report_route_needs_that_instance_token(agent: AgentEnv) -> None:
    app = create_guest_app(agent.agent)
    client = TestClient(app)
    other = agent.create("x2")
    view = agent.api.get("/v1/instances/x1", headers=AGENT_AUTH).json()
    instance_token = agent.agent.tokens.token("x1")
    body = {"instanceId": view["current"]["instanceId"], "status": "Succeeded", "state": "Healthy"}
    routes = routed(app)
    for path in DOCS:  # no documentation served to guests
        assert client.get(path).status_code == 404
    assert {p for _m, p in routes} == {
        "/v1/guest/instances/{name}/extensions/{ext}",
        "/v1/guest/instances/{name}/health",
    }
    wrong = [
        *bad_authorizations(instance_token),
        f"Bearer {AGENT_TOKEN}",  # the management token is no guest token
        f"Bearer {agent.agent.tokens.token(other['name'])}",  # nor is another instance's
        f"Bearer {agent.agent.tokens.token('x10')}",  # nor a neighbour name's
    ]
    for method, path in sorted(routes):
        url = fill(path, GUEST_VALUES)
        for authorization in wrong:
            headers = {} if authorization is None else {"Authorization": authorization}
            r = client.request(method, url, headers=headers, json=_report_for(path, body))
            what = f"{method} {url} with Authorization {authorization!r:.40}"
            assert_unauthorized(what, r.status_code, r.json(), r.headers, instance_token)
        good = {"Authorization": f"Bearer {instance_token}"}
        r = client.request(method, url, headers=good, json=_report_for(path, body))
        assert r.status_code == 204, (method, url, r.text)


def _report_for(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.endswith("/health"):
        return {"instanceId": body["instanceId"], "state": body["state"]}
    return {"instanceId": body["instanceId"], "status": body["status"], "exitCode": 0}
