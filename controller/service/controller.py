"""The controller's behaviour behind its API, composed of its parts: the hosts,
the scale sets and their instances, the image catalog with automatic
upgrades on publish, and the rolling upgrades (run by one thread each,
resumed when the controller restarts).

Every public method either returns what the API shows or raises
:class:`ControllerError` with a 4xx status, a code and a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final, Unpack

from controller.base.background import Background
from controller.base.errors import ControllerError
from controller.base.settings import Settings
from controller.fleet.agents import AgentPort
from controller.fleet.hosts import HostRegistry, ProbeHost
from controller.fleet.models import ScaleSetModels
from controller.fleet.operations import OperationWaiter
from controller.fleet.reconciler import Reconciler
from controller.fleet.reimages import Reimages
from controller.images.catalog import Catalog, PublishOptions
from controller.images.specs import ImageSpecs
from controller.model.scaleset import ScaleSetModel
from controller.service.scalesets import ScaleSets
from controller.store.facade import ImageRecord, InstanceRecord, Store, UpgradeRecord
from controller.upgrade.orchestrator import Orchestrator
from controller.upgrade.starts import UpgradeStarts
from controller.upgrade.status import UpgradeReports
from controller.views.instances import InstanceViews, ObservingPort, host_lister
from controller.views.setviews import SetViews
from hostagent.contract import instancespec, views
from hostagent.contract.client import AgentClient
from kvmss.base.clock import Clock

__all__ = ["Controller", "ControllerError", "Gauges", "Settings"]

# How long close() and wait_idle() wait for each background thread.
CLOSE_SECONDS: Final = 30.0
IDLE_SECONDS: Final = 60.0


@dataclass(frozen=True)
class Gauges:
    """What /metrics shows: instances by scale set, rolling upgrades running."""

    instances: dict[str, int]
    rolling_upgrades: int


def _probe(url: str, token: str) -> views.HostView:
    return AgentClient(url, token).host()


class Controller:
    """The parts, wired up, with the lifecycle of their background work."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        agents: AgentPort,
        clock: Clock,
        settings: Settings,
        probe_host: ProbeHost | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.background = background = Background()
        self.hosts = HostRegistry(store, clock, probe_host or _probe)
        self.views = InstanceViews(
            agents, host_lister(agents), self.hosts.names, clock, settings.view_refresh_seconds
        )
        self.images = images = ImageSpecs(catalog, settings)
        self.models = models = ScaleSetModels(store)
        operations = OperationWaiter(agents, clock, settings, background.stopping)
        self.reconciler = Reconciler(store, agents, models, images, operations, background)
        self.reimages = Reimages(agents, clock, models, images, operations, background)
        orch = Orchestrator(
            store, ObservingPort(agents, self.views), images.image_spec, clock, self.views.recent
        )
        self.upgrades = UpgradeStarts(
            store, catalog, images, models, orch, self.views, background, settings, clock
        )
        self.reports = UpgradeReports(store, models, clock)
        self.set_views = SetViews(store, self.views, models)
        self.scale_sets = ScaleSets(store, models, images, self.reconciler, self.upgrades)

    # -- lifecycle ---------------------------------------------------------------

    def resume(self) -> None:
        """After a restart: upgrades continue (:meth:`UpgradeStarts.resume`)
        and every scale set is reconciled."""
        for ss in self.store.scale_sets.all():
            self.upgrades.resume(ss.name)
            self.reconciler.reconcile_later(ss.name)

    def close(self) -> None:
        self.background.close(CLOSE_SECONDS)
        self.views.close()

    def wait_idle(self, timeout: float = IDLE_SECONDS) -> None:
        """Wait for background work (tests and the lab)."""
        self.background.wait_idle(timeout)

    # -- hosts -------------------------------------------------------------------

    def host_endpoint(self, host: str) -> tuple[str, str]:
        return self.hosts.host_endpoint(host)

    def add_host(self, name: str, url: str, token: str) -> dict[str, Any]:
        return self.hosts.add_host(name, url, token)

    def list_hosts(self) -> list[dict[str, Any]]:
        return self.hosts.list_hosts()

    def remove_host(self, name: str) -> None:
        self.hosts.remove_host(name)

    # -- images ------------------------------------------------------------------

    def publish(
        self,
        ref: tuple[str, str, str, str],
        source: Path | BinaryIO,
        **options: Unpack[PublishOptions],
    ) -> ImageRecord:
        """Publish a version (:meth:`Catalog.publish`); a new latest one
        starts the upgrades that follow it (rule 9)."""
        rec = self.catalog.publish(*ref, source, **options)
        self.upgrades.on_published(rec)
        return rec

    def resolve(self, ref: instancespec.ImageReference) -> ImageRecord:
        return self.images.resolve(ref)

    def image_spec(self, rec: ImageRecord) -> instancespec.ImageSpec:
        return self.images.image_spec(rec)

    def blob_signature(self, sha256: str) -> str:
        return self.images.blob_signature(sha256)

    # -- scale sets --------------------------------------------------------------

    def put_scale_set(self, name: str, body: Any) -> tuple[ScaleSetModel, bool]:
        return self.scale_sets.put_scale_set(name, body)

    def patch(self, name: str, patch: Any) -> ScaleSetModel:
        return self.scale_sets.patch(name, patch)

    def body(self, name: str) -> dict[str, Any]:
        return self.scale_sets.body(name)

    def bodies(self) -> list[dict[str, Any]]:
        return self.scale_sets.bodies()

    def delete_scale_set(self, name: str) -> None:
        self.scale_sets.delete_scale_set(name)

    # -- instances ---------------------------------------------------------------

    def instance_views(self, name: str) -> list[dict[str, Any]]:
        return self.set_views.instance_views(name)

    def known_instance_views(self, name: str) -> list[dict[str, Any]] | None:
        return self.set_views.known_instance_views(name)

    def instance_record(self, name: str, instance_id: str) -> InstanceRecord:
        return self.set_views.instance_record(name, instance_id)

    def instance_view(self, inst: InstanceRecord) -> dict[str, Any]:
        return self.set_views.instance_view(inst)

    def known_instance_view(self, inst: InstanceRecord) -> dict[str, Any] | None:
        return self.set_views.known_instance_view(inst)

    def reimage(self, name: str, instance_ids: list[str]) -> None:
        self.reimages.reimage(name, instance_ids)

    # -- upgrades ----------------------------------------------------------------

    def start_upgrade(self, name: str, started_by: str) -> UpgradeRecord:
        """osRollingUpgrade: to the newest version of the model's sku."""
        return self.upgrades.start_upgrade(name, started_by)

    def manual_upgrade(
        self, name: str, instance_ids: list[str], update_domains: list[int] | None = None
    ) -> UpgradeRecord:
        """The named instances and every instance in ``update_domains``."""
        ids = list(dict.fromkeys(instance_ids))
        if update_domains:
            self.models.must_exist(name)
            insts = self.store.instances.of(name)
            for ud in dict.fromkeys(update_domains):
                found = [i.instance_id for i in insts if i.update_domain == ud]
                if not found:
                    raise ControllerError(
                        400,
                        "InvalidParameter",
                        f"updateDomains: {name} has no instance in update domain {ud}",
                    )
                ids += [i for i in found if i not in ids]
        if not ids:
            raise ControllerError(
                400, "InvalidParameter", "instanceIds, updateDomains: name at least one"
            )
        return self.upgrades.manual_upgrade(name, ids)

    def cancel(self, name: str) -> None:
        self.upgrades.cancel(name)

    def plan(self, name: str) -> dict[str, Any]:
        return self.upgrades.plan(name)

    def latest_status(self, name: str) -> dict[str, Any]:
        return self.reports.latest_status(name)

    def history(self, name: str) -> dict[str, Any]:
        return self.reports.history(name)

    def gauges(self) -> Gauges:
        store = self.store
        counts = {s.name: len(store.instances.of(s.name)) for s in store.scale_sets.all()}
        return Gauges(instances=counts, rolling_upgrades=len(store.upgrades.all_running()))
