"""The rolling OS upgrade as a persisted state machine (docs/design.md, "Rolling
upgrade rules"). :meth:`Orchestrator.step` advances an upgrade as far as it
can without waiting; every decision is stored before the agent is asked to
act, with operation ids derived from the upgrade and the instance, so a
restarted controller steps again and neither loses nor repeats work."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from controller.base.settings import POLL_SECONDS
from controller.fleet.agents import AgentPort
from controller.model.upgradepolicy import ALL_PERCENT, RollingPolicy
from controller.store.facade import (
    Conflict,
    ImageRecord,
    InstanceRecord,
    Store,
    UpgradeInstanceRecord,
    UpgradeRecord,
    new_upgrade_id,
)
from controller.store.states import (
    ACTIVE_STATES,
    DONE_STATES,
    FAILED_STATES,
    StartedBy,
    UpgradeInstanceState,
    UpgradeStatus,
)
from controller.upgrade import planner
from controller.upgrade.observing import Observed, Observer, Recent, no_snapshots
from controller.upgrade.rollback import Rollbacks
from controller.upgrade.rows import RowParts, UpgradeRows
from controller.upgrade.steps import InstanceSteps, Turn
from hostagent.contract import instancespec
from kvmss.base.clock import Clock
from kvmss.base.waiting import wait_for, wait_until

log = logging.getLogger(__name__)

__all__ = ["Observed", "Orchestrator"]


class Orchestrator:
    def __init__(
        self,
        store: Store,
        agents: AgentPort,
        image_spec: Callable[[ImageRecord], instancespec.ImageSpec],
        clock: Clock,
        recent: Recent = no_snapshots,
    ) -> None:
        """``recent`` gives the latest snapshot of an instance's view where
        there is one (the controller's :class:`InstanceViews`): the gate
        before a batch and the health wait read it instead of asking."""
        self.store = store
        self.agents = agents
        self.image_spec = image_spec
        self.clock = clock
        self.observer = Observer(agents, clock, recent)
        self.rows = UpgradeRows(store, clock, self._decide, self.observer.forget)
        parts = RowParts(store, agents, clock, self.rows, self.observer)
        self.rollbacks = Rollbacks(parts)
        self.steps = InstanceSteps(parts, self.rollbacks)

    # -- observing ---------------------------------------------------------------

    def observe(self, inst: InstanceRecord) -> Observed:
        return self.observer.observe(inst)

    def _decide(self, up: UpgradeRecord, iid: str | None, event: str, message: str) -> None:
        self.store.decisions.log(up.id, self.clock.now(), iid, event, message)
        log.info("upgrade %s of %s: %s %s", up.id[:8], up.scale_set, event, message)

    # -- starting ----------------------------------------------------------------

    def plan(
        self,
        instances: list[InstanceRecord],
        target_version: str,
        max_batch_instance_percent: int,
        *,
        prioritize_unhealthy: bool,
    ) -> list[list[str]]:
        """The batches an upgrade to ``target_version`` would run, from what the
        agents say now (rules 1, 3 and 6); touches nothing."""
        seen = {i.instance_id: self.observe(i) for i in instances}
        return planner.plan_batches(
            [
                planner.PlanInstance(
                    i.instance_id,
                    i.update_domain,
                    seen[i.instance_id].version or i.image_version,
                    seen[i.instance_id].healthy,
                )
                for i in instances
            ],
            target_version,
            max_batch_instance_percent=max_batch_instance_percent,
            prioritize_unhealthy=prioritize_unhealthy,
        )

    def start(
        self,
        scale_set: str,
        target: ImageRecord,
        policy: RollingPolicy,
        started_by: StartedBy,
        *,
        only: set[str] | None = None,
        all_at_once: bool = False,
    ) -> UpgradeRecord:
        """Plan and record a new upgrade (raises store.Conflict if one runs).

        ``only`` limits it to named instances (manualUpgrade); ``all_at_once``
        puts every instance in one batch (upgrade mode Automatic)."""
        upgrade_id = new_upgrade_id()
        self._supersede(scale_set, upgrade_id)
        instances = self.store.instances.of(scale_set)
        if only is not None:
            instances = [i for i in instances if i.instance_id in only]
        if all_at_once:
            taken = self.plan(instances, target.version, ALL_PERCENT, prioritize_unhealthy=False)
            plan = [sorted((i for b in taken for i in b), key=int)] if taken else []
        else:
            plan = self.plan(
                instances,
                target.version,
                policy.max_batch_instance_percent,
                prioritize_unhealthy=policy.prioritize_unhealthy,
            )
        now = self.clock.now()
        up = UpgradeRecord(
            id=upgrade_id,
            scale_set=scale_set,
            started_by=started_by,
            target=target.ref,
            status=UpgradeStatus.ROLLING_FORWARD,
            start_time=now,
            policy=policy.to_dict(),
            batches=plan,
            pending_count=sum(len(b) for b in plan),
        )
        self.store.upgrades.create(up)
        self.store.upgrade_instances.add(
            [
                UpgradeInstanceRecord(upgrade_id=up.id, instance_id=iid, batch=k)
                for k, batch in enumerate(plan)
                for iid in batch
            ]
        )
        skipped = len(instances) - up.pending_count
        self._decide(
            up,
            None,
            "planned",
            f"target version {target.version}; {len(plan)} batches of at most"
            f" {planner.batch_size(len(instances), policy.max_batch_instance_percent)}:"
            f" {plan}; {skipped} already on target",
        )
        return up

    # -- stepping ----------------------------------------------------------------

    def step(self, upgrade_id: str) -> UpgradeRecord:
        """Advance the upgrade; a batch that ends hands off to the next in the
        same step, so no poll interval is spent idle between batches."""
        while True:
            before = self.store.upgrades.get(upgrade_id)
            up = self._step_batch(upgrade_id)
            if (
                before is None
                or up.status != UpgradeStatus.ROLLING_FORWARD
                or up.current_batch == before.current_batch
            ):
                return up

    def _step_batch(self, upgrade_id: str) -> UpgradeRecord:
        up = self.store.upgrades.get(upgrade_id)
        if up is None or up.status != UpgradeStatus.ROLLING_FORWARD:
            assert up is not None, upgrade_id
            return up
        policy = RollingPolicy.from_dict(up.policy)
        if up.current_batch >= len(up.batches):
            return self._finish(up, UpgradeStatus.COMPLETED)
        k = up.current_batch
        rows = [u for u in self.store.upgrade_instances.of(up.id) if u.batch == k]
        instances = {i.instance_id: i for i in self.store.instances.of(up.scale_set)}
        if all(u.state == UpgradeInstanceState.PENDING for u in rows):
            gate = self._before_batch(up, policy, k, instances)
            if gate is not None:
                return gate
        target = self.store.images.get(*_ref(up))
        if target is None:
            return self._finish(
                up, UpgradeStatus.FAULTED, "ImageNotFound", f"target image {_ref(up)} was removed"
            )
        spec = self.image_spec(target)
        for u in rows:
            inst = instances.get(u.instance_id)
            if inst is None:
                if u.state not in DONE_STATES:  # (one that ended stays as it ended)
                    skipped = UpgradeInstanceState.SKIPPED
                    self.rows.set(up, u, u.state, skipped, reason="instance was removed")
                continue
            self.steps.advance(Turn(up, policy, u, inst, spec))
        every = self.store.upgrade_instances.of(up.id)
        rows = [u for u in every if u.batch == k]
        up = self._count(up, rows=every)
        if all(u.state in DONE_STATES for u in rows):
            return self._after_batch(up, policy, k)
        return up

    def _before_batch(
        self, up: UpgradeRecord, policy: RollingPolicy, k: int, instances: dict[str, InstanceRecord]
    ) -> UpgradeRecord | None:
        """Cancel, pause between batches, and rule 2; None means go."""
        if up.cancel_requested:
            return self._finish(
                up, UpgradeStatus.CANCELLED, message="cancelled before batch " + str(k)
            )
        if k > 0 and policy.pause_seconds > 0:
            prev = [u for u in self.store.upgrade_instances.of(up.id) if u.batch == k - 1]
            ended = max((u.finished_at or 0.0) for u in prev) if prev else 0.0
            if self.clock.now() < ended + policy.pause_seconds:
                return up
        # (healthy from snapshots where they say so: the whole set, every batch)
        seen = {iid: self.observer.observe(i, snapshot=True) for iid, i in instances.items()}
        unhealthy = sorted((iid for iid, o in seen.items() if not o.healthy), key=int)
        if planner.too_unhealthy(len(unhealthy), len(seen), policy.max_unhealthy_instance_percent):
            where = "before the first batch; nothing was changed" if k == 0 else f"before batch {k}"
            return self._finish(
                up,
                UpgradeStatus.FAULTED,
                "MaxUnhealthyInstancePercentExceeded",
                f"{len(unhealthy)} of {len(seen)} instances are unhealthy ({unhealthy}), above"
                f" maxUnhealthyInstancePercent {policy.max_unhealthy_instance_percent}%, {where}",
            )
        self._decide(up, None, "batch", f"batch {k} starts: {up.batches[k]}")
        return None

    def _after_batch(self, up: UpgradeRecord, policy: RollingPolicy, k: int) -> UpgradeRecord:
        rows = self.store.upgrade_instances.of(up.id)
        taken = [u for u in rows if u.state in DONE_STATES - {UpgradeInstanceState.SKIPPED}]
        failed = [u for u in taken if u.state in FAILED_STATES]
        if planner.upgraded_breach(
            len(failed), len(taken), policy.max_unhealthy_upgraded_instance_percent
        ):
            return self._finish(
                up,
                UpgradeStatus.FAULTED,
                "MaxUnhealthyUpgradedInstancePercentExceeded",
                f"{len(failed)} of {len(taken)} upgraded instances failed"
                f" ({sorted((u.instance_id for u in failed), key=int)}), above"
                f" maxUnhealthyUpgradedInstancePercent"
                f" {policy.max_unhealthy_upgraded_instance_percent}%; stopped after batch {k}",
            )
        if k + 1 >= len(up.batches):
            return self._finish(up, UpgradeStatus.COMPLETED)
        if up.cancel_requested:
            return self._finish(up, UpgradeStatus.CANCELLED, message=f"cancelled after batch {k}")
        return self.store.upgrades.update(
            up.id, expected_status=UpgradeStatus.ROLLING_FORWARD, current_batch=k + 1
        )

    # -- bookkeeping ---------------------------------------------------------------

    def _count(
        self,
        up: UpgradeRecord,
        status: UpgradeStatus = UpgradeStatus.ROLLING_FORWARD,
        rows: list[UpgradeInstanceRecord] | None = None,
    ) -> UpgradeRecord:
        """Record the upgrade's counts from its rows (read now unless given)."""
        if rows is None:
            rows = self.store.upgrade_instances.of(up.id)
        states = [u.state for u in rows]
        fields: dict[str, Any] = {
            "successful_count": states.count(UpgradeInstanceState.SUCCEEDED),
            "failed_count": sum(states.count(s) for s in FAILED_STATES),
            "in_progress_count": sum(states.count(s) for s in ACTIVE_STATES),
            "pending_count": states.count(UpgradeInstanceState.PENDING),
            "rolled_back_ok": states.count(UpgradeInstanceState.ROLLED_BACK),
            "rolled_back_failed": states.count(UpgradeInstanceState.ROLLBACK_FAILED),
        }
        if (
            status != UpgradeStatus.ROLLING_FORWARD
            and UpgradeInstanceState.ROLLBACK_FAILED not in states
        ):
            fields["rollback_error"] = None  # every rollback given up on was settled since
        if up.status == status and all(getattr(up, k) == v for k, v in fields.items()):
            return up  # a step that changed no count writes nothing (and syncs no disk)
        return self.store.upgrades.update(up.id, expected_status=status, **fields)

    def _finish(
        self,
        up: UpgradeRecord,
        status: UpgradeStatus,
        code: str | None = None,
        message: str | None = None,
    ) -> UpgradeRecord:
        up = self._count(up)
        done = self.store.upgrades.update(
            up.id,
            expected_status=UpgradeStatus.ROLLING_FORWARD,
            status=status,
            end_time=self.clock.now(),
            error_code=code,
            error_message=message,
        )
        self._decide(done, None, status, message or status)
        return done

    # -- rollbacks left unconfirmed ----------------------------------------------------

    def settle(self, upgrade_id: str) -> bool:
        """Carry out the rollbacks an ended upgrade decided but could not have
        confirmed (their host did not answer); True when none is left."""
        up = self.store.upgrades.get(upgrade_id)
        if up is None or up.status == UpgradeStatus.ROLLING_FORWARD:
            return True
        rows = [u for u in self.store.upgrade_instances.of(up.id) if u.unconfirmed]
        if not rows:
            return True
        settled = [self.rollbacks.settle(up, u) for u in rows]
        if any(settled):
            self._count(up, up.status)
        return all(settled)

    def _supersede(self, scale_set: str, by: str) -> None:
        """Before a new upgrade: settle what earlier ones left unconfirmed, and
        hand what still cannot be settled to the new one, which observes the
        instance afresh (rule 3) instead of a late rollback undoing its work."""
        for old in self.store.upgrades.history(scale_set, self.clock.now()):
            if self.settle(old.id):
                continue
            for u in self.store.upgrade_instances.of(old.id):
                if u.unconfirmed and self.store.upgrade_instances.update(
                    old.id,
                    u.instance_id,
                    expected_state=UpgradeInstanceState.ROLLBACK_FAILED,
                    finished_at=self.clock.now(),
                    reason=f"{u.reason}; superseded by upgrade {by}",
                ):
                    self._decide(
                        old,
                        u.instance_id,
                        UpgradeInstanceState.ROLLBACK_FAILED,
                        f"superseded by {by}",
                    )

    # -- running -------------------------------------------------------------------

    def run(
        self,
        upgrade_id: str,
        poll_seconds: float = POLL_SECONDS,
        should_stop: Callable[[], bool] = bool,
    ) -> UpgradeRecord:
        """Step until the upgrade ends, then until the rollbacks it could not
        confirm are settled (or ``should_stop()``); sleeps on the clock."""
        ended = wait_for(
            self.clock,
            lambda: self._ended(upgrade_id),
            timeout=math.inf,
            interval=poll_seconds,
            stop=should_stop,
        )
        if ended is not None and not should_stop():
            wait_until(
                self.clock,
                lambda: self.settle(upgrade_id),
                timeout=math.inf,
                interval=poll_seconds,
                stop=should_stop,
            )
        current = self.store.upgrades.get(upgrade_id)
        assert current is not None
        return current

    def _ended(self, upgrade_id: str) -> UpgradeRecord | None:
        """One step; the upgrade once it is no longer RollingForward."""
        try:
            up = self.step(upgrade_id)
        except Conflict:  # (another step ended it meanwhile)
            current = self.store.upgrades.get(upgrade_id)
            assert current is not None
            up = current
        return None if up.status == UpgradeStatus.ROLLING_FORWARD else up


def _ref(up: UpgradeRecord) -> tuple[str, str, str, str]:
    t = up.target
    return (t.publisher, t.offer, t.sku, t.version)
