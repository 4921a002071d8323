"""The store's rolling upgrades, the instances of their plans and their
decision logs (one running upgrade per scale set: a partial unique index)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from controller.store import queries
from controller.store.engine import Database
from controller.store.records import (
    AlreadyExists,
    Conflict,
    Decision,
    ImageRef,
    NotFound,
    UpgradeRecord,
)
from controller.store.rows import (
    _check_fields,
    _check_transition,
    _dumps,
    _member,
    _record,
    _row,
)
from controller.store.schema import RUNNING, decision_log_table, upgrades_table
from controller.store.states import UPGRADE_TRANSITIONS, StartedBy, UpgradeStatus

HISTORY_LIMIT: Final = 5
HISTORY_MAX_AGE_SECONDS: Final = 60 * 86400

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


class Upgrades:
    """The ``upgrades`` table (one running upgrade per scale set: a partial unique index)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def create(self, rec: UpgradeRecord) -> None:
        """Record a new upgrade. :class:`Conflict` if ``rec`` is running and
        the scale set already has a running upgrade (docs/design.md rule 8);
        :class:`NotFound` without the scale set."""
        _member(UpgradeStatus, "status", rec.status)
        _member(StartedBy, "started_by", rec.started_by)
        row = _upgrade_to_row(rec)
        try:
            with self._db.write() as conn:
                self._db.require_scale_set(conn, rec.scale_set)
                conn.execute(insert(upgrades_table).values(**row))
        except IntegrityError:
            if self.get(rec.id) is not None:
                raise AlreadyExists(f"upgrade {rec.id}: already exists") from None
            running = self.running(rec.scale_set)
            raise Conflict(
                f"scale set {rec.scale_set!r}: a rolling upgrade is already running"
                f" ({running.id if running else 'unknown'})"
            ) from None

    def get(self, upgrade_id: str) -> UpgradeRecord | None:
        rows = self._db.maps(queries.UPGRADE, id=upgrade_id)
        return _upgrade_from_row(rows[0]) if rows else None

    def running(self, scale_set: str) -> UpgradeRecord | None:
        rows = self._db.maps(queries.RUNNING_UPGRADE, scale_set=scale_set)
        return _upgrade_from_row(rows[0]) if rows else None

    def all_running(self) -> list[UpgradeRecord]:
        """Every running upgrade, oldest first (what a restarted controller resumes)."""
        return [_upgrade_from_row(m) for m in self._db.maps(queries.RUNNING_UPGRADES)]

    def update(
        self, upgrade_id: str, *, expected_status: UpgradeStatus | None, **fields: Any
    ) -> UpgradeRecord:
        """Update some fields of an upgrade; the record as stored afterwards.

        Compare-and-swap on status: :class:`Conflict` when ``expected_status``
        is given and the stored status differs; :class:`NotFound` without the upgrade;
        :class:`IllegalTransition` for a status change
        :data:`~controller.store.states.UPGRADE_TRANSITIONS` does not declare.
        """
        what = f"upgrade {upgrade_id}"
        _check_fields(what, fields, _UPGRADE_UPDATABLE)
        values = dict(fields)
        if "status" in values:
            values["status"] = _member(UpgradeStatus, "status", values["status"])
        for name in ("policy", "batches"):
            if name in values:
                values[name] = _dumps(values[name], name)
        t = upgrades_table.c
        with self._db.write() as conn:
            found = (
                conn.execute(select(upgrades_table).where(t.id == upgrade_id).with_for_update())
                .mappings()
                .first()
            )
            if found is None:
                raise NotFound(f"{what}: not found")
            status = found["status"]
            if expected_status is not None and status != expected_status:
                raise Conflict(f"{what}: status is {status}, expected {expected_status}")
            if "status" in values:
                # (never back to RollingForward: no update makes a second running upgrade)
                _check_transition(UPGRADE_TRANSITIONS, what, status, values["status"])
            conn.execute(update(upgrades_table).where(t.id == upgrade_id).values(**values))
            return _upgrade_from_row({**found, **values})

    def request_cancel(self, scale_set: str) -> bool:
        """Flag the scale set's running upgrade for cancelling; False when none runs."""
        t = upgrades_table.c
        with self._db.write() as conn:
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
        first, at most ``limit`` (docs/design.md rule 11)."""
        if limit < 0:
            raise ValueError(f"limit: must be >= 0, got {limit}")
        rows = self._db.maps(
            queries.HISTORY, scale_set=scale_set, since=now - max_age_seconds, limit=limit
        )
        return [_upgrade_from_row(m) for m in rows]


class Decisions:
    """The ``decision_log`` table: what each upgrade decided, and why."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def log(
        self, upgrade_id: str, time: float, instance_id: str | None, event: str, message: str
    ) -> int:
        """Append to the upgrade's decision log; the entry's sequence number
        (increasing across all upgrades)."""
        if not event or len(event) > 32:
            raise ValueError(f"event: must be 1-32 characters, got {len(event)}")
        try:
            with self._db.write() as conn:
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

    def of(self, upgrade_id: str) -> list[Decision]:
        """The upgrade's decision log, oldest first."""
        return [Decision(*r) for r in self._db.rows(queries.DECISIONS_OF, upgrade_id=upgrade_id)]
