"""The host agents the controller knows: registering (the agent must answer
to its name), listing, removing, and their URL and token for every agent call."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Final

from controller.base.errors import ControllerError
from controller.store.facade import HostRecord, Store
from hostagent.contract import views
from hostagent.contract.client import AgentError
from kvmss.base.clock import Clock

# How long a host's URL and token are taken from memory before the store is
# asked again: every agent call needs them, a host never changes them (it is
# removed and registered again), and another controller replica may do that.
HOST_ENDPOINT_TTL_SECONDS: Final = 5.0

ProbeHost = Callable[[str, str], views.HostView]  # (url, token) -> what the agent says


def _not_registered(name: str) -> ControllerError:
    return ControllerError(404, "NotFound", f"host {name[:80]!r} is not registered")


class HostRegistry:
    def __init__(self, store: Store, clock: Clock, probe_host: ProbeHost) -> None:
        self._store = store
        self._clock = clock
        self._probe_host = probe_host
        self._lock = threading.Lock()
        self._endpoints: dict[str, tuple[float, tuple[str, str]]] = {}

    def host_endpoint(self, host: str) -> tuple[str, str]:
        """(base URL, token) of a registered host's agent."""
        now = self._clock.monotonic()
        with self._lock:
            known = self._endpoints.get(host)
        if known is not None and now - known[0] < HOST_ENDPOINT_TTL_SECONDS:
            return known[1]
        rec = self._store.hosts.get(host)
        if rec is None:
            raise AgentError(404, "HostNotFound", f"host {host[:80]!r} is not registered")
        with self._lock:
            self._endpoints[host] = (now, (rec.url, rec.token))
        return rec.url, rec.token

    def _forget_endpoint(self, host: str) -> None:
        with self._lock:
            self._endpoints.pop(host, None)

    def add_host(self, name: str, url: str, token: str) -> dict[str, Any]:
        if not (url.startswith("http://") or url.startswith("https://")):
            raise ControllerError(400, "InvalidParameter", "url: must be an http(s) URL")
        try:
            view = self._probe_host(url, token)
        except AgentError as e:
            raise ControllerError(
                400, "HostUnreachable", f"url: the agent at {url} did not answer ({e.code})"
            ) from None
        if view.name != name:
            raise ControllerError(
                400, "InvalidParameter", f"name: the agent at {url} calls itself {view.name}"
            )
        if self._store.hosts.get(name) is not None:
            raise ControllerError(409, "Conflict", f"host {name} is already registered")
        self._store.hosts.add(HostRecord(name, url, token, self._clock.now()))
        self._forget_endpoint(name)
        return self.host_view(name)

    def host_view(self, name: str) -> dict[str, Any]:
        rec = self._store.hosts.get(name)
        if rec is None:
            raise _not_registered(name)
        out: dict[str, Any] = {"name": rec.name, "url": rec.url, "reachable": False}
        try:
            v = self._probe_host(rec.url, rec.token)
            out.update(
                reachable=True,
                hypervisor=v.hypervisor,
                capacity=v.capacity.model_dump(),
                instanceCount=v.instanceCount,
                libvirtVersion=v.libvirtVersion,
            )
        except AgentError as e:
            out["error"] = e.code
        return out

    def list_hosts(self) -> list[dict[str, Any]]:
        return [self.host_view(h.name) for h in self._store.hosts.all()]

    def names(self) -> list[str]:
        return [h.name for h in self._store.hosts.all()]

    def remove_host(self, name: str) -> None:
        if self._store.hosts.get(name) is None:
            raise _not_registered(name)
        for ss in self._store.scale_sets.all():
            used = [i.name for i in self._store.instances.of(ss.name) if i.host == name]
            if used:
                raise ControllerError(
                    409,
                    "HostInUse",
                    f"host {name} still runs {len(used)} instances ({used[0]}, ...)",
                )
        self._store.hosts.delete(name)
        self._forget_endpoint(name)
