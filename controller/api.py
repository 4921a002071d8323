"""The controller's REST API (DESIGN.md "Controller API"): bearer token on all
but /healthz and /metrics; errors are ``{"error": {"code", "message"}}`` with
a 4xx status. Image blobs are also readable with the signed URL the
controller hands to agents (``?sig=``)."""

from __future__ import annotations

import hmac
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from controller.catalog import Catalog
from controller.service import Controller, ControllerError
from kvmss.httperrors import ApiError, bearer_auth, error_response, install

MAX_UPLOAD_BYTES = 64 << 30


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


def create_app(ctl: Controller, token: str, staging: Path) -> FastAPI:
    app = FastAPI(title="kvmss controller", version="1")
    install(app)

    @app.exception_handler(ControllerError)
    async def _ctl_error(_r: Request, e: ControllerError) -> Response:
        return error_response(e.status, e.code, e.message)

    auth = bearer_auth(token)

    authed = [Depends(auth)]

    # -- public ------------------------------------------------------------------

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
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
    ) -> dict[str, Any]:
        d = _stage_dir(p, o, s, v)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=staging)
        os.close(fd)
        try:
            await _receive(request, Path(tmp))
            kernel, initrd = d / "kernel", d / "initrd"
            from starlette.concurrency import run_in_threadpool

            rec = await run_in_threadpool(
                ctl.publish,
                (p, o, s, v),
                Path(tmp),
                kernel=kernel if kernel.exists() else None,
                initrd=initrd if initrd.exists() else None,
                cmdline=cmdline,
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
        from hostagent import wire

        try:
            ref = wire.ImageReference(publisher=p, offer=o, sku=s, version=v)
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
                auth(authorization)
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
        body = await _json(request)
        model, created = ctl.put_scale_set(name, body)
        response.status_code = 201 if created else 200
        return model.to_body(redact=True)

    @app.patch("/v1/scaleSets/{name}", dependencies=authed)
    async def patch_scale_set(name: str, request: Request) -> dict[str, Any]:
        return ctl.patch(name, await _json(request)).to_body(redact=True)

    @app.get("/v1/scaleSets/{name}", dependencies=authed)
    def get_scale_set(name: str) -> dict[str, Any]:
        return ctl.model(name).to_body(redact=True)

    @app.get("/v1/scaleSets", dependencies=authed)
    def list_scale_sets() -> dict[str, Any]:
        return {
            "value": [ctl.model(s.name).to_body(redact=True) for s in ctl.store.list_scale_sets()]
        }

    @app.delete("/v1/scaleSets/{name}", dependencies=authed, status_code=204)
    def delete_scale_set(name: str) -> Response:
        ctl.delete_scale_set(name)
        return Response(status_code=204)

    @app.get("/v1/scaleSets/{name}/virtualMachines", dependencies=authed)
    def vms(name: str) -> dict[str, Any]:
        return {"value": ctl.instance_views(name)}

    @app.get("/v1/scaleSets/{name}/virtualMachines/{iid}", dependencies=authed)
    def vm(name: str, iid: str) -> dict[str, Any]:
        return ctl.instance_view(name, iid)

    # -- upgrades ------------------------------------------------------------------

    @app.post("/v1/scaleSets/{name}/osRollingUpgrade", dependencies=authed, status_code=202)
    def os_rolling_upgrade(name: str) -> dict[str, Any]:
        up = ctl.start_upgrade(name, "User")
        return {"upgradeId": up.id, "status": up.status}

    @app.get("/v1/scaleSets/{name}/rollingUpgrades/latest", dependencies=authed)
    def latest(name: str) -> dict[str, Any]:
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
    def history(name: str) -> dict[str, Any]:
        return ctl.history(name)

    return app


async def _json(request: Request) -> Any:
    import json

    from hostagent import wire

    raw = await request.body()
    too_deep = f"the request body nests deeper than {wire.MAX_JSON_DEPTH} levels"
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError(400, "InvalidJson", too_deep) from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "InvalidJson", "the request body is not valid JSON") from None
    if wire.json_depth(body) > wire.MAX_JSON_DEPTH:
        raise ApiError(400, "InvalidJson", too_deep)
    return body
