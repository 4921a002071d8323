from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hostagent.contract import instancespec, views
from hostagent.health.probes import Prober, ProbeResult, ProbeTracker, probe_once, probe_timeout
from kvmss.base.clock import FakeClock, SystemClock, iso8601
from kvmss.base.waiting import wait_until

SECRET_BODY = "s3cr3t-body-never-in-errors"


@dataclass
class Web:
    """A real HTTP server on 127.0.0.1 with a few fixed answers."""

    port: int
    ready: threading.Event = field(default_factory=threading.Event)
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def web() -> Iterator[Web]:
    state = Web(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.paths.append(self.path)
            path = self.path.split("?")[0]
            if path == "/ok" or path == "/a%20b":
                self._answer(200)
            elif path == "/fail":
                self._answer(500)
            elif path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/ok")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif path == "/ready":
                self._answer(200 if state.ready.is_set() else 503)
            else:
                self._answer(404)

        def _answer(self, status: int) -> None:
            body = SECRET_BODY.encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    t = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    t.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound (so nobody else takes it) but not listening: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A listener that never accepts: connects succeed, nothing ever answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def http(port: int, path: str, interval: int = 5, n: int = 2) -> instancespec.HealthProbe:
    return instancespec.HealthProbe(
        protocol="Http", port=port, requestPath=path, intervalInSeconds=interval, numberOfProbes=n
    )


def tcp(port: int, interval: int = 5, n: int = 2) -> instancespec.HealthProbe:
    return instancespec.HealthProbe(
        protocol="Tcp", port=port, intervalInSeconds=interval, numberOfProbes=n
    )


# ---- probe_once -----------------------------------------------------------------


def test_http_200_is_healthy(web: Web) -> None:
    assert probe_once(http(web.port, "/ok"), "127.0.0.1", 2.0) == ProbeResult(True, None)
    assert web.paths == ["/ok"]


@pytest.mark.parametrize(
    ("path", "error"), [("/fail", "HTTP 500"), ("/missing", "HTTP 404"), ("/redirect", "HTTP 302")]
)
def test_http_other_status_is_unhealthy_without_body(web: Web, path: str, error: str) -> None:
    r = probe_once(http(web.port, path), "127.0.0.1", 2.0)
    assert r == ProbeResult(False, error)
    assert "/ok" not in web.paths  # the redirect was not followed


def test_http_request_path_is_sent_encoded_with_query(web: Web) -> None:
    assert probe_once(http(web.port, "/a b?x=1&y=%2F"), "127.0.0.1", 2.0).ok
    assert web.paths == ["/a%20b?x=1&y=%2F"]


def test_http_closed_port_is_connection_refused(closed_port: int) -> None:
    r = probe_once(http(closed_port, "/ok"), "127.0.0.1", 2.0)
    assert r == ProbeResult(False, "connection refused")


def test_http_no_answer_times_out(black_hole: int) -> None:
    t0 = time.monotonic()
    r = probe_once(http(black_hole, "/ok"), "127.0.0.1", 0.5)
    elapsed = time.monotonic() - t0
    assert r == ProbeResult(False, "timeout after 0.5s")
    assert 0.4 <= elapsed < 2.0


def _one_shot_server(reply: bytes) -> tuple[socket.socket, threading.Thread]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(4096)
            if reply:
                conn.sendall(reply)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"", "connection closed without a response"),
        (f"GARBAGE {SECRET_BODY}\r\n\r\n".encode(), "invalid HTTP response"),
    ],
)
def test_http_broken_responses(reply: bytes, error: str) -> None:
    srv, t = _one_shot_server(reply)
    with srv:
        r = probe_once(http(srv.getsockname()[1], "/ok"), "127.0.0.1", 2.0)
        t.join(2)
    assert r == ProbeResult(False, error)
    assert SECRET_BODY not in (r.error or "")


def test_tcp_listener_is_healthy_closed_port_is_not(black_hole: int, closed_port: int) -> None:
    assert probe_once(tcp(black_hole), "127.0.0.1", 2.0) == ProbeResult(True, None)
    assert probe_once(tcp(closed_port), "127.0.0.1", 2.0) == ProbeResult(
        False, "connection refused"
    )


def test_probe_address_must_be_an_ip() -> None:
    with pytest.raises(ValueError, match="probe address 'localhost' is not an IP address"):
        probe_once(tcp(80), "localhost", 1.0)


def test_probe_timeout_is_interval_capped_at_5s() -> None:
    assert probe_timeout(tcp(80, interval=1)) == 1.0
    assert probe_timeout(tcp(80, interval=5)) == 5.0
    assert probe_timeout(tcp(80, interval=60)) == 5.0


# ---- ProbeTracker -----------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_tracker_turns_healthy_exactly_at_n_successes(n: int) -> None:
    t = ProbeTracker(n)
    assert t.healthy is None
    for i in range(n - 1):
        t.record(True, None, 100.0 + i)
        assert t.healthy is None
        assert t.consecutive_successes == i + 1
    t.record(True, None, 200.0)
    assert t.healthy is True
    assert t.consecutive_successes == n
    assert t.last_probe_time == 200.0


@pytest.mark.parametrize("n", [1, 2, 4])
def test_tracker_flips_only_after_n_failures_and_back(n: int) -> None:
    t = ProbeTracker(n)
    for _ in range(n):
        t.record(True, None, 1.0)
    assert t.healthy is True
    for i in range(n - 1):
        t.record(False, "HTTP 503", 2.0)
        assert t.healthy is True, f"flipped after {i + 1} of {n} failures"
    t.record(False, "HTTP 503", 3.0)
    assert t.healthy is False
    assert t.consecutive_failures == n
    assert t.consecutive_successes == 0
    assert t.last_error == "HTTP 503"
    for _ in range(n - 1):
        t.record(True, None, 4.0)
        assert t.healthy is False
    t.record(True, None, 5.0)
    assert t.healthy is True
    assert t.last_error is None


def test_tracker_unknown_to_unhealthy_and_interrupted_streaks() -> None:
    t = ProbeTracker(3)
    t.record(False, "connection refused", 1.0)
    t.record(False, "connection refused", 2.0)
    t.record(True, None, 3.0)  # breaks the failure streak
    t.record(False, "timeout after 5.0s", 4.0)
    t.record(False, "timeout after 5.0s", 5.0)
    assert t.healthy is None
    t.record(False, "timeout after 5.0s", 6.0)
    assert t.healthy is False
    assert t.status() == views.ProbeStatus(
        healthy=False,
        consecutiveSuccesses=0,
        consecutiveFailures=3,
        lastError="timeout after 5.0s",
        lastProbeTime=iso8601(6.0),
    )


def test_tracker_status_before_any_probe() -> None:
    assert ProbeTracker(2).status() == views.ProbeStatus()
    with pytest.raises(ValueError, match="numberOfProbes"):
        ProbeTracker(0)


# ---- Prober, driven through run_due with a fake clock ----------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def prober(clock: FakeClock) -> Iterator[Prober]:
    p = Prober(clock)
    try:
        yield p
    finally:
        p.stop()


def test_run_due_follows_each_instance_interval(
    prober: Prober, clock: FakeClock, black_hole: int
) -> None:
    prober.watch("a", tcp(black_hole, interval=2), "127.0.0.1")
    prober.watch("b", tcp(black_hole, interval=3), "127.0.0.1")
    ran = {}
    for step in range(0, 13):
        ran[step] = prober.run_due(clock.monotonic())
        clock.advance(1)
    # a at 0,2,4,6,8,10,12; b at 0,3,6,9,12
    assert ran == {0: 2, 1: 0, 2: 1, 3: 1, 4: 1, 5: 0, 6: 2, 7: 0, 8: 1, 9: 1, 10: 1, 11: 0, 12: 2}
    assert prober.status("a") == views.ProbeStatus(
        healthy=True, consecutiveSuccesses=7, lastProbeTime=iso8601(clock.now() - 1)
    )
    b = prober.status("b")
    assert b is not None
    assert b.consecutiveSuccesses == 5


def test_run_due_does_not_burst_after_falling_behind(
    prober: Prober, clock: FakeClock, black_hole: int
) -> None:
    prober.watch("a", tcp(black_hole, interval=2), "127.0.0.1")
    assert prober.run_due(0.0) == 1
    assert prober.run_due(11.0) == 1  # five intervals late: one probe, not five
    assert prober.run_due(12.0) == 0
    assert prober.run_due(13.0) == 1
    assert prober.seconds_to_next_due(13.0) == 2.0


@pytest.mark.parametrize("service_start", [17.0, 20.0, 20.5])
def test_service_becomes_healthy_within_interval_times_n(
    prober: Prober, clock: FakeClock, web: Web, service_start: float
) -> None:
    interval, n = 5, 3
    prober.watch("web-0", http(web.port, "/ready", interval=interval, n=n), "127.0.0.1")
    probes: list[float] = []
    healthy_at = None
    became_unhealthy_at = None
    while clock.monotonic() <= 60:
        now = clock.monotonic()
        if now >= service_start:
            web.ready.set()
        if prober.run_due(now):
            probes.append(now)
        state = prober.healthy("web-0")
        if state is False and became_unhealthy_at is None:
            became_unhealthy_at = now
        if state is True:
            healthy_at = now
            break
        clock.advance(0.5)
    assert probes[:3] == [0.0, 5.0, 10.0]
    assert became_unhealthy_at == 10.0  # n failures in a row from the start
    first_after_start = min(t for t in probes if t >= service_start)
    assert healthy_at == first_after_start + (n - 1) * interval
    assert service_start < healthy_at <= service_start + interval * n
    status = prober.status("web-0")
    assert status is not None
    assert status.consecutiveSuccesses == n
    assert status.lastProbeTime == iso8601(clock.now())
    assert status.lastError is None


def test_failed_http_probe_reports_status_code(prober: Prober, clock: FakeClock, web: Web) -> None:
    prober.watch("web-0", http(web.port, "/fail", interval=5, n=2), "127.0.0.1")
    prober.run_due(clock.monotonic())
    clock.advance(5)
    prober.run_due(clock.monotonic())
    assert prober.healthy("web-0") is False
    assert prober.status("web-0") == views.ProbeStatus(
        healthy=False,
        consecutiveFailures=2,
        lastError="HTTP 500",
        lastProbeTime=iso8601(clock.now()),
    )


def test_watch_again_resets_state_and_probes_at_once(
    prober: Prober, clock: FakeClock, web: Web, closed_port: int
) -> None:
    prober.watch("vm", http(web.port, "/ok", interval=5, n=1), "127.0.0.1")
    assert prober.run_due(clock.monotonic()) == 1
    assert prober.healthy("vm") is True
    clock.advance(1)
    prober.watch("vm", tcp(closed_port, interval=5, n=2), "127.0.0.1")
    assert prober.healthy("vm") is None
    assert prober.status("vm") == views.ProbeStatus()
    assert prober.run_due(clock.monotonic()) == 1  # due at once, not at the old schedule
    assert prober.status("vm") == views.ProbeStatus(
        consecutiveFailures=1, lastError="connection refused", lastProbeTime=iso8601(clock.now())
    )


def test_unwatch_forgets_the_instance(prober: Prober, clock: FakeClock, web: Web) -> None:
    prober.watch("vm", http(web.port, "/ok", n=1), "127.0.0.1")
    prober.run_due(clock.monotonic())
    assert prober.names() == ["vm"]
    prober.unwatch("vm")
    prober.unwatch("vm")
    assert prober.status("vm") is None
    assert prober.healthy("vm") is None
    clock.advance(60)
    assert prober.run_due(clock.monotonic()) == 0
    assert prober.seconds_to_next_due(clock.monotonic()) is None


def test_watch_rejects_non_ip_address(prober: Prober) -> None:
    with pytest.raises(ValueError, match="probe address"):
        prober.watch("vm", tcp(80), "guest.example")


def test_slow_probe_does_not_block_others_and_is_not_stacked(
    prober: Prober, clock: FakeClock, web: Web, black_hole: int
) -> None:
    prober.watch("slow", http(black_hole, "/ok", interval=1, n=1), "127.0.0.1")
    prober.watch("fast", http(web.port, "/ok", interval=1, n=1), "127.0.0.1")
    t0 = time.monotonic()
    assert prober.run_due(clock.monotonic(), wait=False) == 2
    wait_until(SystemClock(), lambda: prober.healthy("fast") is True, timeout=0.8, interval=0.01)
    assert prober.healthy("fast") is True
    assert prober.status("slow") == views.ProbeStatus()  # still waiting for its answer
    clock.advance(1)
    assert prober.run_due(clock.monotonic(), wait=False) == 1  # slow skipped: still in flight
    assert prober.drain(5.0)
    assert time.monotonic() - t0 < 3.0
    slow = prober.status("slow")
    assert slow is not None
    assert slow.healthy is False
    assert slow.lastError == "timeout after 1.0s"


def test_result_of_replaced_watch_is_dropped(clock: FakeClock) -> None:
    gate = threading.Event()
    calls: list[str] = []

    def gated(probe: instancespec.HealthProbe, address: str, timeout: float) -> ProbeResult:
        calls.append(address)
        if address == "10.0.0.2":
            gate.wait(5)
        return ProbeResult(True)

    p = Prober(clock, gated)
    try:
        p.watch("vm", tcp(80, n=1), "10.0.0.2")
        assert p.run_due(clock.monotonic(), wait=False) == 1
        p.watch("vm", tcp(80, n=1), "10.0.0.3")  # reimaged: new tracker while old probe runs
        gate.set()
        assert p.drain(5.0)
        assert p.status("vm") == views.ProbeStatus()
        assert p.run_due(clock.monotonic()) == 1
        assert p.healthy("vm") is True
        assert calls == ["10.0.0.2", "10.0.0.3"]
    finally:
        p.stop()


def test_probe_function_that_raises_counts_as_failure(clock: FakeClock) -> None:
    def broken(probe: instancespec.HealthProbe, address: str, timeout: float) -> ProbeResult:
        raise RuntimeError("boom with details")

    p = Prober(clock, broken)
    try:
        p.watch("vm", tcp(80, n=1), "10.0.0.2")
        assert p.run_due(clock.monotonic()) == 1
        assert p.status("vm") == views.ProbeStatus(
            healthy=False,
            consecutiveFailures=1,
            lastError="probe error: RuntimeError",
            lastProbeTime=iso8601(clock.now()),
        )
    finally:
        p.stop()


# ---- the real thread ---------------------------------------------------------------------


def test_thread_with_system_clock(web: Web, black_hole: int) -> None:
    p = Prober(SystemClock())
    p.start()
    p.start()  # a second start is a no-op
    try:
        web.ready.set()
        p.watch("web-0", http(web.port, "/ready", interval=1, n=2), "127.0.0.1")
        # keeps a worker busy for up to 1 s at every interval, also while stopping
        p.watch("dead", http(black_hole, "/ok", interval=1, n=2), "127.0.0.1")
        healthy = wait_until(
            SystemClock(), lambda: p.healthy("web-0") is True, timeout=5.0, interval=0.05
        )
        assert healthy
    finally:
        t1 = time.monotonic()
        p.stop()
        stop_took = time.monotonic() - t1
    assert stop_took < 1.0
    probes_seen = len(web.paths)
    assert probes_seen >= 2
    time.sleep(1.5)
    assert len(web.paths) == probes_seen  # nothing probes after stop
