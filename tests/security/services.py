"""The real services over HTTP: a controller served by uvicorn in this process
(on an address of the test's choosing), and a ``kvmss-agent serve`` process
logging at DEBUG to a file."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import uvicorn
import yaml

from bench.served import free_port
from controller.daemon.server import ControllerConfig, build
from controller.service.controller import Controller
from hostagent.contract.client import AgentClient, AgentError
from hostagent.guest.tokens import GuestTokens
from tests.agentproc import REPO


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
    root: Path, token: str, host: str = "127.0.0.1"
) -> Iterator[ServedController]:
    """A controller with its database and blobs under ``root``, listening on
    ``host`` (its URL always says 127.0.0.1)."""
    port = free_port()
    cfg = ControllerConfig.from_dict(
        {
            "listen": f"{host}:{port}",
            "token": token,
            "database": str(root / "kvmss.db"),
            "blob_dir": str(root / "images"),
            "public_url": f"http://127.0.0.1:{port}",
            "poll_seconds": 0.2,
        }
    )
    ctl, app = build(cfg)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield ServedController(f"http://127.0.0.1:{port}", port, token, ctl, cfg.database)
    finally:
        ctl.close()
        server.should_exit = True
        thread.join(10)
        ctl.store.close()


AGENT_COMMAND = (sys.executable, "-m", "hostagent.daemon.cli", "serve", "--log-level", "debug")


class AgentServe:
    """``kvmss-agent serve --log-level debug`` with its own configuration."""

    def __init__(self, root: Path, config: dict[str, Any], listen_host: str = "127.0.0.1") -> None:
        self.root = root
        self.storage = root / "storage"
        self.port = free_port()
        self.token: str = config["token"]
        self.log = root / "agent.log"
        self.config = root / "agent.yaml"
        self.settings = {
            "listen": f"{listen_host}:{self.port}",
            "storage_dir": str(self.storage),
            "guest_port": free_port(),
            "shutdown_timeout": 10,
            **config,
        }
        self.config.write_text(yaml.safe_dump(self.settings))
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = AgentClient(self.url, self.token, timeout=60)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def guest_port(self) -> int:
        return int(self.settings["guest_port"])

    def start(self) -> None:
        with self.log.open("ab") as logf:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "hostagent.daemon.cli",
                    "serve",
                    "--log-level",
                    "debug",
                    "--config",
                    str(self.config),
                ],
                cwd=REPO,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log.read_text()[-3000:]}")
            try:
                self.client.host()
                return
            except AgentError:
                time.sleep(0.1)
        raise RuntimeError("agent did not answer within 60s")

    def guest_token(self, instance: str) -> str:
        return GuestTokens(self.storage / "guest-secret").token(instance)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def remove_domains(self) -> None:
        """Destroy and undefine every domain whose disks are under this agent's storage."""
        import libvirt

        conn = libvirt.open(str(self.settings["libvirt_uri"]))
        try:
            for dom in conn.listAllDomains(0):
                if str(self.storage) in dom.XMLDesc(0):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
        finally:
            conn.close()
