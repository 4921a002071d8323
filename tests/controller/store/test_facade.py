"""controller.store.facade against a real SQLite file."""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.store.facade import (
    AlreadyExists,
    Conflict,
    HostRecord,
    IllegalTransition,
    ImageRecord,
    ImageRef,
    InstanceRecord,
    NotFound,
    Store,
    StoreError,
    UpgradeInstanceRecord,
    UpgradeRecord,
    instance_name,
    new_upgrade_id,
)
from controller.store.states import (
    ProvisioningState,
    StartedBy,
    UpgradeInstanceState,
    UpgradeStatus,
)
from kvmss.base.clock import FakeClock

DAY = 86400.0
SHA = "ab" * 32
TARGET = ImageRef("kvmss", "tiny", "busybox", "1.2.3")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'kvmss.db'}"


@pytest.fixture
def store(url: str, clock: FakeClock) -> Iterator[Store]:
    s = Store.open(url, clock=clock)
    yield s
    s.close()


def _image(version: str = "1.0.0", **kw: object) -> ImageRecord:
    rec = ImageRecord(
        publisher="kvmss",
        offer="tiny",
        sku="busybox",
        version=version,
        sha256=SHA,
        size_bytes=1 << 20,
        virtual_size=1 << 30,
        path=Path(f"/blobs/{SHA}.qcow2"),
        published_at=1000.0,
    )
    return dataclasses.replace(rec, **kw)  # type: ignore[arg-type]


def _instance(scale_set: str, instance_id: str, **kw: object) -> InstanceRecord:
    rec = InstanceRecord(
        scale_set=scale_set,
        instance_id=instance_id,
        name=instance_name(scale_set, instance_id),
        host="host1",
        update_domain=int(instance_id) % 5,
        fault_domain=0,
        image_version="1.0.0",
        state=ProvisioningState.CREATING,
    )
    return dataclasses.replace(rec, **kw)  # type: ignore[arg-type]


def _upgrade(scale_set: str, start: float, **kw: object) -> UpgradeRecord:
    rec = UpgradeRecord(
        id=new_upgrade_id(),
        scale_set=scale_set,
        started_by=StartedBy.PLATFORM,
        target=TARGET,
        status=UpgradeStatus.ROLLING_FORWARD,
        start_time=start,
        policy={"maxBatchInstancePercent": 20, "pauseTimeBetweenBatches": "PT0S"},
        batches=[["0", "1"], ["2"]],
    )
    return dataclasses.replace(rec, **kw)  # type: ignore[arg-type]


# --- opening -----------------------------------------------------------------


def test_open_creates_schema_in_wal_mode(url: str, tmp_path: Path) -> None:
    with Store.open(url) as s:
        assert s.schema_version() == 1
    db = sqlite3.connect(tmp_path / "kvmss.db")
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        db.close()
    assert {
        "images",
        "hosts",
        "scale_sets",
        "instances",
        "upgrades",
        "upgrade_instances",
        "decision_log",
        "schema_version",
    } <= tables


def test_open_refuses_a_newer_schema(url: str, tmp_path: Path) -> None:
    Store.open(url).close()
    db = sqlite3.connect(tmp_path / "kvmss.db")
    db.execute("UPDATE schema_version SET version = 99")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema_version: the database is at version 99"):
        Store.open(url)


@pytest.mark.parametrize("bad", ["sqlite://", "sqlite:///:memory:"])
def test_open_refuses_in_memory_sqlite(bad: str) -> None:
    with pytest.raises(StoreError, match="SQLite needs a file path"):
        Store.open(bad)


def test_open_errors_never_show_the_url_password() -> None:
    with pytest.raises(StoreError, match="cannot use backend 'nosuch'") as ei:
        Store.open("nosuch://admin:hunter2@db.example/kvmss")
    assert "hunter2" not in str(ei.value)


def test_open_names_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        Store.open(f"sqlite:///{tmp_path / 'nope' / 'kvmss.db'}")


def test_data_survives_close_and_open(url: str, clock: FakeClock) -> None:
    s = Store.open(url, clock=clock)
    s.images.add(_image())
    s.scale_sets.put("web", {"sku": {"capacity": 2}}, None)
    s.close()
    s2 = Store.open(url, clock=clock)
    try:
        assert s2.images.get("kvmss", "tiny", "busybox", "1.0.0") == _image()
        got = s2.scale_sets.get("web")
        assert got is not None and got.body == {"sku": {"capacity": 2}} and got.generation == 1
    finally:
        s2.close()


def test_two_stores_on_one_file_see_each_others_writes(url: str, clock: FakeClock) -> None:
    # A restarted controller (or a second replica) opens the same database.
    a = Store.open(url, clock=clock)
    b = Store.open(url, clock=clock)
    try:
        a.scale_sets.put("web", {"v": 1}, None)
        assert b.scale_sets.put("web", {"v": 2}, expected_generation=1) == 2
        with pytest.raises(Conflict):
            a.scale_sets.put("web", {"v": 3}, expected_generation=1)
        got = a.scale_sets.get("web")
        assert got is not None and got.body == {"v": 2}
        up = _upgrade("web", clock.now())
        a.upgrades.create(up)
        assert b.upgrades.running("web") == up
        with pytest.raises(Conflict):
            b.upgrades.create(_upgrade("web", clock.now()))
        assert b.upgrades.request_cancel("web")
        running = a.upgrades.get(up.id)
        assert running is not None and running.cancel_requested
    finally:
        a.close()
        b.close()


# --- images ------------------------------------------------------------------


def test_image_crud(store: Store) -> None:
    full = _image(
        "2.0.0",
        kernel_path=Path("/blobs/k"),
        kernel_sha256="cd" * 32,
        initrd_path=Path("/blobs/i"),
        initrd_sha256="ef" * 32,
        cmdline="console=ttyS0",
    )
    store.images.add(_image("1.0.0"))
    store.images.add(full)
    store.images.add(_image("1.0.0", sku="other"))
    assert store.images.get("kvmss", "tiny", "busybox", "2.0.0") == full
    assert store.images.get("kvmss", "tiny", "busybox", "3.0.0") is None
    with pytest.raises(AlreadyExists, match=r"image kvmss/tiny/busybox/1\.0\.0: already exists"):
        store.images.add(_image("1.0.0", sha256="00" * 32))
    assert len(store.images.matching()) == 3
    assert {r.version for r in store.images.matching("kvmss", "tiny", "busybox")} == {
        "1.0.0",
        "2.0.0",
    }
    assert [r.sku for r in store.images.matching(sku="other")] == ["other"]
    assert store.images.matching(publisher="nobody") == []
    store.images.delete("kvmss", "tiny", "busybox", "1.0.0")
    assert store.images.get("kvmss", "tiny", "busybox", "1.0.0") is None
    with pytest.raises(NotFound, match=r"image kvmss/tiny/busybox/1\.0\.0: not found"):
        store.images.delete("kvmss", "tiny", "busybox", "1.0.0")


# --- hosts -------------------------------------------------------------------


def test_host_crud_and_token_never_in_repr(store: Store) -> None:
    h = HostRecord(name="host1", url="http://10.0.0.1:8700", token="s3cret-token", registered_at=5)
    store.hosts.add(h)
    store.hosts.add(dataclasses.replace(h, name="host0"))
    assert store.hosts.get("host1") == h
    assert [x.name for x in store.hosts.all()] == ["host0", "host1"]
    with pytest.raises(AlreadyExists, match="host 'host1'"):
        store.hosts.add(h)
    assert "s3cret-token" not in repr(store.hosts.all())
    store.hosts.delete("host1")
    assert store.hosts.get("host1") is None
    with pytest.raises(NotFound, match="host 'host1': not found"):
        store.hosts.delete("host1")


# --- scale sets --------------------------------------------------------------


def test_scale_set_generations_and_cas(store: Store, clock: FakeClock) -> None:
    assert store.scale_sets.put("web", {"v": 1}, None) == 1
    created = clock.now()
    clock.advance(10)
    assert store.scale_sets.put("web", {"v": 2}, None) == 2
    assert store.scale_sets.put("web", {"v": 3}, expected_generation=2) == 3
    with pytest.raises(Conflict, match="scale set 'web': generation is 3, expected 2"):
        store.scale_sets.put("web", {"v": 4}, expected_generation=2)
    with pytest.raises(Conflict, match="generation is 3"):
        store.scale_sets.put("web", {"v": 4}, expected_generation=0)
    got = store.scale_sets.get("web")
    assert got is not None
    assert (got.body, got.generation) == ({"v": 3}, 3)
    assert got.created_at == created
    assert got.updated_at == created + 10
    # 0 = create only; n > 0 on a missing scale set is NotFound.
    assert store.scale_sets.put("api", {"v": 1}, expected_generation=0) == 1
    with pytest.raises(NotFound, match="scale set 'db'"):
        store.scale_sets.put("db", {"v": 1}, expected_generation=4)
    assert store.scale_sets.get("db") is None
    assert [s.name for s in store.scale_sets.all()] == ["api", "web"]


def test_scale_set_body_stays_out_of_repr(store: Store) -> None:
    store.scale_sets.put("web", {"osProfile": {"customData": "cGFzc3dvcmQ="}}, None)
    got = store.scale_sets.get("web")
    assert got is not None
    assert got.body["osProfile"]["customData"] == "cGFzc3dvcmQ="
    assert "cGFzc3dvcmQ=" not in repr(got)


def test_scale_set_cas_loses_no_update_under_threads(store: Store) -> None:
    store.scale_sets.put("web", {"n": 0}, None)
    per_thread = 15

    def bump() -> None:
        done = 0
        while done < per_thread:
            cur = store.scale_sets.get("web")
            assert cur is not None
            try:
                store.scale_sets.put("web", {"n": cur.body["n"] + 1}, cur.generation)
            except Conflict:
                continue
            done += 1

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = store.scale_sets.get("web")
    assert got is not None
    assert got.body == {"n": 4 * per_thread}
    assert got.generation == 4 * per_thread + 1


def test_delete_scale_set(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    store.instances.add(_instance("web", "0"))
    up = _upgrade("web", clock.now())
    store.upgrades.create(up)
    store.decisions.log(up.id, clock.now(), None, "start", "started")
    with pytest.raises(Conflict, match="scale set 'web': still has 1 instances"):
        store.scale_sets.delete("web")
    store.instances.delete("web", "0")
    with pytest.raises(Conflict, match="generation is 1, expected 7"):
        store.scale_sets.delete("web", expected_generation=7)
    store.scale_sets.delete("web", expected_generation=1)
    assert store.scale_sets.get("web") is None
    # Its upgrades and their logs went with it (foreign keys are on).
    assert store.upgrades.get(up.id) is None
    assert store.decisions.of(up.id) == []
    with pytest.raises(NotFound):
        store.scale_sets.delete("web")


# --- instances ---------------------------------------------------------------


def test_instance_crud(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    for iid in ("10", "2", "0", "1"):
        stored = store.instances.add(_instance("web", iid))
        assert stored.updated_at == clock.now()
    assert [i.instance_id for i in store.instances.of("web")] == ["0", "1", "2", "10"]
    assert store.instances.of("other") == []
    with pytest.raises(AlreadyExists, match="instance 'web'/2"):
        store.instances.add(_instance("web", "2"))
    with pytest.raises(NotFound, match="scale set 'nope'"):
        store.instances.add(_instance("nope", "0"))
    with pytest.raises(ValueError, match="instance_id: '01'"):
        store.instances.add(_instance("web", "01"))

    clock.advance(5)
    assert store.instances.update("web", "2", state="Running", image_version="1.1.0")
    got = store.instances.get("web", "2")
    assert got is not None
    assert (got.state, got.image_version, got.updated_at) == ("Running", "1.1.0", clock.now())

    # Compare-and-swap on state.
    assert not store.instances.update("web", "2", expected_state="Creating", state="Failed")
    assert store.instances.update("web", "2", expected_state="Running", state="NeedsAttention")
    got = store.instances.get("web", "2")
    assert got is not None and got.state == "NeedsAttention"
    with pytest.raises(ValueError, match="state: 'Deleting' is not one of"):
        store.instances.update("web", "2", state="Deleting")

    with pytest.raises(NotFound, match="instance 'web'/99: not found"):
        store.instances.update("web", "99", state="Running")
    with pytest.raises(ValueError, match="zone: not an updatable field"):
        store.instances.update("web", "2", zone="other")
    store.instances.delete("web", "2")
    assert store.instances.get("web", "2") is None
    with pytest.raises(NotFound):
        store.instances.delete("web", "2")


# --- upgrades ----------------------------------------------------------------


def test_upgrade_roundtrip_and_one_running_per_scale_set(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    store.scale_sets.put("api", {}, None)
    first = _upgrade("web", clock.now())
    store.upgrades.create(first)
    assert store.upgrades.get(first.id) == first
    assert store.upgrades.running("web") == first
    assert store.upgrades.running("api") is None

    with pytest.raises(
        Conflict, match=f"'web': a rolling upgrade is already running \\({first.id}"
    ):
        store.upgrades.create(_upgrade("web", clock.now()))
    with pytest.raises(AlreadyExists):
        store.upgrades.create(dataclasses.replace(first, status=UpgradeStatus.COMPLETED))
    other = _upgrade("api", clock.now())
    store.upgrades.create(other)  # another scale set is independent
    # A finished one may sit beside the running one.
    store.upgrades.create(_upgrade("web", clock.now() - 10, status="Faulted"))
    with pytest.raises(NotFound, match="scale set 'nope'"):
        store.upgrades.create(_upgrade("nope", clock.now()))
    with pytest.raises(ValueError, match="status: 'Running' is not one of"):
        store.upgrades.create(_upgrade("web", clock.now(), status="Running"))

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
    second = _upgrade("web", clock.now())
    store.upgrades.create(second)
    # An ended upgrade never runs again (controller.store.states).
    with pytest.raises(IllegalTransition, match="Completed -> RollingForward"):
        store.upgrades.update(
            first.id, expected_status=UpgradeStatus.COMPLETED, status=UpgradeStatus.ROLLING_FORWARD
        )


def test_request_cancel(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    assert not store.upgrades.request_cancel("web")
    up = _upgrade("web", clock.now())
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
        rec = _upgrade(name, 0.0)
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
        store.upgrades.create(_upgrade("web", start, status=status))
    store.upgrades.create(_upgrade("api", now - 10))

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


# --- upgrade instances ---------------------------------------------------------


def test_upgrade_instances_and_cas(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    up = _upgrade("web", clock.now())
    store.upgrades.create(up)
    store.upgrade_instances.add(
        [
            UpgradeInstanceRecord(up.id, "10", batch=1),
            UpgradeInstanceRecord(up.id, "2", batch=0, from_version="1.0.0"),
            UpgradeInstanceRecord(up.id, "1", batch=1),
            UpgradeInstanceRecord(
                up.id, "0", batch=0, state=UpgradeInstanceState.SKIPPED, reason="on target"
            ),
        ]
    )
    got = store.upgrade_instances.of(up.id)
    assert [(r.batch, r.instance_id) for r in got] == [(0, "0"), (0, "2"), (1, "1"), (1, "10")]
    assert got[0].state == "Skipped" and got[0].reason == "on target"
    assert got[1] == UpgradeInstanceRecord(up.id, "2", batch=0, from_version="1.0.0")

    assert store.upgrade_instances.update(
        up.id,
        "2",
        UpgradeInstanceState.PENDING,
        state=UpgradeInstanceState.REIMAGING,
        operation_id="op-1",
        started_at=10.0,
    )
    # A second worker that still thinks it is Pending loses.
    assert not store.upgrade_instances.update(
        up.id, "2", UpgradeInstanceState.PENDING, state=UpgradeInstanceState.REIMAGING
    )
    assert store.upgrade_instances.update(
        up.id,
        "2",
        UpgradeInstanceState.REIMAGING,
        state=UpgradeInstanceState.WAITING_HEALTH,
        deadline=310.0,
    )
    assert store.upgrade_instances.update(up.id, "2", None, reason="no CAS")
    row = next(r for r in store.upgrade_instances.of(up.id) if r.instance_id == "2")
    assert (row.state, row.operation_id, row.started_at, row.deadline, row.reason) == (
        "WaitingHealth",
        "op-1",
        10.0,
        310.0,
        "no CAS",
    )

    with pytest.raises(NotFound, match="instance 99: not found"):
        store.upgrade_instances.update(
            up.id, "99", UpgradeInstanceState.PENDING, state=UpgradeInstanceState.REIMAGING
        )
    with pytest.raises(ValueError, match="state: 'Exploded' is not one of"):
        store.upgrade_instances.update(up.id, "2", None, state="Exploded")
    with pytest.raises(AlreadyExists):
        store.upgrade_instances.add(
            [UpgradeInstanceRecord(up.id, "3", 2), UpgradeInstanceRecord(up.id, "2", 2)]
        )
    # All or none: "3" was not added either.
    assert "3" not in {r.instance_id for r in store.upgrade_instances.of(up.id)}
    with pytest.raises(NotFound, match="upgrade nope: not found"):
        store.upgrade_instances.add([UpgradeInstanceRecord("nope", "0", 0)])


# --- decision log ----------------------------------------------------------------


def test_decision_log(store: Store, clock: FakeClock) -> None:
    store.scale_sets.put("web", {}, None)
    a = _upgrade("web", clock.now())
    b = _upgrade("web", clock.now(), status="Completed")
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
