"""The dashboard's routes under ``/ui/``: its pages, the session (sign-in with
the controller's token, sign-out), the live snapshot, an instance's details
and the upgrade actions. Every action needs the session cookie and the
session's CSRF token in ``X-CSRF-Token`` (403 without it, nothing changed)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Final

from fastapi import APIRouter, Cookie, FastAPI, Header, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from controller.api.inputs import ManualUpgradeIn
from controller.service.controller import Controller
from controller.ui import details
from controller.ui.pages import FILES, HEADERS, page
from controller.ui.sessions import Session, Sessions
from controller.ui.snapshot import Snapshots, build_snapshot
from kvmss.base.clock import Clock
from kvmss.base.httperrors import ApiError

COOKIE: Final = "kvmss_session"
NAME_MAX: Final = 80
# (module level: FastAPI resolves the handlers' annotations in this module)
Sid = Annotated[str | None, Cookie(alias=COOKIE)]
Csrf = Annotated[str | None, Header(alias="X-CSRF-Token")]


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: Annotated[str, Field(min_length=1, max_length=4096, repr=False)]


class UpgradeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    maxBatchInstancePercent: Annotated[int, Field(ge=5, le=100)]


class ImageIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: Annotated[str, Field(min_length=1, max_length=64)]


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body), status_code=status, media_type="application/json", headers=HEADERS
    )


class _Guard:
    """Who may read (a session) and who may act (a session and its CSRF token)."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    def signed_in(self, sid: str | None) -> Session:
        s = self.sessions.get(sid)
        if s is None:
            raise ApiError(401, "Unauthorized", "sign in to the dashboard first")
        return s

    def acting(self, sid: str | None, csrf: str | None) -> None:
        if not self.sessions.csrf_ok(self.signed_in(sid), csrf):
            raise ApiError(403, "Forbidden", "X-CSRF-Token: missing or not this session's")


def install(app: FastAPI, ctl: Controller, token: str, clock: Clock) -> Snapshots:
    """Add the dashboard's routes to ``app``; the snapshots it shares."""
    guard = _Guard(Sessions(token, clock))
    snapshots = Snapshots(clock, lambda name: build_snapshot(ctl, name))
    r = APIRouter(prefix="/ui", include_in_schema=False)
    _pages(r)
    _session(r, guard)
    _reads(r, ctl, guard, snapshots)
    _actions(r, ctl, guard, snapshots)
    app.router.routes.extend(r.routes)
    return snapshots


def _pages(r: APIRouter) -> None:
    @r.get("/")
    async def index() -> Response:
        return page("index.html")

    @r.get("/static/{file}")
    async def static(file: str) -> Response:
        if file == "index.html" or file not in FILES:
            raise ApiError(404, "NotFound", f"no dashboard file {file[:NAME_MAX]!r}")
        return page(file)


def _session(r: APIRouter, guard: _Guard) -> None:
    sessions = guard.sessions

    @r.post("/api/session")
    async def sign_in(body: TokenIn) -> Response:
        s = sessions.sign_in(body.token)
        if s is None:
            raise ApiError(401, "Unauthorized", "token: not this controller's token")
        out = _json({"csrf": s.csrf})
        out.set_cookie(
            COOKIE,
            s.sid,
            max_age=int(sessions.seconds),
            path="/ui",
            httponly=True,
            samesite="strict",
        )
        return out

    @r.get("/api/session")
    async def session(sid: Sid = None) -> Response:
        return _json({"csrf": guard.signed_in(sid).csrf})

    @r.delete("/api/session")
    async def sign_out(sid: Sid = None, csrf: Csrf = None) -> Response:
        guard.acting(sid, csrf)
        sessions.sign_out(sid or "")
        out = _json({"signedOut": True})
        out.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
        return out


def _reads(r: APIRouter, ctl: Controller, guard: _Guard, snapshots: Snapshots) -> None:
    @r.get("/api/live")
    def live(request: Request, sid: Sid = None, set: str = "") -> Response:
        guard.signed_in(sid)
        built = snapshots.get(set[:NAME_MAX] if ctl.store.scale_sets.get(set) else "")
        headers = {**HEADERS, "ETag": built.etag}
        if request.headers.get("if-none-match") == built.etag:
            return Response(status_code=304, headers=headers)
        return Response(built.body, media_type="application/json", headers=headers)

    @r.get("/api/sets/{name}/instances/{instance_id}")
    def instance(name: str, instance_id: str, sid: Sid = None) -> Response:
        guard.signed_in(sid)
        return _json(details.instance_details(ctl, name, instance_id))


def _actions(r: APIRouter, ctl: Controller, guard: _Guard, snapshots: Snapshots) -> None:
    @r.post("/api/sets/{name}/upgrade")
    def upgrade(name: str, body: UpgradeIn, sid: Sid = None, csrf: Csrf = None) -> Response:
        guard.acting(sid, csrf)
        patch = {
            "properties": {
                "upgradePolicy": {
                    "rollingUpgradePolicy": {
                        "maxBatchInstancePercent": body.maxBatchInstancePercent
                    }
                }
            }
        }
        ctl.patch(name, patch)
        up = ctl.start_upgrade(name, "User")
        snapshots.forget()
        return _json({"upgradeId": up.id, "status": up.status}, 202)

    @r.post("/api/sets/{name}/cancel")
    def cancel(name: str, sid: Sid = None, csrf: Csrf = None) -> Response:
        guard.acting(sid, csrf)
        ctl.cancel(name)
        snapshots.forget()
        return _json({"status": "CancelRequested"}, 202)

    @r.post("/api/sets/{name}/manualUpgrade")
    def manual(name: str, body: ManualUpgradeIn, sid: Sid = None, csrf: Csrf = None) -> Response:
        guard.acting(sid, csrf)
        up = ctl.manual_upgrade(name, body.instanceIds, body.updateDomains)
        snapshots.forget()
        return _json({"upgradeId": up.id, "status": up.status}, 202)

    @r.post("/api/sets/{name}/image")
    def image(name: str, body: ImageIn, sid: Sid = None, csrf: Csrf = None) -> Response:
        guard.acting(sid, csrf)
        patch = {
            "properties": {
                "virtualMachineProfile": {
                    "storageProfile": {"imageReference": {"version": body.version}}
                }
            }
        }
        model = ctl.patch(name, patch)
        snapshots.forget()
        return _json({"version": model.image_reference.version})
