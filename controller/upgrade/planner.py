"""The rolling OS upgrade plan: pure decisions, no I/O.

Implements docs/design.md "Rolling upgrade rules" 1 (batch size), 3 (skip
instances already on the target), 6 (update-domain walk,
prioritizeUnhealthyInstances), and gives the yes/no answers of rules 2
(:func:`too_unhealthy`) and 5 (:func:`upgraded_breach`).

Decisions this module makes, so the orchestrator does not have to:

- **A batch never spans two update domains.** Batches walk update domains in
  ascending order; each update domain's pending instances are cut into
  batches of at most b, in numeric instance-id order, and the next update
  domain starts with a fresh batch. An update domain is a group that may be
  taken down together, so a batch that mixed the tail of one with the head of
  the next would have two update domains partly out of service at once. The
  price is a short batch at the end of an update domain.
- **prioritizeUnhealthyInstances** makes two passes: first every unhealthy
  instance to upgrade, then every healthy one, each pass walking update
  domains as above. A batch therefore also never mixes unhealthy and healthy
  instances.
- **Update domains** are given when an instance is placed
  (:func:`controller.fleet.placement.update_domain`) and read here.
- **Thresholds** are "above" in exact integer arithmetic: exactly at the
  percentage is allowed, one more is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby

from controller.store.records import INSTANCE_ID_RE


@dataclass(frozen=True)
class PlanInstance:
    instance_id: str  # "0", "1", ... (Azure instance ids are decimal strings)
    update_domain: int
    image_version: str | None  # None = unknown, so never on the target
    healthy: bool


def instance_number(instance_id: str, field: str = "instanceId") -> int:
    """The value of a decimal instance id ("0", "12"; 1-18 digits, no sign or leading zeros)."""
    if not isinstance(instance_id, str) or not INSTANCE_ID_RE.fullmatch(instance_id):
        raise ValueError(
            f"{field}: must be a decimal instance id such as '0' or '12' "
            f"(1-18 digits, no leading zeros), got {instance_id!r}"
        )
    return int(instance_id)


def _check_percent(value: int, field: str, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 100:
        raise ValueError(f"{field}: must be an integer between {low} and 100, got {value!r}")


def _check_count(value: int, field: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field}: must be a non-negative integer, got {value!r}")


def batch_size(capacity: int, max_batch_instance_percent: int) -> int:
    """Rule 1: b = max(1, floor(N * pct / 100)); N <= 5 gives 1 and N = 0 gives 0."""
    _check_count(capacity, "capacity")
    _check_percent(max_batch_instance_percent, "maxBatchInstancePercent", 1)
    if capacity == 0:
        return 0
    if capacity <= 5:
        return 1
    return max(1, capacity * max_batch_instance_percent // 100)


def _check_instances(instances: Sequence[PlanInstance]) -> None:
    seen: set[int] = set()
    for i, inst in enumerate(instances):
        number = instance_number(inst.instance_id, f"instances[{i}].instanceId")
        if number in seen:
            raise ValueError(
                f"instances[{i}].instanceId: {inst.instance_id!r} appears more than once"
            )
        seen.add(number)
        ud = inst.update_domain
        if isinstance(ud, bool) or not isinstance(ud, int) or ud < 0:
            raise ValueError(
                f"instances[{i}].updateDomain: must be a non-negative integer, got {ud!r}"
            )


def _batches_by_update_domain(pending: list[PlanInstance], b: int) -> list[list[str]]:
    ordered = sorted(pending, key=lambda x: (x.update_domain, int(x.instance_id)))
    batches: list[list[str]] = []
    for _, group in groupby(ordered, key=lambda x: x.update_domain):
        ids = [x.instance_id for x in group]
        batches.extend(ids[start : start + b] for start in range(0, len(ids), b))
    return batches


def plan_batches(
    instances: Sequence[PlanInstance],
    target_version: str,
    *,
    max_batch_instance_percent: int,
    prioritize_unhealthy: bool,
) -> list[list[str]]:
    """The batches of instance ids to reimage to ``target_version``, in order.

    ``instances`` is every instance of the scale set: its length is the N of
    the batch size (rule 1). Instances whose ``image_version`` equals
    ``target_version`` (same string) are skipped (rule 3). See the module
    docstring for how batches follow update domains and health.
    """
    if not isinstance(target_version, str) or not target_version:
        raise ValueError(f"targetVersion: must be a non-empty string, got {target_version!r}")
    _check_instances(instances)
    b = batch_size(len(instances), max_batch_instance_percent)
    pending = [x for x in instances if x.image_version != target_version]
    if not prioritize_unhealthy:
        return _batches_by_update_domain(pending, b)
    unhealthy = [x for x in pending if not x.healthy]
    healthy = [x for x in pending if x.healthy]
    return _batches_by_update_domain(unhealthy, b) + _batches_by_update_domain(healthy, b)


def too_unhealthy(unhealthy: int, total: int, max_unhealthy_percent: int) -> bool:
    """Rule 2: whether unhealthy / total is above the percentage (exactly at is allowed).

    20% of 10 allows 2 unhealthy, 3 is too many; 20% of 6 allows 1 (1.2), 2 is
    too many. An empty set is never too unhealthy.
    """
    _check_count(unhealthy, "unhealthyInstanceCount")
    _check_count(total, "instanceCount")
    _check_percent(max_unhealthy_percent, "maxUnhealthyInstancePercent", 0)
    if unhealthy > total:
        raise ValueError(
            f"unhealthyInstanceCount: must not exceed instanceCount ({total}), got {unhealthy}"
        )
    if total == 0:
        return False
    return unhealthy * 100 > total * max_unhealthy_percent


def upgraded_breach(failed: int, upgraded: int, max_unhealthy_upgraded_percent: int) -> bool:
    """Rule 5: whether failed / upgraded is above the percentage (exactly at is allowed).

    With a percentage of 0 any failure breaches; with nothing upgraded yet
    nothing does.
    """
    _check_count(failed, "failedInstanceCount")
    _check_count(upgraded, "upgradedInstanceCount")
    _check_percent(max_unhealthy_upgraded_percent, "maxUnhealthyUpgradedInstancePercent", 0)
    if failed > upgraded:
        raise ValueError(
            f"failedInstanceCount: must not exceed upgradedInstanceCount ({upgraded}), got {failed}"
        )
    if upgraded == 0:
        return False
    return failed * 100 > upgraded * max_unhealthy_upgraded_percent
