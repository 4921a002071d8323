"""One instance's way through a rolling upgrade (the batches, gates and the
upgrade's own status are :mod:`controller.upgrade.orchestrator`'s).

Pending -> Reimaging -> WaitingHealth -> Succeeded, or on failure
-> RollingBack -> RolledBack | RollbackFailed, or Failed (no rollback:
started by hand, disableAutomaticRollback, or the instance was never
changed); Skipped when it is already on the target version. Every move is a
compare-and-swap on the instance's upgrade row, written before the agent is
asked to act, with an operation id derived from the upgrade and the instance,
so a step repeated after a controller restart is the same call to the agent.

A host whose agent does not answer (down, or stopped: "unreachable") is
retried on every step, but not forever: Reimaging and RollingBack rows carry
a deadline (the policy's health timeout from when the step was decided).
Past it, an unconfirmed reimage is treated as failed (rolled back, rule 4)
and an unconfirmed rollback ends RollbackFailed *without* ``finished_at``:
the upgrade's batch ends and the stop rules apply, the instance is marked
``NeedsAttention``, and once its agent answers again :meth:`settle` carries
out the rollback that was decided, with the same operation id (an agent that
got the call before it was lost does not do it twice). Before a rollback
the reimage it undoes is cancelled on the agent (POST
/v1/operations/{id}/cancel): a reimage request still on its way (queued in a
stopped agent, fetching its image) then never runs after the controller
decided there was nothing to undo. A reimage the agent cannot take now (a
5xx: it could not fetch the image, e.g. from this very controller while it
restarted) is asked for again until the same deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from controller.fleet.agents import AgentPort
from controller.store.facade import InstanceRecord, Store, UpgradeInstanceRecord, UpgradeRecord
from controller.upgrade.faults import crash_point
from hostagent.contract import instancespec, views
from hostagent.contract.client import AgentError, AgentUnreachable
from kvmss.base.clock import Clock

if TYPE_CHECKING:
    from controller.upgrade.orchestrator import Policy

log = logging.getLogger(__name__)

FAILED_STATES = frozenset({"Failed", "RolledBack", "RollbackFailed"})
DONE_STATES = FAILED_STATES | {"Succeeded", "Skipped"}
ACTIVE_STATES = frozenset({"Reimaging", "WaitingHealth", "RollingBack"})
# provisioningState of an instance whose rollback could not be confirmed or
# failed: someone (or the controller, once its host answers) has to look.
NEEDS_ATTENTION = "NeedsAttention"
RUNNING = "Running"

Decide = Callable[[UpgradeRecord, str | None, str, str], None]
# (host, name, max age or None for the default) -> (known, view): the latest
# snapshot of an instance's view if recent enough (controller.views.instances)
Recent = Callable[[str, str, float | None], tuple[bool, views.InstanceView | None]]

# a snapshot this young is as good as asking
FRESH_SECONDS = 1.0
# the longest a row in flight (reimage, health wait) goes without a look
MAX_POLL_INTERVAL = 5.0


def no_snapshots(host: str, name: str, max_age: float | None) -> tuple[bool, None]:
    return False, None


@dataclass(frozen=True)
class Observed:
    """What the agent says of an instance right now."""

    healthy: bool
    version: str | None
    reasons: tuple[str, ...] = ()
    reachable: bool = True


def unconfirmed(u: UpgradeInstanceRecord) -> bool:
    """A rollback decided but given up on while its host did not answer."""
    return u.state == "RollbackFailed" and u.finished_at is None


class InstanceSteps:
    def __init__(
        self,
        store: Store,
        agents: AgentPort,
        clock: Clock,
        decide: Decide,
        recent: Recent = no_snapshots,
    ) -> None:
        self.store = store
        self.agents = agents
        self.clock = clock
        self.decide = decide
        self.recent = recent
        # (upgrade id, instance id, row state) -> when its agent was last asked
        self._asked: dict[tuple[str, str, str], float] = {}

    def observe(
        self, inst: InstanceRecord, *, snapshot: bool = False, max_age: float | None = None
    ) -> Observed:
        """What the agent says of ``inst`` now; with ``snapshot``, what its
        host's latest snapshot said (within ``max_age``) when it says healthy.
        A snapshot that says otherwise may be older than the instance's
        recovery (taken while it booted): the agent is asked, so an upgrade
        is never stopped on a stale view."""
        if snapshot:
            known, view = self.recent(inst.host, inst.name, max_age)
            seen = _observed(view) if known else None
            if seen is not None and seen.healthy:
                return seen
        try:
            view = self.agents.instance(inst.host, inst.name)
        except AgentUnreachable:
            return Observed(False, None, ("host agent unreachable",), reachable=False)
        except AgentError as e:
            return Observed(False, None, (f"agent error {e.code}",))
        return _observed(view)

    def op_id(self, up: UpgradeRecord, iid: str, action: str) -> str:
        return f"u{up.id.replace('-', '')[:16]}-{iid}-{action}"

    def set(
        self, up: UpgradeRecord, u: UpgradeInstanceRecord, expected: str, state: str, **fields: Any
    ) -> bool:
        if state in DONE_STATES:
            fields.setdefault("finished_at", self.clock.now())
        ok = self.store.update_upgrade_instance(
            up.id, u.instance_id, expected_state=expected, state=state, **fields
        )
        self._asked.pop((up.id, u.instance_id, expected), None)
        if ok:
            reason = fields.get("reason")
            self.decide(up, u.instance_id, state, str(reason) if reason else state)
        return ok

    def _row(self, up: UpgradeRecord, iid: str) -> UpgradeInstanceRecord | None:
        return next(
            (r for r in self.store.list_upgrade_instances(up.id) if r.instance_id == iid), None
        )

    # -- one step ------------------------------------------------------------------

    def advance(
        self,
        up: UpgradeRecord,
        policy: Policy,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
        spec: instancespec.ImageSpec,
    ) -> None:
        try:
            if u.state == "Pending":
                self._take(up, policy, u, inst, spec)
            elif u.state == "Reimaging":
                self._reimaging(up, policy, u, inst, spec)
            elif u.state == "WaitingHealth":
                self._waiting(up, policy, u, inst)
            elif u.state == "RollingBack":
                self._rolling_back(up, u, inst)
        except AgentUnreachable as e:
            self._unreachable(up, policy, u.instance_id, inst, e)

    def _unreachable(
        self,
        up: UpgradeRecord,
        policy: Policy,
        iid: str,
        inst: InstanceRecord,
        e: AgentUnreachable,
    ) -> None:
        """Retry on the next step, unless the row's deadline has passed."""
        u = self._row(up, iid)
        if u is None or u.deadline is None or self.clock.now() < u.deadline:
            log.warning("%s: %s; will retry", inst.name, e)
            return
        waited = f"{policy.health_timeout_seconds:g}s"
        if u.state == "Reimaging":
            try:
                self._fail(
                    up,
                    policy,
                    u,
                    "Reimaging",
                    f"host agent {inst.host} unreachable; reimage not confirmed within {waited}",
                )
            except AgentUnreachable:
                log.warning("%s: rollback waits for host %s", inst.name, inst.host)
        elif u.state == "RollingBack":
            why = (
                f"rollback not confirmed within {waited}: host agent {inst.host} unreachable;"
                f" operation {u.operation_id} is sent again when it answers"
            )
            self._rolled_back(up, u, False, why, finished=False)

    def _take(
        self,
        up: UpgradeRecord,
        policy: Policy,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
        spec: instancespec.ImageSpec,
    ) -> None:
        seen = self.observe(inst)
        if seen.version == up.target.version:
            self.set(up, u, "Pending", "Skipped", reason="already on the target version")
            return
        op_id = self.op_id(up, u.instance_id, "reimage")
        taken = replace(
            u,
            state="Reimaging",
            operation_id=op_id,
            started_at=self.clock.now(),
            deadline=self.clock.now() + policy.health_timeout_seconds,
            from_version=seen.version or inst.image_version,
        )
        if not self.set(
            up,
            u,
            "Pending",
            "Reimaging",
            operation_id=taken.operation_id,
            started_at=taken.started_at,
            deadline=taken.deadline,
            from_version=taken.from_version,
            reason=f"taken: reimage to {up.target.version} (operation {op_id})",
        ):
            return
        crash_point("reimage-decided")
        self._call_reimage(up, taken, inst, spec, op_id)

    def _call_reimage(
        self,
        up: UpgradeRecord,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
        spec: instancespec.ImageSpec,
        op_id: str,
    ) -> None:
        try:
            self.agents.reimage(inst.host, inst.name, spec, op_id)
        except AgentUnreachable:
            raise
        except AgentError as e:
            # 5xx: the agent could not do it now (e.g. the image download failed
            # because this controller, which serves it, was restarting): ask
            # again on the next step, until the row's deadline.
            if e.status >= 500 and u.deadline is not None and self.clock.now() < u.deadline:
                log.warning("%s: reimage not accepted yet (%s); will retry", inst.name, e.code)
                return
            self.set(up, u, "Reimaging", "Failed", reason=f"reimage refused: {e.code}: {e.message}")

    def _reimaging(
        self,
        up: UpgradeRecord,
        policy: Policy,
        u: UpgradeInstanceRecord,
        inst: InstanceRecord,
        spec: instancespec.ImageSpec,
    ) -> None:
        assert u.operation_id is not None
        if not self._due(up, u, u.started_at or self.clock.now()):
            return
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
            crash_point("reimaged")
            self.set(
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
            self.set(up, u, "Reimaging", "Failed", reason=f"reimage failed, unchanged ({err})")

    def _waiting(
        self, up: UpgradeRecord, policy: Policy, u: UpgradeInstanceRecord, inst: InstanceRecord
    ) -> None:
        assert u.deadline is not None
        due = self.clock.now() >= u.deadline
        seen = self.observe(inst) if due else self._health(up, policy, u, inst)
        if seen is not None and seen.healthy and seen.version == up.target.version:
            self.agents.commit(inst.host, inst.name, self.op_id(up, u.instance_id, "commit"))
            crash_point("committed")
            self.set(up, u, "WaitingHealth", "Succeeded", reason="healthy; previous disk dropped")
            return
        if due and seen is not None:
            why = "; ".join(seen.reasons) or "not healthy"
            self._fail(
                up,
                policy,
                u,
                "WaitingHealth",
                f"not healthy within {policy.health_timeout_seconds:g}s ({why})",
            )
            return
        crash_point("health-wait")

    def _health(
        self, up: UpgradeRecord, policy: Policy, u: UpgradeInstanceRecord, inst: InstanceRecord
    ) -> Observed | None:
        """A waiting instance's health from a fresh snapshot, or from its agent
        when :meth:`_due`; None: not looked at this step."""
        known, view = self.recent(inst.host, inst.name, FRESH_SECONDS)
        if known:
            return _observed(view)
        assert u.deadline is not None
        if not self._due(up, u, u.deadline - policy.health_timeout_seconds):
            return None
        return self.observe(inst)

    def _due(self, up: UpgradeRecord, u: UpgradeInstanceRecord, since: float) -> bool:
        """Whether to ask the agent how a row in flight (Reimaging,
        WaitingHealth) is doing at this step: when a tenth of the time since
        ``since`` has passed since it was last asked (at most
        MAX_POLL_INTERVAL), and always once its deadline has passed."""
        now = self.clock.now()
        if u.deadline is not None and now >= u.deadline:
            return True
        key = (up.id, u.instance_id, u.state)
        last = self._asked.get(key)
        if last is not None and now - last < min(MAX_POLL_INTERVAL, (now - since) / 10):
            return False
        self._asked[key] = now
        return True

    # -- rolling back --------------------------------------------------------------

    def _fail(
        self, up: UpgradeRecord, policy: Policy, u: UpgradeInstanceRecord, expected: str, why: str
    ) -> None:
        if not policy.automatic_rollback:
            self.set(up, u, expected, "Failed", reason=f"{why}; left on the new image")
            return
        op_id = self.op_id(up, u.instance_id, "rollback")
        if self.set(
            up,
            u,
            expected,
            "RollingBack",
            operation_id=op_id,
            deadline=self.clock.now() + policy.health_timeout_seconds,
            reason=f"{why}; rolling back",
        ):
            crash_point("rollback-decided")
            inst = self.store.get_instance(up.scale_set, u.instance_id)
            assert inst is not None
            self._call_rollback(up, replace(u, state="RollingBack", operation_id=op_id), inst)

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
            reimage: str = self.agents.cancel(
                inst.host, inst.name, self.op_id(up, u.instance_id, "reimage"), "reimage"
            ).status
        except AgentUnreachable:
            raise
        except AgentError:
            reimage = "Error"
        if reimage == "InProgress":  # a reimage the agent got late: roll back after it
            return
        if reimage == "Failed" and self.observe(inst).version == u.from_version:
            # the reimage never took effect (cancelled, failed, or undone by a restarted agent)
            self._rolled_back(up, u, True, f"already on {u.from_version}; nothing to undo")
            return
        try:
            self.agents.rollback(inst.host, inst.name, u.operation_id)
        except AgentUnreachable:
            raise
        except AgentError as e:
            if e.code == "Conflict":  # busy with another operation: ask again next step
                log.info("%s: rollback waits: %s", inst.name, e.message)
                return
            self._rolled_back(up, u, False, f"rollback refused: {e.code}: {e.message}")

    def _rolling_back(
        self, up: UpgradeRecord, u: UpgradeInstanceRecord, inst: InstanceRecord
    ) -> None:
        assert u.operation_id is not None
        try:
            op = self.agents.operation(inst.host, u.operation_id)
        except AgentError as e:
            if e.status == 404:
                self._call_rollback(up, u, inst)
                return
            raise
        if op.status == "InProgress":
            return
        if op.status == "Succeeded":
            self._rolled_back(up, u, True, f"rolled back to {u.from_version}")
        else:
            err = f"{op.error.code}: {op.error.message}" if op.error else "unknown error"
            self._rolled_back(up, u, False, f"rollback failed: {err}")

    def _rolled_back(
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
        expected = u.state if u.state in ("RollingBack", "RollbackFailed") else "RollingBack"
        state = "RolledBack" if ok else "RollbackFailed"
        fields: dict[str, Any] = {"reason": why}
        if not finished:
            fields["finished_at"] = None
        if not self.set(up, u, expected, state, **fields):
            return
        if ok:
            self.store.update_instance(up.scale_set, u.instance_id, image_version=u.from_version)
            self.store.update_instance(
                up.scale_set, u.instance_id, expected_state=NEEDS_ATTENTION, state=RUNNING
            )
            return
        self.store.update_instance(
            up.scale_set, u.instance_id, expected_state=RUNNING, state=NEEDS_ATTENTION
        )
        cur = self.store.get_upgrade(up.id)
        if cur is not None and cur.status == "RollingForward":
            self.store.update_upgrade(up.id, expected_status="RollingForward", rollback_error=why)

    # -- after the upgrade -----------------------------------------------------------

    def settle(self, up: UpgradeRecord, u: UpgradeInstanceRecord) -> bool:
        """Carry out an unconfirmed rollback once its host answers; True when
        the row is settled (rolled back, failed for good, or gone)."""
        inst = self.store.get_instance(up.scale_set, u.instance_id)
        if inst is None:
            return True
        try:
            self._rolling_back(up, u, inst)
        except AgentUnreachable:
            return False
        except AgentError as e:
            log.warning("%s: settling the rollback: %s", inst.name, e)
            return False
        row = self._row(up, u.instance_id)
        return row is None or not unconfirmed(row)


def _observed(view: views.InstanceView | None) -> Observed:
    if view is None:
        return Observed(False, None, ("instance missing on its host",))
    return Observed(
        view.health.state == "Healthy", view.current.image.version, tuple(view.health.reasons)
    )
