"""Upgrades as Azure shows them: RollingUpgradeStatusInfo (``rollingUpgrades/
latest``) and UpgradeOperationHistoricalStatusInfo (``osUpgradeHistory``),
with exactly Azure's field names and status codes, plus a ``kvmss`` block
with the batches, the instances and the decision log."""

from __future__ import annotations

from typing import Any

from controller.base.errors import ControllerError
from controller.fleet.models import ScaleSetModels
from controller.model.upgradepolicy import RollingPolicy
from controller.store.facade import Decision, Store, UpgradeInstanceRecord, UpgradeRecord
from controller.store.states import UpgradeStatus
from kvmss.base.clock import Clock, iso8601

ROLLING_TYPE = "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades"


def _progress(up: UpgradeRecord) -> dict[str, int]:
    return {
        "successfulInstanceCount": up.successful_count,
        "failedInstanceCount": up.failed_count,
        "inProgressInstanceCount": up.in_progress_count,
        "pendingInstanceCount": up.pending_count,
    }


def _error(up: UpgradeRecord) -> dict[str, str] | None:
    if up.error_code is None:
        return None
    return {"code": up.error_code, "message": up.error_message or up.error_code}


def _target(up: UpgradeRecord) -> dict[str, str]:
    t = up.target
    return {"publisher": t.publisher, "offer": t.offer, "sku": t.sku, "version": t.version}


def _policy(up: UpgradeRecord) -> dict[str, Any]:
    p = RollingPolicy.from_dict(up.policy)
    return {
        "maxBatchInstancePercent": p.max_batch_instance_percent,
        "maxUnhealthyInstancePercent": p.max_unhealthy_instance_percent,
        "maxUnhealthyUpgradedInstancePercent": p.max_unhealthy_upgraded_instance_percent,
        "pauseTimeBetweenBatchesSeconds": p.pause_seconds,
        "healthTimeoutSeconds": p.health_timeout_seconds,
        "prioritizeUnhealthyInstances": p.prioritize_unhealthy,
        "automaticRollback": p.automatic_rollback,
    }


def last_action(up: UpgradeRecord) -> str:
    """Azure's RollingUpgradeActionType: the user's cancel, once asked for,
    is the last action; before that the start."""
    cancelled = up.cancel_requested or up.status == UpgradeStatus.CANCELLED
    return "Cancel" if cancelled else "Start"


def latest(
    up: UpgradeRecord,
    rows: list[UpgradeInstanceRecord],
    decisions: list[Decision],
    location: str = "local",
) -> dict[str, Any]:
    last = decisions[-1] if decisions else None
    return {
        "properties": {
            "policy": _policy(up),
            "runningStatus": {
                "code": up.status,
                "startTime": iso8601(up.start_time),
                "lastAction": last_action(up),
                "lastActionTime": iso8601(last.time if last else up.start_time),
            },
            "progress": _progress(up),
            "error": _error(up),
        },
        "type": ROLLING_TYPE,
        "location": location,
        "kvmss": {
            "upgradeId": up.id,
            "startedBy": up.started_by,
            "targetImageReference": _target(up),
            "batches": up.batches,
            "currentBatch": up.current_batch,
            "instances": [
                {
                    "instanceId": r.instance_id,
                    "batch": r.batch,
                    "state": r.state,
                    "fromVersion": r.from_version,
                    "reason": r.reason,
                }
                for r in rows
            ],
            "decisions": [
                {
                    "time": iso8601(d.time),
                    "instanceId": d.instance_id,
                    "event": d.event,
                    "message": d.message,
                }
                for d in decisions
            ],
        },
    }


def history_entry(up: UpgradeRecord, location: str = "local") -> dict[str, Any]:
    return {
        "properties": {
            "runningStatus": {
                "code": up.status,
                "startTime": iso8601(up.start_time),
                "endTime": iso8601(up.end_time) if up.end_time is not None else None,
            },
            "progress": _progress(up),
            "error": _error(up),
            "startedBy": up.started_by,
            "targetImageReference": _target(up),
            "rollbackInfo": {
                "successfullyRolledbackInstanceCount": up.rolled_back_ok,
                "failedRolledbackInstanceCount": up.rolled_back_failed,
                "rollbackError": (
                    {"code": "RollbackFailed", "message": up.rollback_error}
                    if up.rollback_error
                    else None
                ),
            },
        },
        "type": ROLLING_TYPE,
        "location": location,
    }


class UpgradeReports:
    """The latest upgrade's status and the history of a scale set, as the API shows them."""

    def __init__(self, store: Store, models: ScaleSetModels, clock: Clock) -> None:
        self._store = store
        self._models = models
        self._clock = clock

    def latest_status(self, name: str) -> dict[str, Any]:
        model = self._models.model(name)
        ups = self._store.upgrades.history(name, self._clock.now(), limit=1)
        if not ups:
            raise ControllerError(
                404, "NotFound", f"scale set {name[:80]!r} has had no rolling upgrade"
            )
        up = ups[0]
        return latest(
            up,
            self._store.upgrade_instances.of(up.id),
            self._store.decisions.of(up.id),
            model.location,
        )

    def history(self, name: str) -> dict[str, Any]:
        model = self._models.model(name)
        ups = self._store.upgrades.history(name, self._clock.now())
        return {"value": [history_entry(u, model.location) for u in ups]}
