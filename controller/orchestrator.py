"""The rolling OS upgrade as a persisted state machine (DESIGN.md, "Rolling OS
upgrade rules").

:meth:`Orchestrator.step` advances an upgrade as far as it can without
waiting and returns; every decision is written to the store *before* the
agent is asked to act, with operation ids derived from the upgrade and the
instance, so a controller restarted at any point calls :meth:`step` again and
neither loses nor repeats work (agents treat a known operation id as the same
call). Time comes from the injected clock: a five-minute health timeout is a
deadline in the store, not a sleep.

Per instance: Pending -> Reimaging -> WaitingHealth -> Succeeded, or on
failure -> RollingBack -> RolledBack | RollbackFailed, or Failed (no rollback:
started by hand, disableAutomaticRollback, or the instance was never changed);
Skipped when it is already on the target version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from controller import planner
from controller.agents import AgentPort
from controller.store import (
    Conflict,
    ImageRecord,
    InstanceRecord,
    Store,
    UpgradeInstanceRecord,
    UpgradeRecord,
    new_upgrade_id,
)
from hostagent import wire
from hostagent.client import AgentError, AgentUnreachable
from kvmss.clock import Clock

log = logging.getLogger(__name__)

FAILED_STATES = frozenset({"Failed", "RolledBack", "RollbackFailed"})
DONE_STATES = FAILED_STATES | {"Succeeded", "Skipped"}
ACTIVE_STATES = frozenset({"Reimaging", "WaitingHealth", "RollingBack"})


@dataclass(frozen=True)
class Policy:
    """The rolling policy an upgrade runs under, snapshotted when it starts."""

    max_batch_instance_percent: int = 20
    max_unhealthy_instance_percent: int = 20
    max_unhealthy_upgraded_instance_percent: int = 20
    pause_seconds: float = 0.0
    health_timeout_seconds: float = 300.0
    prioritize_unhealthy: bool = False
    automatic_rollback: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Policy:
        return cls(**d)


@dataclass(frozen=True)
class Observed:
    """What the agent says of an instance right now."""

    healthy: bool
    version: str | None
    reasons: tuple[str, ...] = ()
    reachable: bool = True


class Orchestrator:
    def __init__(
        self,
        store: Store,
        agents: AgentPort,
        image_spec: Callable[[ImageRecord], wire.ImageSpec],
        clock: Clock,
    ) -> None:
        self.store = store
        self.agents = agents
        self.image_spec = image_spec
        self.clock = clock

    # -- observing ---------------------------------------------------------------

    def observe(self, inst: InstanceRecord) -> Observed:
        try:
            view = self.agents.instance(inst.host, inst.name)
        except AgentUnreachable:
            return Observed(False, None, ("host agent unreachable",), reachable=False)
        except AgentError as e:
            return Observed(False, None, (f"agent error {e.code}",))
        if view is None:
            return Observed(False, None, ("instance missing on its host",))
        return Observed(
            view.health.state == "Healthy", view.current.image.version, tuple(view.health.reasons)
        )

    def _decide(self, up: UpgradeRecord, iid: str | None, event: str, message: str) -> None:
        self.store.log_decision(up.id, self.clock.now(), iid, event, message)
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
        policy: Policy,
        started_by: str,
        *,
        only: set[str] | None = None,
        all_at_once: bool = False,
    ) -> UpgradeRecord:
        """Plan and record a new upgrade (raises store.Conflict if one runs).

        ``only`` limits it to named instances (manualUpgrade); ``all_at_once``
        puts every instance in one batch (upgrade mode Automatic)."""
        instances = self.store.list_instances(scale_set)
        if only is not None:
            instances = [i for i in instances if i.instance_id in only]
        if all_at_once:
            taken = self.plan(instances, target.version, 100, prioritize_unhealthy=False)
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
            id=new_upgrade_id(),
            scale_set=scale_set,
            started_by=started_by,
            target=target.ref,
            status="RollingForward",
            start_time=now,
            policy=policy.to_dict(),
            batches=plan,
            pending_count=sum(len(b) for b in plan),
        )
        self.store.create_upgrade(up)
        self.store.add_upgrade_instances(
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
        up = self.store.get_upgrade(upgrade_id)
        if up is None or up.status != "RollingForward":
            assert up is not None, upgrade_id
            return up
        policy = Policy.from_dict(up.policy)
        if up.current_batch >= len(up.batches):
            return self._finish(up, "Completed")
        k = up.current_batch
        rows = [u for u in self.store.list_upgrade_instances(up.id) if u.batch == k]
        instances = {i.instance_id: i for i in self.store.list_instances(up.scale_set)}
        if all(u.state == "Pending" for u in rows):
            gate = self._before_batch(up, policy, k, instances)
            if gate is not None:
                return gate
        target = self.store.get_image(*_ref(up))
        if target is None:
            return self._finish(
                up, "Faulted", "ImageNotFound", f"target image {_ref(up)} was removed"
            )
        spec = self.image_spec(target)
        for u in rows:
            inst = instances.get(u.instance_id)
            if inst is None:
                self._set(up, u, u.state, "Skipped", reason="instance was removed")
                continue
            self._advance(up, policy, u, inst, spec)
        rows = [u for u in self.store.list_upgrade_instances(up.id) if u.batch == k]
        up = self._count(up)
        if all(u.state in DONE_STATES for u in rows):
            return self._after_batch(up, policy, k)
        return up

    def _before_batch(
        self, up: UpgradeRecord, policy: Policy, k: int, instances: dict[str, InstanceRecord]
    ) -> UpgradeRecord | None:
        """Cancel, pause between batches, and rule 2; None means go."""
        if up.cancel_requested:
            return self._finish(up, "Cancelled", message="cancelled before batch " + str(k))
        if k > 0 and policy.pause_seconds > 0:
            prev = [u for u in self.store.list_upgrade_instances(up.id) if u.batch == k - 1]
            ended = max((u.finished_at or 0.0) for u in prev) if prev else 0.0
            if self.clock.now() < ended + policy.pause_seconds:
                return up
        seen = {iid: self.observe(i) for iid, i in instances.items()}
        unhealthy = sorted((iid for iid, o in seen.items() if not o.healthy), key=int)
        if planner.too_unhealthy(len(unhealthy), len(seen), policy.max_unhealthy_instance_percent):
            where = "before the first batch; nothing was changed" if k == 0 else f"before batch {k}"
            return self._finish(
                up,
                "Faulted",
                "MaxUnhealthyInstancePercentExceeded",
                f"{len(unhealthy)} of {len(seen)} instances are unhealthy ({unhealthy}), above"
                f" maxUnhealthyInstancePercent {policy.max_unhealthy_instance_percent}%, {where}",
            )
        self._decide(up, None, "batch", f"batch {k} starts: {up.batches[k]}")
        return None

    def _after_batch(self, up: UpgradeRecord, policy: Policy, k: int) -> UpgradeRecord:
        rows = self.store.list_upgrade_instances(up.id)
        taken = [u for u in rows if u.state in DONE_STATES - {"Skipped"}]
        failed = [u for u in taken if u.state in FAILED_STATES]
        if planner.upgraded_breach(
            len(failed), len(taken), policy.max_unhealthy_upgraded_instance_percent
        ):
            return self._finish(
                up,
                "Faulted",
                "MaxUnhealthyUpgradedInstancePercentExceeded",
                f"{len(failed)} of {len(taken)} upgraded instances failed"
                f" ({sorted((u.instance_id for u in failed), key=int)}), above"
                f" maxUnhealthyUpgradedInstancePercent"
                f" {policy.max_unhealthy_upgraded_instance_percent}%; stopped after batch {k}",
            )
        if k + 1 >= len(up.batches):
            return self._finish(up, "Completed")
        if up.cancel_requested:
            return self._finish(up, "Cancelled", message=f"cancelled after batch {k}")
        return self.store.update_upgrade(
            up.id, expected_status="RollingForward", current_batch=k + 1
        )

    # -- one instance --------------------------------------------------------------

    def _op_id(self, up: UpgradeRecord, iid: str, action: str) -> str:
        return f"u{up.id.replace('-', '')[:16]}-{iid}-{action}"

    def _set(
        self, up: UpgradeRecord, u: UpgradeInstanceRecord, expected: str, state: str, **fields: Any
    ) -> bool:
        if state in DONE_STATES:
            fields.setdefault("finished_at", self.clock.now())
        ok = self.store.update_upgrade_instance(
            up.id, u.instance_id, expected_state=expected, state=state, **fields
        )
        if ok:
            reason = fields.get("reason")
            self._decide(up, u.instance_id, state, str(reason) if reason else state)
        return ok

    def _advance(
        self,
        up: UpgradeRecord,
        policy: Policy,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
        spec: wire.ImageSpec,
    ) -> None:
        try:
            if u.state == "Pending":
                self._take(up, u, inst, spec)
            elif u.state == "Reimaging":
                self._reimaging(up, policy, u, inst, spec)
            elif u.state == "WaitingHealth":
                self._waiting(up, policy, u, inst)
            elif u.state == "RollingBack":
                self._rolling_back(up, u, inst)
        except AgentUnreachable as e:
            log.warning("%s: %s; will retry", inst.name, e)

    def _take(
        self,
        up: UpgradeRecord,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
        spec: wire.ImageSpec,
    ) -> None:
        seen = self.observe(inst)
        if seen.version == up.target.version:
            self._set(up, u, "Pending", "Skipped", reason="already on the target version")
            return
        op_id = self._op_id(up, u.instance_id, "reimage")
        if not self._set(
            up,
            u,
            "Pending",
            "Reimaging",
            operation_id=op_id,
            started_at=self.clock.now(),
            from_version=seen.version or inst.image_version,
            reason=f"taken: reimage to {up.target.version} (operation {op_id})",
        ):
            return
        self._call_reimage(up, u, inst, spec, op_id)

    def _call_reimage(
        self,
        up: UpgradeRecord,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
        spec: wire.ImageSpec,
        op_id: str,
    ) -> None:
        try:
            self.agents.reimage(inst.host, inst.name, spec, op_id)
        except AgentUnreachable:
            raise
        except AgentError as e:
            self._set(
                up, u, "Reimaging", "Failed", reason=f"reimage refused: {e.code}: {e.message}"
            )

    def _reimaging(
        self,
        up: UpgradeRecord,
        policy: Policy,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
        spec: wire.ImageSpec,
    ) -> None:
        assert u.operation_id is not None
        try:
            op = self.agents.operation(inst.host, u.operation_id)
        except AgentError as e:
            if e.status == 404:  # recorded, but the call never reached the agent
                self._call_reimage(up, u, inst, spec, u.operation_id)
                return
            raise
        if op.status == "InProgress":
            return
        if op.status == "Succeeded":
            self.store.update_instance(up.scale_set, u.instance_id, image_version=up.target.version)
            self._set(
                up,
                u,
                "Reimaging",
                "WaitingHealth",
                deadline=self.clock.now() + policy.health_timeout_seconds,
                reason=f"reimaged; waiting up to {policy.health_timeout_seconds:g}s for health",
            )
            return
        err = f"{op.error.code}: {op.error.message}" if op.error else "unknown error"
        seen = self.observe(inst)
        if seen.version == up.target.version:
            self._fail(up, policy, u, "Reimaging", f"reimage failed after the swap ({err})")
        else:
            self._set(up, u, "Reimaging", "Failed", reason=f"reimage failed, unchanged ({err})")

    def _waiting(
        self, up: UpgradeRecord, policy: Policy, u: UpgradeInstanceRecord, inst: InstanceRecord
    ) -> None:
        seen = self.observe(inst)
        if seen.healthy and seen.version == up.target.version:
            self.agents.commit(inst.host, inst.name, self._op_id(up, u.instance_id, "commit"))
            self._set(up, u, "WaitingHealth", "Succeeded", reason="healthy; previous disk dropped")
            return
        assert u.deadline is not None
        if self.clock.now() >= u.deadline:
            why = "; ".join(seen.reasons) or "not healthy"
            self._fail(
                up,
                policy,
                u,
                "WaitingHealth",
                f"not healthy within {policy.health_timeout_seconds:g}s ({why})",
            )

    def _fail(
        self, up: UpgradeRecord, policy: Policy, u: UpgradeInstanceRecord, expected: str, why: str
    ) -> None:
        if not policy.automatic_rollback:
            self._set(up, u, expected, "Failed", reason=f"{why}; left on the new image")
            return
        op_id = self._op_id(up, u.instance_id, "rollback")
        if self._set(
            up, u, expected, "RollingBack", operation_id=op_id, reason=f"{why}; rolling back"
        ):
            inst = self.store.get_instance(up.scale_set, u.instance_id)
            assert inst is not None
            self._call_rollback(up, replace(u, state="RollingBack"), inst, op_id)

    def _call_rollback(
        self, up: UpgradeRecord, u: UpgradeInstanceRecord, inst: InstanceRecord, op_id: str
    ) -> None:
        try:
            self.agents.rollback(inst.host, inst.name, op_id)
        except AgentUnreachable:
            raise
        except AgentError as e:
            self._rolled_back(up, u, False, f"rollback refused: {e.code}: {e.message}")

    def _rolling_back(
        self, up: UpgradeRecord, u: UpgradeInstanceRecord, inst: InstanceRecord
    ) -> None:
        assert u.operation_id is not None
        try:
            op = self.agents.operation(inst.host, u.operation_id)
        except AgentError as e:
            if e.status == 404:
                self._call_rollback(up, u, inst, u.operation_id)
                return
            raise
        if op.status == "InProgress":
            return
        if op.status == "Succeeded":
            self.store.update_instance(up.scale_set, u.instance_id, image_version=u.from_version)
            self._rolled_back(up, u, True, f"rolled back to {u.from_version}")
        else:
            err = f"{op.error.code}: {op.error.message}" if op.error else "unknown error"
            self._rolled_back(up, u, False, f"rollback failed: {err}")

    def _rolled_back(self, up: UpgradeRecord, u: UpgradeInstanceRecord, ok: bool, why: str) -> None:
        state = "RolledBack" if ok else "RollbackFailed"
        if self._set(up, u, "RollingBack", state, reason=why) and not ok:
            cur = self.store.get_upgrade(up.id)
            if cur is not None and cur.status == "RollingForward":
                self.store.update_upgrade(
                    up.id, expected_status="RollingForward", rollback_error=why
                )

    # -- bookkeeping ---------------------------------------------------------------

    def _count(self, up: UpgradeRecord) -> UpgradeRecord:
        rows = self.store.list_upgrade_instances(up.id)
        states = [u.state for u in rows]
        return self.store.update_upgrade(
            up.id,
            expected_status="RollingForward",
            successful_count=states.count("Succeeded"),
            failed_count=sum(states.count(s) for s in FAILED_STATES),
            in_progress_count=sum(states.count(s) for s in ACTIVE_STATES),
            pending_count=states.count("Pending"),
            rolled_back_ok=states.count("RolledBack"),
            rolled_back_failed=states.count("RollbackFailed"),
        )

    def _finish(
        self, up: UpgradeRecord, status: str, code: str | None = None, message: str | None = None
    ) -> UpgradeRecord:
        up = self._count(up)
        done = self.store.update_upgrade(
            up.id,
            expected_status="RollingForward",
            status=status,
            end_time=self.clock.now(),
            error_code=code,
            error_message=message,
        )
        self._decide(done, None, status, message or status)
        return done

    # -- running -------------------------------------------------------------------

    def run(
        self, upgrade_id: str, poll_seconds: float = 1.0, should_stop: Callable[[], bool] = bool
    ) -> UpgradeRecord:
        """Step until the upgrade ends (or ``should_stop()``); sleeps on the clock."""
        while True:
            try:
                up = self.step(upgrade_id)
            except Conflict:
                current = self.store.get_upgrade(upgrade_id)
                assert current is not None
                up = current
            if up.status != "RollingForward" or should_stop():
                return up
            self.clock.sleep(poll_seconds)


def _ref(up: UpgradeRecord) -> tuple[str, str, str, str]:
    t = up.target
    return (t.publisher, t.offer, t.sku, t.version)
