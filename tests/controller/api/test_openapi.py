"""The controller's /openapi.json documents every answer: each route's success
body has a schema of its own (a model, or a typed body for files and text),
and its errors the one error shape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from controller.api.app import create_app
from kvmss.base.clock import SystemClock
from tests.controller.agentdouble import AgentDouble
from tests.controller.controllerenv import make_controller
from tests.security.routes import routed

# The routes FastAPI adds to serve the document itself.
DOCS_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
PUBLIC = {("GET", "/healthz"), ("GET", "/metrics")}
ERROR_REF = "#/components/schemas/ErrorResponse"
Doc = dict[str, Any]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Doc, set[tuple[str, str]]]]:
    """The document as the app serves it, and every route the app answers."""
    agents = AgentDouble(SystemClock(), op_seconds=0, boot_seconds=0)
    ctl, staging = make_controller(tmp_path_factory.mktemp("openapi"), agents)
    app = create_app(ctl, "openapi-token-0123456789abcdef", staging)
    try:
        r = TestClient(app).get("/openapi.json")
        assert r.status_code == 200, r.text
        yield r.json(), {(m, p) for m, p in routed(app) if p not in DOCS_ROUTES}
    finally:
        ctl.close()
        ctl.store.close()


def operations(doc: Doc) -> Iterator[tuple[str, str, Doc]]:
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            yield method.upper(), path, op


def resolve(doc: Doc, schema: Doc) -> Doc:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    assert ref.startswith("#/components/schemas/"), ref
    target: Doc = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return target


def body_problem(doc: Doc, status: str, response: Doc) -> str | None:
    """Why a success response is not documented, or None."""
    content = response.get("content", {})
    if status == "204":
        return "a 204 documents a body" if content else None
    if not content:
        return "no content"
    for media, entry in content.items():
        schema = entry.get("schema")
        if not schema:
            return f"{media}: no schema"
        if "json" in media:
            if "$ref" not in schema:
                return f"{media}: {schema} is not a model"
            target = resolve(doc, schema)
            if target.get("type") != "object" or not target.get("properties"):
                return f"{media}: {schema['$ref']} has no fields"
        elif schema.get("type") != "string":
            return f"{media}: {schema} is not a typed body"
    return None


def test_every_route_is_documented(served: tuple[Doc, set[tuple[str, str]]]) -> None:
    doc, routes = served
    assert {(m, p) for m, p, _op in operations(doc)} == routes


def test_every_route_documents_the_body_of_its_success(
    served: tuple[Doc, set[tuple[str, str]]],
) -> None:
    doc, _routes = served
    problems = []
    for method, path, op in operations(doc):
        successes = {s: r for s, r in op["responses"].items() if s.startswith("2")}
        if not successes:
            problems.append(f"{method} {path}: no success status")
        for status, response in successes.items():
            problem = body_problem(doc, status, response)
            if problem is not None:
                problems.append(f"{method} {path} {status}: {problem}")
    assert problems == []


def test_every_error_is_documented_in_the_error_shape(
    served: tuple[Doc, set[tuple[str, str]]],
) -> None:
    doc, _routes = served
    for method, path, op in operations(doc):
        responses = op["responses"]
        errors = {s: r for s, r in responses.items() if s[0] in "45" or s == "default"}
        assert "default" in errors, (method, path)  # also: no 422 FastAPI invented
        if (method, path) not in PUBLIC:
            assert "401" in errors, (method, path)
        for status, response in errors.items():
            assert response["content"] == {"application/json": {"schema": {"$ref": ERROR_REF}}}, (
                method,
                path,
                status,
            )
    shape = resolve(doc, {"$ref": ERROR_REF})
    assert shape["required"] == ["error"] and shape["additionalProperties"] is False
    detail = resolve(doc, shape["properties"]["error"])
    assert set(detail["properties"]) == set(detail["required"]) == {"code", "message"}
