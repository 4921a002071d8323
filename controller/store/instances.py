"""The store's instances of scale sets (compare-and-swap on their state)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from controller.store import queries
from controller.store.engine import Database
from controller.store.records import AlreadyExists, InstanceRecord, NotFound
from controller.store.rows import _check_fields, _check_instance_id, _instance_sort_key, _member
from controller.store.schema import instances_table
from controller.store.states import ProvisioningState

_INSTANCE_UPDATABLE: Final = frozenset(
    {"host", "update_domain", "fault_domain", "image_version", "state"}
)


def _stored(rec: InstanceRecord, now: float) -> InstanceRecord:
    state = _member(ProvisioningState, "state", rec.state)
    return dataclasses.replace(rec, state=state, updated_at=now)


class Instances:
    """The ``instances`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, rec: InstanceRecord) -> InstanceRecord:
        """Add an instance; the record as stored (with ``updated_at``)."""
        _check_instance_id(rec.instance_id)
        stored = _stored(rec, self._db.clock.now())
        try:
            with self._db.write() as conn:
                self._db.require_scale_set(conn, rec.scale_set)
                conn.execute(insert(instances_table).values(**dataclasses.asdict(stored)))
        except IntegrityError:
            raise AlreadyExists(
                f"instance {rec.scale_set!r}/{rec.instance_id}: already exists"
                f" (or the name {rec.name!r} is taken)"
            ) from None
        return stored

    def add_many(self, recs: list[InstanceRecord]) -> list[InstanceRecord]:
        """Add instances, all or none, in one transaction (a scale-out of
        hundreds is one commit, not hundreds); the records as stored."""
        now = self._db.clock.now()
        stored = [_stored(r, now) for r in recs]
        for rec in stored:
            _check_instance_id(rec.instance_id)
        if not stored:
            return stored
        try:
            with self._db.write() as conn:
                for scale_set in sorted({r.scale_set for r in stored}):
                    self._db.require_scale_set(conn, scale_set)
                conn.execute(insert(instances_table), [dataclasses.asdict(r) for r in stored])
        except IntegrityError:
            raise AlreadyExists("instances: one already exists (or its name is taken)") from None
        return stored

    def get(self, scale_set: str, instance_id: str) -> InstanceRecord | None:
        rows = self._db.rows(queries.INSTANCE, scale_set=scale_set, instance_id=instance_id)
        return InstanceRecord(*rows[0]) if rows else None

    def of(self, scale_set: str) -> list[InstanceRecord]:
        """The scale set's instances in numeric instance-id order."""
        out = [InstanceRecord(*r) for r in self._db.rows(queries.INSTANCES_OF, scale_set=scale_set)]
        return sorted(out, key=_instance_sort_key)

    def counts(self, scale_set: str) -> tuple[int, int]:
        """(instances, instances in state Creating) of the scale set."""
        ((count, creating),) = self._db.rows(queries.INSTANCE_COUNTS, scale_set=scale_set)
        return int(count), int(creating)

    def update(
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
        if "state" in fields:
            fields["state"] = _member(ProvisioningState, "state", fields["state"])
        t = instances_table.c
        key = and_(t.scale_set == scale_set, t.instance_id == instance_id)
        cond = key if expected_state is None else and_(key, t.state == expected_state)
        with self._db.write() as conn:
            res = conn.execute(
                update(instances_table)
                .where(cond)
                .values(**fields, updated_at=self._db.clock.now())
            )
            if res.rowcount == 1:
                return True
            if conn.execute(select(t.state).where(key)).first() is None:
                raise NotFound(f"{what}: not found")
            return False

    def set_states(self, scale_set: str, states: Mapping[str, ProvisioningState]) -> None:
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
        now = self._db.clock.now()
        rows = [
            {
                "k_scale_set": scale_set,
                "k_id": iid,
                "v_state": _member(ProvisioningState, "state", state),
                "v_at": now,
            }
            for iid, state in states.items()
        ]
        with self._db.write() as conn:
            conn.execute(q, rows)

    def delete(self, scale_set: str, instance_id: str) -> None:
        t = instances_table.c
        with self._db.write() as conn:
            res = conn.execute(
                delete(instances_table).where(
                    t.scale_set == scale_set, t.instance_id == instance_id
                )
            )
        if res.rowcount == 0:
            raise NotFound(f"instance {scale_set!r}/{instance_id}: not found")
