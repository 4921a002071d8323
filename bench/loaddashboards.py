"""Open dashboards for the load benchmark: each signs in to ``/ui/`` with the
controller's token and polls the live snapshot of one scale set once a
second, as the page's own script does (with If-None-Match), on its own
thread and connection, until told to stop."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx

POLL_SECONDS = 1.0  # controller/ui/static/app.js POLL_MS


@dataclass
class DashboardStats:
    polls: int = 0
    not_modified: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _dashboard(
    url: str, token: str, scale_set: str, stop: threading.Event, st: DashboardStats
) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        if c.post("/ui/api/session", json={"token": token}).status_code != 200:
            with st.lock:
                st.errors += 1
            return
        etag = ""
        while not stop.is_set():
            t = time.monotonic()
            r = c.get("/ui/api/live", params={"set": scale_set}, headers={"If-None-Match": etag})
            took = time.monotonic() - t
            with st.lock:
                st.polls += 1
                st.latencies.append(took)
                st.not_modified += r.status_code == 304
                st.errors += r.status_code not in (200, 304)
            etag = r.headers.get("etag", etag)
            stop.wait(max(0.0, POLL_SECONDS - took))


@contextmanager
def open_dashboards(url: str, token: str, count: int, scale_set: str) -> Iterator[DashboardStats]:
    """``count`` dashboards on ``scale_set``'s page while the block runs."""
    stop = threading.Event()
    stats = DashboardStats()
    threads = [
        threading.Thread(target=_dashboard, args=(url, token, scale_set, stop, stats), daemon=True)
        for _ in range(count)
    ]
    for t in threads:
        t.start()
    try:
        yield stats
    finally:
        stop.set()
        for t in threads:
            t.join(35)
