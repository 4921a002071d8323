"""The controller's persistent state: one repository per table over SQLAlchemy
Core, opened together.

SQLite (one file, ``sqlite:///path``) is the default; PostgreSQL can serve
later without touching callers: nothing depends on SQLite beyond the
connection set-up in :func:`controller.store.engine.sqlite_engine`.

Rules every repository follows:

- Every write is one short transaction. On SQLite a write transaction starts
  with ``BEGIN IMMEDIATE``, so two writers queue instead of one failing when
  it upgrades a read lock; reads see one snapshot (WAL mode, so reads never
  wait for a writer).
- The reads every API call and upgrade step makes are one statement each,
  compiled once per dialect (:mod:`controller.store.queries`) and run on the
  DBAPI connection itself (docs/performance-notes.md, "Store reads").
- Compare-and-swap updates (Nova's ``expected_task_state``) are a single
  ``UPDATE ... WHERE <key> AND <expected value>`` whose row count says
  whether it applied, so they are atomic on any database.
- One running upgrade per scale set is a partial unique index, enforced by
  the database itself, so two controllers racing cannot both start one.
- Records go in and come out as frozen dataclasses; no SQLAlchemy object
  leaves the store. Secrets (a host's token, a scale set body with its
  customData) are kept out of the records' reprs and out of every message.

Foreign keys: instances, upgrades, upgrade instances and decisions belong to
their scale set / upgrade. Deleting a scale set deletes its upgrades (and
their instances and decisions) but is refused (:class:`Conflict`) while it
still has instances: the instance rows are how the controller finds the VMs
to remove from their hosts.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import Engine, create_engine, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from controller.store.engine import Database, sqlite_engine
from controller.store.hosts import Hosts
from controller.store.images import Images
from controller.store.instances import Instances
from controller.store.records import (
    AlreadyExists,
    Conflict,
    Decision,
    HostRecord,
    IllegalTransition,
    ImageRecord,
    ImageRef,
    InstanceRecord,
    NotFound,
    ScaleSetRecord,
    StoreError,
    UpgradeInstanceRecord,
    UpgradeRecord,
    instance_name,
    new_upgrade_id,
)
from controller.store.scalesets import ScaleSets
from controller.store.schema import metadata, schema_version_table
from controller.store.upgradeinstances import UpgradeInstances
from controller.store.upgrades import Decisions, Upgrades
from kvmss.base.clock import Clock, SystemClock

__all__ = [
    "AlreadyExists", "Conflict", "Decision", "HostRecord", "IllegalTransition", "ImageRecord",
    "ImageRef", "InstanceRecord", "NotFound", "ScaleSetRecord", "Store", "StoreError",
    "UpgradeInstanceRecord", "UpgradeRecord", "instance_name", "new_upgrade_id",
]  # fmt: skip

SCHEMA_VERSION: Final = 1


class Store:
    """The controller's state, a repository per table, all on one
    :class:`~controller.store.engine.Database`. Thread-safe: one engine, a
    connection per call."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self.clock = clock
        self._db = db = Database(engine, clock)
        self.images = Images(db)
        self.hosts = Hosts(db)
        self.scale_sets = ScaleSets(db)
        self.instances = Instances(db)
        self.upgrades = Upgrades(db)
        self.upgrade_instances = UpgradeInstances(db)
        self.decisions = Decisions(db)

    def __repr__(self) -> str:
        return f"Store({self._engine.url.render_as_string(hide_password=True)!r})"

    @classmethod
    def open(cls, url: str, *, clock: Clock | None = None) -> Store:
        """Open (and create if needed) the store at ``url``: ``sqlite:///path``
        or a PostgreSQL URL."""
        try:
            backend = make_url(url).get_backend_name()
        except SQLAlchemyError as e:
            raise StoreError(f"store url: cannot be parsed ({type(e).__name__})") from None
        try:
            engine = sqlite_engine(url) if backend == "sqlite" else create_engine(url)
        except ImportError as e:
            raise StoreError(
                f"store url: the database driver for {backend!r} is not installed ({e.name})"
            ) from None
        except SQLAlchemyError as e:
            # Not the url itself in the message: it may hold a password.
            raise StoreError(
                f"store url: cannot use backend {backend!r} ({type(e).__name__})"
            ) from None
        store = cls(engine, clock or SystemClock())
        try:
            store._create_schema()
        except BaseException:
            engine.dispose()
            raise
        return store

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create_schema(self) -> None:
        with self._db.write() as conn:
            metadata.create_all(conn)
            found = conn.execute(select(schema_version_table.c.version)).scalar_one_or_none()
            if found is None:
                conn.execute(insert(schema_version_table).values(id=1, version=SCHEMA_VERSION))
            elif found > SCHEMA_VERSION:
                raise StoreError(
                    f"schema_version: the database is at version {found}, newer than this"
                    f" controller's {SCHEMA_VERSION}; upgrade the controller"
                )

    def schema_version(self) -> int:
        with self._db.read() as conn:
            version: int = conn.execute(select(schema_version_table.c.version)).scalar_one()
            return version
