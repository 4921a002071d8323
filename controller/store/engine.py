"""The store's engine: SQLite set-up (or another SQLAlchemy URL's), and the
transactions and planned reads every repository runs on."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, Select, create_engine, event, select
from sqlalchemy.engine import make_url

from controller.store import queries
from controller.store.records import NotFound, StoreError
from controller.store.schema import scale_sets_table
from kvmss.base.clock import Clock

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000

_WRITE_OPTION: Final = "kvmss_write"


def sqlite_engine(url: str) -> Engine:
    u = make_url(url)
    db = u.database
    if not db or db == ":memory:" or db.startswith("file:"):
        raise StoreError(
            f"store url {u.render_as_string(hide_password=True)}: SQLite needs a file path"
            " (sqlite:///path/to/kvmss.db); an in-memory database is not shared between"
            " connections"
        )
    parent = Path(db).absolute().parent
    if not parent.is_dir():
        raise StoreError(f"store url: directory {parent} does not exist")
    _private_file(Path(db))
    # A connection per concurrent caller (the API's worker threads and the
    # background threads) instead of queueing them on SQLAlchemy's default 5 + 10.
    engine = create_engine(url, pool_size=16, max_overflow=48)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's own is deferred and late).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA foreign_keys = ON")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


def _private_file(db: Path) -> None:
    """The database holds agent tokens: create it 0600 (SQLite gives its -wal
    and -shm files the database file's mode), and tighten an older, looser one."""
    try:
        fd = os.open(db, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise StoreError(f"store url: cannot open {db}: {e.strerror}") from None
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


class Database:
    """The engine and the clock, with the transactions and reads built on
    them; every repository is given the one of its store. Thread-safe: one
    engine, a connection per call."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self._plans: dict[int, queries.Plan] = {}
        # Writers of this process queue on a lock, woken the moment the last
        # one commits, instead of SQLite's busy polling (docs/performance-notes.md,
        # "Store writes"); the busy timeout still covers other processes.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        with self._write_lock, self.engine.connect() as conn:
            conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    def rows(self, stmt: Select[Any], **params: Any) -> list[tuple[Any, ...]]:
        """The rows of one read statement (a module constant: plans are kept
        by identity), run on the DBAPI connection: one statement is one
        snapshot on its own."""
        plan = self._plans.get(id(stmt))
        if plan is None:
            plan = self._plans[id(stmt)] = queries.Plan.of(stmt, self.engine.dialect)
        values = plan.parameters(params)
        dbapi = self.engine.raw_connection()
        try:
            cur = dbapi.cursor()
            try:
                cur.execute(plan.sql, values)
                rows: list[tuple[Any, ...]] = list(cur.fetchall())
            finally:
                cur.close()
        finally:
            dbapi.close()  # back to the pool, reset (rolled back) on the way
        procs = plan.results
        if procs is not None:
            rows = [tuple(p(v) if p else v for p, v in zip(procs, r, strict=True)) for r in rows]
        return rows

    def maps(self, stmt: Select[Any], **params: Any) -> list[dict[str, Any]]:
        """:meth:`rows` as column name -> value."""
        plan_columns = tuple(str(c.key) for c in stmt.selected_columns)
        return [dict(zip(plan_columns, r, strict=True)) for r in self.rows(stmt, **params)]

    def require_scale_set(self, conn: Connection, name: str) -> None:
        t = scale_sets_table.c
        if conn.execute(select(t.name).where(t.name == name)).first() is None:
            raise NotFound(f"scale set {name!r}: not found")
