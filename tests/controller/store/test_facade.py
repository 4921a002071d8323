"""controller.store.facade: opening the store, its schema, what survives a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from controller.store.facade import (
    Conflict,
    Store,
    StoreError,
)
from kvmss.base.clock import FakeClock
from tests.controller.store.builders import an_image, an_upgrade


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
    s.images.add(an_image())
    s.scale_sets.put("web", {"sku": {"capacity": 2}}, None)
    s.close()
    s2 = Store.open(url, clock=clock)
    try:
        assert s2.images.get("kvmss", "tiny", "busybox", "1.0.0") == an_image()
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
        up = an_upgrade("web", clock.now())
        a.upgrades.create(up)
        assert b.upgrades.running("web") == up
        with pytest.raises(Conflict):
            b.upgrades.create(an_upgrade("web", clock.now()))
        assert b.upgrades.request_cancel("web")
        running = a.upgrades.get(up.id)
        assert running is not None and running.cancel_requested
    finally:
        a.close()
        b.close()
