"""A controller built in this process and served by uvicorn on a thread, its
database and image blobs under a directory of the test's: what the tests
that drive a real controller over HTTP share."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import uvicorn

from bench.served import free_port
from controller.daemon.server import ControllerConfig, build
from controller.service.controller import Controller
from kvmss.base.clock import SystemClock
from kvmss.base.waiting import wait_until


@dataclass
class ServedController:
    url: str
    port: int
    token: str
    ctl: Controller
    database: Path

    def call(self, method: str, path: str, **kw: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        r = self.call(method, path, **kw)
        assert r.status_code < 400, (method, path, r.status_code, r.text)
        return r.json() if r.content else None


@contextmanager
def served_controller(
    root: Path, token: str, host: str = "127.0.0.1", **settings: Any
) -> Iterator[ServedController]:
    """A controller with its database and blobs under ``root``, listening on
    ``host`` (its URL always says 127.0.0.1); ``settings`` go into its
    configuration as they are."""
    port = free_port()
    cfg = ControllerConfig.from_dict(
        {
            "listen": f"{host}:{port}",
            "token": token,
            "database": str(root / "kvmss.db"),
            "blob_dir": str(root / "images"),
            "public_url": f"http://127.0.0.1:{port}",
            **settings,
        }
    )
    ctl, app = build(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        if not wait_until(SystemClock(), lambda: server.started, timeout=30, interval=0.05):
            raise RuntimeError(f"the controller did not start serving on port {port}")
        yield ServedController(f"http://127.0.0.1:{port}", port, token, ctl, cfg.database)
    finally:
        ctl.close()
        server.should_exit = True
        thread.join(10)
        ctl.store.close()
