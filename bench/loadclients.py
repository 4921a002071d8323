"""The benchmark's concurrent API clients and what they measure.

Each client is a person or a dashboard: it sends a request drawn from the
mix, then "thinks" for an exponentially distributed time
(mean ``think`` seconds) before the next, over its own keep-alive
connection. The schedule is fixed in advance (open loop, as wrk2 does):
a request's latency runs from when it was *meant* to be sent, so a server
that stalls is charged for the requests its clients could not send while
waiting (no coordinated omission). ``think=0`` makes each client send its
next request as soon as the previous answer arrives (closed loop, saturation).

Client-side delay is measured apart: how late the event loop sent a request
after it was due and the connection was free (``lag``), which shows whether
the client process itself kept up.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

from bench.httpconn import Connection, HttpError
from bench.loadmix import KINDS, MIX, Picker, Request, next_link_path

REQUEST_TIMEOUT_SECONDS = 10.0
MAX_ERROR_EXAMPLES = 5


@dataclass
class KindStats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    conflicts: int = 0


@dataclass
class Recorder:
    kinds: dict[str, KindStats] = field(default_factory=lambda: {k: KindStats() for k in KINDS})
    lags: list[float] = field(default_factory=list)
    error_examples: list[str] = field(default_factory=list)
    connections: int = 0

    def error(self, kind: str, what: str) -> None:
        self.kinds[kind].errors += 1
        if len(self.error_examples) < MAX_ERROR_EXAMPLES:
            self.error_examples.append(f"{kind}: {what}")


@dataclass(frozen=True)
class Shape:
    """What the clients ask about: ``scale_sets`` sets of ``capacity``
    instances, and the weights replacing :data:`bench.loadmix.MIX`'s."""

    scale_sets: int
    capacity: int
    weights: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    token: str = field(repr=False)


async def _one(conn: Connection, req: Request, rec: Recorder) -> bytes | None:
    """Send ``req``; the answer's body when it is a correct answer."""
    try:
        status, body = await asyncio.wait_for(
            conn.request(req.method, req.path, req.body), REQUEST_TIMEOUT_SECONDS
        )
    except HttpError as e:
        rec.error(req.kind, str(e))
        return None
    except TimeoutError:
        conn.close()
        rec.error(req.kind, f"no answer within {REQUEST_TIMEOUT_SECONDS:g} s")
        return None
    if status not in MIX[req.kind][1]:
        rec.error(req.kind, f"{req.method} {req.path}: {status} {body[:160]!r}")
        return None
    if status == 409:
        rec.kinds[req.kind].conflicts += 1
    return body


async def _client(
    seed: int,
    target: Target,
    shape: Shape,
    think: float,
    start: float,
    end: float,
    rec: Recorder,
) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    picker = Picker(rng, shape.scale_sets, shape.capacity, shape.weights)
    conn = Connection(target.host, target.port, target.token)
    due = start + (rng.uniform(0, think) if think > 0 else 0.0)
    free_at = start
    try:
        while due < end:
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            req: Request | None = picker.next()
            meant = due
            while req is not None:
                rec.lags.append(max(0.0, loop.time() - max(meant, free_at)))
                body = await _one(conn, req, rec)
                free_at = loop.time()
                if body is not None:
                    rec.kinds[req.kind].latencies.append(free_at - meant)
                link = next_link_path(body) if body and b'"nextLink"' in body else None
                req = Request(req.kind, "GET", link) if link else None
                meant = free_at  # the next page is asked for when this one arrives
            due = due + rng.expovariate(1.0 / think) if think > 0 else free_at
    finally:
        rec.connections += conn.opened
        conn.close()


@dataclass(frozen=True)
class RunResult:
    recorder: Recorder
    wall_seconds: float
    client_cpu_seconds: float


async def _run(
    target: Target, clients: int, shape: Shape, think: float, duration: float
) -> RunResult:
    loop = asyncio.get_running_loop()
    rec = Recorder()
    cpu0, t0 = time.process_time(), loop.time()
    start, end = t0 + 0.05, t0 + 0.05 + duration
    await asyncio.gather(
        *(_client(i, target, shape, think, start, end, rec) for i in range(clients)),
        asyncio.sleep(end - t0),
    )
    return RunResult(rec, loop.time() - start, time.process_time() - cpu0)


def run_clients(
    target: Target, shape: Shape, *, clients: int, think: float, duration: float
) -> RunResult:
    """Run ``clients`` clients for ``duration`` seconds (in-flight requests
    finish after it); what they measured and this process's CPU time."""
    return asyncio.run(_run(target, clients, shape, think, duration))
