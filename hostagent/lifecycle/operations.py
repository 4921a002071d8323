"""Long operations: 202 + operation id, run on a worker thread, persisted.

One operation per instance at a time; submitting the same ``operationId``
again returns the existing operation (every call is idempotent).
"""

from __future__ import annotations

import errno
import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hostagent.contract.operations import ErrorInfo, Operation
from kvmss.base import atomicfile
from kvmss.base.clock import Clock, iso8601

log = logging.getLogger(__name__)

RETENTION_SECONDS = 7 * 86400


class OperationFailed(Exception):
    """An operation ended in failure; ``code`` and the message go to the caller."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Busy(Exception):
    def __init__(self, instance: str, op: Operation) -> None:
        super().__init__(f"instance {instance} is busy with operation {op.id} ({op.kind})")
        self.operation = op


class Operations:
    def __init__(
        self,
        directory: Path,
        clock: Clock,
        workers: int = 8,
        on_finish: Callable[[Operation], None] | None = None,
    ) -> None:
        self._dir = directory
        self.on_finish = on_finish
        self._clock = clock
        self._lock = threading.Lock()
        self._ops: dict[str, Operation] = {}
        self._busy: dict[str, str] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        horizon = clock.now() - RETENTION_SECONDS
        for p in sorted(directory.glob("*.json")):
            try:
                op = Operation(**atomicfile.read_json(p))
            except (ValueError, TypeError) as e:
                log.error("unreadable operation record %s: %s", p.name, e)
                continue
            if op.status != "InProgress" and p.stat().st_mtime < horizon:
                p.unlink()  # finished long ago: the controller has long read it
                continue
            self._ops[op.id] = op

    def _save(self, op: Operation) -> None:
        self._ops[op.id] = op
        atomicfile.write_json(self._dir / f"{op.id}.json", op.model_dump())

    def get(self, op_id: str) -> Operation | None:
        with self._lock:
            return self._ops.get(op_id)

    def cancel(self, op_id: str, kind: str, instance: str) -> Operation:
        """An operation that will never run. An id never seen is recorded
        Failed (code Cancelled), so a request with it that arrives later
        (delayed in the network, queued in a stopped agent, or still in its
        handler fetching the image) gets that record and does nothing; a
        known operation is returned as it is (one running is not stopped)."""
        with self._lock:
            existing = self._ops.get(op_id)
            if existing is not None:
                if existing.kind != kind or existing.instance != instance:
                    raise ValueError(
                        f"operationId {op_id} is a {existing.kind} of {existing.instance}"
                    )
                return existing
            now = iso8601(self._clock.now())
            op = Operation(
                id=op_id,
                kind=kind,
                instance=instance,
                status="Failed",
                startTime=now,
                endTime=now,
                error=ErrorInfo(
                    code="Cancelled", message=f"{kind} of {instance} cancelled before it started"
                ),
            )
            self._save(op)
        log.info("operation %s (%s of %s) cancelled before it started", op_id, kind, instance)
        return op

    def busy_with(self, instance: str) -> str | None:
        with self._lock:
            return self._busy.get(instance)

    def submit(
        self,
        kind: str,
        instance: str,
        work: Callable[[str], None],
        op_id: str | None = None,
    ) -> tuple[Operation, bool]:
        """Start ``work(op_id)`` on a worker; returns (operation, created)."""
        with self._lock:
            if op_id is not None and op_id in self._ops:
                existing = self._ops[op_id]
                if existing.kind != kind or existing.instance != instance:
                    raise ValueError(
                        f"operationId {op_id} is already used by a {existing.kind}"
                        f" of {existing.instance}"
                    )
                return existing, False
            running = self._busy.get(instance)
            if running is not None:
                raise Busy(instance, self._ops[running])
            op = Operation(
                id=op_id or uuid.uuid4().hex,
                kind=kind,
                instance=instance,
                status="InProgress",
                startTime=iso8601(self._clock.now()),
            )
            self._save(op)
            self._busy[instance] = op.id
        self._pool.submit(self._run, op, work)
        return op, True

    def _run(self, op: Operation, work: Callable[[str], None]) -> None:
        error: ErrorInfo | None = None
        try:
            work(op.id)
        except OperationFailed as e:
            error = ErrorInfo(code=e.code, message=e.message)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                log.exception("operation %s (%s of %s) crashed", op.id, op.kind, op.instance)
                error = ErrorInfo(code="InternalError", message=f"{type(e).__name__}: {e}")
            else:  # the host's storage is full: say so, it is no bug
                log.error("operation %s (%s of %s): %s", op.id, op.kind, op.instance, e)
                error = ErrorInfo(
                    code="NoSpace", message=f"{op.kind} of {op.instance}: no space left: {e}"
                )
        except Exception as e:  # a bug or an unexpected host failure
            log.exception("operation %s (%s of %s) crashed", op.id, op.kind, op.instance)
            error = ErrorInfo(code="InternalError", message=f"{type(e).__name__}: {e}")
        self.finish(op.id, error)
        if self.on_finish is not None:
            try:
                self.on_finish(op)
            except Exception:
                log.exception("settling operation %s failed", op.id)

    def finish(self, op_id: str, error: ErrorInfo | None) -> None:
        with self._lock:
            op = self._ops.get(op_id)
            if op is None:
                return
            done = op.model_copy(
                update={
                    "status": "Failed" if error else "Succeeded",
                    "endTime": iso8601(self._clock.now()),
                    "error": error,
                }
            )
            self._save(done)
            if self._busy.get(op.instance) == op_id:
                del self._busy[op.instance]

    def interrupted(self) -> list[Operation]:
        """Operations recorded InProgress by an earlier process of the agent."""
        with self._lock:
            return [
                o
                for o in self._ops.values()
                if o.status == "InProgress" and o.id not in self._busy.values()
            ]

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
