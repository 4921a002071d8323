"""rollingUpgrades/latest and osUpgradeHistory as Azure shapes them."""

from __future__ import annotations

import dataclasses

import pytest

from controller.model.upgradepolicy import RollingPolicy
from controller.store.facade import ImageRef, UpgradeRecord
from controller.store.states import StartedBy, UpgradeStatus
from controller.upgrade import status

S = UpgradeStatus

UP = UpgradeRecord(
    id="u1",
    scale_set="web",
    started_by=StartedBy.PLATFORM,
    target=ImageRef("p", "o", "s", "2"),
    status=S.ROLLING_FORWARD,
    start_time=1_700_000_000.0,
    policy=RollingPolicy().to_dict(),
    batches=[["0"]],
)


@pytest.mark.parametrize(
    ("code", "cancel_requested", "action"),
    [
        (S.ROLLING_FORWARD, False, "Start"),
        (S.ROLLING_FORWARD, True, "Cancel"),  # asked for, the batch in flight still runs
        (S.COMPLETED, False, "Start"),
        (S.FAULTED, False, "Start"),
        (S.CANCELLED, True, "Cancel"),
        (S.COMPLETED, True, "Cancel"),  # cancelled after the last batch
    ],
)
def test_last_action_is_the_action_start_or_cancel_never_the_status(
    code: UpgradeStatus, cancel_requested: bool, action: str
) -> None:
    up = dataclasses.replace(UP, status=code, cancel_requested=cancel_requested)
    running = status.latest(up, [], [])["properties"]["runningStatus"]
    assert running["lastAction"] == action
    assert running["code"] == code  # the status stays in code


def test_the_policy_shown_is_the_one_the_upgrade_runs_under() -> None:
    policy = RollingPolicy(max_batch_instance_percent=50, pause_seconds=30.0).by_hand()
    up = dataclasses.replace(UP, policy=policy.to_dict())
    shown = status.latest(up, [], [])["properties"]["policy"]
    assert shown == {
        "maxBatchInstancePercent": 50,
        "maxUnhealthyInstancePercent": 20,
        "maxUnhealthyUpgradedInstancePercent": 20,
        "pauseTimeBetweenBatchesSeconds": 30.0,
        "healthTimeoutSeconds": 300.0,
        "prioritizeUnhealthyInstances": False,
        "automaticRollback": False,
    }
