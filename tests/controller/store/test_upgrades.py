"""The upgrades repository (one running per scale set) and the decision log."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from controller.store.facade import (
    AlreadyExists,
    Conflict,
    IllegalTransition,
    NotFound,
    Store,
)
from controller.store.states import (
    UpgradeStatus,
)
from kvmss.base.clock import FakeClock
from tests.controller.store.builders import DAY, TARGET, an_upgrade


def test_upgrade_roundtrip_and_one_running_per_scale_set(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    store.scale_sets.put("api", {}, None)
    first = an_upgrade("web", clock.now())
    store.upgrades.create(first)
    assert store.upgrades.get(first.id) == first
    assert store.upgrades.running("web") == first
    assert store.upgrades.running("api") is None

    with pytest.raises(
        Conflict, match=f"'web': a rolling upgrade is already running \\({first.id}"
    ):
        store.upgrades.create(an_upgrade("web", clock.now()))
    with pytest.raises(AlreadyExists):
        store.upgrades.create(dataclasses.replace(first, status=UpgradeStatus.COMPLETED))
    other = an_upgrade("api", clock.now())
    store.upgrades.create(other)  # another scale set is independent
    # A finished one may sit beside the running one.
    store.upgrades.create(an_upgrade("web", clock.now() - 10, status="Faulted"))
    with pytest.raises(NotFound, match="scale set 'nope'"):
        store.upgrades.create(an_upgrade("nope", clock.now()))
    with pytest.raises(ValueError, match="status: 'Running' is not one of"):
        store.upgrades.create(an_upgrade("web", clock.now(), status="Running"))

    assert {u.id for u in store.upgrades.all_running()} == {first.id, other.id}

    done = store.upgrades.update(
        first.id,
        expected_status=UpgradeStatus.ROLLING_FORWARD,
        status="Completed",
        end_time=clock.now() + 60,
        successful_count=3,
        batches=[["0"], ["1", "2"]],
        policy={"maxBatchInstancePercent": 50},
    )
    assert done.status == "Completed"
    assert done.successful_count == 3
    assert done.batches == [["0"], ["1", "2"]]
    assert done.policy == {"maxBatchInstancePercent": 50}
    assert store.upgrades.get(first.id) == done
    assert store.upgrades.running("web") is None

    with pytest.raises(Conflict, match="status is Completed, expected RollingForward"):
        store.upgrades.update(
            first.id, expected_status=UpgradeStatus.ROLLING_FORWARD, status=UpgradeStatus.FAULTED
        )
    got = store.upgrades.get(first.id)
    assert got is not None and got.status == "Completed"
    with pytest.raises(NotFound):
        store.upgrades.update("no-such-id", expected_status=None, status="Faulted")
    with pytest.raises(ValueError, match="target: not an updatable field"):
        store.upgrades.update(first.id, expected_status=None, target=TARGET)

    # Now a new one may start.
    second = an_upgrade("web", clock.now())
    store.upgrades.create(second)
    # An ended upgrade never runs again (controller.store.states).
    with pytest.raises(IllegalTransition, match="Completed -> RollingForward"):
        store.upgrades.update(
            first.id, expected_status=UpgradeStatus.COMPLETED, status=UpgradeStatus.ROLLING_FORWARD
        )


def test_request_cancel(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    assert not store.upgrades.request_cancel("web")
    up = an_upgrade("web", clock.now())
    store.upgrades.create(up)
    assert store.upgrades.request_cancel("web")
    got = store.upgrades.get(up.id)
    assert got is not None and got.cancel_requested
    store.upgrades.update(
        up.id, expected_status=UpgradeStatus.ROLLING_FORWARD, status=UpgradeStatus.CANCELLED
    )
    assert not store.upgrades.request_cancel("web")


def _race_to_start(
    stores: list[Store], name: str, racers: int
) -> tuple[list[str], list[Exception]]:
    """``racers`` threads start an upgrade of ``name`` at once; ids started, errors."""
    barrier = threading.Barrier(racers)
    won: list[str] = []
    lost: list[Exception] = []

    def start(i: int) -> None:
        rec = an_upgrade(name, 0.0)
        barrier.wait()
        try:
            stores[i % len(stores)].upgrades.create(rec)
            won.append(rec.id)
        except Exception as e:  # every outcome is asserted by the caller
            lost.append(e)

    threads = [threading.Thread(target=start, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, lost


@pytest.mark.parametrize("n_stores", [1, 4])
def test_one_running_upgrade_when_threads_race(url: str, clock: FakeClock, n_stores: int) -> None:
    # One store shared by threads, or four (four controllers on one database).
    stores = [Store.open(url, clock=clock) for _ in range(n_stores)]
    try:
        for rnd in range(5):
            name = f"web{rnd}"
            stores[0].scale_sets.put(name, {}, None)
            won, lost = _race_to_start(stores, name, racers=4)
            assert len(won) == 1, lost
            assert len(lost) == 3 and all(isinstance(e, Conflict) for e in lost), lost
            running = stores[-1].upgrades.running(name)
            assert running is not None and running.id == won[0]
    finally:
        for s in stores:
            s.close()


def test_history_newest_first_limited_and_within_60_days(store: Store) -> None:
    store.scale_sets.put("web", {}, None)
    store.scale_sets.put("api", {}, None)
    now = 100 * DAY
    starts = [now - 61 * DAY, now - 59 * DAY, now - 30 * DAY, now - 3 * DAY, now - 2 * DAY]
    starts += [now - 1 * DAY, now - 3600]
    # Insert out of order; all finished but the last.
    for start in [starts[3], starts[0], starts[6], starts[1], starts[5], starts[2], starts[4]]:
        status = "RollingForward" if start == starts[6] else "Completed"
        store.upgrades.create(an_upgrade("web", start, status=status))
    store.upgrades.create(an_upgrade("api", now - 10))

    hist = store.upgrades.history("web", now)
    assert [u.start_time for u in hist] == sorted(starts[2:], reverse=True)
    assert hist[0].status == "RollingForward"
    assert all(u.scale_set == "web" for u in hist)

    everything = store.upgrades.history("web", now, limit=10)
    assert [u.start_time for u in everything] == sorted(starts[1:], reverse=True)  # 61 days: out
    assert [u.start_time for u in store.upgrades.history("web", now, limit=2)] == [
        starts[6],
        starts[5],
    ]
    assert [
        u.start_time for u in store.upgrades.history("web", now, limit=10, max_age_seconds=DAY)
    ] == [
        starts[6],
        starts[5],
    ]
    assert store.upgrades.history("nope", now) == []


def test_decision_log(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    a = an_upgrade("web", clock.now())
    b = an_upgrade("web", clock.now(), status="Completed")
    store.upgrades.create(a)
    store.upgrades.create(b)
    s1 = store.decisions.log(a.id, 1.0, None, "start", "batch size 1")
    store.decisions.log(b.id, 2.0, "0", "skip", "other upgrade")
    s2 = store.decisions.log(a.id, 3.0, "3", "reimage", "instance 3 reimaging")
    assert s2 > s1
    got = store.decisions.of(a.id)
    assert [(d.seq, d.time, d.instance_id, d.event, d.message) for d in got] == [
        (s1, 1.0, None, "start", "batch size 1"),
        (s2, 3.0, "3", "reimage", "instance 3 reimaging"),
    ]
    assert len(store.decisions.of(b.id)) == 1
    with pytest.raises(NotFound, match="upgrade nope"):
        store.decisions.log("nope", 1.0, None, "start", "x")
    with pytest.raises(ValueError, match="event: must be 1-32 characters"):
        store.decisions.log(a.id, 1.0, None, "", "x")
