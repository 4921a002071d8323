"""What the controller needs of host agents, by host name.

:class:`AgentPort` is the seam the orchestrator is written against; the real
:class:`AgentPool` goes through :class:`hostagent.contract.client.AgentClient` (the
only way the controller talks to agents), and orchestration tests use a
scripted double of this port. Each method of the port is the call of
:mod:`hostagent.contract.calls` of the same name, and a test holds the port,
the pool and the double to that table.
"""

from __future__ import annotations

import threading
from typing import Protocol

from hostagent.contract import instancespec, operations, views
from hostagent.contract.client import AgentClient


class AgentPort(Protocol):
    def put_instance(
        self, host: str, name: str, spec: instancespec.InstanceSpec
    ) -> operations.Operation: ...

    def reimage(
        self, host: str, name: str, image: instancespec.ImageSpec, operation_id: str
    ) -> operations.Operation: ...

    def rollback(self, host: str, name: str, operation_id: str) -> operations.Operation: ...

    def commit(self, host: str, name: str, operation_id: str) -> operations.Operation: ...

    def delete(self, host: str, name: str, operation_id: str) -> operations.Operation: ...

    def operation(self, host: str, op_id: str) -> operations.Operation: ...

    def cancel(
        self, host: str, name: str, op_id: str, kind: operations.OperationKind
    ) -> operations.Operation: ...

    def instance(self, host: str, name: str) -> views.InstanceView | None: ...


class HostDirectory(Protocol):
    def host_endpoint(self, host: str) -> tuple[str, str]:
        """(base URL, token) of a registered host's agent."""
        ...


class AgentPool:
    """One :class:`AgentClient` per registered host, made on first use."""

    def __init__(self, hosts: HostDirectory, timeout: float | None = None) -> None:
        """``timeout``: as :class:`AgentClient`'s (None: each call's timeout class)."""
        self._hosts = hosts
        self._timeout = timeout
        self._clients: dict[str, tuple[str, str, AgentClient]] = {}
        self._lock = threading.Lock()

    def client(self, host: str) -> AgentClient:
        url, token = self._hosts.host_endpoint(host)
        with self._lock:
            have = self._clients.get(host)
            if have is None or have[:2] != (url, token):
                have = (url, token, AgentClient(url, token, timeout=self._timeout))
                self._clients[host] = have
            return have[2]

    def put_instance(
        self, host: str, name: str, spec: instancespec.InstanceSpec
    ) -> operations.Operation:
        return self.client(host).put_instance(name, spec)

    def reimage(
        self, host: str, name: str, image: instancespec.ImageSpec, operation_id: str
    ) -> operations.Operation:
        return self.client(host).reimage(name, image, operation_id=operation_id)

    def rollback(self, host: str, name: str, operation_id: str) -> operations.Operation:
        return self.client(host).rollback(name, operation_id=operation_id)

    def commit(self, host: str, name: str, operation_id: str) -> operations.Operation:
        return self.client(host).commit(name, operation_id=operation_id)

    def delete(self, host: str, name: str, operation_id: str) -> operations.Operation:
        return self.client(host).delete(name, operation_id=operation_id)

    def operation(self, host: str, op_id: str) -> operations.Operation:
        return self.client(host).operation(op_id)

    def cancel(
        self, host: str, name: str, op_id: str, kind: operations.OperationKind
    ) -> operations.Operation:
        return self.client(host).cancel(op_id, kind, name)

    def instance(self, host: str, name: str) -> views.InstanceView | None:
        return self.client(host).instance(name)
