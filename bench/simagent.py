"""Simulated host agents for the load benchmark: many "hosts" in one process,
each speaking the real agent HTTP contract (docs/design.md "The agent contract":
every call of :mod:`hostagent.contract.calls`, routed by that table) under its
own URL prefix, so the controller reaches them through
:class:`hostagent.contract.client.AgentClient` exactly as it reaches real agents.
No libvirt, no disks: an instance is a few fields, so 10,000 of them cost
nothing to create, and the benchmark measures the controller.

``http://127.0.0.1:PORT/<host>`` is the agent of ``<host>``; every call needs
``Authorization: Bearer <token>``. Creates finish at once; reimage and
rollback take ``op_seconds`` and the guest then boots for ``boot_seconds``
(stopped, Unhealthy) before it is Healthy again, so rolling upgrades started
during a run do real batches. Every call is idempotent by operation id, as
the real agent's are. ``GET /stats`` (same token) counts instances and calls.

The HTTP server is a minimal keep-alive HTTP/1.1 loop over asyncio streams
(Content-Length bodies, which is all ``requests`` sends): a full ASGI server
would cost more CPU per call than the simulated agent's work, and this
process shares the machine with the controller under test.

Run: ``python bench/simagent.py --hosts 20 --token-file FILE``; it prints
``listening PORT`` on stdout once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hostagent.contract import calls  # noqa: E402

REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized"}
REASONS |= {404: "Not Found", 405: "Method Not Allowed", 409: "Conflict"}
MAX_BODY = 1 << 20


class Reply(Exception):
    """An HTTP answer other than 2xx, in the agents' error shape."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message}}


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@dataclass
class Op:
    id: str
    kind: str
    instance: str
    started: float
    done_at: float
    status: str = "InProgress"
    error: dict[str, str] | None = None
    ended: float | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "instance": self.instance,
            "status": self.status,
            "startTime": _iso(self.started),
            "endTime": None if self.ended is None else _iso(self.ended),
            "error": self.error,
        }


@dataclass
class Instance:
    name: str
    image: dict[str, str]
    sha256: str
    extensions: list[str]
    generation: int = 1
    previous: tuple[dict[str, str], str, int] | None = None
    busy_until: float = 0.0
    pending: Op | None = None
    pending_apply: Any = None

    def _gen(self, image: dict[str, str], sha: str, gen: int) -> dict[str, Any]:
        return {
            "generation": gen,
            "instanceId": f"{self.name}-g{gen}",
            "image": image,
            "imageSha256": sha,
            "osDisk": f"/sim/{self.name}/os-{gen}.qcow2",
        }

    def view(self, now: float) -> dict[str, Any]:
        busy = now < self.busy_until or self.pending is not None
        prev = self.previous
        return {
            "name": self.name,
            "powerState": "stopped" if busy else "running",
            "address": "10.0.0.2",
            "current": self._gen(self.image, self.sha256, self.generation),
            "previous": None if prev is None else self._gen(*prev),
            "dataDisks": [],
            "extensions": [
                {
                    "name": e,
                    "status": "Transitioning" if busy else "Succeeded",
                    "exitCode": None if busy else 0,
                }
                for e in self.extensions
            ],
            "health": {
                "state": "Unhealthy" if busy else "Healthy",
                "reasons": ["booting"] if busy else [],
            },
            "operation": None if self.pending is None else self.pending.id,
        }


@dataclass
class Host:
    name: str
    instances: dict[str, Instance] = field(default_factory=dict)
    ops: dict[str, Op] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One call to a simulated agent, as its handler sees it."""

    host: Host
    params: dict[str, str]  # the call's path parameters
    body: Any
    query: str
    now: float


Handler = Callable[[Request], Any]


class Agents:
    """The simulated agents' state and their answers, by host: one handler
    per call of :mod:`hostagent.contract.calls`, routed by its table."""

    def __init__(
        self,
        hosts: list[str],
        op_seconds: float,
        boot_seconds: float,
        boot_range: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        """``boot_range``: each boot after a reimage or rollback takes a time
        drawn uniformly from it (seeded) instead of ``boot_seconds``."""
        self.hosts = {h: Host(h) for h in hosts}
        self.op_seconds = op_seconds
        self.boot_seconds = boot_seconds
        self.boot_range = boot_range
        self._random = random.Random(seed)
        # instance -> physical seconds of its last reimage (swap + boot drawn)
        self.reimage_seconds: dict[str, float] = {}
        self.calls = 0
        actions = (calls.REIMAGE, calls.ROLLBACK, calls.COMMIT, calls.START, calls.STOP)
        self.handlers: dict[str, Handler] = {
            calls.HOST.name: self._host,
            calls.INSTANCES.name: self._list,
            calls.INSTANCE.name: self._get,
            calls.PUT_INSTANCE.name: self._put,
            calls.DELETE.name: self._delete,
            calls.OPERATION.name: self._operation,
            calls.CANCEL.name: self._cancel,
            **{c.name: partial(self._action, c.name) for c in actions},
        }
        if set(self.handlers) != set(calls.BY_NAME):
            raise RuntimeError("the simulated agent must answer every call of the table")

    def _settle(self, inst: Instance, now: float) -> None:
        op = inst.pending
        if op is not None and now >= op.done_at:
            inst.pending_apply(now)
            op.status, op.ended = "Succeeded", time.time()
            inst.pending = inst.pending_apply = None

    def _instance(self, host: Host, name: str, now: float) -> Instance:
        inst = host.instances.get(name)
        if inst is None:
            raise Reply(404, "NotFound", f"instance {name} does not exist")
        self._settle(inst, now)
        return inst

    def _submit(
        self, host: Host, inst: Instance, kind: str, op_id: str | None, seconds: float, apply: Any
    ) -> dict[str, Any]:
        now = time.monotonic()
        if op_id and op_id in host.ops:
            return host.ops[op_id].view()
        if inst.pending is not None:
            raise Reply(409, "Conflict", f"instance {inst.name} is busy with {inst.pending.id}")
        op = Op(op_id or uuid.uuid4().hex, kind, inst.name, time.time(), now + seconds)
        host.ops[op.id] = op
        inst.pending, inst.pending_apply = op, apply
        self._settle(inst, now)
        return op.view()

    def handle(self, method: str, target: str, body: Any) -> tuple[int, Any]:
        self.calls += 1
        url = urlsplit(target)
        if url.path.strip("/") == "stats":
            n = sum(len(h.instances) for h in self.hosts.values())
            stats: dict[str, Any] = {"instances": n, "calls": self.calls}
            if "reimages" in parse_qs(url.query):
                stats["reimageSeconds"] = self.reimage_seconds
            return 200, stats
        host_name, _, rest = url.path.lstrip("/").partition("/")
        path = "/" + rest
        found = calls.route(method, path) if host_name in self.hosts else None
        if found is None:
            if host_name in self.hosts and any(
                c.match(c.method, path) is not None for c in calls.CALLS
            ):
                raise Reply(405, "MethodNotAllowed", f"{method} {url.path}")
            raise Reply(404, "NotFound", f"no route {url.path}")
        call, params = found
        req = Request(self.hosts[host_name], params, body, url.query, time.monotonic())
        return call.status, self.handlers[call.name](req)

    # -- the calls ---------------------------------------------------------------

    @staticmethod
    def _host(req: Request) -> dict[str, Any]:
        return {
            "name": req.host.name,
            "hypervisor": "test",
            "libvirtVersion": "9.0.0",
            "capacity": {"vcpus": 64, "memoryMB": 262144, "diskFreeGB": 4096.0},
            "instanceCount": len(req.host.instances),
            "bridge": "simbr0",
            "subnet": "10.0.0.0/24",
        }

    def _list(self, req: Request) -> dict[str, Any]:
        for inst in req.host.instances.values():
            self._settle(inst, req.now)
        return {"value": [i.view(req.now) for i in req.host.instances.values()]}

    def _get(self, req: Request) -> dict[str, Any]:
        return self._instance(req.host, req.params["name"], req.now).view(req.now)

    def _operation(self, req: Request) -> dict[str, Any]:
        op_id, host = req.params["op_id"], req.host
        op = host.ops.get(op_id)
        if op is None:
            raise Reply(404, "NotFound", f"operation {op_id} does not exist")
        if op.instance in host.instances:
            self._settle(host.instances[op.instance], req.now)
        return op.view()

    @staticmethod
    def _cancel(req: Request) -> dict[str, Any]:
        """An operation not seen yet is recorded Cancelled (it never runs)."""
        op_id, host, body = req.params["op_id"], req.host, req.body or {}
        if op_id not in host.ops:
            op = Op(op_id, str(body.get("kind")), str(body.get("instance")), time.time(), 0.0)
            op.status, op.ended = "Failed", time.time()
            op.error = {"code": "Cancelled", "message": "cancelled before it started"}
            host.ops[op_id] = op
        return host.ops[op_id].view()

    def _put(self, req: Request) -> dict[str, Any]:
        name, host, body = req.params["name"], req.host, req.body
        if not isinstance(body, dict) or "image" not in body:
            raise Reply(400, "InvalidRequest", "body: an InstanceSpec is required")
        image = body["image"]
        inst = host.instances.get(name)
        if inst is None:
            exts = [str(e["name"]) for e in body.get("extensions", [])]
            inst = Instance(name, dict(image["reference"]), str(image["sha256"]), exts)
            host.instances[name] = inst
        return self._submit(host, inst, "create", body.get("operationId"), 0.0, _nop)

    @staticmethod
    def _delete(req: Request) -> dict[str, Any]:
        name, host = req.params["name"], req.host
        op_id = parse_qs(req.query).get("operationId", [None])[0]
        if op_id and op_id in host.ops:
            return host.ops[op_id].view()
        op = Op(op_id or uuid.uuid4().hex, "delete", name, time.time(), req.now)
        op.status, op.ended = "Succeeded", time.time()
        host.ops[op.id] = op
        host.instances.pop(name, None)
        return op.view()

    def _action(self, action: str, req: Request) -> dict[str, Any]:
        host, name, body = req.host, req.params["name"], req.body or {}
        inst = self._instance(host, name, req.now)
        op_id = body.get("operationId")
        boot = self.boot_seconds
        if self.boot_range is not None and action in ("reimage", "rollback"):
            boot = self._random.uniform(*self.boot_range)
        if action == "reimage":
            image = body["image"]
            if not (op_id and op_id in host.ops):
                self.reimage_seconds[name] = self.op_seconds + boot

            def reimage(t: float) -> None:
                inst.previous = (inst.image, inst.sha256, inst.generation)
                inst.image, inst.sha256 = dict(image["reference"]), str(image["sha256"])
                inst.generation += 1
                inst.busy_until = t + boot

            return self._submit(host, inst, action, op_id, self.op_seconds, reimage)
        if action == "rollback":
            if inst.previous is None and not (op_id and op_id in host.ops):
                raise Reply(409, "NoPreviousOsDisk", f"instance {name} has no previous OS disk")

            def rollback(t: float) -> None:
                if inst.previous is not None:
                    inst.image, inst.sha256, inst.generation = inst.previous
                    inst.previous = None
                inst.busy_until = t + boot

            return self._submit(host, inst, action, op_id, self.op_seconds, rollback)
        if action == "commit":

            def commit(_t: float) -> None:
                inst.previous = None

            return self._submit(host, inst, action, op_id, 0.0, commit)
        return self._submit(host, inst, action, op_id, 0.0, _nop)


def _nop(_t: float) -> None:
    return None


def _answer(status: int, payload: Any) -> bytes:
    data = json.dumps(payload, separators=(",", ":")).encode()
    head = (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    )
    return head.encode() + data


class Server:
    """The keep-alive HTTP/1.1 loop in front of :class:`Agents`."""

    def __init__(self, agents: Agents, token: str) -> None:
        self.agents = agents
        self.auth = f"bearer {token}"

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        k, _, v = line.partition(":")
                        headers[k.strip().lower()] = v.strip()
                size = int(headers.get("content-length", "0"))
                if size > MAX_BODY:
                    writer.write(_answer(400, {"error": {"code": "TooLarge", "message": "body"}}))
                    return
                raw = await reader.readexactly(size) if size else b""
                writer.write(self.respond(method, target, headers, raw))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        finally:
            writer.close()

    def respond(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> bytes:
        if headers.get("authorization", "").lower() != self.auth.lower():
            return _answer(401, {"error": {"code": "Unauthorized", "message": "bad token"}})
        try:
            body = json.loads(raw) if raw else None
            status, payload = self.agents.handle(method, target, body)
        except Reply as r:
            status, payload = r.status, r.body
        except (ValueError, KeyError, TypeError) as e:
            status = 400
            payload = {"error": {"code": "InvalidRequest", "message": type(e).__name__}}
        return _answer(status, payload)


async def run(port: int, agents: Agents, token: str) -> None:
    server = await asyncio.start_server(Server(agents, token).serve, "127.0.0.1", port)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening {bound}", flush=True)
    async with server:
        await server.serve_forever()


@contextmanager
def serving(agents: Agents, token: str) -> Iterator[int]:
    """Serve ``agents`` from a thread of this process (tests); the port."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port: list[int] = []

    async def main() -> None:
        server = await asyncio.start_server(Server(agents, token).serve, "127.0.0.1", 0)
        port.append(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await server.serve_forever()

    def run() -> None:
        asyncio.set_event_loop(loop)
        with contextlib.suppress(asyncio.CancelledError):
            loop.run_until_complete(main())
        pending = asyncio.all_tasks(loop)
        for t in pending:
            t.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    def cancel_all() -> None:
        for t in asyncio.all_tasks(loop):
            t.cancel()

    thread = threading.Thread(target=run, name="simagent", daemon=True)
    thread.start()
    if not ready.wait(10):
        raise RuntimeError("the simulated agents did not start serving")
    try:
        yield port[0]
    finally:
        loop.call_soon_threadsafe(cancel_all)
        thread.join(10)


def host_names(count: int) -> list[str]:
    return [f"sim{i:03d}" for i in range(count)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-file", type=Path, required=True)
    ap.add_argument("--op-seconds", type=float, default=2.0)
    ap.add_argument("--boot-seconds", type=float, default=2.0)
    ap.add_argument("--boot-range", help="LOW:HIGH seconds, each boot drawn uniformly from it")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    token = args.token_file.read_text().strip()
    boot_range = None
    if args.boot_range:
        low, _, high = args.boot_range.partition(":")
        boot_range = (float(low), float(high))
        if not 0 <= boot_range[0] <= boot_range[1]:
            ap.error("--boot-range: must be LOW:HIGH with 0 <= LOW <= HIGH")
    agents = Agents(
        host_names(args.hosts), args.op_seconds, args.boot_seconds, boot_range, args.seed
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args.port, agents, token))
    return 0


if __name__ == "__main__":
    sys.exit(main())
