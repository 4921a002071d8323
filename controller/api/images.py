"""The image catalog's routes: staging a kernel and initrd, publishing a
version (which may start automatic upgrades: docs/design.md rule 9), the
skus and versions, one version's manifest."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, params
from starlette.concurrency import run_in_threadpool

from controller.api.responses import (
    ImageManifest,
    ImageManifestList,
    ImageSku,
    ImageSkuList,
    errors,
    send,
)
from controller.images.catalog import Catalog, SkuEntry
from controller.service.controller import Controller
from controller.store.facade import ImageRecord
from hostagent.contract import instancespec
from kvmss.base.httperrors import ApiError

MAX_UPLOAD_BYTES = 64 << 30
STAGED_PARTS = ("kernel", "initrd")


def resolve(ctl: Controller, p: str, o: str, s: str, v: str) -> ImageRecord:
    """The published version the path names (``latest`` the newest), or a 4xx."""
    try:
        ref = instancespec.ImageReference(publisher=p, offer=o, sku=s, version=v)
    except ValueError:
        raise ApiError(400, "InvalidParameter", "image reference: invalid") from None
    return ctl.resolve(ref)


def router(ctl: Controller, staging: Path, authed: Sequence[params.Depends]) -> APIRouter:
    r = APIRouter(prefix="/v1/images", dependencies=authed, tags=["images"])
    uploads = _Uploads(staging)

    @r.put("/{p}/{o}/{s}/{v}/{part}", status_code=204, responses=errors(400, 401, 404, 413))
    async def stage(p: str, o: str, s: str, v: str, part: str, request: Request) -> Response:
        """A kernel or initrd, kept until the version is published with it."""
        if part not in STAGED_PARTS:
            raise ApiError(404, "NotFound", "only kernel and initrd can be staged")
        await _receive(request, uploads.dir(p, o, s, v) / part)
        return Response(status_code=204)

    @r.put(
        "/{p}/{o}/{s}/{v}",
        status_code=201,
        response_model=ImageManifest,
        responses=errors(400, 401, 404, 409, 413, 422),
    )
    async def publish(
        p: str,
        o: str,
        s: str,
        v: str,
        request: Request,
        cmdline: Annotated[str | None, Query(max_length=1024)] = None,
        sha256: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$")] = None,
    ) -> Response:
        """The body is the qcow2; what was staged for this version goes with it."""
        rec = await uploads.publish(ctl, (p, o, s, v), request, cmdline, sha256)
        return send(Catalog.manifest(rec), 201)

    @r.get("", response_model=ImageSkuList, responses=errors(401))
    def images() -> Response:
        """Every sku with a published version."""
        return send(ImageSkuList(value=[_sku(e) for e in ctl.catalog.offers()]))

    @r.get("/{p}/{o}/{s}/versions", response_model=ImageManifestList, responses=errors(401, 404))
    def versions(p: str, o: str, s: str) -> Response:
        """Every published version of the sku, newest first."""
        return send({"value": [Catalog.manifest(rec) for rec in ctl.catalog.versions(p, o, s)]})

    @r.get("/{p}/{o}/{s}/{v}", response_model=ImageManifest, responses=errors(400, 401, 404))
    def manifest(p: str, o: str, s: str, v: str) -> Response:
        """One version (``latest``: the newest)."""
        return send(Catalog.manifest(resolve(ctl, p, o, s, v)))

    return r


def _sku(e: SkuEntry) -> ImageSku:
    return ImageSku(
        publisher=e.publisher, offer=e.offer, sku=e.sku, versions=list(e.versions), latest=e.latest
    )


class _Uploads:
    """Uploads land under the staging directory, never in the catalog's."""

    def __init__(self, staging: Path) -> None:
        self.staging = staging

    def dir(self, p: str, o: str, s: str, v: str) -> Path:
        for part, field in ((p, "publisher"), (o, "offer"), (s, "sku"), (v, "version")):
            if not part or "/" in part or "\0" in part or part in (".", "..") or len(part) > 64:
                raise ApiError(400, "InvalidParameter", f"{field}: invalid")
        return self.staging / p / o / s / v

    async def publish(
        self,
        ctl: Controller,
        ref: tuple[str, str, str, str],
        request: Request,
        cmdline: str | None,
        sha256: str | None,
    ) -> ImageRecord:
        d = self.dir(*ref)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", dir=self.staging)
        os.close(fd)
        try:
            await _receive(request, Path(tmp))
            kernel, initrd = d / "kernel", d / "initrd"
            # Publishing hashes and inspects the image: on a worker thread.
            return await run_in_threadpool(
                ctl.publish,
                ref,
                Path(tmp),
                kernel=kernel if kernel.exists() else None,
                initrd=initrd if initrd.exists() else None,
                cmdline=cmdline,
                sha256=sha256,
            )
        finally:
            Path(tmp).unlink(missing_ok=True)
            shutil.rmtree(d, ignore_errors=True)


async def _receive(request: Request, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with dest.open("wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                raise ApiError(413, "TooLarge", "upload exceeds 64 GiB")
            f.write(chunk)
