"""A scale set's instances as the API shows them: each stored instance with
what its agent reported."""

from __future__ import annotations

from typing import Any

from controller.base.errors import ControllerError
from controller.fleet.models import ScaleSetModels
from controller.store.facade import InstanceRecord, Store
from controller.views.instances import InstanceViews, SeenListed, listing
from hostagent.contract.client import AgentError


class SetViews:
    def __init__(self, store: Store, views: InstanceViews, models: ScaleSetModels) -> None:
        self._store = store
        self._views = views
        self._models = models

    def instance_views(self, name: str) -> list[dict[str, Any]]:
        """Every instance with what its agent reported at most a few seconds
        ago (see :mod:`controller.views.instances`)."""
        self._models.must_exist(name)
        insts = self._store.instances.of(name)
        seen = self._views.many([(i.host, i.name) for i in insts])
        return [_instance_view(i, s) for i, s in zip(insts, seen, strict=True)]

    def known_instance_views(self, name: str) -> list[dict[str, Any]] | None:
        """:meth:`instance_views` if no agent needs asking for it, else None."""
        self._models.must_exist(name)
        insts = self._store.instances.of(name)
        seen = self._views.known([(i.host, i.name) for i in insts])
        if seen is None:
            return None
        return [_instance_view(i, s) for i, s in zip(insts, seen, strict=True)]

    def instance_record(self, name: str, instance_id: str) -> InstanceRecord:
        """The stored instance, or a 404 naming it."""
        self._models.must_exist(name)
        inst = self._store.instances.get(name, instance_id) if instance_id.isdigit() else None
        if inst is None:
            raise ControllerError(
                404, "NotFound", f"instance {instance_id[:80]!r} of {name[:80]!r} does not exist"
            )
        return inst

    def instance_view(self, inst: InstanceRecord) -> dict[str, Any]:
        """One instance, with what its agent says now."""
        return _instance_view(inst, listing(self._views.one(inst.host, inst.name)))

    def known_instance_view(self, inst: InstanceRecord) -> dict[str, Any] | None:
        """:meth:`instance_view` from its host's snapshot if that is at most
        ``refresh_seconds`` old (what a listing would show); None when the
        agent must be asked."""
        views = self._views
        known, seen = views.recent_listed(inst.host, inst.name, views.refresh_seconds)
        return _instance_view(inst, seen) if known else None


def _instance_view(inst: InstanceRecord, v: SeenListed) -> dict[str, Any]:
    out: dict[str, Any] = {
        "instanceId": inst.instance_id,
        "name": inst.name,
        "host": inst.host,
        "updateDomain": inst.update_domain,
        "faultDomain": inst.fault_domain,
        "imageVersion": inst.image_version,
        "provisioningState": inst.state,
        "powerState": "unknown",
        "health": "Unknown",
        "healthReasons": [],
        "extensions": [],
    }
    if isinstance(v, AgentError):
        out["healthReasons"] = [f"host agent: {v.code}"]
        return out
    if v is None:
        out["healthReasons"] = ["not found on its host"]
        return out
    out.update(
        imageVersion=v.image_version,
        powerState=v.power_state,
        health=v.health,
        healthReasons=list(v.reasons),
        address=v.address,
        extensions=[
            {"name": name, "status": status, "exitCode": code}
            for name, status, code in v.extensions
        ],
    )
    return out
