"""controller.upgrade.planner: batch sizing, batch order and the health thresholds."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from controller.upgrade.planner import (
    PlanInstance,
    batch_size,
    instance_number,
    plan_batches,
    too_unhealthy,
    upgraded_breach,
)

TARGET = "2016.127.20180613"
OLD = "2016.127.20180601"


def fleet(
    n: int,
    *,
    uds: int = 5,
    on_target: frozenset[int] = frozenset(),
    unhealthy: frozenset[int] = frozenset(),
) -> list[PlanInstance]:
    return [
        PlanInstance(
            instance_id=str(i),
            update_domain=i % uds,
            image_version=TARGET if i in on_target else OLD,
            healthy=i not in unhealthy,
        )
        for i in range(n)
    ]


# --- rule 1: batch size -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "expected"),
    [(0, 0), (1, 1), (5, 1), (6, 1), (10, 2), (11, 2), (100, 20)],
)
def test_batch_size_at_twenty_percent(capacity: int, expected: int) -> None:
    assert batch_size(capacity, 20) == expected


@pytest.mark.parametrize(
    ("capacity", "percent", "expected"),
    [
        (0, 100, 0),
        (1, 100, 1),
        (5, 100, 1),  # N <= 5 gives b = 1 whatever the percent
        (5, 50, 1),
        (6, 100, 6),
        (6, 50, 3),
        (6, 5, 1),  # floor(0.3) would be 0: never below 1
        (10, 5, 1),
        (10, 50, 5),
        (10, 100, 10),
        (11, 50, 5),  # floor(5.5)
        (19, 5, 1),
        (20, 5, 1),
        (39, 5, 1),
        (40, 5, 2),
        (100, 5, 5),
        (100, 50, 50),
        (100, 100, 100),
        (101, 33, 33),  # floor(33.33)
        (1000, 20, 200),
    ],
)
def test_batch_size_other_percents(capacity: int, percent: int, expected: int) -> None:
    assert batch_size(capacity, percent) == expected


@pytest.mark.parametrize(
    ("capacity", "percent", "message"),
    [
        (-1, 20, "capacity: must be a non-negative integer"),
        (10, 0, "maxBatchInstancePercent: must be an integer between 1 and 100"),
        (10, 101, "maxBatchInstancePercent: must be an integer between 1 and 100"),
        (10, -5, "maxBatchInstancePercent"),
    ],
)
def test_batch_size_rejects_bad_input(capacity: int, percent: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        batch_size(capacity, percent)


# --- rules 3 and 6: which instances, in which batches -------------------------------------


def test_plan_walks_update_domains_in_order_with_numeric_ids() -> None:
    # 11 instances, 5 UDs: UD0 = 0, 5, 10 (numeric order, not "0", "10", "5"); b = 2
    batches = plan_batches(
        fleet(11), TARGET, max_batch_instance_percent=20, prioritize_unhealthy=False
    )
    assert batches == [["0", "5"], ["10"], ["1", "6"], ["2", "7"], ["3", "8"], ["4", "9"]]


def test_a_batch_never_spans_two_update_domains() -> None:
    # b = 20 with 100 instances at 20%, but a UD holding 3 pending instances gives one
    # batch of 3, not a batch topped up from the next UD.
    instances = [
        PlanInstance(str(i), update_domain=0, image_version=OLD, healthy=True) for i in range(3)
    ] + [
        PlanInstance(str(i), update_domain=1, image_version=TARGET, healthy=True)
        for i in range(3, 97)
    ]
    instances += [PlanInstance(str(i), 2, OLD, True) for i in range(97, 100)]
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=False
    )
    assert batches == [["0", "1", "2"], ["97", "98", "99"]]


def test_plan_cuts_a_large_update_domain_into_batches_of_b() -> None:
    # 10 instances, all in UD 0, 20% -> b = 2
    instances = [PlanInstance(str(i), 0, OLD, True) for i in range(10)]
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=False
    )
    assert batches == [[str(i), str(i + 1)] for i in range(0, 10, 2)]


def test_plan_orders_by_update_domain_not_by_input_order() -> None:
    instances = list(reversed(fleet(10)))
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=False
    )
    assert batches == [["0", "5"], ["1", "6"], ["2", "7"], ["3", "8"], ["4", "9"]]


def test_update_domains_need_not_be_contiguous() -> None:
    instances = [
        PlanInstance("0", 7, OLD, True),
        PlanInstance("1", 2, OLD, True),
        PlanInstance("2", 7, OLD, True),
    ]
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=100, prioritize_unhealthy=False
    )
    assert batches == [["1"], ["0"], ["2"]]


def test_plan_skips_instances_already_on_target() -> None:
    instances = fleet(10, on_target=frozenset({0, 1, 2, 3, 4, 9}))
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=False
    )
    assert batches == [["5"], ["6"], ["7"], ["8"]]


def test_skipped_instances_still_count_in_the_batch_size() -> None:
    # N = 10 at 50% -> b = 5, although only 6 instances need the upgrade
    instances = [PlanInstance(str(i), 0, TARGET if i < 4 else OLD, True) for i in range(10)]
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=50, prioritize_unhealthy=False
    )
    assert batches == [["4", "5", "6", "7", "8"], ["9"]]


def test_plan_when_everything_is_on_target_or_empty() -> None:
    on_target = fleet(10, on_target=frozenset(range(10)))
    assert (
        plan_batches(on_target, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=True)
        == []
    )
    assert plan_batches([], TARGET, max_batch_instance_percent=20, prioritize_unhealthy=False) == []


def test_unknown_or_different_version_strings_are_upgraded() -> None:
    # "same version" means the same string: 1.0 is not 1.0.0, and unknown is never on target
    instances = [
        PlanInstance("0", 0, "1.0", True),
        PlanInstance("1", 0, None, True),
        PlanInstance("2", 0, "1.0.0", True),
    ]
    batches = plan_batches(
        instances, "1.0.0", max_batch_instance_percent=100, prioritize_unhealthy=False
    )
    assert batches == [["0"], ["1"]]


def test_prioritize_unhealthy_puts_unhealthy_first_in_update_domain_order() -> None:
    instances = fleet(10, unhealthy=frozenset({9, 3, 5}))
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=True
    )
    assert batches == [
        ["5"],  # unhealthy, UD 0
        ["3"],  # unhealthy, UD 3
        ["9"],  # unhealthy, UD 4
        ["0"],
        ["1", "6"],
        ["2", "7"],
        ["8"],
        ["4"],
    ]


def test_without_prioritize_unhealthy_health_does_not_reorder() -> None:
    instances = fleet(10, unhealthy=frozenset({9, 3, 5}))
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=False
    )
    assert batches == [["0", "5"], ["1", "6"], ["2", "7"], ["3", "8"], ["4", "9"]]


def test_prioritize_unhealthy_batches_unhealthy_ones_by_b_too() -> None:
    instances = [PlanInstance(str(i), 0, OLD, i >= 5) for i in range(10)]
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=True
    )
    assert batches == [["0", "1"], ["2", "3"], ["4"], ["5", "6"], ["7", "8"], ["9"]]


def test_unhealthy_instance_on_target_is_still_skipped() -> None:
    instances = fleet(6, on_target=frozenset({2}), unhealthy=frozenset({2, 4}))
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=True
    )
    assert batches == [["4"], ["0"], ["5"], ["1"], ["3"]]


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([PlanInstance("a", 0, OLD, True)], r"instances\[0\]\.instanceId: must be a decimal"),
        ([PlanInstance("01", 0, OLD, True)], r"instances\[0\]\.instanceId: .*no leading zeros"),
        ([PlanInstance("-1", 0, OLD, True)], r"instances\[0\]\.instanceId"),
        ([PlanInstance("", 0, OLD, True)], r"instances\[0\]\.instanceId"),
        (
            [PlanInstance("1", 0, OLD, True), PlanInstance("1", 1, OLD, True)],
            r"instances\[1\]\.instanceId: '1' appears more than once",
        ),
        (
            [PlanInstance("0", -1, OLD, True)],
            r"instances\[0\]\.updateDomain: must be a non-negative",
        ),
    ],
)
def test_plan_rejects_bad_instances(instances: list[PlanInstance], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_batches(instances, TARGET, max_batch_instance_percent=20, prioritize_unhealthy=False)


def test_plan_rejects_empty_target_and_bad_percent() -> None:
    with pytest.raises(ValueError, match="targetVersion: must be a non-empty string"):
        plan_batches(fleet(3), "", max_batch_instance_percent=20, prioritize_unhealthy=False)
    with pytest.raises(ValueError, match="maxBatchInstancePercent"):
        plan_batches(fleet(3), TARGET, max_batch_instance_percent=0, prioritize_unhealthy=False)


def _check_plan(
    instances: list[PlanInstance], batches: list[list[str]], percent: int, prioritize: bool
) -> None:
    b = batch_size(len(instances), percent)
    by_id = {x.instance_id: x for x in instances}
    flat = [iid for batch in batches for iid in batch]
    # every instance not on target exactly once, nothing else
    expected = Counter(x.instance_id for x in instances if x.image_version != TARGET)
    assert Counter(flat) == expected
    assert all(count == 1 for count in Counter(flat).values())
    for batch in batches:
        assert 1 <= len(batch) <= b
        assert len({by_id[iid].update_domain for iid in batch}) == 1
        if prioritize:
            assert len({by_id[iid].healthy for iid in batch}) == 1
    keys = [(by_id[iid].update_domain, int(iid)) for iid in flat]
    if not prioritize:
        assert keys == sorted(keys)  # UDs non-decreasing, ids ascending within a UD
    else:
        health = [by_id[iid].healthy for iid in flat]
        assert health == sorted(health)  # all unhealthy (False) before any healthy (True)
        first_healthy = health.index(True) if True in health else len(health)
        for phase in (keys[:first_healthy], keys[first_healthy:]):
            assert phase == sorted(phase)
    # batches are as full as allowed: only the last batch of a UD (within a phase) is short
    for prev, nxt in itertools.pairwise(batches):
        same_group = by_id[prev[0]].update_domain == by_id[nxt[0]].update_domain and (
            not prioritize or by_id[prev[0]].healthy == by_id[nxt[0]].healthy
        )
        if same_group:
            assert len(prev) == b


@pytest.mark.parametrize("seed", range(300))
def test_plan_properties_on_random_sets(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([0, 1, 2, 5, 6, 7, 10, 11, 25, 60, 100, 137])
    ids = rng.sample(range(10 * n + 1), n)  # sparse ids, as after scale-in
    uds = rng.randint(1, 7)
    instances = [
        PlanInstance(
            instance_id=str(i),
            update_domain=rng.randrange(uds) if rng.random() < 0.3 else i % uds,
            image_version=rng.choice([TARGET, OLD, None, "1.0"]),
            healthy=rng.random() < 0.8,
        )
        for i in ids
    ]
    percent = rng.choice([1, 5, 10, 20, 33, 50, 100])
    prioritize = rng.random() < 0.5
    batches = plan_batches(
        instances, TARGET, max_batch_instance_percent=percent, prioritize_unhealthy=prioritize
    )
    _check_plan(instances, batches, percent, prioritize)
    # the plan does not depend on the order instances are listed in
    shuffled = instances[:]
    rng.shuffle(shuffled)
    assert (
        plan_batches(
            shuffled, TARGET, max_batch_instance_percent=percent, prioritize_unhealthy=prioritize
        )
        == batches
    )


# --- rule 2: unhealthy instances before a batch -------------------------------------------


@pytest.mark.parametrize(
    ("unhealthy", "total", "percent", "expected"),
    [
        (2, 10, 20, False),  # exactly at 20%: allowed
        (3, 10, 20, True),  # above
        (1, 6, 20, False),  # 16.7% <= 20% (1.2 allowed)
        (2, 6, 20, True),  # 33% > 20%
        (0, 0, 20, False),  # empty set
        (0, 10, 0, False),
        (1, 10, 0, True),  # 0% allows none
        (10, 10, 100, False),  # 100% allows all
        (1, 1, 99, True),
        (20, 100, 20, False),
        (21, 100, 20, True),
        (1, 3, 33, True),  # 33.3% > 33%
        (1, 3, 34, False),
    ],
)
def test_too_unhealthy(unhealthy: int, total: int, percent: int, expected: bool) -> None:
    assert too_unhealthy(unhealthy, total, percent) is expected


@pytest.mark.parametrize(
    ("unhealthy", "total", "percent", "message"),
    [
        (-1, 10, 20, "unhealthyInstanceCount: must be a non-negative integer"),
        (1, -1, 20, "instanceCount: must be a non-negative integer"),
        (11, 10, 20, r"unhealthyInstanceCount: must not exceed instanceCount \(10\)"),
        (1, 10, 101, "maxUnhealthyInstancePercent: must be an integer between 0 and 100"),
        (1, 10, -1, "maxUnhealthyInstancePercent"),
    ],
)
def test_too_unhealthy_rejects_bad_input(
    unhealthy: int, total: int, percent: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        too_unhealthy(unhealthy, total, percent)


# --- rule 5: failed upgraded instances after a batch --------------------------------------


@pytest.mark.parametrize(
    ("failed", "upgraded", "percent", "expected"),
    [
        (0, 0, 0, False),  # nothing upgraded yet
        (0, 0, 20, False),
        (0, 5, 0, False),
        (1, 5, 0, True),  # 0%: any failure breaches
        (1, 1, 0, True),
        (2, 10, 20, False),  # exactly at: allowed
        (3, 10, 20, True),
        (1, 6, 20, False),
        (2, 6, 20, True),
        (5, 5, 100, False),
        (1, 2, 50, False),
        (2, 3, 66, True),  # 66.7% > 66%
        (2, 3, 67, False),
    ],
)
def test_upgraded_breach(failed: int, upgraded: int, percent: int, expected: bool) -> None:
    assert upgraded_breach(failed, upgraded, percent) is expected


@pytest.mark.parametrize(
    ("failed", "upgraded", "percent", "message"),
    [
        (-1, 5, 20, "failedInstanceCount: must be a non-negative integer"),
        (0, -5, 20, "upgradedInstanceCount: must be a non-negative integer"),
        (6, 5, 20, r"failedInstanceCount: must not exceed upgradedInstanceCount \(5\)"),
        (1, 5, 101, "maxUnhealthyUpgradedInstancePercent: must be an integer between 0 and 100"),
    ],
)
def test_upgraded_breach_rejects_bad_input(
    failed: int, upgraded: int, percent: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        upgraded_breach(failed, upgraded, percent)


def test_instance_number() -> None:
    assert instance_number("0") == 0
    assert instance_number("42") == 42
    with pytest.raises(ValueError, match=r"instanceId: must be a decimal instance id"):
        instance_number("4 2")
    with pytest.raises(ValueError, match=r"properties\.instanceIds"):
        instance_number("+4", "properties.instanceIds")
