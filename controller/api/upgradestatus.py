"""Rolling upgrades as the API shows them (controller.upgrade.status builds
the bodies): Azure's RollingUpgradeStatusInfo for ``rollingUpgrades/latest``
and UpgradeOperationHistoricalStatusInfo for ``osUpgradeHistory`` (rule 11
of docs/design.md), with Azure's field names, plus the ``kvmss`` block;
and what the upgrade actions answer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from controller.api.responses import Body, ErrorDetail, ImageReference

RollingUpgradeStatusCode = Literal["RollingForward", "Cancelled", "Completed", "Faulted"]
RollingUpgradeActionType = Literal["Start", "Cancel"]
UpgradeOperationInvoker = Literal["Platform", "User"]
RollingUpgradeType = Literal["Microsoft.Compute/virtualMachineScaleSets/rollingUpgrades"]


class RollingUpgradeProgressInfo(Body):
    successfulInstanceCount: int
    failedInstanceCount: int
    inProgressInstanceCount: int
    pendingInstanceCount: int


class RollingUpgradeRunPolicy(Body):
    """kvmss: the policy the upgrade runs under, as it was when it started."""

    maxBatchInstancePercent: int
    maxUnhealthyInstancePercent: int
    maxUnhealthyUpgradedInstancePercent: int
    pauseTimeBetweenBatchesSeconds: float
    healthTimeoutSeconds: float
    prioritizeUnhealthyInstances: bool
    automaticRollback: bool


class RollingUpgradeRunningStatus(Body):
    code: RollingUpgradeStatusCode
    startTime: str
    lastAction: RollingUpgradeActionType
    lastActionTime: str


class RollingUpgradeStatusInfoProperties(Body):
    policy: RollingUpgradeRunPolicy
    runningStatus: RollingUpgradeRunningStatus
    progress: RollingUpgradeProgressInfo
    error: ErrorDetail | None


class UpgradeInstanceState(Body):
    instanceId: str
    batch: int
    state: str = Field(description="Pending, Reimaging, WaitingHealth, Succeeded, Failed, ...")
    fromVersion: str | None
    reason: str | None


class UpgradeDecision(Body):
    """One entry of the decision log: what the upgrade did, and why."""

    time: str
    instanceId: str | None
    event: str
    message: str


class RollingUpgradeDetails(Body):
    """kvmss: the batches, each instance's state and the decision log."""

    upgradeId: str
    startedBy: UpgradeOperationInvoker
    targetImageReference: ImageReference
    batches: list[list[str]]
    currentBatch: int
    instances: list[UpgradeInstanceState]
    decisions: list[UpgradeDecision]


class RollingUpgradeStatusInfo(Body):
    properties: RollingUpgradeStatusInfoProperties
    type: RollingUpgradeType
    location: str
    kvmss: RollingUpgradeDetails


class UpgradeOperationHistoryStatus(Body):
    code: RollingUpgradeStatusCode
    startTime: str
    endTime: str | None = Field(description="null while it runs")


class RollbackStatusInfo(Body):
    successfullyRolledbackInstanceCount: int
    failedRolledbackInstanceCount: int
    rollbackError: ErrorDetail | None


class UpgradeOperationHistoricalStatusInfoProperties(Body):
    runningStatus: UpgradeOperationHistoryStatus
    progress: RollingUpgradeProgressInfo
    error: ErrorDetail | None
    startedBy: UpgradeOperationInvoker
    targetImageReference: ImageReference
    rollbackInfo: RollbackStatusInfo


class UpgradeOperationHistoricalStatusInfo(Body):
    properties: UpgradeOperationHistoricalStatusInfoProperties
    type: RollingUpgradeType
    location: str


class VirtualMachineScaleSetListOSUpgradeHistory(Body):
    value: list[UpgradeOperationHistoricalStatusInfo] = Field(description="newest first")


# -- what the upgrade actions answer ---------------------------------------------------


class UpgradeAccepted(Body):
    """osRollingUpgrade and manualUpgrade: the upgrade started (rule 9)."""

    upgradeId: str
    status: RollingUpgradeStatusCode


class CancelAccepted(Body):
    """Rule 7: nothing new starts, instances in flight finish."""

    status: Literal["CancelRequested"]


class UpgradePlan(Body):
    """The batches an upgrade to the latest version would run now (rules 1,
    3 and 6); nothing is touched."""

    targetImageReference: ImageReference
    batchSize: int
    batches: list[list[str]] = Field(description="instance ids, batch by batch")
