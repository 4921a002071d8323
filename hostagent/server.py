"""Running the agent's two listeners (management API and guest reports) with
uvicorn in one process."""

from __future__ import annotations

import asyncio
import logging
import threading

import uvicorn

from hostagent.api import create_app
from hostagent.guestapi import create_guest_app
from hostagent.service import Agent

log = logging.getLogger(__name__)


class AgentServer:
    """Both listeners on one event loop in a background thread (tests, lab) or
    in the foreground (``kvmss-agent serve``)."""

    def __init__(self, agent: Agent, guest_host: str | None = None) -> None:
        cfg = agent.config
        self.agent = agent
        self.api = uvicorn.Server(
            uvicorn.Config(
                create_app(agent),
                host=cfg.listen_host,
                port=cfg.listen_port,
                log_level="warning",
                access_log=False,
            )
        )
        self.guest = uvicorn.Server(
            uvicorn.Config(
                create_guest_app(agent),
                host=guest_host or agent.subnet.gateway,
                port=cfg.guest_port,
                log_level="warning",
                access_log=False,
            )
        )
        self._thread: threading.Thread | None = None

    async def serve(self) -> None:
        await asyncio.gather(self.api.serve(), self.guest.serve())

    def run(self) -> None:
        asyncio.run(self.serve())

    def start_background(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self.run, name="agent-http", daemon=True)
        self._thread.start()
        ev = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if self.api.started and self.guest.started:
                return
            ev.wait(0.05)
        raise RuntimeError("agent listeners did not start")

    def stop(self) -> None:
        self.api.should_exit = True
        self.guest.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
