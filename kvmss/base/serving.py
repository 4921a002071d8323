"""Running uvicorn servers as a systemd service (``Type=notify``).

Both daemons (controller, host agent) serve through :func:`serve`, which says
``READY=1`` only once every listener accepts connections, pets the watchdog
from the serving event loop, and says ``STOPPING=1`` as soon as a shutdown
begins.

It also owns SIGTERM and SIGINT for the whole process. uvicorn's own handling
works for one server per process, but with two it chains the handlers and, on
the way out, re-raises the signal with the default action: the process dies
of SIGTERM before the agent's cleanup (operations, libvirt connection) runs.
Here the first signal asks every server to finish its requests, a second one
stops waiting, and the process returns normally from :func:`serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import signal
import socket
from collections.abc import Iterator, Sequence

import uvicorn

from kvmss.base import sdnotify
from kvmss.base.sdnotify import Notifier

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)
READY_POLL = 0.02


class Server(uvicorn.Server):
    """A uvicorn server that leaves signals to :func:`serve`, optionally on a
    socket bound elsewhere (in another network namespace)."""

    bound: socket.socket | None = None

    def listen_on(self, sock: socket.socket) -> None:
        """Serve on ``sock`` (bound, not yet listening) instead of binding host:port."""
        self.bound = sock

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None and self.bound is not None:
            sockets = [self.bound]
        await super().serve(sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class _Shutdown:
    """Asks the servers to exit once (STOPPING=1 first), to hurry on a repeat."""

    def __init__(self, servers: Sequence[uvicorn.Server], notifier: Notifier) -> None:
        self.servers = servers
        self.notifier = notifier
        self.requested = False
        self.announcer: asyncio.Future[None] | None = None

    def request(self, why: str) -> None:
        if self.requested:
            for s in self.servers:
                s.force_exit = True
            return
        self.requested = True
        log.info("stopping: %s", why)
        if self.announcer is not None:  # no READY=1 nor pets after STOPPING=1
            self.announcer.cancel()
        self.notifier.stopping(f"stopping: {why}")
        for s in self.servers:
            s.should_exit = True

    def on_signal(self, sig: signal.Signals) -> None:
        self.request(f"{sig.name} received")


def trouble(servers: Sequence[uvicorn.Server]) -> str | None:
    """None while every server listens, else what is wrong (for the watchdog)."""
    for s in servers:
        if s.should_exit:
            return "shutting down"
        listeners = getattr(s, "servers", [])
        if not s.started or not listeners or not all(x.is_serving() for x in listeners):
            return f"listener {s.config.host}:{s.config.port} is not serving"
    return None


async def _announce(servers: Sequence[uvicorn.Server], notifier: Notifier, status: str) -> None:
    """READY=1 once all listeners accept connections, then the watchdog, if asked for."""
    while not all(s.started for s in servers):
        if any(s.should_exit for s in servers):
            return
        await asyncio.sleep(READY_POLL)
    notifier.ready(status)
    interval = sdnotify.watchdog_interval()
    if interval is not None and notifier.enabled:
        await sdnotify.feed_watchdog(notifier, interval, lambda: trouble(servers))


async def serve(
    servers: Sequence[uvicorn.Server],
    notifier: Notifier,
    status: str,
    handle_signals: bool = False,
) -> None:
    """Run ``servers`` (built as :class:`Server` when ``handle_signals``) until
    they exit; when one exits, the others are asked to as well.

    ``status`` is the STATUS= text sent with READY=1. ``handle_signals``
    (foreground daemons, main thread only) installs the SIGTERM/SIGINT handling
    described above and, when systemd watches the process, faulthandler, so a
    watchdog kill (SIGABRT) leaves every thread's stack in the journal."""
    if handle_signals and not all(isinstance(s, Server) for s in servers):
        raise TypeError("serve(handle_signals=True) needs kvmss.base.serving.Server listeners")
    loop = asyncio.get_running_loop()
    shutdown = _Shutdown(servers, notifier)
    if handle_signals:
        for sig in SIGNALS:
            loop.add_signal_handler(sig, shutdown.on_signal, sig)
        if sdnotify.watchdog_interval() is not None and not faulthandler.is_enabled():
            faulthandler.enable(all_threads=True)
    tasks = [asyncio.ensure_future(s.serve()) for s in servers]
    shutdown.announcer = asyncio.ensure_future(_announce(servers, notifier, status))
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if not shutdown.requested:
            shutdown.request("a listener stopped")
        await asyncio.gather(*tasks)
    finally:
        if not shutdown.requested:  # cancelled, or a server raised
            shutdown.request("serving ended")
        if handle_signals:
            for sig in SIGNALS:
                loop.remove_signal_handler(sig)
