"""What starts upgrades and what the API does with them: a newly published
latest version (rule 9), the end of one (rule 8), osRollingUpgrade,
manualUpgrade; also reimages, cancelling and the dry-run plan."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from controller.images.catalog import CatalogError
from controller.model.scaleset import ScaleSetModel, parse_scale_set
from controller.model.upgradepolicy import RollingPolicy
from controller.model.versions import version_key
from controller.service.base import ControllerError
from controller.service.imagespecs import ImageSpecs
from controller.store.facade import Conflict, ImageRecord, InstanceRecord, UpgradeRecord
from controller.store.states import StartedBy, UpgradeStatus
from controller.upgrade import planner
from hostagent.contract.client import AgentError

log = logging.getLogger(__name__)


class UpgradeStarts(ImageSpecs):
    """Upgrades started (by a publish, by the user, after another), reimages,
    cancel and plan."""

    def publish(
        self,
        ref: tuple[str, str, str, str],
        source: Path | BinaryIO,
        *,
        kernel: Path | None = None,
        initrd: Path | None = None,
        cmdline: str | None = None,
        sha256: str | None = None,
    ) -> ImageRecord:
        try:
            rec = self.catalog.publish(
                *ref, source, kernel=kernel, initrd=initrd, cmdline=cmdline, sha256=sha256
            )
        except CatalogError as e:
            raise ControllerError(e.status, e.code, e.message) from None
        self.on_published(rec)
        return rec

    def on_published(self, rec: ImageRecord) -> None:
        """Rule 9: a new latest version starts an upgrade (startedBy Platform)
        on every scale set that follows ``latest`` of that sku automatically."""
        newest = self.catalog.resolve(rec.publisher, rec.offer, rec.sku, "latest")
        if newest.version != rec.version:
            return
        for ss in self.store.scale_sets.all():
            model = parse_scale_set(ss.name, ss.body)
            if self._follows(model, rec):
                self._start_platform(model, rec)

    @staticmethod
    def _follows(model: ScaleSetModel, rec: ImageRecord) -> bool:
        ref = model.image_reference
        return (
            model.automatic.enable
            and ref.version.lower() == "latest"
            and (ref.publisher, ref.offer, ref.sku) == (rec.publisher, rec.offer, rec.sku)
        )

    def _start_platform(self, model: ScaleSetModel, target: ImageRecord) -> None:
        if self.store.upgrades.running(model.name) is not None:
            log.info("%s: version %s waits for the running upgrade", model.name, target.version)
            return
        insts = self.store.instances.of(model.name)
        if not insts or all(i.image_version == target.version for i in insts):
            return
        try:
            self.start_upgrade(model.name, StartedBy.PLATFORM, target)
        except ControllerError as e:
            log.warning("%s: automatic upgrade not started: %s", model.name, e.message)

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
        model = self.model(name)
        target = target or self.latest_image(model)
        busy = ControllerError(
            409, "OperationNotAllowed", f"scale set {name} already has a rolling upgrade running"
        )
        # Refused before planning, which asks about every instance; the
        # store's one-running-upgrade index still settles a race.
        if self.store.upgrades.running(name) is not None:
            raise busy
        try:
            with self._planning(name):
                up = self.orch.start(
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
        if self.views.watched:
            self.views.many([(i.host, i.name) for i in self.store.instances.of(name)])
        with self.views.cached_reads():
            yield

    def _spawn(self, upgrade_id: str) -> None:
        def run() -> None:
            up = self.orch.run(
                upgrade_id, poll_seconds=self.settings.poll_seconds, should_stop=self._stop.is_set
            )
            if up.status != UpgradeStatus.ROLLING_FORWARD:
                self._after_upgrade(up)

        self._background(f"upgrade-{upgrade_id}", run)

    def _after_upgrade(self, up: UpgradeRecord) -> None:
        """Rule 8: a version published while an upgrade ran is picked up next."""
        try:
            model = self.model(up.scale_set)
            newest = self.latest_image(model)
        except ControllerError:
            return
        if (
            model.automatic.enable
            and model.image_reference.version.lower() == "latest"
            and version_key(newest.version) > version_key(up.target.version)
        ):
            self._start_platform(model, newest)

    def _named(self, name: str, instance_ids: list[str]) -> list[InstanceRecord]:
        have = {i.instance_id: i for i in self.store.instances.of(name)}
        if not instance_ids:
            raise ControllerError(400, "InvalidParameter", "instanceIds: name at least one")
        unknown = [i for i in instance_ids if i not in have]
        if unknown:
            raise ControllerError(
                400,
                "InvalidParameter",
                f"instanceIds: {unknown[0][:20]!r} is not an instance of {name}",
            )
        return [have[i] for i in dict.fromkeys(instance_ids)]

    def manual_upgrade(self, name: str, instance_ids: list[str]) -> UpgradeRecord:
        """Bring the named instances to the model's image (any upgrade mode),
        all at once, as a recorded upgrade started by the user."""
        model = self.model(name)
        self._named(name, instance_ids)
        target = self.resolve(model.image_reference)
        return self.start_upgrade(
            name,
            StartedBy.USER,
            target,
            policy=model.rolling.all_at_once(),
            only=set(instance_ids),
            all_at_once=True,
        )

    def reimage(self, name: str, instance_ids: list[str]) -> None:
        """A fresh OS disk from the image each named instance runs now; data
        disks kept. Runs in the background; each agent journals its reimage."""
        model = self.model(name)
        insts = self._named(name, instance_ids)
        ref = model.image_reference
        jobs = []
        for inst in insts:
            version = inst.image_version or self.resolve(ref).version
            try:
                rec = self.catalog.resolve(ref.publisher, ref.offer, ref.sku, version)
            except CatalogError as e:
                raise ControllerError(e.status, e.code, e.message) from None
            jobs.append((inst, self.image_spec(rec)))

        def work() -> None:
            for inst, spec in jobs:
                op_id = f"reimage-{inst.name}-{int(self.clock.now() * 1000)}"
                try:
                    op = self._wait_op(
                        inst.host, self.agents.reimage(inst.host, inst.name, spec, op_id)
                    )
                    if op.status == "Succeeded":
                        self.agents.commit(inst.host, inst.name, f"{op_id}-commit")
                    else:
                        log.error("reimage of %s failed: %s", inst.name, op.error)
                except AgentError as e:
                    log.error("reimage of %s: %s", inst.name, e)

        self._background(f"reimage-{name}-{self.clock.now()}", work)

    def cancel(self, name: str) -> None:
        self.model(name)
        if not self.store.upgrades.request_cancel(name):
            raise ControllerError(
                409, "OperationNotAllowed", f"scale set {name} has no upgrade running"
            )

    def plan(self, name: str) -> dict[str, Any]:
        """The batches an upgrade to latest would run now; touches nothing."""
        model = self.model(name)
        target = self.latest_image(model)
        insts = self.store.instances.of(name)
        with self._planning(name):
            batches = self.orch.plan(
                insts,
                target.version,
                model.rolling.max_batch_instance_percent,
                prioritize_unhealthy=model.rolling.prioritize_unhealthy,
            )
        ref = target.ref
        return {
            "targetImageReference": {
                "publisher": ref.publisher,
                "offer": ref.offer,
                "sku": ref.sku,
                "version": ref.version,
            },
            "batchSize": planner.batch_size(len(insts), model.rolling.max_batch_instance_percent),
            "batches": batches,
        }
