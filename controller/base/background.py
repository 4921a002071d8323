"""The controller's background threads: one per key at a time, and the stop
flag they all watch."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Background:
    def __init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._again: set[str] = set()

    def stopping(self) -> bool:
        """Whether :meth:`close` was called: long work ends at its next look."""
        return self._stop.is_set()

    def run(self, key: str, fn: Callable[[], object]) -> None:
        """Run ``fn`` on a thread of its own, unless ``key``'s still runs."""

        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("%s failed", key)
            finally:
                self._forget(key)

        with self._lock:
            if key in self._threads:
                return
            t = threading.Thread(target=run, name=key, daemon=True)
            self._threads[key] = t
        t.start()

    def coalesce(self, key: str, fn: Callable[[], object]) -> None:
        """:meth:`run`, and asked again while ``fn`` runs, ``fn`` runs once
        more after it: the last request is always served."""
        with self._lock:
            self._again.add(key)

        def work() -> None:
            while True:
                with self._lock:
                    # (decided and forgotten under one lock: a request made
                    # after this look starts a new thread)
                    if key not in self._again or self._stop.is_set():
                        self._forget_locked(key)
                        return
                    self._again.discard(key)
                fn()

        self.run(key, work)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._forget_locked(key)

    def _forget_locked(self, key: str) -> None:
        if self._threads.get(key) is threading.current_thread():
            del self._threads[key]

    def wait_idle(self, timeout: float) -> None:
        """Wait for the work running now (tests and the lab)."""
        for t in list(self._threads.values()):
            t.join(timeout)

    def close(self, timeout: float) -> None:
        self._stop.set()
        self.wait_idle(timeout)
