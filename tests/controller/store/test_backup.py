"""The controller's database: private on disk, and backed up consistently
while it is being written (``kvmss controller backup``)."""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
import threading
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from controller.store.backup import BackupError, backup
from controller.store.facade import HostRecord, Store
from kvmss.base.clock import FakeClock
from kvmss.cli.main import main

TOKEN = "agent-token-must-stay-private"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_database_and_its_wal_are_created_0600_and_a_loose_one_is_tightened(
    tmp_path: Path,
) -> None:
    db = tmp_path / "kvmss.db"
    store = Store.open(f"sqlite:///{db}", clock=FakeClock())
    store.hosts.add(HostRecord(name="h1", url="http://10.0.0.1:8090", token=TOKEN, registered_at=1))
    assert _mode(db) == 0o600
    assert _mode(tmp_path / "kvmss.db-wal") == 0o600
    store.close()
    db.chmod(0o644)
    Store.open(f"sqlite:///{db}", clock=FakeClock()).close()
    assert _mode(db) == 0o600


def test_backup_while_writing_is_one_consistent_committed_state(tmp_path: Path) -> None:
    db = tmp_path / "kvmss.db"
    store = Store.open(f"sqlite:///{db}", clock=FakeClock())
    base = HostRecord(name="h0", url="http://10.0.0.1:8090", token=TOKEN, registered_at=1)
    stop = threading.Event()
    written: list[int] = []

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            store.hosts.add(dataclasses.replace(base, name=f"h{i}"))
            written.append(i)

    t = threading.Thread(target=writer)
    t.start()
    try:
        while len(written) < 20:
            threading.Event().wait(0.01)
        result = backup(db, tmp_path / "copy.db")
        after = len(written)
    finally:
        stop.set()
        t.join()
        store.close()
    assert _mode(result.path) == 0o600
    assert not (tmp_path / "copy.db.part").exists()
    copy = sqlite3.connect(result.path)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    names = {n for (n,) in copy.execute("SELECT name FROM hosts")}
    copy.close()
    # A prefix of the writes: h1..hN with no gap, at least what was committed before.
    numbers = sorted(int(n[1:]) for n in names)
    assert numbers == list(range(1, len(numbers) + 1))
    assert 20 <= len(numbers) <= after + 1
    assert result.tables >= 5


def test_backup_refuses_bad_targets_and_leaves_nothing(tmp_path: Path) -> None:
    db = tmp_path / "kvmss.db"
    Store.open(f"sqlite:///{db}", clock=FakeClock()).close()
    with pytest.raises(BackupError, match="does not exist"):
        backup(tmp_path / "nope.db", tmp_path / "out.db")
    with pytest.raises(BackupError, match="database itself"):
        backup(db, db)
    with pytest.raises(BackupError, match="is a directory"):
        backup(db, tmp_path)
    with pytest.raises(BackupError, match="output directory"):
        backup(db, tmp_path / "missing" / "out.db")
    not_db = tmp_path / "not.db"
    not_db.write_text("hello, not sqlite " * 100)
    with pytest.raises(BackupError, match="failed"):
        backup(not_db, tmp_path / "out.db")
    assert not (tmp_path / "out.db").exists()
    assert not (tmp_path / "out.db.part").exists()


def test_cli_backup_reads_the_database_from_the_config(tmp_path: Path) -> None:
    db = tmp_path / "state" / "kvmss.db"
    db.parent.mkdir()
    Store.open(f"sqlite:///{db}", clock=FakeClock()).close()
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(yaml.safe_dump({"token": "x" * 32, "database": str(db)}))
    out = tmp_path / "backup.db"
    r = CliRunner().invoke(main, ["controller", "backup", str(out), "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "backed up" in r.output and str(out) in r.output
    assert out.is_file()
    bad = CliRunner().invoke(
        main, ["controller", "backup", str(out), "--config", str(tmp_path / "none.yaml")]
    )
    assert bad.exit_code != 0
    assert "cannot read" in bad.output and "Traceback" not in bad.output
