"""The store's scale set models (compare-and-swap on their generation) and
their instances."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Final

from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from controller.store import queries
from controller.store.engine import StoreBase
from controller.store.records import (
    AlreadyExists,
    Conflict,
    InstanceRecord,
    NotFound,
    ScaleSetRecord,
)
from controller.store.rows import (
    _check_fields,
    _check_instance_id,
    _dumps,
    _instance_sort_key,
    _record,
)
from controller.store.schema import instances_table, scale_sets_table

_INSTANCE_UPDATABLE: Final = frozenset(
    {"host", "update_domain", "fault_domain", "image_version", "state"}
)


class ScaleSetRows(StoreBase):
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
