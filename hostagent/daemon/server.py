"""Running the agent's two listeners (management API and guest reports) with
uvicorn in one process, as a systemd ``Type=notify`` service when run in the
foreground (see :mod:`kvmss.base.serving`)."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn

from hostagent.daemon.api import create_app
from hostagent.daemon.guestapi import create_guest_app
from hostagent.daemon.service import Agent
from hostagent.network import netns
from kvmss.base import serving
from kvmss.base.sdnotify import Notifier

log = logging.getLogger(__name__)


class AgentServer:
    """Both listeners on one event loop in a background thread (tests, lab) or
    in the foreground (``kvmss-agent serve``).

    The agent must have been started (:meth:`Agent.start`: bridge up,
    half-done operations settled) before; READY=1 then means recovered and
    both listeners accepting connections."""

    def __init__(
        self, agent: Agent, guest_host: str | None = None, notifier: Notifier | None = None
    ) -> None:
        cfg = agent.config
        self.agent = agent
        self.notifier = notifier or Notifier(None)
        self.api = serving.Server(
            uvicorn.Config(
                create_app(agent),
                host=cfg.listen_host,
                port=cfg.listen_port,
                log_level="warning",
                access_log=False,
            )
        )
        self.guest = serving.Server(
            uvicorn.Config(
                create_guest_app(agent),
                host=guest_host or agent.subnet.gateway,
                port=cfg.guest_port,
                log_level="warning",
                access_log=False,
            )
        )
        self._thread: threading.Thread | None = None

    @property
    def status(self) -> str:
        """The STATUS= line systemd shows while the agent serves."""
        api, guest = self.api.config, self.guest.config
        return (
            f"serving API on {api.host}:{api.port}, guest reports on {guest.host}:{guest.port}"
            f" (domain type {self.agent.domain_type})"
        )

    async def serve(self, handle_signals: bool = False) -> None:
        ns = self.agent.config.network_namespace
        if ns is not None:  # the guest listener's socket is bound in the guests' namespace
            self.guest.listen_on(self._guest_socket(ns))
        await serving.serve([self.api, self.guest], self.notifier, self.status, handle_signals)

    def _guest_socket(self, namespace: str) -> socket.socket:
        cfg = self.guest.config
        sock = netns.socket_in(namespace)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        return sock

    def run(self) -> None:
        """In the foreground, until SIGTERM/SIGINT: notifies systemd when
        NOTIFY_SOCKET is set (unless a notifier was given)."""
        if not self.notifier.enabled:
            self.notifier = Notifier.from_environ()
        asyncio.run(self.serve(handle_signals=True))

    def start_background(self, timeout: float = 10.0) -> None:
        def run() -> None:
            asyncio.run(self.serve())

        self._thread = threading.Thread(target=run, name="agent-http", daemon=True)
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
