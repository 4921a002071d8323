"""A scripted double of the agent port for orchestration tests.

It keeps, per instance, the image version it runs, its previous version, and
a health script (a function of version and time since boot). Operations take
``op_seconds`` of the injected clock to finish, are idempotent by operation id
(as the real agent's are), and every reimage actually performed is counted so
tests can prove no instance is reimaged twice. It also records the most
instances ever out of service at once. Its methods are exactly those of
:class:`~controller.fleet.agents.AgentPort` (tests/hostagent/contract/test_calls.py).
"""

from __future__ import annotations

import functools
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from hostagent.contract import instancespec, operations, views
from hostagent.contract.client import AgentError, AgentUnreachable
from kvmss.base.clock import Clock, iso8601

HealthFn = Callable[[str, str, float], bool]  # (instance name, version, seconds since boot)

_LOCK = threading.RLock()  # request threads and the controller's background threads share it


F = TypeVar("F", bound=Callable[..., Any])


def _locked(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return fn(*args, **kwargs)

    return cast(F, wrapper)


def always_healthy(_name: str, _version: str, _age: float) -> bool:
    return True


@dataclass
class FakeInstance:
    name: str
    version: str
    previous: str | None = None
    booted_at: float = 0.0
    busy_until: float = 0.0  # out of service (stopped/booting) until then


@dataclass
class FakeOp:
    id: str
    kind: str
    name: str
    done_at: float
    apply: Callable[[], None]
    status: str = "InProgress"
    error: operations.ErrorInfo | None = None


@dataclass
class AgentDouble:
    clock: Clock
    health: HealthFn = always_healthy
    op_seconds: float = 10.0
    boot_seconds: float = 20.0
    instances: dict[str, FakeInstance] = field(default_factory=dict)
    ops: dict[str, FakeOp] = field(default_factory=dict)
    reimages: dict[str, int] = field(default_factory=dict)
    rollbacks: dict[str, int] = field(default_factory=dict)
    commits: dict[str, int] = field(default_factory=dict)
    unreachable_hosts: set[str] = field(default_factory=set)
    fail_reimage: set[str] = field(default_factory=set)
    max_out_of_service: int = 0

    def add(self, name: str, version: str) -> None:
        self.instances[name] = FakeInstance(name, version)

    # -- bookkeeping ----------------------------------------------------------

    def _reach(self, host: str) -> None:
        if host in self.unreachable_hosts:
            raise AgentUnreachable(f"http://{host}", "ConnectionError")

    def _settle(self) -> None:
        now = self.clock.monotonic()
        for op in self.ops.values():
            if op.status == "InProgress" and now >= op.done_at:
                op.apply()
                if op.error is None:
                    op.status = "Succeeded"
                else:
                    op.status = "Failed"
        out = sum(
            1
            for i in self.instances.values()
            if now < i.busy_until
            or any(o.status == "InProgress" and o.name == i.name for o in self.ops.values())
        )
        self.max_out_of_service = max(self.max_out_of_service, out)

    def _op(
        self, op_id: str, kind: str, name: str, apply: Callable[[], None]
    ) -> operations.Operation:
        if op_id in self.ops:
            return self._view(self.ops[op_id])
        op = FakeOp(op_id, kind, name, self.clock.monotonic() + self.op_seconds, apply)
        self.ops[op_id] = op
        self._settle()
        return self._view(op)

    def _view(self, op: FakeOp) -> operations.Operation:
        return operations.Operation(
            id=op.id,
            kind=op.kind,
            instance=op.name,
            status=op.status,  # type: ignore[arg-type]
            startTime=iso8601(self.clock.now()),
            error=op.error,
        )

    def _inst(self, name: str) -> FakeInstance:
        if name not in self.instances:
            raise AgentError(404, "NotFound", f"instance {name} does not exist")
        return self.instances[name]

    # -- the port -------------------------------------------------------------

    @_locked
    def put_instance(
        self, host: str, name: str, spec: instancespec.InstanceSpec
    ) -> operations.Operation:
        self._reach(host)
        v = spec.image.reference.version

        def apply() -> None:
            self.instances.setdefault(name, FakeInstance(name, v))

        return self._op(uuid.uuid4().hex, "create", name, apply)

    @_locked
    def reimage(
        self, host: str, name: str, image: instancespec.ImageSpec, operation_id: str
    ) -> operations.Operation:
        self._reach(host)
        inst = self._inst(name)
        op: FakeOp | None = None

        def apply() -> None:
            if name in self.fail_reimage:
                assert op is not None
                op.error = operations.ErrorInfo(code="ImageSha256Mismatch", message="bad image")
                return
            self.reimages[name] = self.reimages.get(name, 0) + 1
            inst.previous, inst.version = inst.version, image.reference.version
            inst.booted_at = self.clock.monotonic()
            inst.busy_until = inst.booted_at + self.boot_seconds

        view = self._op(operation_id, "reimage", name, apply)
        op = self.ops[operation_id]
        return view

    @_locked
    def rollback(self, host: str, name: str, operation_id: str) -> operations.Operation:
        self._reach(host)
        inst = self._inst(name)
        if inst.previous is None and operation_id not in self.ops:
            raise AgentError(409, "NoPreviousOsDisk", "no previous OS disk")

        def apply() -> None:
            self.rollbacks[name] = self.rollbacks.get(name, 0) + 1
            assert inst.previous is not None
            inst.version, inst.previous = inst.previous, None
            inst.booted_at = self.clock.monotonic()
            inst.busy_until = inst.booted_at + self.boot_seconds

        return self._op(operation_id, "rollback", name, apply)

    @_locked
    def commit(self, host: str, name: str, operation_id: str) -> operations.Operation:
        self._reach(host)
        inst = self._inst(name)

        def apply() -> None:
            self.commits[name] = self.commits.get(name, 0) + 1
            inst.previous = None

        view = self._op(operation_id, "commit", name, apply)
        self.ops[operation_id].done_at = self.clock.monotonic()
        self._settle()
        return view

    @_locked
    def delete(self, host: str, name: str, operation_id: str) -> operations.Operation:
        self._reach(host)

        def apply() -> None:
            self.instances.pop(name, None)

        return self._op(operation_id, "delete", name, apply)

    @_locked
    def cancel(
        self, host: str, name: str, op_id: str, kind: operations.OperationKind
    ) -> operations.Operation:
        self._reach(host)
        self._settle()
        if op_id not in self.ops:
            cancelled = operations.ErrorInfo(
                code="Cancelled", message="cancelled before it started"
            )
            now = self.clock.monotonic()
            self.ops[op_id] = FakeOp(op_id, kind, name, now, lambda: None, "Failed", cancelled)
        return self._view(self.ops[op_id])

    @_locked
    def operation(self, host: str, op_id: str) -> operations.Operation:
        self._reach(host)
        self._settle()
        if op_id not in self.ops:
            raise AgentError(404, "NotFound", f"operation {op_id} does not exist")
        return self._view(self.ops[op_id])

    @_locked
    def instance(self, host: str, name: str) -> views.InstanceView | None:
        self._reach(host)
        self._settle()
        inst = self.instances.get(name)
        if inst is None:
            return None
        now = self.clock.monotonic()
        busy = now < inst.busy_until or any(
            o.status == "InProgress" and o.name == name for o in self.ops.values()
        )
        ok = not busy and self.health(name, inst.version, now - inst.booted_at)
        state: views.HealthState = "Healthy" if ok else "Unhealthy"
        gen = views.GenerationView(
            generation=1,
            instanceId=f"i-{name}",
            image=instancespec.ImageReference(
                publisher="p", offer="o", sku="s", version=inst.version
            ),
            imageSha256="0" * 64,
            osDisk="/x",
        )
        return views.InstanceView(
            name=name,
            powerState="stopped" if busy else "running",
            address="10.0.0.2",
            current=gen,
            health=views.Health(state=state, reasons=[] if ok else ["probe failing"]),
        )
