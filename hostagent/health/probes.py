"""Health probes the agent runs from the host against its guests' addresses,
with Azure's load-balancer probe semantics: Http healthy on 200 only, Tcp
when the connection is accepted, a verdict after ``numberOfProbes``
consecutive results. :meth:`Prober.run_due` is the one scheduling step, so
tests drive it with a fake clock and no thread."""

from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import socket
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass

from hostagent.contract import instancespec, limits, views
from kvmss.base.clock import Clock, iso8601

log = logging.getLogger(__name__)

MAX_IDLE_WAIT = 1.0
"""The scheduler thread re-reads the clock at least this often."""

USER_AGENT = "kvmss-probe/1"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    error: str | None = None


ProbeFn = Callable[[instancespec.HealthProbe, str, float], ProbeResult]
SocketFactory = Callable[[], socket.socket]
"""A fresh TCP socket to probe from (one made in the guests' network namespace)."""


def _connect(
    address: str, port: int, timeout: float, opener: SocketFactory | None
) -> socket.socket:
    if opener is None:
        return socket.create_connection((address, port), timeout=timeout)
    sock = opener()
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class _Connection(http.client.HTTPConnection):
    """An HTTP connection over a socket from ``opener``."""

    def __init__(self, address: str, port: int, timeout: float, opener: SocketFactory | None):
        super().__init__(address, port, timeout=timeout)
        self._opener = opener

    def connect(self) -> None:
        self.sock = _connect(self.host, self.port, float(self.timeout or 0) or 1.0, self._opener)


def probe_timeout(probe: instancespec.HealthProbe) -> float:
    """Seconds one probe may take: its interval, but never more than the limit."""
    return min(float(probe.intervalInSeconds), limits.PROBE_TIMEOUT_MAX_SECONDS)


def _check_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"probe address {address[:80]!r} is not an IP address") from None


def _describe(e: OSError, timeout: float) -> str:
    """A short reason for a failed probe, without anything the guest sent."""
    if isinstance(e, TimeoutError):
        return f"timeout after {timeout:.1f}s"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(e, ConnectionResetError):
        return "connection reset"
    if e.errno is not None:
        return os.strerror(e.errno).lower()
    return type(e).__name__


def _request_target(path: str) -> str:
    # Percent-encode what may not appear raw in a request line (spaces, non-ASCII),
    # keeping existing escapes and the query string as given.
    return urllib.parse.quote(path, safe="/?&=:@!$'()*+,;%-._~[]")


def _probe_http(
    probe: instancespec.HealthProbe, address: str, timeout: float, opener: SocketFactory | None
) -> ProbeResult:
    conn = _Connection(address, probe.port, timeout, opener)
    try:
        conn.request(
            "GET",
            _request_target(probe.requestPath or "/"),
            headers={"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"},
        )
        status = conn.getresponse().status  # the body is never read
    except OSError as e:
        return ProbeResult(False, _describe(e, timeout))
    except http.client.HTTPException:
        return ProbeResult(False, "invalid HTTP response")
    finally:
        conn.close()
    if status != 200:
        return ProbeResult(False, f"HTTP {status}")
    return ProbeResult(True)


def _probe_tcp(
    probe: instancespec.HealthProbe, address: str, timeout: float, opener: SocketFactory | None
) -> ProbeResult:
    try:
        sock = _connect(address, probe.port, timeout, opener)
    except OSError as e:
        return ProbeResult(False, _describe(e, timeout))
    sock.close()
    return ProbeResult(True)


def probe_once(
    probe: instancespec.HealthProbe,
    address: str,
    timeout: float,
    opener: SocketFactory | None = None,
) -> ProbeResult:
    """Probe ``address`` once: Http GET must answer 200, Tcp must accept the connection.

    ``timeout`` bounds the connect and each read. ``address`` must be an IP
    address (no name lookups); anything else raises ValueError. ``opener``
    gives the socket to probe from (default: one of the agent's own namespace).
    """
    address = _check_address(address)
    if probe.protocol == "Http":
        return _probe_http(probe, address, timeout, opener)
    return _probe_tcp(probe, address, timeout, opener)


class ProbeTracker:
    """The consecutive-result state machine of one instance's probe.

    ``healthy`` is None until ``number_of_probes`` consecutive results agree,
    then flips only after ``number_of_probes`` consecutive results the other way.
    """

    def __init__(self, number_of_probes: int) -> None:
        if number_of_probes < 1:
            raise ValueError(f"numberOfProbes must be at least 1, got {number_of_probes}")
        self._n = number_of_probes
        self._healthy: bool | None = None
        self._successes = 0
        self._failures = 0
        self._last_error: str | None = None
        self._last_probe_time: float | None = None

    def record(self, ok: bool, error: str | None, now: float) -> None:
        """Count one probe result taken at ``now`` (seconds since the epoch)."""
        self._last_probe_time = now
        if ok:
            self._successes += 1
            self._failures = 0
            self._last_error = None
            if self._successes >= self._n:
                self._healthy = True
        else:
            self._failures += 1
            self._successes = 0
            self._last_error = error or "probe failed"
            if self._failures >= self._n:
                self._healthy = False

    @property
    def number_of_probes(self) -> int:
        return self._n

    @property
    def healthy(self) -> bool | None:
        return self._healthy

    @property
    def consecutive_successes(self) -> int:
        return self._successes

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def last_error(self) -> str | None:
        """The error of the latest probe; None when it succeeded or none ran yet."""
        return self._last_error

    @property
    def last_probe_time(self) -> float | None:
        return self._last_probe_time

    def status(self) -> views.ProbeStatus:
        t = self._last_probe_time
        return views.ProbeStatus(
            healthy=self._healthy,
            consecutiveSuccesses=self._successes,
            consecutiveFailures=self._failures,
            lastError=self._last_error,
            lastProbeTime=iso8601(t) if t is not None else None,
        )


@dataclass(eq=False)
class _Watch:
    probe: instancespec.HealthProbe
    address: str
    tracker: ProbeTracker
    next_due: float
    in_flight: bool = False


class Prober:
    """Probes every watched instance on its interval, from one background thread.

    Each due probe runs in a worker pool, so a guest that times out delays no
    other guest's probes; a probe still running when it is due again is skipped
    for that round. Results of a watch that was replaced or removed meanwhile are
    dropped.
    """

    def __init__(
        self, clock: Clock, probe_fn: ProbeFn = probe_once, *, max_workers: int = 8
    ) -> None:
        self._clock = clock
        self._probe_fn = probe_fn
        self._max_workers = max_workers
        self._lock = threading.Lock()
        self._watches: dict[str, _Watch] = {}
        self._pending: set[Future[None]] = set()
        self._executor: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()

    # ---- what to probe ------------------------------------------------------

    def watch(self, name: str, probe: instancespec.HealthProbe, address: str) -> None:
        """Probe ``address`` for instance ``name`` from now on, starting at once.

        Replaces any earlier watch of ``name`` and starts from a fresh tracker
        (health unknown), as after a reimage.
        """
        address = _check_address(address)
        w = _Watch(probe, address, ProbeTracker(probe.numberOfProbes), self._clock.monotonic())
        with self._lock:
            self._watches[name] = w
        self._wake.set()

    def unwatch(self, name: str) -> None:
        with self._lock:
            self._watches.pop(name, None)

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._watches)

    def status(self, name: str) -> views.ProbeStatus | None:
        with self._lock:
            w = self._watches.get(name)
            return w.tracker.status() if w is not None else None

    def healthy(self, name: str) -> bool | None:
        """True/False once the probe gave a verdict; None while unknown or not watched."""
        with self._lock:
            w = self._watches.get(name)
            return w.tracker.healthy if w is not None else None

    # ---- scheduling -----------------------------------------------------------

    def run_due(self, now: float, *, wait: bool = True) -> int:
        """Start every probe due at monotonic time ``now``; return how many started.

        With ``wait`` (the default, for tests) return only once they have all
        finished and been recorded; the scheduler thread passes ``wait=False``.
        """
        started: list[tuple[str, _Watch]] = []
        with self._lock:
            for name, w in self._watches.items():
                if w.next_due > now:
                    continue
                interval = float(w.probe.intervalInSeconds)
                w.next_due += interval
                if w.next_due <= now:  # fell behind: do not burst to catch up
                    w.next_due = now + interval
                if w.in_flight:
                    continue
                w.in_flight = True
                started.append((name, w))
            executor = self._get_executor()
            futures = [executor.submit(self._run_one, name, w) for name, w in started]
            self._pending.update(futures)
        for f in futures:
            f.add_done_callback(self._forget)
        if wait and futures:
            wait_futures(futures)
        return len(futures)

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for running probes; True when none is left."""
        with self._lock:
            pending = list(self._pending)
        _, not_done = wait_futures(pending, timeout=timeout)
        return not not_done

    def seconds_to_next_due(self, now: float) -> float | None:
        """Seconds from monotonic ``now`` until the next probe is due; None when idle."""
        with self._lock:
            dues = [w.next_due for w in self._watches.values()]
        return max(0.0, min(dues) - now) if dues else None

    def _get_executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="kvmss-probe"
            )
        return self._executor

    def _forget(self, f: Future[None]) -> None:
        with self._lock:
            self._pending.discard(f)

    def _run_one(self, name: str, w: _Watch) -> None:
        try:
            result = self._probe_fn(w.probe, w.address, probe_timeout(w.probe))
        except Exception as e:  # a broken probe is a failed probe, not a dead worker
            log.exception("probe of %s at %s raised", name, w.address)
            result = ProbeResult(False, f"probe error: {type(e).__name__}")
        now = self._clock.now()
        with self._lock:
            w.in_flight = False
            if self._watches.get(name) is not w:
                return  # replaced or removed while the probe ran
            before = w.tracker.healthy
            w.tracker.record(result.ok, result.error, now)
            after = w.tracker.healthy
        if after != before:
            log.info(
                "instance %s probe (%s %s:%d) is now %s%s",
                name,
                w.probe.protocol,
                w.address,
                w.probe.port,
                "healthy" if after else "unhealthy",
                "" if after else f": {result.error}",
            )

    # ---- the thread -------------------------------------------------------------

    def start(self) -> None:
        """Start the scheduler thread (a no-op when it runs already)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping.clear()
            self._thread = threading.Thread(target=self._loop, name="kvmss-prober", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and return once it has ended; running probes are abandoned."""
        self._stopping.set()
        self._wake.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self.run_due(self._clock.monotonic(), wait=False)
            except Exception:
                log.exception("probe scheduling failed")
            delay = self.seconds_to_next_due(self._clock.monotonic())
            self._wake.wait(MAX_IDLE_WAIT if delay is None else min(delay, MAX_IDLE_WAIT))
