"""The controller's app over a real SQLite store and catalog, with the agent
double standing in for host agents, holding one of everything a path can
name: image kvmss/tiny/1/1, host x1, scale set x1 (one instance, id 0)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from bench.scalesets import image_reference
from controller.api.app import create_app
from controller.service.controller import Controller
from kvmss.base import qemuimg
from kvmss.base.clock import SystemClock
from tests.controller.agentdouble import AgentDouble
from tests.controller.controllerenv import make_controller
from tests.security.routes import files_under, sqlite_dump

CONTROLLER_TOKEN = "controller-token-sec-8d2e6f4a1b3c5d7e9f"
CONTROLLER_AUTH = {"Authorization": f"Bearer {CONTROLLER_TOKEN}"}
# A value for every path parameter, naming something that exists.
CONTROLLER_VALUES = {"p": "kvmss", "o": "tiny", "s": "1", "v": "1", "name": "x1", "iid": "0"}


def model(capacity: int = 1, **profile: Any) -> dict[str, Any]:
    return {
        "sku": {"capacity": capacity},
        "properties": {
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": image_reference("kvmss", "tiny", "1")},
                **profile,
            }
        },
    }


@dataclass
class ControllerEnv:
    api: TestClient
    app: FastAPI
    ctl: Controller
    root: Path

    def settle(self, quiet: float = 0.5, timeout: float = 20) -> None:
        """Wait until the background reconcile has done its work: nothing
        changed for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        last, since = self.state(), time.monotonic()
        while time.monotonic() - since < quiet:
            assert time.monotonic() < deadline, "the controller never settled"
            time.sleep(0.05)
            now = self.state()
            if now != last:
                last, since = now, time.monotonic()

    def state(self) -> tuple[Any, ...]:
        """Every row of the database and every file of the controller."""
        return (
            sqlite_dump(self.root / "c.db"),
            files_under(self.root, skip_suffixes=(".db", ".db-wal", ".db-shm")),
        )


@contextmanager
def controller_env(root: Path) -> Iterator[ControllerEnv]:
    """The controller's database, blobs and staging directory under ``root``."""
    agents = AgentDouble(SystemClock(), op_seconds=0, boot_seconds=0)
    ctl, staging = make_controller(root, agents)
    app = create_app(ctl, CONTROLLER_TOKEN, staging)
    env = ControllerEnv(TestClient(app), app, ctl, root)
    try:
        qemuimg.create(root / "v1.qcow2", 16 << 20)
        r = env.api.put(
            "/v1/images/kvmss/tiny/1/1",
            content=(root / "v1.qcow2").read_bytes(),
            headers=CONTROLLER_AUTH,
        )
        assert r.status_code == 201, r.text
        (root / "v1.qcow2").unlink()
        host = {"name": "x1", "url": "http://agent.invalid/x1", "token": "t" * 32}
        r = env.api.post("/v1/hosts", json=host, headers=CONTROLLER_AUTH)
        assert r.status_code == 201, r.text
        r = env.api.put("/v1/scaleSets/x1", json=model(), headers=CONTROLLER_AUTH)
        assert r.status_code == 201, r.text
        env.settle()
        yield env
    finally:
        ctl.close()
        ctl.store.close()
