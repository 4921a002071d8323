"""RollingUpgradeStatusInfo documents as the controller sends them (for the
CLI's live view tests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kvmss.base.clock import iso8601

T0 = 1_700_000_000.0  # FakeClock's default start


def decision(t: float, iid: str | None, event: str, message: str) -> dict[str, Any]:
    return {"time": iso8601(t), "instanceId": iid, "event": event, "message": message}


def status(
    code: str,
    *,
    states: Mapping[str, str] | None = None,
    batches: Sequence[Sequence[str]] = (("0", "1"), ("2", "3")),
    reasons: Mapping[str, str] | None = None,
    decisions: Sequence[Mapping[str, Any]] = (),
    error: Mapping[str, str] | None = None,
    upgrade_id: str = "0f3c2a9e-1111-2222-3333-444455556666",
    start: float = T0,
    last_action_time: float | None = None,
) -> dict[str, Any]:
    """A status whose progress counts are derived from the instance states."""
    states = dict(states or {})
    all_ids = [i for b in batches for i in b]
    per = [states.get(i, "Pending") for i in all_ids]
    failed = sum(per.count(s) for s in ("Failed", "RolledBack", "RollbackFailed"))
    active = sum(per.count(s) for s in ("Reimaging", "WaitingHealth", "RollingBack"))
    return {
        "properties": {
            "policy": {"maxBatchInstancePercent": 50},
            "runningStatus": {
                "code": code,
                "startTime": iso8601(start),
                "lastAction": "Start",
                "lastActionTime": iso8601(last_action_time or start),
            },
            "progress": {
                "successfulInstanceCount": per.count("Succeeded"),
                "failedInstanceCount": failed,
                "inProgressInstanceCount": active,
                "pendingInstanceCount": per.count("Pending"),
            },
            "error": dict(error) if error else None,
        },
        "type": "Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades",
        "location": "local",
        "kvmss": {
            "upgradeId": upgrade_id,
            "targetImageReference": {
                "publisher": "kvmss",
                "offer": "tiny",
                "sku": "1",
                "version": "2.0.0",
            },
            "batches": [list(b) for b in batches],
            "currentBatch": 0,
            "instances": [
                {
                    "instanceId": i,
                    "batch": n,
                    "state": states.get(i, "Pending"),
                    "reason": (reasons or {}).get(i),
                }
                for n, b in enumerate(batches)
                for i in b
            ],
            "decisions": [dict(d) for d in decisions],
        },
    }
