"""Rolling an instance back to its previous OS disk (rules 4 and 12), and
carrying out a rollback left unconfirmed once its host answers again.

Before a rollback the reimage it undoes is cancelled on the agent: a reimage
request still on its way (queued in a stopped agent, fetching its image)
then never runs after the controller decided there was nothing to undo.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from controller.model.upgradepolicy import RollingPolicy
from controller.store.facade import InstanceRecord, UpgradeInstanceRecord, UpgradeRecord
from controller.store.states import ProvisioningState, UpgradeInstanceState, UpgradeStatus
from controller.upgrade.faults import crash_point
from controller.upgrade.rows import RowParts, op_id
from hostagent.contract.client import AgentError, AgentUnreachable

log = logging.getLogger(__name__)


class Rollbacks:
    def __init__(self, parts: RowParts) -> None:
        self._store = parts.store
        self._agents = parts.agents
        self._clock = parts.clock
        self._rows = parts.rows
        self._observer = parts.observer

    def fail(
        self,
        up: UpgradeRecord,
        policy: RollingPolicy,
        u: UpgradeInstanceRecord,
        expected: UpgradeInstanceState,
        why: str,
    ) -> None:
        if not policy.automatic_rollback:
            self._rows.set(
                up, u, expected, UpgradeInstanceState.FAILED, reason=f"{why}; left on the new image"
            )
            return
        operation = op_id(up, u.instance_id, "rollback")
        if self._rows.set(
            up,
            u,
            expected,
            UpgradeInstanceState.ROLLING_BACK,
            operation_id=operation,
            deadline=self._clock.now() + policy.health_timeout_seconds,
            reason=f"{why}; rolling back",
        ):
            crash_point("rollback-decided")
            inst = self._store.instances.get(up.scale_set, u.instance_id)
            assert inst is not None
            self._call_rollback(
                up,
                replace(u, state=UpgradeInstanceState.ROLLING_BACK, operation_id=operation),
                inst,
            )

    def _call_rollback(
        self, up: UpgradeRecord, u: UpgradeInstanceRecord, inst: InstanceRecord
    ) -> None:
        """Ask the agent (again) for the rollback; AgentUnreachable goes up."""
        assert u.operation_id is not None
        try:
            # The reimage as the agent has it, cancelled if it has not seen it:
            # a request still on its way (delayed, queued in a stopped agent,
            # or in its handler fetching the image) then does nothing, and
            # "nothing to undo" stays true after it arrives.
            reimage: str = self._agents.cancel(
                inst.host, inst.name, op_id(up, u.instance_id, "reimage"), "reimage"
            ).status
        except AgentUnreachable:
            raise
        except AgentError:
            reimage = "Error"
        if reimage == "InProgress":  # a reimage the agent got late: roll back after it
            return
        if reimage == "Failed" and self._observer.observe(inst).version == u.from_version:
            # the reimage never took effect (cancelled, failed, or undone by a restarted agent)
            self.rolled_back(up, u, True, f"already on {u.from_version}; nothing to undo")
            return
        try:
            self._agents.rollback(inst.host, inst.name, u.operation_id)
        except AgentUnreachable:
            raise
        except AgentError as e:
            if e.code == "Conflict":  # busy with another operation: ask again next step
                log.info("%s: rollback waits: %s", inst.name, e.message)
                return
            self.rolled_back(up, u, False, f"rollback refused: {e.code}: {e.message}")

    def rolling_back(
        self, up: UpgradeRecord, u: UpgradeInstanceRecord, inst: InstanceRecord
    ) -> None:
        assert u.operation_id is not None
        try:
            op = self._agents.operation(inst.host, u.operation_id)
        except AgentError as e:
            if e.status == 404:
                self._call_rollback(up, u, inst)
                return
            raise
        if op.status == "InProgress":
            return
        if op.status == "Succeeded":
            self.rolled_back(up, u, True, f"rolled back to {u.from_version}")
        else:
            err = f"{op.error.code}: {op.error.message}" if op.error else "unknown error"
            self.rolled_back(up, u, False, f"rollback failed: {err}")

    def rolled_back(
        self,
        up: UpgradeRecord,
        u: UpgradeInstanceRecord,
        ok: bool,
        why: str,
        *,
        finished: bool = True,
    ) -> None:
        """End a rollback: RolledBack, or RollbackFailed (``finished=False``
        when it is only unconfirmed: :meth:`settle` takes it up again)."""
        expected = (
            u.state
            if u.state in (UpgradeInstanceState.ROLLING_BACK, UpgradeInstanceState.ROLLBACK_FAILED)
            else UpgradeInstanceState.ROLLING_BACK
        )
        state = UpgradeInstanceState.ROLLED_BACK if ok else UpgradeInstanceState.ROLLBACK_FAILED
        fields: dict[str, Any] = {"reason": why}
        if not finished:
            fields["finished_at"] = None
        if not self._rows.set(up, u, expected, state, **fields):
            return
        if ok:
            self._store.instances.update(up.scale_set, u.instance_id, image_version=u.from_version)
            self._store.instances.update(
                up.scale_set,
                u.instance_id,
                expected_state=ProvisioningState.NEEDS_ATTENTION,
                state=ProvisioningState.RUNNING,
            )
            return
        self._store.instances.update(
            up.scale_set,
            u.instance_id,
            expected_state=ProvisioningState.RUNNING,
            state=ProvisioningState.NEEDS_ATTENTION,
        )
        cur = self._store.upgrades.get(up.id)
        if cur is not None and cur.status == UpgradeStatus.ROLLING_FORWARD:
            self._store.upgrades.update(
                up.id, expected_status=UpgradeStatus.ROLLING_FORWARD, rollback_error=why
            )

    def settle(self, up: UpgradeRecord, u: UpgradeInstanceRecord) -> bool:
        """Carry out an unconfirmed rollback once its host answers; True when
        the row is settled (rolled back, failed for good, or gone)."""
        inst = self._store.instances.get(up.scale_set, u.instance_id)
        if inst is None:
            return True
        try:
            self.rolling_back(up, u, inst)
        except AgentUnreachable:
            return False
        except AgentError as e:
            log.warning("%s: settling the rollback: %s", inst.name, e)
            return False
        row = self._rows.row(up, u.instance_id)
        return row is None or not row.unconfirmed
