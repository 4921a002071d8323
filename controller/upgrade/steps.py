"""One instance's way through a rolling upgrade.

Pending -> Reimaging -> WaitingHealth -> Succeeded, or on failure
-> RollingBack -> RolledBack | RollbackFailed (:mod:`controller.upgrade.rollback`),
or Failed (no rollback: started by hand, disableAutomaticRollback, or the
instance was never changed); Skipped when it is already on the target
version. Every move is written before the agent is asked to act, with an
operation id derived from the upgrade and the instance, so a step repeated
after a controller restart is the same call to the agent.

A host whose agent does not answer is retried on every step, but not
forever (rule 12): Reimaging and RollingBack rows carry a deadline (the
policy's health timeout from when the step was decided). Past it, an
unconfirmed reimage is treated as failed and rolled back, and an
unconfirmed rollback ends RollbackFailed without ``finished_at``, to be
carried out once the agent answers again. A reimage the agent cannot take
now (a 5xx: it could not fetch the image, e.g. from this very controller
while it restarted) is asked for again until the same deadline.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from controller.model.upgradepolicy import RollingPolicy
from controller.store.facade import InstanceRecord, UpgradeInstanceRecord, UpgradeRecord
from controller.store.states import UpgradeInstanceState
from controller.upgrade.faults import crash_point
from controller.upgrade.observing import Observed
from controller.upgrade.rollback import Rollbacks
from controller.upgrade.rows import RowParts, op_id
from hostagent.contract import instancespec
from hostagent.contract.client import AgentError, AgentUnreachable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Turn:
    """What one step of one instance's row works on."""

    up: UpgradeRecord
    policy: RollingPolicy
    u: UpgradeInstanceRecord
    inst: InstanceRecord
    spec: instancespec.ImageSpec


class InstanceSteps:
    """One step of an instance's row: as far as it can go without waiting."""

    def __init__(self, parts: RowParts, rollbacks: Rollbacks) -> None:
        self._rollbacks = rollbacks
        self._store = parts.store
        self._agents = parts.agents
        self._clock = parts.clock
        self._rows = parts.rows
        self._observer = parts.observer

    def advance(self, t: Turn) -> None:
        up, policy, u, inst = t.up, t.policy, t.u, t.inst
        try:
            if u.state == UpgradeInstanceState.PENDING:
                self._take(t)
            elif u.state == UpgradeInstanceState.REIMAGING:
                self._reimaging(t)
            elif u.state == UpgradeInstanceState.WAITING_HEALTH:
                self._waiting(up, policy, u, inst)
            elif u.state == UpgradeInstanceState.ROLLING_BACK:
                self._rollbacks.rolling_back(up, u, inst)
        except AgentUnreachable as e:
            self._unreachable(up, policy, u.instance_id, inst, e)

    def _unreachable(
        self,
        up: UpgradeRecord,
        policy: RollingPolicy,
        iid: str,
        inst: InstanceRecord,
        e: AgentUnreachable,
    ) -> None:
        """Retry on the next step, unless the row's deadline has passed."""
        u = self._rows.row(up, iid)
        if u is None or u.deadline is None or self._clock.now() < u.deadline:
            log.warning("%s: %s; will retry", inst.name, e)
            return
        waited = f"{policy.health_timeout_seconds:g}s"
        if u.state == UpgradeInstanceState.REIMAGING:
            try:
                self._rollbacks.fail(
                    up,
                    policy,
                    u,
                    UpgradeInstanceState.REIMAGING,
                    f"host agent {inst.host} unreachable; reimage not confirmed within {waited}",
                )
            except AgentUnreachable:
                log.warning("%s: rollback waits for host %s", inst.name, inst.host)
        elif u.state == UpgradeInstanceState.ROLLING_BACK:
            why = (
                f"rollback not confirmed within {waited}: host agent {inst.host} unreachable;"
                f" operation {u.operation_id} is sent again when it answers"
            )
            self._rollbacks.rolled_back(up, u, False, why, finished=False)

    def _take(self, t: Turn) -> None:
        up, policy, u, inst = t.up, t.policy, t.u, t.inst
        seen = self._observer.observe(inst)
        if seen.version == up.target.version:
            self._rows.set(
                up,
                u,
                UpgradeInstanceState.PENDING,
                UpgradeInstanceState.SKIPPED,
                reason="already on the target version",
            )
            return
        operation = op_id(up, u.instance_id, "reimage")
        taken = replace(
            u,
            state=UpgradeInstanceState.REIMAGING,
            operation_id=operation,
            started_at=self._clock.now(),
            deadline=self._clock.now() + policy.health_timeout_seconds,
            from_version=seen.version or inst.image_version,
        )
        if not self._rows.set(
            up,
            u,
            UpgradeInstanceState.PENDING,
            UpgradeInstanceState.REIMAGING,
            operation_id=taken.operation_id,
            started_at=taken.started_at,
            deadline=taken.deadline,
            from_version=taken.from_version,
            reason=f"taken: reimage to {up.target.version} (operation {operation})",
        ):
            return
        crash_point("reimage-decided")
        self._call_reimage(replace(t, u=taken), operation)

    def _call_reimage(self, t: Turn, operation: str) -> None:
        up, u, inst = t.up, t.u, t.inst
        try:
            self._agents.reimage(inst.host, inst.name, t.spec, operation)
        except AgentUnreachable:
            raise
        except AgentError as e:
            # 5xx: the agent could not do it now (e.g. the image download failed
            # because this controller, which serves it, was restarting): ask
            # again on the next step, until the row's deadline.
            if e.status >= 500 and u.deadline is not None and self._clock.now() < u.deadline:
                log.warning("%s: reimage not accepted yet (%s); will retry", inst.name, e.code)
                return
            self._rows.set(
                up,
                u,
                UpgradeInstanceState.REIMAGING,
                UpgradeInstanceState.FAILED,
                reason=f"reimage refused: {e.code}: {e.message}",
            )

    def _reimaging(self, t: Turn) -> None:
        up, policy, u, inst = t.up, t.policy, t.u, t.inst
        assert u.operation_id is not None
        if not self._observer.due(up, u, u.started_at or self._clock.now()):
            return
        try:
            op = self._agents.operation(inst.host, u.operation_id)
        except AgentError as e:
            if e.status == 404:  # recorded, but the call never reached the agent
                self._call_reimage(t, u.operation_id)
                return
            raise
        if op.status == "InProgress":
            return
        if op.status == "Succeeded":
            self._store.instances.update(
                up.scale_set, u.instance_id, image_version=up.target.version
            )
            crash_point("reimaged")
            self._rows.set(
                up,
                u,
                UpgradeInstanceState.REIMAGING,
                UpgradeInstanceState.WAITING_HEALTH,
                deadline=self._clock.now() + policy.health_timeout_seconds,
                reason=f"reimaged; waiting up to {policy.health_timeout_seconds:g}s for health",
            )
            return
        err = f"{op.error.code}: {op.error.message}" if op.error else "unknown error"
        seen = self._observer.observe(inst)
        if seen.version == up.target.version:
            self._rollbacks.fail(
                up,
                policy,
                u,
                UpgradeInstanceState.REIMAGING,
                f"reimage failed after the swap ({err})",
            )
        else:
            self._rows.set(
                up,
                u,
                UpgradeInstanceState.REIMAGING,
                UpgradeInstanceState.FAILED,
                reason=f"reimage failed, unchanged ({err})",
            )

    def _waiting(
        self,
        up: UpgradeRecord,
        policy: RollingPolicy,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
    ) -> None:
        assert u.deadline is not None
        due = self._clock.now() >= u.deadline
        seen = self._observer.observe(inst) if due else self._health(up, policy, u, inst)
        if seen is not None and seen.healthy and seen.version == up.target.version:
            self._agents.commit(inst.host, inst.name, op_id(up, u.instance_id, "commit"))
            crash_point("committed")
            self._rows.set(
                up,
                u,
                UpgradeInstanceState.WAITING_HEALTH,
                UpgradeInstanceState.SUCCEEDED,
                reason="healthy; previous disk dropped",
            )
            return
        if due and seen is not None:
            why = "; ".join(seen.reasons) or "not healthy"
            self._rollbacks.fail(
                up,
                policy,
                u,
                UpgradeInstanceState.WAITING_HEALTH,
                f"not healthy within {policy.health_timeout_seconds:g}s ({why})",
            )
            return
        crash_point("health-wait")

    def _health(
        self,
        up: UpgradeRecord,
        policy: RollingPolicy,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
    ) -> Observed | None:
        """A waiting instance's health from a fresh snapshot, or from its agent
        when :meth:`_due`; None: not looked at this step."""
        fresh = self._observer.fresh(inst)
        if fresh is not None:
            return fresh
        assert u.deadline is not None
        if not self._observer.due(up, u, u.deadline - policy.health_timeout_seconds):
            return None
        return self._observer.observe(inst)
