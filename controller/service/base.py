"""What every part of the controller's behaviour shares: its error, its
settings, and :class:`ControllerBase`, the base of the parts
(:class:`controller.service.controller.Controller` is all of them and wires them up).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from controller.fleet.agents import AgentPort
from controller.images.catalog import Catalog
from controller.model.scaleset import ScaleSetModel, parse_scale_set
from controller.store.facade import Store
from controller.upgrade.orchestrator import Orchestrator
from controller.views.instances import InstanceViews
from hostagent.contract import operations
from hostagent.contract.client import AgentError
from kvmss.base.clock import Clock

log = logging.getLogger(__name__)


class ControllerError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Settings:
    public_url: str  # how agents reach this controller (blob downloads)
    blob_secret: bytes  # signs blob URLs handed to agents
    poll_seconds: float = 1.0
    op_timeout_seconds: float = 900.0
    # how often listings' instance views are refreshed from each host
    view_refresh_seconds: float = 5.0


class ControllerBase:
    """The wiring every part uses (set by :class:`controller.service.controller.Controller`),
    the background threads, reading a scale set's model, waiting for an agent's
    operation."""

    store: Store
    catalog: Catalog
    agents: AgentPort
    clock: Clock
    settings: Settings
    views: InstanceViews
    orch: Orchestrator
    _stop: threading.Event
    _lock: threading.Lock
    _threads: dict[str, threading.Thread]

    def _background(self, key: str, fn: Callable[[], None]) -> None:
        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("%s failed", key)
            finally:
                with self._lock:
                    if self._threads.get(key) is threading.current_thread():
                        del self._threads[key]

        with self._lock:
            if key in self._threads:
                return
            t = threading.Thread(target=run, name=key, daemon=True)
            self._threads[key] = t
        t.start()

    def model(self, name: str) -> ScaleSetModel:
        rec = self.store.get_scale_set(name)
        if rec is None:
            raise ControllerError(404, "NotFound", f"scale set {name[:80]!r} does not exist")
        return parse_scale_set(name, rec.body)

    def _must_exist(self, name: str) -> None:
        """404 unless the scale set exists (cheaper than parsing its model)."""
        if self.store.get_scale_set(name) is None:
            raise ControllerError(404, "NotFound", f"scale set {name[:80]!r} does not exist")

    def _wait_op(self, host: str, op: operations.Operation) -> operations.Operation:
        deadline = self.clock.monotonic() + self.settings.op_timeout_seconds
        while op.status == "InProgress" and self.clock.monotonic() < deadline:
            if self._stop.is_set():
                return op
            self.clock.sleep(self.settings.poll_seconds)
            try:
                op = self.agents.operation(host, op.id)
            except AgentError as e:
                log.warning("polling %s on %s: %s", op.id, host, e)
        return op
