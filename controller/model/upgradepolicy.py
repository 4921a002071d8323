"""``properties.upgradePolicy`` of the scale set model: the mode, the rolling
upgrade policy and the automatic OS upgrade policy, and :class:`RollingPolicy`,
what an upgrade runs under, derived from them once.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import Field, field_validator, model_validator

from controller.model.durations import DurationError, format_duration, parse_duration
from controller.model.fields import Rule, StrictModel, between

UpgradeMode = Literal["Manual", "Automatic", "Rolling"]

# Azure's defaults (docs/design.md rule 4 for the health timeout).
DEFAULT_PERCENT: Final = 20
HEALTH_TIMEOUT_SECONDS: Final = 300.0
ALL_PERCENT: Final = 100  # every instance in one batch, no stop rule ever met


@dataclass(frozen=True)
class RollingPolicy:
    """The rolling policy an upgrade runs under, in seconds with defaults
    applied; snapshotted into the upgrade's record (:meth:`to_dict`, the
    names stored since the first upgrade) when it starts."""

    max_batch_instance_percent: int = DEFAULT_PERCENT
    max_unhealthy_instance_percent: int = DEFAULT_PERCENT
    max_unhealthy_upgraded_instance_percent: int = DEFAULT_PERCENT
    pause_seconds: float = 0.0
    health_timeout_seconds: float = HEALTH_TIMEOUT_SECONDS
    prioritize_unhealthy: bool = False
    automatic_rollback: bool = True

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RollingPolicy:
        return cls(**d)

    def by_hand(self) -> RollingPolicy:
        """Started by a user: never rolled back automatically (rule 4)."""
        return dataclasses.replace(self, automatic_rollback=False)

    def all_at_once(self) -> RollingPolicy:
        """Upgrade mode Automatic and manualUpgrade: one batch, no stop rules,
        no rollback; only the health timeout is kept."""
        return RollingPolicy(
            max_batch_instance_percent=ALL_PERCENT,
            max_unhealthy_instance_percent=ALL_PERCENT,
            max_unhealthy_upgraded_instance_percent=ALL_PERCENT,
            health_timeout_seconds=self.health_timeout_seconds,
            automatic_rollback=False,
        )


def _duration_within(text: str, low: float, high: float) -> str:
    try:
        seconds = parse_duration(text, "duration")
    except DurationError as e:
        raise ValueError(e.reason) from None
    if not low <= seconds <= high:
        raise ValueError(f"must be between {format_duration(low)} and {format_duration(high)}")
    return text


class RollingUpgradePolicy(StrictModel):
    maxBatchInstancePercent: Annotated[int, between(5, 100)] = DEFAULT_PERCENT
    maxUnhealthyInstancePercent: Annotated[int, between(5, 100)] = DEFAULT_PERCENT
    maxUnhealthyUpgradedInstancePercent: Annotated[int, between(0, 100)] = DEFAULT_PERCENT
    pauseTimeBetweenBatches: str = format_duration(0)
    prioritizeUnhealthyInstances: bool = False
    # kvmss: how long a reimaged instance has to become healthy.
    healthTimeout: str = format_duration(HEALTH_TIMEOUT_SECONDS)

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

    def rolling_policy(self) -> RollingPolicy:
        """The policy a Platform upgrade runs under (the one derivation of it)."""
        p = self.rollingUpgradePolicy
        return RollingPolicy(
            max_batch_instance_percent=p.maxBatchInstancePercent,
            max_unhealthy_instance_percent=p.maxUnhealthyInstancePercent,
            max_unhealthy_upgraded_instance_percent=p.maxUnhealthyUpgradedInstancePercent,
            pause_seconds=parse_duration(p.pauseTimeBetweenBatches, "pauseTimeBetweenBatches"),
            health_timeout_seconds=parse_duration(p.healthTimeout, "healthTimeout"),
            prioritize_unhealthy=p.prioritizeUnhealthyInstances,
            automatic_rollback=not self.automaticOSUpgradePolicy.disableAutomaticRollback,
        )
