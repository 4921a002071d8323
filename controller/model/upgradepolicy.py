"""``properties.upgradePolicy`` of the scale set model: the mode, the rolling
upgrade policy and the automatic OS upgrade policy.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from controller.model.durations import DurationError, format_duration, parse_duration
from controller.model.fields import Rule, StrictModel, between

UpgradeMode = Literal["Manual", "Automatic", "Rolling"]


def _duration_within(text: str, low: float, high: float) -> str:
    try:
        seconds = parse_duration(text, "duration")
    except DurationError as e:
        raise ValueError(e.reason) from None
    if not low <= seconds <= high:
        raise ValueError(f"must be between {format_duration(low)} and {format_duration(high)}")
    return text


class RollingUpgradePolicy(StrictModel):
    maxBatchInstancePercent: Annotated[int, between(5, 100)] = 20
    maxUnhealthyInstancePercent: Annotated[int, between(5, 100)] = 20
    maxUnhealthyUpgradedInstancePercent: Annotated[int, between(0, 100)] = 20
    pauseTimeBetweenBatches: str = "PT0S"
    prioritizeUnhealthyInstances: bool = False
    # kvmss: how long a reimaged instance has to become healthy.
    healthTimeout: str = "PT5M"

    @field_validator("pauseTimeBetweenBatches")
    @classmethod
    def _pause(cls, v: str) -> str:
        return _duration_within(v, 0, 3600)

    @field_validator("healthTimeout")
    @classmethod
    def _timeout(cls, v: str) -> str:
        return _duration_within(v, 10, 7200)

    @model_validator(mode="after")
    def _batch_within_unhealthy(self) -> RollingUpgradePolicy:
        # Azure: "If both maxBatchInstancePercent and maxUnhealthyInstancePercent
        # are assigned with value, the value of maxBatchInstancePercent should
        # not be more than maxUnhealthyInstancePercent."
        both = {"maxBatchInstancePercent", "maxUnhealthyInstancePercent"} <= self.model_fields_set
        if both and self.maxBatchInstancePercent > self.maxUnhealthyInstancePercent:
            raise Rule(
                ("maxBatchInstancePercent",),
                "must not be more than maxUnhealthyInstancePercent"
                f" ({self.maxUnhealthyInstancePercent})",
            )
        return self


class AutomaticOSUpgradePolicy(StrictModel):
    enableAutomaticOSUpgrade: bool = False
    disableAutomaticRollback: bool = False
    # Accepted for Azure compatibility; kvmss always upgrades in rolling batches.
    useRollingUpgradePolicy: bool = False


class UpgradePolicy(StrictModel):
    mode: UpgradeMode = "Manual"
    rollingUpgradePolicy: RollingUpgradePolicy = Field(default_factory=RollingUpgradePolicy)
    automaticOSUpgradePolicy: AutomaticOSUpgradePolicy = Field(
        default_factory=AutomaticOSUpgradePolicy
    )
