"""The controller's REST API (docs/design.md): bearer token on all
but /healthz and /metrics; errors are ``{"error": {"code", "message"}}`` with
a 4xx status. Image blobs are also readable with the signed URL the
controller hands to agents (``?sig=``).

Where a handler runs is chosen for latency under load (bench/load.py): the
reads that dashboards poll (a scale set, the list of them, an upgrade's
status and history, a listing whose instance views are all known) are short
reads of the local SQLite store, which in WAL mode never waits for a writer,
so they run on the event loop itself; everything that can wait (a write, an
agent call, an upload) runs on a worker thread. A request handed to a worker
costs two thread switches, and under load each switch waits its turn for
the GIL behind every busy thread, which made those hops most of a request's
time. The bearer check is a compare in memory and runs on the loop too.
A store that answers over the network (PostgreSQL) would need these reads on
workers again.
"""

from __future__ import annotations

import gc
import hmac
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from controller.images.catalog import Catalog
from controller.service.controller import Controller, ControllerError
from kvmss.base.httperrors import ApiError, bearer_auth, error_response, install

MAX_UPLOAD_BYTES = 64 << 30
# Threads running the blocking handlers (anyio's default is 40). They share
# one GIL with the upgrade threads: past a few, more of them only take turns
# more often, and a request waits behind every other one instead of in line.
API_THREADS = 8
GC_THRESHOLD0 = 20_000  # CPython's default: 700
# A thread back from I/O (an agent call, a write) waits at most this long for
# the GIL held by a busy one (CPython's default: 5 ms). A handler on a worker
# does I/O a few times per request, and with 5 ms each its latency under load
# was mostly waiting for the event loop to let go.
GIL_SWITCH_SECONDS = 0.001


class HostIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    token: Annotated[str, Field(min_length=16, max_length=4096, repr=False)]

    @field_validator("token")
    @classmethod
    def _token(cls, v: str) -> str:
        # it travels in an HTTP header: printable ASCII only
        if not v.isascii() or not v.isprintable() or " " in v:
            raise ValueError("must be printable ASCII without spaces")
        return v


class InstanceIds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instanceIds: Annotated[
        list[Annotated[str, Field(pattern=r"^[0-9]{1,18}$")]], Field(min_length=1, max_length=1000)
    ]


@asynccontextmanager
async def _serving(_app: FastAPI) -> AsyncIterator[None]:
    """Run the API's blocking handlers on :data:`API_THREADS` threads, hand
    the GIL over sooner (:data:`GIL_SWITCH_SECONDS`), and keep the garbage
    collector's pauses short while serving.

    Every full collection walks every tracked object; the modules, the app
    and its schemas alone are a few hundred thousand, and at a few hundred
    requests/s full collections came more than once a second, each stopping
    every thread for 60-110 ms. Frozen, what exists when serving starts is
    left out of collections (it lives as long as the process anyway), and a
    higher first threshold makes young collections, and so full ones, rarer.
    """
    anyio.to_thread.current_default_thread_limiter().total_tokens = API_THREADS
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD0, *gc.get_threshold()[1:])
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    yield


def create_app(ctl: Controller, token: str, staging: Path) -> FastAPI:
    app = FastAPI(title="kvmss controller", version="1", lifespan=_serving)
    install(app)

    @app.exception_handler(ControllerError)
    async def _ctl_error(_r: Request, e: ControllerError) -> Response:
        return error_response(e.status, e.code, e.message)

    check_token = bearer_auth(token)

    async def auth(authorization: Annotated[str | None, Header()] = None) -> None:
        # (a plain function dependency would be run on a worker thread)
        check_token(authorization)

    authed = [Depends(auth)]

    # -- public ------------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", response_class=PlainTextResponse)
    def metrics() -> str:
        sets = ctl.store.list_scale_sets()
        lines = [
            "# HELP kvmss_scale_sets Scale sets defined.",
            "# TYPE kvmss_scale_sets gauge",
            f"kvmss_scale_sets {len(sets)}",
            "# HELP kvmss_instances Instances by scale set.",
            "# TYPE kvmss_instances gauge",
        ]
        for s in sets:
            lines.append(
                f'kvmss_instances{{scale_set="{s.name}"}} {len(ctl.store.list_instances(s.name))}'
            )
        lines += [
            "# HELP kvmss_rolling_upgrades_running Rolling upgrades in progress.",
            "# TYPE kvmss_rolling_upgrades_running gauge",
            f"kvmss_rolling_upgrades_running {len(ctl.store.running_upgrades())}",
        ]
        return "\n".join(lines) + "\n"

    # -- images ------------------------------------------------------------------

    def _stage_dir(p: str, o: str, s: str, v: str) -> Path:
        for part, field in ((p, "publisher"), (o, "offer"), (s, "sku"), (v, "version")):
            if not part or "/" in part or "\0" in part or part in (".", "..") or len(part) > 64:
                raise ApiError(400, "InvalidParameter", f"{field}: invalid")
        return staging / p / o / s / v

    async def _receive(request: Request, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        size = 0
        with dest.open("wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise ApiError(413, "TooLarge", "upload exceeds 64 GiB")
                f.write(chunk)

    @app.put("/v1/images/{p}/{o}/{s}/{v}/{part}", dependencies=authed, status_code=204)
    async def stage(p: str, o: str, s: str, v: str, part: str, request: Request) -> Response:
        if part not in ("kernel", "initrd"):
            raise ApiError(404, "NotFound", "only kernel and initrd can be staged")
        await _receive(request, _stage_dir(p, o, s, v) / part)
        return Response(status_code=204)

    @app.put("/v1/images/{p}/{o}/{s}/{v}", dependencies=authed, status_code=201)
    async def publish(
        p: str,
        o: str,
        s: str,
        v: str,
        request: Request,
        cmdline: Annotated[str | None, Query(max_length=1024)] = None,
        sha256: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
    ) -> dict[str, Any]:
        d = _stage_dir(p, o, s, v)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=staging)
        os.close(fd)
        try:
            await _receive(request, Path(tmp))
            kernel, initrd = d / "kernel", d / "initrd"
            rec = await run_in_threadpool(
                ctl.publish,
                (p, o, s, v),
                Path(tmp),
                kernel=kernel if kernel.exists() else None,
                initrd=initrd if initrd.exists() else None,
                cmdline=cmdline,
                sha256=sha256,
            )
        finally:
            Path(tmp).unlink(missing_ok=True)
            shutil.rmtree(d, ignore_errors=True)
        return Catalog.manifest(rec)

    @app.get("/v1/images", dependencies=authed)
    def images() -> dict[str, Any]:
        return {
            "value": [
                {
                    "publisher": e.publisher,
                    "offer": e.offer,
                    "sku": e.sku,
                    "versions": e.versions,
                    "latest": e.latest,
                }
                for e in ctl.catalog.offers()
            ]
        }

    @app.get("/v1/images/{p}/{o}/{s}/versions", dependencies=authed)
    def versions(p: str, o: str, s: str) -> dict[str, Any]:
        return {"value": [Catalog.manifest(r) for r in ctl.catalog.versions(p, o, s)]}

    def _image(p: str, o: str, s: str, v: str) -> Any:
        from hostagent.contract import instancespec

        try:
            ref = instancespec.ImageReference(publisher=p, offer=o, sku=s, version=v)
        except ValueError:
            raise ApiError(400, "InvalidParameter", "image reference: invalid") from None
        return ctl.resolve(ref)

    @app.get("/v1/images/{p}/{o}/{s}/{v}", dependencies=authed)
    def manifest(p: str, o: str, s: str, v: str) -> dict[str, Any]:
        return Catalog.manifest(_image(p, o, s, v))

    def blob_route(part: str, pick: Callable[[Any], tuple[Path | None, str | None]]) -> None:
        @app.get(f"/v1/images/{{p}}/{{o}}/{{s}}/{{v}}/{part}", name=f"image-{part}")
        def _blob(
            p: str,
            o: str,
            s: str,
            v: str,
            sig: str | None = None,
            authorization: Annotated[str | None, Header()] = None,
        ) -> FileResponse:
            if sig is None:
                check_token(authorization)
            try:
                rec = _image(p, o, s, v)
            except ControllerError:
                if sig is not None:  # say nothing of what exists to the unauthenticated
                    raise ApiError(401, "Unauthorized", "invalid signature") from None
                raise
            path, sha = pick(rec)
            if sig is not None and (
                sha is None
                or not hmac.compare_digest(sig.encode(), ctl.blob_signature(sha).encode())
            ):
                raise ApiError(401, "Unauthorized", "invalid signature")
            if path is None or sha is None:
                raise ApiError(404, "NotFound", f"image {p}/{o}/{s}/{v} has no {part}")
            return FileResponse(path, media_type="application/octet-stream")

    blob_route("blob", lambda r: (r.path, r.sha256))
    blob_route("kernel", lambda r: (r.kernel_path, r.kernel_sha256))
    blob_route("initrd", lambda r: (r.initrd_path, r.initrd_sha256))

    # -- hosts -------------------------------------------------------------------

    @app.post("/v1/hosts", dependencies=authed, status_code=201)
    def add_host(body: HostIn) -> dict[str, Any]:
        return ctl.add_host(body.name, body.url, body.token)

    @app.get("/v1/hosts", dependencies=authed)
    def hosts() -> dict[str, Any]:
        return {"value": ctl.list_hosts()}

    @app.delete("/v1/hosts/{name}", dependencies=authed, status_code=204)
    def remove_host(name: str) -> Response:
        ctl.remove_host(name)
        return Response(status_code=204)

    # -- scale sets ----------------------------------------------------------------

    @app.put("/v1/scaleSets/{name}", dependencies=authed)
    async def put_scale_set(name: str, request: Request, response: Response) -> dict[str, Any]:
        # The body is read on the event loop, the model stored on a worker
        # thread: a write can wait for the database, and must not stop the loop.
        body = await _json(request)
        model, created = await run_in_threadpool(ctl.put_scale_set, name, body)
        response.status_code = 201 if created else 200
        return model.to_body(redact=True)

    @app.patch("/v1/scaleSets/{name}", dependencies=authed)
    async def patch_scale_set(name: str, request: Request) -> dict[str, Any]:
        body = await _json(request)
        return (await run_in_threadpool(ctl.patch, name, body)).to_body(redact=True)

    @app.get("/v1/scaleSets/{name}", dependencies=authed)
    async def get_scale_set(name: str) -> dict[str, Any]:
        return ctl.body(name)

    @app.get("/v1/scaleSets", dependencies=authed)
    async def list_scale_sets() -> dict[str, Any]:
        return {"value": ctl.bodies()}

    @app.delete("/v1/scaleSets/{name}", dependencies=authed, status_code=204)
    def delete_scale_set(name: str) -> Response:
        ctl.delete_scale_set(name)
        return Response(status_code=204)

    @app.get("/v1/scaleSets/{name}/virtualMachines", dependencies=authed)
    async def vms(name: str) -> dict[str, Any]:
        known = ctl.known_instance_views(name)
        if known is None:  # an agent must be asked: on a worker
            known = await run_in_threadpool(ctl.instance_views, name)
        return {"value": known}

    @app.get("/v1/scaleSets/{name}/virtualMachines/{iid}", dependencies=authed)
    async def vm(name: str, iid: str) -> dict[str, Any]:
        inst = ctl.instance_record(name, iid)
        known = ctl.known_instance_view(inst)
        if known is None:  # its agent must be asked: on a worker
            known = await run_in_threadpool(ctl.instance_view, inst)
        return known

    # -- upgrades ------------------------------------------------------------------

    @app.post("/v1/scaleSets/{name}/osRollingUpgrade", dependencies=authed, status_code=202)
    def os_rolling_upgrade(name: str) -> dict[str, Any]:
        up = ctl.start_upgrade(name, "User")
        return {"upgradeId": up.id, "status": up.status}

    @app.get("/v1/scaleSets/{name}/rollingUpgrades/latest", dependencies=authed)
    async def latest(name: str) -> dict[str, Any]:
        return ctl.latest_status(name)

    @app.post("/v1/scaleSets/{name}/rollingUpgrades/cancel", dependencies=authed, status_code=202)
    def cancel(name: str) -> dict[str, str]:
        ctl.cancel(name)
        return {"status": "CancelRequested"}

    @app.get("/v1/scaleSets/{name}/rollingUpgrades/plan", dependencies=authed)
    def plan(name: str) -> dict[str, Any]:
        return ctl.plan(name)

    @app.post("/v1/scaleSets/{name}/manualUpgrade", dependencies=authed, status_code=202)
    def manual_upgrade(name: str, body: InstanceIds) -> dict[str, Any]:
        up = ctl.manual_upgrade(name, body.instanceIds)
        return {"upgradeId": up.id, "status": up.status}

    @app.post("/v1/scaleSets/{name}/reimage", dependencies=authed, status_code=202)
    def reimage(name: str, body: InstanceIds) -> dict[str, Any]:
        ctl.reimage(name, body.instanceIds)
        return {"status": "Accepted"}

    @app.get("/v1/scaleSets/{name}/osUpgradeHistory", dependencies=authed)
    async def history(name: str) -> dict[str, Any]:
        return ctl.history(name)

    return app


async def _json(request: Request) -> Any:
    import json

    from hostagent.contract import limits

    raw = await request.body()
    too_deep = f"the request body nests deeper than {limits.MAX_JSON_DEPTH} levels"
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "InvalidJson", too_deep) from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "InvalidJson", "the request body is not valid JSON") from None
    if limits.json_depth(body) > limits.MAX_JSON_DEPTH:
        raise ApiError(400, "InvalidJson", too_deep)
    return body
