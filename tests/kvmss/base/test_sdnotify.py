"""kvmss.base.sdnotify and the daemons' notifications, received on a real AF_UNIX
datagram socket that the test binds where systemd would (a path, or an
abstract name), with the real controller and agent as subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import uvicorn
import yaml
from fastapi import FastAPI

from bench.served import free_port
from kvmss.base import sdnotify, serving
from kvmss.base.sdnotify import Notifier
from tests.agentproc import REPO, AgentProcess
from tests.fixtures import storage_root

WATCHDOG_USEC = 400_000  # pets every 0.2 s


@dataclass(frozen=True)
class Message:
    at: float  # time.monotonic() on arrival
    raw: bytes

    @property
    def fields(self) -> dict[str, str]:
        return dict(line.split("=", 1) for line in self.raw.decode().splitlines() if line)


class NotifySocket:
    """Stands in for systemd's notify socket: records every datagram with its
    arrival time, from a thread, so gaps between pets can be measured."""

    def __init__(self, address: str) -> None:
        self.env_value = "@" + address[1:] if address.startswith("\0") else address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.messages.append(Message(time.monotonic(), data))
                self._cond.notify_all()

    def wait_for(self, key: str, value: str = "1", timeout: float = 60.0) -> Message:
        """The first message (received so far or within ``timeout``) that sets ``key``."""

        def found() -> Message | None:
            return next((m for m in self.messages if m.fields.get(key) == value), None)

        with self._cond:
            got = self._cond.wait_for(found, timeout)
        assert got is not None, f"no {key}={value} within {timeout}s; got {self.raw()}"
        return got

    def raw(self) -> list[bytes]:
        with self._cond:
            return [m.raw for m in self.messages]

    def pets(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        with self._cond:
            return [m.at for m in self.messages if "WATCHDOG" in m.fields and since <= m.at < until]

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """AF_UNIX paths are limited to 107 bytes: pytest's tmp_path can be longer."""
    d = Path(tempfile.mkdtemp(prefix="sdn-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def path_socket(short_dir: Path) -> Iterator[NotifySocket]:
    s = NotifySocket(str(short_dir / "notify"))
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    s = NotifySocket(f"\0kvmss-test-{os.urandom(6).hex()}")
    try:
        yield s
    finally:
        s.close()


# --- the client -----------------------------------------------------------------


def test_ready_with_status_reaches_a_path_socket(path_socket: NotifySocket) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": path_socket.env_value})
    assert n.enabled
    assert n.ready("serving on 127.0.0.1:8080")
    path_socket.wait_for("READY")
    assert path_socket.raw() == [b"READY=1\nSTATUS=serving on 127.0.0.1:8080\n"]


def test_every_notification_reaches_an_abstract_socket(abstract_socket: NotifySocket) -> None:
    assert abstract_socket.env_value.startswith("@kvmss-test-")
    n = Notifier.from_environ({"NOTIFY_SOCKET": abstract_socket.env_value})
    assert n.ready()
    assert n.status("line one\nline two")
    assert n.watchdog()
    assert n.stopping("stopping: SIGTERM received")
    abstract_socket.wait_for("STOPPING")
    assert abstract_socket.raw() == [
        b"READY=1\n",
        b"STATUS=line one line two\n",  # the protocol is line-based: one line per field
        b"WATCHDOG=1\n",
        b"STOPPING=1\nSTATUS=stopping: SIGTERM received\n",
    ]
    assert repr(n) == f"Notifier({abstract_socket.env_value!r})"


@pytest.mark.parametrize("value", [None, "", "vsock:2:1234", "relative/notify", "@"])
def test_without_a_usable_notify_socket_nothing_is_sent(value: str | None) -> None:
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    n = Notifier.from_environ(env)
    assert not n.enabled
    assert not n.ready("x")
    assert not n.watchdog()


def test_undeliverable_notifications_are_logged_once_and_never_raise(
    short_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier(str(short_dir / "gone"))
    with caplog.at_level(logging.WARNING, logger="kvmss.base.sdnotify"):
        assert not n.watchdog()
        assert not n.watchdog()
        assert not n.ready()
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["cannot notify systemd (WATCHDOG): ENOENT"]


@pytest.mark.parametrize(
    ("env", "timeout"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "400000"}, 0.4),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None),  # someone else's
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "me"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
    ],
)
def test_watchdog_timeout_and_interval(env: dict[str, str], timeout: float | None) -> None:
    assert sdnotify.watchdog_timeout(env) == timeout
    assert sdnotify.watchdog_interval(env) == (None if timeout is None else timeout / 2)


def feed(
    notifier: Notifier, trouble: Callable[[], str | None], script: Callable[[], Awaitable[None]]
) -> None:
    """Run the feeder (every 0.05 s) on an event loop alongside ``script``, a
    coroutine function that does what the daemon's loop would."""

    async def main() -> None:
        feeder = asyncio.ensure_future(sdnotify.feed_watchdog(notifier, 0.05, trouble))
        try:
            await script()
        finally:
            feeder.cancel()

    asyncio.run(main())


def test_a_blocked_event_loop_stops_the_pets(path_socket: NotifySocket) -> None:
    n = Notifier(path_socket.env_value)
    marks: dict[str, float] = {}

    async def script() -> None:
        await asyncio.sleep(0.4)
        marks["block"] = time.monotonic()
        time.sleep(0.6)  # a hung handler: the loop runs nothing else
        marks["unblock"] = time.monotonic()
        await asyncio.sleep(0.4)

    feed(n, lambda: None, script)
    time.sleep(0.1)  # the receiver thread records the last datagrams
    # Arrival is recorded by a thread: allow it 0.1 s of scheduling delay.
    assert len(path_socket.pets(until=marks["block"])) >= 4
    assert path_socket.pets(marks["block"] + 0.1, marks["unblock"]) == []
    assert len(path_socket.pets(since=marks["unblock"])) >= 4
    pets = path_socket.pets()
    assert max(b - a for a, b in itertools.pairwise(pets)) >= 0.5


def test_no_pets_while_the_daemon_reports_trouble(
    path_socket: NotifySocket, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier(path_socket.env_value)
    broken = threading.Event()
    marks: dict[str, float] = {}

    async def script() -> None:
        await asyncio.sleep(0.3)
        broken.set()
        marks["broken"] = time.monotonic()
        await asyncio.sleep(0.5)
        broken.clear()
        marks["fixed"] = time.monotonic()
        await asyncio.sleep(0.3)

    with caplog.at_level(logging.WARNING, logger="kvmss.base.sdnotify"):
        feed(n, lambda: "listener 127.0.0.1:1 is not serving" if broken.is_set() else None, script)
    time.sleep(0.1)
    assert len(path_socket.pets(until=marks["broken"])) >= 3
    assert path_socket.pets(marks["broken"] + 0.1, marks["fixed"]) == []
    assert len(path_socket.pets(since=marks["fixed"])) >= 2
    assert [r.getMessage() for r in caplog.records] == [
        "not petting the systemd watchdog: listener 127.0.0.1:1 is not serving"
    ]


# --- kvmss.base.serving: READY=1 and STOPPING=1 around real uvicorn servers ----------


def app_starting_after(gate: threading.Event | None) -> FastAPI:
    """An app whose startup waits for ``gate`` (a listener that is slow to come up)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if gate is not None:
            await asyncio.to_thread(gate.wait, 30)
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    return app


def test_ready_only_once_every_listener_serves_and_one_stopping_stops_all(
    path_socket: NotifySocket,
) -> None:
    gate = threading.Event()
    ports = [free_port(), free_port()]
    fast, slow = (
        serving.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        for app, port in zip(
            (app_starting_after(None), app_starting_after(gate)), ports, strict=True
        )
    )
    notifier = Notifier(path_socket.env_value)
    thread = threading.Thread(
        target=lambda: asyncio.run(serving.serve([fast, slow], notifier, "serving both"))
    )
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not fast.started:
            assert time.monotonic() < deadline, "the first listener did not start"
            time.sleep(0.02)
        time.sleep(0.3)
        assert path_socket.raw() == []  # one listener up, the other still starting
        gate.set()
        ready = path_socket.wait_for("READY", timeout=30)
        assert ready.fields["STATUS"] == "serving both"
        for port in ports:
            assert requests.get(f"http://127.0.0.1:{port}/ping", timeout=5).json() == "pong"
        fast.should_exit = True  # one listener ends: the other is asked to end too
        stopping = path_socket.wait_for("STOPPING", timeout=30)
        assert stopping.fields["STATUS"] == "stopping: a listener stopped"
        thread.join(30)
        assert not thread.is_alive()
        assert slow.should_exit
    finally:
        gate.set()
        fast.should_exit = slow.should_exit = True
        thread.join(30)


# --- the daemons ----------------------------------------------------------------


def notify_env(sock: NotifySocket) -> dict[str, str]:
    return {"NOTIFY_SOCKET": sock.env_value, "WATCHDOG_USEC": str(WATCHDOG_USEC)}


def assert_ready_pets_and_stops(
    sock: NotifySocket, proc: subprocess.Popen[bytes], answers: Callable[[], bool]
) -> Message:
    """READY=1 first, the API answering right then, pets every ~0.2 s, and on
    SIGTERM STOPPING=1 and a clean exit."""
    ready = sock.wait_for("READY", timeout=90)
    assert answers(), "READY=1 was sent before the API answered"
    assert sock.raw()[0] == ready.raw  # nothing before READY=1
    deadline = ready.at + 1.5
    while len(sock.pets(until=deadline)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(sock.pets(until=deadline)) >= 2, sock.raw()
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    stopping = sock.wait_for("STOPPING", timeout=15)
    assert proc.wait(60) == 0
    assert not sock.pets(since=stopping.at + 0.01)
    return ready


def test_controller_notifies_ready_watchdog_and_stopping(path_socket: NotifySocket) -> None:
    with storage_root("sdn-ctl") as root:
        port = free_port()
        config = root / "controller.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{port}",
                    "token": "controller-token-" + os.urandom(8).hex(),
                    "database": str(root / "kvmss.db"),
                    "blob_dir": str(root / "images"),
                }
            )
        )

        def answers() -> bool:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200

        with (root / "controller.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "controller.daemon.server", "--config", str(config)],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **notify_env(path_socket)},
            )
        try:
            ready = assert_ready_pets_and_stops(path_socket, proc, answers)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        assert ready.fields["STATUS"] == f"serving on 127.0.0.1:{port}"


def test_agent_notifies_ready_once_both_listeners_serve(abstract_socket: NotifySocket) -> None:
    with storage_root("sdn-agent") as root:
        agent = AgentProcess(root)
        cfg = yaml.safe_load(agent.config.read_text())
        gateway = str(next(ipaddress.IPv4Network(agent.subnet).hosts()))

        def answers() -> bool:
            host = agent.client.host()
            with socket.create_connection((gateway, cfg["guest_port"]), timeout=5):
                pass  # the guest listener accepts too
            return host.name == agent.name

        agent.spawn(env=notify_env(abstract_socket))
        assert agent.proc is not None
        try:
            ready = assert_ready_pets_and_stops(abstract_socket, agent.proc, answers)
        finally:
            agent.cleanup()
        status = ready.fields["STATUS"]
        assert f"API on 127.0.0.1:{agent.port}" in status
        assert f"guest reports on {gateway}:{cfg['guest_port']}" in status
