"""The host agents the controller knows: registering (the agent must answer
to its name), listing, removing, and their URL and token for every agent call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.service.base import ControllerBase, ControllerError
from controller.store.facade import HostRecord
from hostagent.contract import views
from hostagent.contract.client import AgentError

# How long a host's URL and token are taken from memory before the store is
# asked again: every agent call needs them, a host never changes them (it is
# removed and registered again), and another controller replica may do that.
HOST_ENDPOINT_TTL_SECONDS = 5.0


class HostRegistry(ControllerBase):
    """Registering, listing and removing host agents; their endpoints."""

    _probe_host: Callable[[str, str], views.HostView]
    _endpoints: dict[str, tuple[float, tuple[str, str]]]

    def host_endpoint(self, host: str) -> tuple[str, str]:
        now = self.clock.monotonic()
        with self._lock:
            known = self._endpoints.get(host)
        if known is not None and now - known[0] < HOST_ENDPOINT_TTL_SECONDS:
            return known[1]
        rec = self.store.get_host(host)
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
        if self.store.get_host(name) is not None:
            raise ControllerError(409, "Conflict", f"host {name} is already registered")
        self.store.add_host(HostRecord(name, url, token, self.clock.now()))
        self._forget_endpoint(name)
        return self.host_view(name)

    def host_view(self, name: str) -> dict[str, Any]:
        rec = self.store.get_host(name)
        if rec is None:
            raise ControllerError(404, "NotFound", f"host {name[:80]!r} is not registered")
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
        return [self.host_view(h.name) for h in self.store.list_hosts()]

    def remove_host(self, name: str) -> None:
        if self.store.get_host(name) is None:
            raise ControllerError(404, "NotFound", f"host {name[:80]!r} is not registered")
        for ss in self.store.list_scale_sets():
            used = [i.name for i in self.store.list_instances(ss.name) if i.host == name]
            if used:
                raise ControllerError(
                    409,
                    "HostInUse",
                    f"host {name} still runs {len(used)} instances ({used[0]}, ...)",
                )
        self.store.delete_host(name)
        self._forget_endpoint(name)
