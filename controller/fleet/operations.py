"""Waiting for an agent's long operation (202 and an operation id) to end."""

from __future__ import annotations

import logging
from collections.abc import Callable

from controller.base.settings import Settings
from controller.fleet.agents import AgentPort
from hostagent.contract import operations
from hostagent.contract.client import AgentError
from kvmss.base.clock import Clock
from kvmss.base.waiting import wait_for

log = logging.getLogger(__name__)


class OperationWaiter:
    def __init__(
        self, agents: AgentPort, clock: Clock, settings: Settings, stopping: Callable[[], bool]
    ) -> None:
        self._agents = agents
        self._clock = clock
        self._settings = settings
        self._stopping = stopping

    def wait(self, host: str, op: operations.Operation) -> operations.Operation:
        """``op`` polled until it is no longer InProgress; as last seen when
        the operation timeout passes or the controller stops. An agent that
        does not answer a poll is asked again at the next."""
        latest = op
        first = True

        def ended() -> operations.Operation | None:
            nonlocal latest, first
            if latest.status == "InProgress" and not first:
                try:
                    latest = self._agents.operation(host, latest.id)
                except AgentError as e:
                    log.warning("polling %s on %s: %s", latest.id, host, e)
            first = False
            return None if latest.status == "InProgress" else latest

        wait_for(
            self._clock,
            ended,
            timeout=self._settings.op_timeout_seconds,
            interval=self._settings.poll_seconds,
            stop=self._stopping,
        )
        return latest
