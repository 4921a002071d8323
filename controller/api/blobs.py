"""An image version's files (the qcow2, a kernel, an initrd), readable with
the bearer token or with the signed URL the controller hands to agents
(``?sig=``, docs/design.md "The agent contract"); range requests answered."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import FileResponse

from controller.api.images import resolve
from controller.api.responses import errors
from controller.service.controller import Controller, ControllerError
from controller.store.facade import ImageRecord
from kvmss.base.httperrors import ApiError

# Which file of a version each route serves, and its sha256.
Pick = Callable[[ImageRecord], tuple[Path | None, str | None]]
PARTS: dict[str, Pick] = {
    "blob": lambda r: (r.path, r.sha256),
    "kernel": lambda r: (r.kernel_path, r.kernel_sha256),
    "initrd": lambda r: (r.initrd_path, r.initrd_sha256),
}
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_SERVED: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file", "content": _BYTES},
    206: {"description": "The range asked for", "content": _BYTES},
}


def router(ctl: Controller, check_token: Callable[[str | None], None]) -> APIRouter:
    r = APIRouter(prefix="/v1/images", tags=["images"])
    for part, pick in PARTS.items():
        _add(r, ctl, check_token, part, pick)
    return r


def _add(
    r: APIRouter,
    ctl: Controller,
    check_token: Callable[[str | None], None],
    part: str,
    pick: Pick,
) -> None:
    @r.get(
        f"/{{p}}/{{o}}/{{s}}/{{v}}/{part}",
        name=f"image-{part}",
        response_class=FileResponse,
        responses={**_SERVED, **errors(400, 401, 404)},
    )
    def served(
        p: str,
        o: str,
        s: str,
        v: str,
        sig: str | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> FileResponse:
        """With ``sig`` (the controller's signature of its sha256) no token is needed."""
        if sig is None:
            check_token(authorization)
        try:
            rec = resolve(ctl, p, o, s, v)
        except ControllerError:
            if sig is not None:  # say nothing of what exists to the unauthenticated
                raise ApiError(401, "Unauthorized", "invalid signature") from None
            raise
        path, sha = pick(rec)
        if sig is not None and (
            sha is None or not hmac.compare_digest(sig.encode(), ctl.blob_signature(sha).encode())
        ):
            raise ApiError(401, "Unauthorized", "invalid signature")
        if path is None or sha is None:
            raise ApiError(404, "NotFound", f"image {p}/{o}/{s}/{v} has no {part}")
        return FileResponse(path, media_type="application/octet-stream")
