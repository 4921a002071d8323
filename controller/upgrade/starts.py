"""What starts upgrades and what the API does with them: a newly published
latest version (rule 9), the end of one (rule 8), osRollingUpgrade,
manualUpgrade; also cancelling, the dry-run plan, and resuming after a restart."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from controller.base.background import Background
from controller.base.errors import ControllerError
from controller.base.settings import Settings
from controller.fleet.models import ScaleSetModels
from controller.images.catalog import LATEST, Catalog
from controller.images.specs import ImageSpecs
from controller.model.scaleset import ScaleSetModel, parse_scale_set
from controller.model.upgradepolicy import RollingPolicy
from controller.model.versions import version_key
from controller.store.facade import Conflict, ImageRecord, Store, UpgradeRecord
from controller.store.states import StartedBy, UpgradeStatus
from controller.upgrade import planner
from controller.upgrade.orchestrator import Orchestrator
from kvmss.base.clock import Clock

log = logging.getLogger(__name__)


class PlanViews(Protocol):
    """What planning reads of the instance views
    (:class:`controller.views.instances.InstanceViews`)."""

    @property
    def watched(self) -> bool: ...

    def many(self, keys: list[tuple[str, str]]) -> Sequence[object]: ...

    def cached_reads(self) -> AbstractContextManager[None]: ...


class UpgradeStarts:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        images: ImageSpecs,
        models: ScaleSetModels,
        orchestrator: Orchestrator,
        views: PlanViews,
        background: Background,
        settings: Settings,
        clock: Clock,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._images = images
        self._models = models
        self._orch = orchestrator
        self._views = views
        self._background = background
        self._settings = settings
        self._clock = clock

    # -- what starts an upgrade ----------------------------------------------------

    def on_published(self, rec: ImageRecord) -> None:
        """Rule 9: a new latest version starts an upgrade (startedBy Platform)
        on every scale set that follows ``latest`` of that sku automatically."""
        newest = self._catalog.resolve(rec.publisher, rec.offer, rec.sku, LATEST)
        if newest.version != rec.version:
            return
        for ss in self._store.scale_sets.all():
            model = parse_scale_set(ss.name, ss.body)
            ref = model.image_reference
            if _follows_latest(model) and (ref.publisher, ref.offer, ref.sku) == (
                rec.publisher,
                rec.offer,
                rec.sku,
            ):
                self._start_platform(model, rec)

    def _start_platform(self, model: ScaleSetModel, target: ImageRecord) -> None:
        if self._store.upgrades.running(model.name) is not None:
            log.info("%s: version %s waits for the running upgrade", model.name, target.version)
            return
        insts = self._store.instances.of(model.name)
        if not insts or all(i.image_version == target.version for i in insts):
            return
        try:
            self.start_upgrade(model.name, StartedBy.PLATFORM, target)
        except ControllerError as e:
            log.warning("%s: automatic upgrade not started: %s", model.name, e.message)

    def _after_upgrade(self, up: UpgradeRecord) -> None:
        """Rule 8: a version published while an upgrade ran is picked up next."""
        try:
            model = self._models.model(up.scale_set)
            newest = self._images.latest_image(model)
        except ControllerError:
            return
        if _follows_latest(model) and version_key(newest.version) > version_key(up.target.version):
            self._start_platform(model, newest)

    # -- starting one --------------------------------------------------------------

    @staticmethod
    def policy(model: ScaleSetModel, started_by: str) -> RollingPolicy:
        """What an upgrade started by ``started_by`` runs under (rule 4)."""
        return model.rolling if started_by == StartedBy.PLATFORM else model.rolling.by_hand()

    def start_upgrade(
        self,
        name: str,
        started_by: str,
        target: ImageRecord | None = None,
        *,
        policy: RollingPolicy | None = None,
        only: set[str] | None = None,
        all_at_once: bool = False,
    ) -> UpgradeRecord:
        model = self._models.model(name)
        target = target or self._images.latest_image(model)
        busy = ControllerError(
            409, "OperationNotAllowed", f"scale set {name} already has a rolling upgrade running"
        )
        # Refused before planning, which asks about every instance; the
        # store's one-running-upgrade index still settles a race.
        if self._store.upgrades.running(name) is not None:
            raise busy
        try:
            with self._planning(name):
                up = self._orch.start(
                    name,
                    target,
                    policy or self.policy(model, started_by),
                    StartedBy(started_by),
                    only=only,
                    all_at_once=all_at_once,
                )
        except Conflict:
            raise busy from None
        self._spawn(up.id)
        return up

    @contextmanager
    def _planning(self, name: str) -> Iterator[None]:
        """Plan from the instance views of the last few seconds (asked for
        now, host by host, where there are none): every instance taken is
        observed again before it is touched (rule 3), so a plan needs no
        fresher view than a listing shows."""
        if self._views.watched:
            self._views.many([(i.host, i.name) for i in self._store.instances.of(name)])
        with self._views.cached_reads():
            yield

    def manual_upgrade(self, name: str, instance_ids: list[str]) -> UpgradeRecord:
        """Bring the named instances to the model's image (any upgrade mode),
        all at once, as a recorded upgrade started by the user."""
        model = self._models.model(name)
        self._models.named_instances(name, instance_ids)
        return self.start_upgrade(
            name,
            StartedBy.USER,
            self._images.resolve(model.image_reference),
            policy=model.rolling.all_at_once(),
            only=set(instance_ids),
            all_at_once=True,
        )

    # -- running -------------------------------------------------------------------

    def _spawn(self, upgrade_id: str) -> None:
        def run() -> None:
            up = self._run(upgrade_id)
            if up.status != UpgradeStatus.ROLLING_FORWARD:
                self._after_upgrade(up)

        self._background.run(f"upgrade-{upgrade_id}", run)

    def _run(self, upgrade_id: str) -> UpgradeRecord:
        return self._orch.run(
            upgrade_id,
            poll_seconds=self._settings.poll_seconds,
            should_stop=self._background.stopping,
        )

    def resume(self, scale_set: str) -> None:
        """After a restart: an upgrade still RollingForward continues, and the
        rollbacks an ended one decided but could not confirm (their host did
        not answer) are carried out once their hosts answer."""
        running = self._store.upgrades.running(scale_set)
        if running is not None:
            log.warning("resuming upgrade %s of %s", running.id, scale_set)
            self._spawn(running.id)
        for up in self._store.upgrades.history(scale_set, self._clock.now()):
            rows = self._store.upgrade_instances.of(up.id)
            if up.status != UpgradeStatus.ROLLING_FORWARD and any(u.unconfirmed for u in rows):
                log.warning("settling rollbacks upgrade %s of %s left", up.id, scale_set)
                self._background.run(f"upgrade-{up.id}", functools.partial(self._run, up.id))

    # -- what the API asks -----------------------------------------------------------

    def cancel(self, name: str) -> None:
        self._models.must_exist(name)
        if not self._store.upgrades.request_cancel(name):
            raise ControllerError(
                409, "OperationNotAllowed", f"scale set {name} has no upgrade running"
            )

    def plan(self, name: str) -> dict[str, Any]:
        """The batches an upgrade to latest would run now; touches nothing."""
        model = self._models.model(name)
        target = self._images.latest_image(model)
        insts = self._store.instances.of(name)
        rolling = model.rolling
        with self._planning(name):
            batches = self._orch.plan(
                insts,
                target.version,
                rolling.max_batch_instance_percent,
                prioritize_unhealthy=rolling.prioritize_unhealthy,
            )
        ref = target.ref
        return {
            "targetImageReference": {
                "publisher": ref.publisher,
                "offer": ref.offer,
                "sku": ref.sku,
                "version": ref.version,
            },
            "batchSize": planner.batch_size(len(insts), rolling.max_batch_instance_percent),
            "batches": batches,
        }


def _follows_latest(model: ScaleSetModel) -> bool:
    """Whether ``model`` follows its sku's newest version automatically (rule 9)."""
    return model.automatic.enable and model.image_reference.version.lower() == LATEST
