"""The controller's REST API (docs/design.md "Processes"): bearer token on
all but /healthz and /metrics; errors are ``{"error": {"code", "message"}}``
with a 4xx status (docs/design.md "Errors"). Image files are also readable
with the signed URL the controller hands to agents (``?sig=``). The routes
are in one module per resource; this one assembles them.

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
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Request, Response

from controller.api import blobs, hosts, images, instances, monitoring, scalesets, upgrades
from controller.service.controller import Controller, ControllerError
from kvmss.base.httperrors import bearer_auth, error_response, install

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
    """The API over ``ctl``; uploads are received into ``staging``."""
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
    routers = (
        monitoring.router(ctl),
        images.router(ctl, staging, authed),
        blobs.router(ctl, check_token),
        hosts.router(ctl, authed),
        scalesets.router(ctl, authed),
        instances.router(ctl, authed),
        upgrades.router(ctl, authed),
    )
    # Their routes join the app's own (each already has its prefix and
    # dependencies): an included router is matched through a layer of its
    # own on every request, which the small reads under load would pay for.
    for router in routers:
        app.router.routes.extend(router.routes)
    return app
