"""The controller's persistent state: one interface over SQLAlchemy Core.

SQLite (one file, ``sqlite:///path``) is the default; PostgreSQL can serve
later without touching callers, because nothing here depends on SQLite
beyond the connection set-up in :func:`_sqlite_engine`.

Rules every method follows:

- Every write is one short transaction. On SQLite a write transaction starts
  with ``BEGIN IMMEDIATE``, so two writers queue on the busy timeout instead
  of one failing when it upgrades a read lock; reads use a deferred ``BEGIN``
  and see one snapshot (WAL mode, so reads never wait for a writer).
- The reads every API call and upgrade step makes are one statement each,
  built once and compiled once per dialect (:mod:`controller.queries`), and
  run on the DBAPI connection itself (:meth:`Store._rows`): SQLAlchemy's
  per-execution work cost ten times the query.
- Compare-and-swap updates (Nova's ``expected_task_state``) are a single
  ``UPDATE ... WHERE <key> AND <expected value>`` whose row count says
  whether it applied, so they are atomic on any database.
- One running upgrade per scale set is a partial unique index
  (``scale_set WHERE status = 'RollingForward'``), enforced by the database
  itself, so two controllers racing cannot both start one.
- Records go in and come out as frozen dataclasses; no SQLAlchemy object
  leaves this module (records in :mod:`controller.records`,
  tables in :mod:`controller.schema`). Secrets (a host's token, a scale set body with its
  customData) are kept out of the records' reprs and out of every message.

Foreign keys: instances, upgrades, upgrade instances and decisions belong to
their scale set / upgrade. Deleting a scale set deletes its upgrades (and
their instances and decisions) but is refused (:class:`Conflict`) while it
still has instances: the instance rows are how the controller finds the VMs
to remove from their hosts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from controller import queries
from controller.records import (
    AlreadyExists,
    Conflict,
    Decision,
    HostRecord,
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
from controller.schema import (
    RUNNING,
    decision_log_table,
    hosts_table,
    images_table,
    instances_table,
    metadata,
    scale_sets_table,
    schema_version_table,
    upgrade_instances_table,
    upgrades_table,
)
from kvmss.clock import Clock, SystemClock

__all__ = [
    "AlreadyExists", "Conflict", "Decision", "HostRecord", "ImageRecord", "ImageRef",
    "InstanceRecord", "NotFound", "ScaleSetRecord", "Store", "StoreError",
    "UpgradeInstanceRecord", "UpgradeRecord", "instance_name", "new_upgrade_id",
]  # fmt: skip

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_R = TypeVar("_R", bound="DataclassInstance")

SCHEMA_VERSION: Final = 1
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000

UPGRADE_STATUSES: Final = frozenset({"RollingForward", "Cancelled", "Completed", "Faulted"})
STARTED_BY: Final = frozenset({"Platform", "User"})
UPGRADE_INSTANCE_STATES: Final = frozenset(
    {
        "Pending",
        "Reimaging",
        "WaitingHealth",
        "Succeeded",
        "Failed",
        "RollingBack",
        "RolledBack",
        "RollbackFailed",
        "Skipped",
    }
)
HISTORY_LIMIT: Final = 5
HISTORY_MAX_AGE_SECONDS: Final = 60 * 86400

_INSTANCE_ID_RE = re.compile(r"0|[1-9][0-9]{0,17}")


# --- field handling ------------------------------------------------------------

_INSTANCE_UPDATABLE: Final = frozenset(
    {"host", "update_domain", "fault_domain", "image_version", "state"}
)
_UPGRADE_UPDATABLE: Final = frozenset(
    {
        "status",
        "end_time",
        "error_code",
        "error_message",
        "cancel_requested",
        "policy",
        "batches",
        "current_batch",
        "successful_count",
        "failed_count",
        "in_progress_count",
        "pending_count",
        "rolled_back_ok",
        "rolled_back_failed",
        "rollback_error",
    }
)
_UPGRADE_INSTANCE_UPDATABLE: Final = frozenset(
    {
        "batch",
        "state",
        "operation_id",
        "from_version",
        "started_at",
        "deadline",
        "finished_at",
        "reason",
    }
)


def _check_fields(what: str, fields: Mapping[str, Any], allowed: frozenset[str]) -> None:
    if not fields:
        raise ValueError(f"{what}: no fields to update")
    unknown = sorted(set(fields) - allowed)
    if unknown:
        raise ValueError(f"{what}: {unknown[0]}: not an updatable field (use {sorted(allowed)})")


def _check_one_of(what: str, value: str, allowed: frozenset[str]) -> None:
    if value not in allowed:
        raise ValueError(f"{what}: {value!r} is not one of {sorted(allowed)}")


def _check_instance_id(instance_id: str) -> None:
    if not isinstance(instance_id, str) or not _INSTANCE_ID_RE.fullmatch(instance_id):
        raise ValueError(
            f"instance_id: {str(instance_id)[:40]!r} is not a decimal instance id"
            " (1-18 digits, no sign or leading zeros)"
        )


def _dumps(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: cannot be stored as JSON ({type(e).__name__})") from None


def _opt_path(value: str | None) -> Path | None:
    return None if value is None else Path(value)


def _opt_str(value: Path | None) -> str | None:
    return None if value is None else os.fspath(value)


def _record(cls: type[_R], m: Mapping[Any, Any], **override: Any) -> _R:
    """A record from a row whose columns are named as the record's fields."""
    names = (f.name for f in dataclasses.fields(cls))
    return cls(**{n: m[n] for n in names if n not in override}, **override)


def _row(rec: DataclassInstance, **override: Any) -> dict[str, Any]:
    return {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)} | override


def _image_from_row(m: Mapping[Any, Any]) -> ImageRecord:
    return _record(
        ImageRecord,
        m,
        path=Path(m["path"]),
        kernel_path=_opt_path(m["kernel_path"]),
        initrd_path=_opt_path(m["initrd_path"]),
    )


def _image_to_row(rec: ImageRecord) -> dict[str, Any]:
    return _row(
        rec,
        path=os.fspath(rec.path),
        kernel_path=_opt_str(rec.kernel_path),
        initrd_path=_opt_str(rec.initrd_path),
    )


def _upgrade_from_row(m: Mapping[Any, Any]) -> UpgradeRecord:
    target = ImageRef(
        m["target_publisher"], m["target_offer"], m["target_sku"], m["target_version"]
    )
    return _record(
        UpgradeRecord,
        m,
        target=target,
        policy=json.loads(m["policy"]),
        batches=json.loads(m["batches"]),
        cancel_requested=bool(m["cancel_requested"]),
    )


def _upgrade_to_row(rec: UpgradeRecord) -> dict[str, Any]:
    row = _row(
        rec,
        target_publisher=rec.target.publisher,
        target_offer=rec.target.offer,
        target_sku=rec.target.sku,
        target_version=rec.target.version,
        policy=_dumps(rec.policy, "policy"),
        batches=_dumps(rec.batches, "batches"),
    )
    del row["target"]
    return row


def _instance_sort_key(rec: InstanceRecord | UpgradeInstanceRecord) -> tuple[int, str]:
    return (len(rec.instance_id), rec.instance_id)  # numeric order of canonical decimals


# --- engine --------------------------------------------------------------------

_WRITE_OPTION: Final = "kvmss_write"


def _sqlite_engine(url: str) -> Engine:
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


class Store:
    """The controller's state. Thread-safe: one engine, a connection per call."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self.clock = clock
        self._plans: dict[int, queries.Plan] = {}

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
            engine = _sqlite_engine(url) if backend == "sqlite" else create_engine(url)
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
        with self._write() as conn:
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
        with self._read() as conn:
            version: int = conn.execute(select(schema_version_table.c.version)).scalar_one()
            return version

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn.execution_options(**{_WRITE_OPTION: True})
            with conn.begin():
                yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def _rows(self, stmt: Select[Any], **params: Any) -> list[tuple[Any, ...]]:
        """The rows of one read statement (a module constant: plans are kept
        by identity), run on the DBAPI connection: one statement is one
        snapshot on its own."""
        plan = self._plans.get(id(stmt))
        if plan is None:
            plan = self._plans[id(stmt)] = queries.Plan.of(stmt, self._engine.dialect)
        values = plan.parameters(params)
        dbapi = self._engine.raw_connection()
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

    def _maps(self, stmt: Select[Any], **params: Any) -> list[dict[str, Any]]:
        """:meth:`_rows` as column name -> value."""
        plan_columns = tuple(str(c.key) for c in stmt.selected_columns)
        return [dict(zip(plan_columns, r, strict=True)) for r in self._rows(stmt, **params)]

    # --- images ----------------------------------------------------------------

    def add_image(self, rec: ImageRecord) -> None:
        try:
            with self._write() as conn:
                conn.execute(insert(images_table).values(**_image_to_row(rec)))
        except IntegrityError:
            raise AlreadyExists(f"image {rec.ref}: already exists") from None

    def _image_key(self, publisher: str, offer: str, sku: str, version: str) -> Any:
        t = images_table.c
        return and_(t.publisher == publisher, t.offer == offer, t.sku == sku, t.version == version)

    def get_image(self, publisher: str, offer: str, sku: str, version: str) -> ImageRecord | None:
        rows = self._maps(queries.IMAGE, p=publisher, o=offer, s=sku, v=version)
        return _image_from_row(rows[0]) if rows else None

    def list_images(
        self, publisher: str | None = None, offer: str | None = None, sku: str | None = None
    ) -> list[ImageRecord]:
        """Images matching the parts given, ordered by publisher, offer, sku
        (versions in no particular order: see :mod:`controller.versions`)."""
        if None not in (publisher, offer, sku):  # a sku's versions: what `latest` reads
            rows = self._maps(queries.IMAGES_OF_SKU, p=publisher, o=offer, s=sku)
            return [_image_from_row(m) for m in rows]
        t = images_table.c
        q = select(images_table).order_by(t.publisher, t.offer, t.sku, t.version)
        if publisher is not None:
            q = q.where(t.publisher == publisher)
        if offer is not None:
            q = q.where(t.offer == offer)
        if sku is not None:
            q = q.where(t.sku == sku)
        with self._read() as conn:
            return [_image_from_row(m) for m in conn.execute(q).mappings()]

    def delete_image(self, publisher: str, offer: str, sku: str, version: str) -> None:
        with self._write() as conn:
            res = conn.execute(
                delete(images_table).where(self._image_key(publisher, offer, sku, version))
            )
        if res.rowcount == 0:
            ref = ImageRef(publisher, offer, sku, version)
            raise NotFound(f"image {ref}: not found")

    # --- hosts -----------------------------------------------------------------

    def add_host(self, rec: HostRecord) -> None:
        try:
            with self._write() as conn:
                conn.execute(insert(hosts_table).values(**_row(rec)))
        except IntegrityError:
            raise AlreadyExists(f"host {rec.name!r}: already registered") from None

    def get_host(self, name: str) -> HostRecord | None:
        rows = self._maps(queries.HOST, name=name)
        return _record(HostRecord, rows[0]) if rows else None

    def list_hosts(self) -> list[HostRecord]:
        return [_record(HostRecord, m) for m in self._maps(queries.HOSTS)]

    def delete_host(self, name: str) -> None:
        with self._write() as conn:
            res = conn.execute(delete(hosts_table).where(hosts_table.c.name == name))
        if res.rowcount == 0:
            raise NotFound(f"host {name!r}: not found")

    # --- scale sets --------------------------------------------------------------

    def put_scale_set(
        self, name: str, body: Mapping[str, Any], expected_generation: int | None
    ) -> int:
        """Store the model of ``name``; its new generation.

        ``expected_generation``: None creates or replaces whatever is stored;
        0 creates only (:class:`Conflict` if it exists); n > 0 replaces only
        generation n (:class:`Conflict` if another is stored, :class:`NotFound`
        if there is none).
        """
        if expected_generation is not None and expected_generation < 0:
            raise ValueError(f"expected_generation: must be >= 0, got {expected_generation}")
        text = _dumps(dict(body), "body")
        now = self.clock.now()
        t = scale_sets_table.c
        try:
            with self._write() as conn:
                current: int | None = conn.execute(
                    select(t.generation).where(t.name == name).with_for_update()
                ).scalar_one_or_none()
                if current is None:
                    if expected_generation not in (None, 0):
                        raise NotFound(
                            f"scale set {name!r}: not found (expected generation"
                            f" {expected_generation})"
                        )
                    conn.execute(
                        insert(scale_sets_table).values(
                            name=name, body=text, generation=1, created_at=now, updated_at=now
                        )
                    )
                    return 1
                if expected_generation is not None and expected_generation != current:
                    raise Conflict(
                        f"scale set {name!r}: generation is {current}, expected"
                        f" {expected_generation or 'none (create)'}"
                    )
                res = conn.execute(
                    update(scale_sets_table)
                    .where(t.name == name, t.generation == current)
                    .values(body=text, generation=current + 1, updated_at=now)
                )
                if res.rowcount != 1:
                    raise Conflict(f"scale set {name!r}: changed while being written")
                return current + 1
        except IntegrityError:
            # Another controller created it between our read and insert.
            raise Conflict(f"scale set {name!r}: created concurrently") from None

    def get_scale_set(self, name: str) -> ScaleSetRecord | None:
        rows = self._maps(queries.SCALE_SET, name=name)
        if not rows:
            return None
        return _record(ScaleSetRecord, rows[0], body=json.loads(rows[0]["body"]))

    def list_scale_sets(self) -> list[ScaleSetRecord]:
        return [
            _record(ScaleSetRecord, m, body=json.loads(m["body"]))
            for m in self._maps(queries.SCALE_SETS)
        ]

    def delete_scale_set(self, name: str, expected_generation: int | None = None) -> None:
        """Delete the model and its upgrade history; :class:`Conflict` while
        instances remain or when the generation is not ``expected_generation``."""
        t = scale_sets_table.c
        with self._write() as conn:
            current = conn.execute(select(t.generation).where(t.name == name)).scalar_one_or_none()
            if current is None:
                raise NotFound(f"scale set {name!r}: not found")
            if expected_generation is not None and current != expected_generation:
                raise Conflict(
                    f"scale set {name!r}: generation is {current}, expected {expected_generation}"
                )
            left = conn.execute(
                select(func.count())
                .select_from(instances_table)
                .where(instances_table.c.scale_set == name)
            ).scalar_one()
            if left:
                raise Conflict(f"scale set {name!r}: still has {left} instances; delete them first")
            conn.execute(delete(scale_sets_table).where(t.name == name))

    # --- instances ---------------------------------------------------------------

    def add_instance(self, rec: InstanceRecord) -> InstanceRecord:
        """Add an instance; the record as stored (with ``updated_at``)."""
        _check_instance_id(rec.instance_id)
        stored = dataclasses.replace(rec, updated_at=self.clock.now())
        try:
            with self._write() as conn:
                self._require_scale_set(conn, rec.scale_set)
                conn.execute(insert(instances_table).values(**dataclasses.asdict(stored)))
        except IntegrityError:
            raise AlreadyExists(
                f"instance {rec.scale_set!r}/{rec.instance_id}: already exists"
                f" (or the name {rec.name!r} is taken)"
            ) from None
        return stored

    def add_instances(self, recs: list[InstanceRecord]) -> list[InstanceRecord]:
        """Add instances, all or none, in one transaction (a scale-out of
        hundreds is one commit, not hundreds); the records as stored."""
        now = self.clock.now()
        stored = [dataclasses.replace(r, updated_at=now) for r in recs]
        for rec in stored:
            _check_instance_id(rec.instance_id)
        if not stored:
            return stored
        try:
            with self._write() as conn:
                for scale_set in sorted({r.scale_set for r in stored}):
                    self._require_scale_set(conn, scale_set)
                conn.execute(insert(instances_table), [dataclasses.asdict(r) for r in stored])
        except IntegrityError:
            raise AlreadyExists("instances: one already exists (or its name is taken)") from None
        return stored

    def _require_scale_set(self, conn: Connection, name: str) -> None:
        t = scale_sets_table.c
        if conn.execute(select(t.name).where(t.name == name)).first() is None:
            raise NotFound(f"scale set {name!r}: not found")

    def get_instance(self, scale_set: str, instance_id: str) -> InstanceRecord | None:
        rows = self._rows(queries.INSTANCE, scale_set=scale_set, instance_id=instance_id)
        return InstanceRecord(*rows[0]) if rows else None

    def list_instances(self, scale_set: str) -> list[InstanceRecord]:
        """The scale set's instances in numeric instance-id order."""
        out = [InstanceRecord(*r) for r in self._rows(queries.INSTANCES_OF, scale_set=scale_set)]
        return sorted(out, key=_instance_sort_key)

    def instance_counts(self, scale_set: str) -> tuple[int, int]:
        """(instances, instances in state Creating) of the scale set."""
        ((count, creating),) = self._rows(queries.INSTANCE_COUNTS, scale_set=scale_set)
        return int(count), int(creating)

    def update_instance(
        self,
        scale_set: str,
        instance_id: str,
        *,
        expected_state: str | None = None,
        **fields: Any,
    ) -> bool:
        """Update some fields (and ``updated_at``). With ``expected_state`` it
        is a compare-and-swap: False when the stored state differs.
        :class:`NotFound` when there is no such instance."""
        what = f"instance {scale_set!r}/{instance_id}"
        _check_fields(what, fields, _INSTANCE_UPDATABLE)
        t = instances_table.c
        key = and_(t.scale_set == scale_set, t.instance_id == instance_id)
        cond = key if expected_state is None else and_(key, t.state == expected_state)
        with self._write() as conn:
            res = conn.execute(
                update(instances_table).where(cond).values(**fields, updated_at=self.clock.now())
            )
            if res.rowcount == 1:
                return True
            if conn.execute(select(t.state).where(key)).first() is None:
                raise NotFound(f"{what}: not found")
            return False

    def set_instance_states(self, scale_set: str, states: Mapping[str, str]) -> None:
        """Set the state of several instances (instance id -> state) in one
        transaction; ids no longer stored are passed over."""
        if not states:
            return
        t = instances_table.c
        q = (
            update(instances_table)
            .where(t.scale_set == bindparam("k_scale_set"), t.instance_id == bindparam("k_id"))
            .values(state=bindparam("v_state"), updated_at=bindparam("v_at"))
        )
        now = self.clock.now()
        rows = [
            {"k_scale_set": scale_set, "k_id": iid, "v_state": state, "v_at": now}
            for iid, state in states.items()
        ]
        with self._write() as conn:
            conn.execute(q, rows)

    def delete_instance(self, scale_set: str, instance_id: str) -> None:
        t = instances_table.c
        with self._write() as conn:
            res = conn.execute(
                delete(instances_table).where(
                    t.scale_set == scale_set, t.instance_id == instance_id
                )
            )
        if res.rowcount == 0:
            raise NotFound(f"instance {scale_set!r}/{instance_id}: not found")

    # --- upgrades ----------------------------------------------------------------

    def create_upgrade(self, rec: UpgradeRecord) -> None:
        """Record a new upgrade. :class:`Conflict` if ``rec`` is running and
        the scale set already has a running upgrade (DESIGN.md rule 8);
        :class:`NotFound` without the scale set."""
        _check_one_of("status", rec.status, UPGRADE_STATUSES)
        _check_one_of("started_by", rec.started_by, STARTED_BY)
        row = _upgrade_to_row(rec)
        try:
            with self._write() as conn:
                self._require_scale_set(conn, rec.scale_set)
                conn.execute(insert(upgrades_table).values(**row))
        except IntegrityError:
            if self.get_upgrade(rec.id) is not None:
                raise AlreadyExists(f"upgrade {rec.id}: already exists") from None
            running = self.running_upgrade(rec.scale_set)
            raise Conflict(
                f"scale set {rec.scale_set!r}: a rolling upgrade is already running"
                f" ({running.id if running else 'unknown'})"
            ) from None

    def get_upgrade(self, upgrade_id: str) -> UpgradeRecord | None:
        rows = self._maps(queries.UPGRADE, id=upgrade_id)
        return _upgrade_from_row(rows[0]) if rows else None

    def running_upgrade(self, scale_set: str) -> UpgradeRecord | None:
        rows = self._maps(queries.RUNNING_UPGRADE, scale_set=scale_set)
        return _upgrade_from_row(rows[0]) if rows else None

    def running_upgrades(self) -> list[UpgradeRecord]:
        """Every running upgrade, oldest first (what a restarted controller resumes)."""
        return [_upgrade_from_row(m) for m in self._maps(queries.RUNNING_UPGRADES)]

    def update_upgrade(
        self, upgrade_id: str, *, expected_status: str | None, **fields: Any
    ) -> UpgradeRecord:
        """Update some fields of an upgrade; the record as stored afterwards.

        Compare-and-swap on status: :class:`Conflict` when ``expected_status``
        is given and the stored status differs (or when the update would make
        a second running upgrade); :class:`NotFound` without the upgrade.
        """
        what = f"upgrade {upgrade_id}"
        _check_fields(what, fields, _UPGRADE_UPDATABLE)
        if "status" in fields:
            _check_one_of("status", fields["status"], UPGRADE_STATUSES)
        values = dict(fields)
        for name in ("policy", "batches"):
            if name in values:
                values[name] = _dumps(values[name], name)
        t = upgrades_table.c
        cond = t.id == upgrade_id
        if expected_status is not None:
            cond = and_(cond, t.status == expected_status)
        try:
            with self._write() as conn:
                res = conn.execute(update(upgrades_table).where(cond).values(**values))
                row = (
                    conn.execute(select(upgrades_table).where(t.id == upgrade_id))
                    .mappings()
                    .first()
                )
                if row is None:
                    raise NotFound(f"{what}: not found")
                if res.rowcount != 1:
                    raise Conflict(f"{what}: status is {row['status']}, expected {expected_status}")
                return _upgrade_from_row(row)
        except IntegrityError:
            raise Conflict(f"{what}: its scale set already has a running upgrade") from None

    def request_cancel(self, scale_set: str) -> bool:
        """Flag the scale set's running upgrade for cancelling; False when none runs."""
        t = upgrades_table.c
        with self._write() as conn:
            res = conn.execute(
                update(upgrades_table)
                .where(t.scale_set == scale_set, t.status == RUNNING)
                .values(cancel_requested=True)
            )
        return bool(res.rowcount)

    def history(
        self,
        scale_set: str,
        now: float,
        limit: int = HISTORY_LIMIT,
        max_age_seconds: float = HISTORY_MAX_AGE_SECONDS,
    ) -> list[UpgradeRecord]:
        """Upgrades started within ``max_age_seconds`` before ``now``, newest
        first, at most ``limit`` (DESIGN.md rule 11)."""
        if limit < 0:
            raise ValueError(f"limit: must be >= 0, got {limit}")
        rows = self._maps(
            queries.HISTORY, scale_set=scale_set, since=now - max_age_seconds, limit=limit
        )
        return [_upgrade_from_row(m) for m in rows]

    # --- upgrade instances -------------------------------------------------------

    def add_upgrade_instances(self, recs: list[UpgradeInstanceRecord]) -> None:
        """Add the instances of an upgrade's plan, all or none."""
        if not recs:
            return
        for rec in recs:
            _check_instance_id(rec.instance_id)
            _check_one_of("state", rec.state, UPGRADE_INSTANCE_STATES)
        try:
            with self._write() as conn:
                for upgrade_id in sorted({r.upgrade_id for r in recs}):
                    t = upgrades_table.c
                    if conn.execute(select(t.id).where(t.id == upgrade_id)).first() is None:
                        raise NotFound(f"upgrade {upgrade_id}: not found")
                conn.execute(insert(upgrade_instances_table), [dataclasses.asdict(r) for r in recs])
        except IntegrityError:
            raise AlreadyExists(
                "upgrade instances: an instance is already part of its upgrade"
            ) from None

    def list_upgrade_instances(self, upgrade_id: str) -> list[UpgradeInstanceRecord]:
        """The upgrade's instances by batch, then numeric instance id."""
        rows = self._rows(queries.UPGRADE_INSTANCES_OF, upgrade_id=upgrade_id)
        out = [UpgradeInstanceRecord(*r) for r in rows]
        return sorted(out, key=lambda r: (r.batch, *_instance_sort_key(r)))

    def update_upgrade_instance(
        self, upgrade_id: str, instance_id: str, expected_state: str | None, **fields: Any
    ) -> bool:
        """Update some fields; with ``expected_state`` a compare-and-swap that
        returns False when the stored state differs. :class:`NotFound` when
        the instance is not part of the upgrade."""
        what = f"upgrade {upgrade_id} instance {instance_id}"
        _check_fields(what, fields, _UPGRADE_INSTANCE_UPDATABLE)
        if "state" in fields:
            _check_one_of("state", fields["state"], UPGRADE_INSTANCE_STATES)
        t = upgrade_instances_table.c
        key = and_(t.upgrade_id == upgrade_id, t.instance_id == instance_id)
        cond = key if expected_state is None else and_(key, t.state == expected_state)
        with self._write() as conn:
            res = conn.execute(update(upgrade_instances_table).where(cond).values(**fields))
            if res.rowcount == 1:
                return True
            if conn.execute(select(t.state).where(key)).first() is None:
                raise NotFound(f"{what}: not found")
            return False

    # --- decision log --------------------------------------------------------------

    def log_decision(
        self, upgrade_id: str, time: float, instance_id: str | None, event: str, message: str
    ) -> int:
        """Append to the upgrade's decision log; the entry's sequence number
        (increasing across all upgrades)."""
        if not event or len(event) > 32:
            raise ValueError(f"event: must be 1-32 characters, got {len(event)}")
        try:
            with self._write() as conn:
                res = conn.execute(
                    insert(decision_log_table).values(
                        upgrade_id=upgrade_id,
                        time=time,
                        instance_id=instance_id,
                        event=event,
                        message=message,
                    )
                )
                key = res.inserted_primary_key
        except IntegrityError:
            raise NotFound(f"upgrade {upgrade_id}: not found") from None
        assert key is not None
        return int(key[0])

    def decisions(self, upgrade_id: str) -> list[Decision]:
        """The upgrade's decision log, oldest first."""
        return [Decision(*r) for r in self._rows(queries.DECISIONS_OF, upgrade_id=upgrade_id)]
