"""Instance views as the agents last reported them, kept fresh by a watcher
that asks each host for all its views in one call, so a listing costs no
agent call per instance (docs/performance-notes.md, "Instance views")."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final

from controller.base.settings import VIEW_REFRESH_SECONDS
from controller.fleet.agents import AgentPool, AgentPort
from controller.views.compact import Listed, Packed, listed, pack, unpack
from hostagent.contract import instancespec, operations
from hostagent.contract.client import AgentError
from hostagent.contract.views import InstanceView
from kvmss.base.clock import Clock

log = logging.getLogger(__name__)

# The watcher stops after this long without a reader (a fleet nobody looks at costs nothing).
WATCHER_IDLE_SECONDS: Final = 120.0
# The longest a reader waits for another's refresh of the same host, and
# close() for the watcher.
REFRESH_WAIT_SECONDS: Final = 60.0
CLOSE_SECONDS: Final = 10.0

HostLister = Callable[[str], list[InstanceView]]
# What an agent said of an instance: its view, None (not on its host), or
# the error that kept it from answering.
Seen = InstanceView | None | AgentError
# The same for a listing.
SeenListed = Listed | None | AgentError


def host_lister(agents: AgentPort) -> HostLister | None:
    """One call for every instance view of a host, where the port has it."""
    if isinstance(agents, AgentPool):
        return lambda host: agents.client(host).instances()
    return None


class _Missing:
    """No view yet (distinct from None, "not on its host")."""


MISSING = _Missing()


class InstanceViews:
    def __init__(
        self,
        agents: AgentPort,
        lister: HostLister | None,
        hosts: Callable[[], list[str]],
        clock: Clock,
        refresh_seconds: float = VIEW_REFRESH_SECONDS,
        idle_seconds: float = WATCHER_IDLE_SECONDS,
        cpu_seconds: Callable[[], float] = time.thread_time,
    ) -> None:
        self._agents = agents
        self._lister = lister
        self._hosts = hosts
        self._clock = clock
        self.refresh_seconds = refresh_seconds
        self._idle_seconds = idle_seconds
        self._cpu_seconds = cpu_seconds  # of the calling thread: what a refresh costs
        self._period = refresh_seconds  # the watcher's current period
        self._lock = threading.Lock()
        # host -> instance name -> (monotonic time asked, packed view or None);
        # plain tuples, so the garbage collector does not track them
        self._views: dict[str, dict[str, tuple[float, Packed | None]]] = {}
        self._host_errors: dict[str, tuple[float, AgentError]] = {}
        self._host_at: dict[str, float] = {}
        self._refreshing: dict[str, threading.Event] = {}
        self._last_read = 0.0
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self._local = threading.local()

    @property
    def watched(self) -> bool:
        """Whether views come from per-host snapshots (the port can list)."""
        return self._lister is not None

    # -- recording -------------------------------------------------------------

    def record(self, host: str, name: str, at: float, view: InstanceView | None) -> None:
        """What the agent said of one instance, asked at monotonic ``at``."""
        if self._lister is None:
            return
        packed = None if view is None else pack(view)
        with self._lock:
            views = self._views.setdefault(host, {})
            old = views.get(name)
            if old is None or old[0] <= at:
                views[name] = (at, packed)

    def refresh_host(self, host: str) -> None:
        """Ask ``host`` for all its views (one call) and record them."""
        assert self._lister is not None
        at = self._clock.monotonic()
        try:
            found = {v.name: pack(v) for v in self._lister(host)}
        except AgentError as e:
            with self._lock:
                self._host_errors[host] = (at, e)
                self._host_at[host] = at
            return
        with self._lock:
            self._host_at[host] = at
            self._host_errors.pop(host, None)
            views = self._views.setdefault(host, {})
            for name, (was, _) in views.items():
                if name not in found and was <= at:
                    views[name] = (at, None)
            for name, packed in found.items():
                old = views.get(name)
                if old is None or old[0] <= at:
                    views[name] = (at, packed)

    # -- reading -----------------------------------------------------------------

    def one(self, host: str, name: str) -> Seen:
        """Ask the agent now (and record the answer)."""
        at = self._clock.monotonic()
        try:
            view = self._agents.instance(host, name)
        except AgentError as e:
            return e
        self.record(host, name, at, view)
        return view

    def _cached(self, host: str, name: str) -> Packed | AgentError | _Missing | None:
        entry = self._views.get(host, {}).get(name)
        error = self._host_errors.get(host)
        if error is not None and (entry is None or error[0] > entry[0]):
            return error[1]
        return MISSING if entry is None else entry[1]

    def many(self, keys: list[tuple[str, str]]) -> list[SeenListed]:
        """What the agents say of these (host, name) instances: the watcher's
        latest; a host with no view of one of them yet is asked now, once
        however many callers want it. Without a lister, each asked now."""
        if self._lister is None:
            return [listing(self.one(h, n)) for h, n in keys]
        self._ensure_watcher()
        asked = self._clock.monotonic()
        with self._lock:
            unseen = {h for h, n in keys if self._cached(h, n) is MISSING}
        for host in sorted(unseen):
            self._refresh_once(host, asked)
        with self._lock:
            found = [self._cached(h, n) for h, n in keys]
        return [_listed(f) for f in found]

    def known(self, keys: list[tuple[str, str]]) -> list[SeenListed] | None:
        """:meth:`many` when it would ask no agent (every view is known),
        else None: what a caller that must not wait can use."""
        if self._lister is None:
            return None
        self._ensure_watcher()
        with self._lock:
            found = [self._cached(h, n) for h, n in keys]
        if any(isinstance(f, _Missing) for f in found):
            return None
        return [_listed(f) for f in found]

    def _refresh_once(self, host: str, since: float) -> None:
        """:meth:`refresh_host` unless ``host`` was asked since monotonic
        ``since``, or wait for the refresh already under way."""
        with self._lock:
            if self._host_at.get(host, -math.inf) >= since:
                return
            running = self._refreshing.get(host)
            if running is None:
                self._refreshing[host] = mine = threading.Event()
        if running is not None:
            running.wait(timeout=REFRESH_WAIT_SECONDS)
            return
        try:
            self.refresh_host(host)
        finally:
            with self._lock:
                del self._refreshing[host]
            mine.set()

    def recent(
        self, host: str, name: str, max_age: float | None = None
    ) -> tuple[bool, InstanceView | None]:
        """(True, the view or None for "not on its host") when the latest
        word on an instance was asked for at most ``max_age`` seconds ago
        (default: two of the watcher's periods) and no call to its host failed
        since; (False, None) otherwise, and the caller asks the agent. Keeps
        the watcher running: an upgrade that reads views is a reader."""
        known, packed = self._young(host, name, max_age)
        return known, None if packed is None else unpack(packed)

    def recent_listed(self, host: str, name: str, max_age: float) -> tuple[bool, Listed | None]:
        """:meth:`recent` as a listing shows it."""
        known, packed = self._young(host, name, max_age)
        return known, None if packed is None else listed(packed)

    def _young(self, host: str, name: str, max_age: float | None) -> tuple[bool, Packed | None]:
        if self._lister is None:
            return False, None
        self._ensure_watcher()
        limit = 2 * max(self.refresh_seconds, self._period) if max_age is None else max_age
        now = self._clock.monotonic()
        with self._lock:
            entry = self._views.get(host, {}).get(name)
            error = self._host_errors.get(host)
        if entry is None or now - entry[0] > limit or (error is not None and error[0] > entry[0]):
            return False, None
        return True, entry[1]

    def cached_or_asked(self, host: str, name: str) -> InstanceView | None:
        """Inside :meth:`cached_reads`, the latest view there is; otherwise
        (and outside) ask the agent now. Raises the agent's error."""
        if self._lister is not None and getattr(self._local, "cached", False):
            with self._lock:
                found = self._cached(host, name)
            if isinstance(found, tuple):
                return unpack(found)
            if not isinstance(found, _Missing):
                if isinstance(found, AgentError):
                    raise found
                return found
        seen = self.one(host, name)
        if isinstance(seen, AgentError):
            raise seen
        return seen

    @contextmanager
    def cached_reads(self) -> Iterator[None]:
        """Let this thread's :class:`ObservingPort` reads use cached views."""
        self._local.cached = True
        try:
            yield
        finally:
            self._local.cached = False

    # -- the watcher -------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        with self._lock:
            self._last_read = self._clock.monotonic()
            if self._watcher is not None or self._stop.is_set():
                return
            self._watcher = threading.Thread(target=self._watch, name="views-watcher", daemon=True)
            self._watcher.start()

    def _watch(self) -> None:
        busy = 0.0  # CPU seconds the last round spent refreshing
        try:
            while not self._stop.is_set():
                with self._lock:
                    if self._clock.monotonic() - self._last_read > self._idle_seconds:
                        self._watcher = None
                        return
                # at most a tenth of the time spent refreshing, however big the fleet
                period = self._period = max(self.refresh_seconds, 10 * busy)
                started, busy = self._clock.monotonic(), 0.0
                hosts = self._hosts()
                for k, host in enumerate(hosts, 1):
                    cpu = self._cpu_seconds()
                    # (passing over a host a listing asked in the last half period)
                    self._refresh_once(host, started - self.refresh_seconds / 2)
                    # Waiting for a host (down, hung, slow to answer) is not work:
                    # only the CPU this thread spent counts.
                    busy += self._cpu_seconds() - cpu
                    # Hosts spread over the period, so parsing their views never
                    # holds the GIL for long at once.
                    now = self._clock.monotonic()
                    if self._stop.wait(max(0.0, started + period * k / len(hosts) - now)):
                        return
                if not hosts:
                    self._stop.wait(period)
        except Exception:
            log.exception("instance view watcher failed; the next listing restarts it")
            with self._lock:
                self._watcher = None

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            watcher = self._watcher
        if watcher is not None:
            watcher.join(timeout=CLOSE_SECONDS)


class ObservingPort:
    """The agent port the orchestrator uses: every call goes to ``agents``;
    what ``instance`` returns is recorded in ``views`` (and, inside
    :meth:`InstanceViews.cached_reads`, may come from them)."""

    def __init__(self, agents: AgentPort, views: InstanceViews) -> None:
        self._agents = agents
        self._views = views

    def instance(self, host: str, name: str) -> InstanceView | None:
        return self._views.cached_or_asked(host, name)

    def put_instance(
        self, host: str, name: str, spec: instancespec.InstanceSpec
    ) -> operations.Operation:
        return self._agents.put_instance(host, name, spec)

    def reimage(
        self, host: str, name: str, image: instancespec.ImageSpec, operation_id: str
    ) -> operations.Operation:
        return self._agents.reimage(host, name, image, operation_id)

    def rollback(self, host: str, name: str, operation_id: str) -> operations.Operation:
        return self._agents.rollback(host, name, operation_id)

    def commit(self, host: str, name: str, operation_id: str) -> operations.Operation:
        return self._agents.commit(host, name, operation_id)

    def delete(self, host: str, name: str, operation_id: str) -> operations.Operation:
        return self._agents.delete(host, name, operation_id)

    def operation(self, host: str, op_id: str) -> operations.Operation:
        return self._agents.operation(host, op_id)

    def cancel(
        self, host: str, name: str, op_id: str, kind: operations.OperationKind
    ) -> operations.Operation:
        return self._agents.cancel(host, name, op_id, kind)


def listing(seen: Seen) -> SeenListed:
    """What a listing shows of an agent's answer."""
    return listed(pack(seen)) if isinstance(seen, InstanceView) else seen


def _listed(found: Packed | AgentError | _Missing | None) -> SeenListed:
    if isinstance(found, tuple):
        return listed(found)
    return None if isinstance(found, _Missing) else found
