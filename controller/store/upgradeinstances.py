"""The store's instances of upgrade plans (compare-and-swap on their state)."""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from controller.store import queries
from controller.store.engine import Database
from controller.store.records import AlreadyExists, NotFound, UpgradeInstanceRecord
from controller.store.rows import (
    _check_fields,
    _check_instance_id,
    _check_transition,
    _instance_sort_key,
    _member,
)
from controller.store.schema import upgrade_instances_table, upgrades_table
from controller.store.states import INSTANCE_TRANSITIONS, UpgradeInstanceState

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


class UpgradeInstances:
    """The ``upgrade_instances`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, recs: list[UpgradeInstanceRecord]) -> None:
        """Add the instances of an upgrade's plan, all or none."""
        if not recs:
            return
        for rec in recs:
            _check_instance_id(rec.instance_id)
            _member(UpgradeInstanceState, "state", rec.state)
        try:
            with self._db.write() as conn:
                for upgrade_id in sorted({r.upgrade_id for r in recs}):
                    t = upgrades_table.c
                    if conn.execute(select(t.id).where(t.id == upgrade_id)).first() is None:
                        raise NotFound(f"upgrade {upgrade_id}: not found")
                conn.execute(insert(upgrade_instances_table), [dataclasses.asdict(r) for r in recs])
        except IntegrityError:
            raise AlreadyExists(
                "upgrade instances: an instance is already part of its upgrade"
            ) from None

    def of(self, upgrade_id: str) -> list[UpgradeInstanceRecord]:
        """The upgrade's instances by batch, then numeric instance id."""
        rows = self._db.rows(queries.UPGRADE_INSTANCES_OF, upgrade_id=upgrade_id)
        out = [UpgradeInstanceRecord(*r) for r in rows]
        return sorted(out, key=lambda r: (r.batch, *_instance_sort_key(r)))

    def update(
        self,
        upgrade_id: str,
        instance_id: str,
        expected_state: UpgradeInstanceState | None,
        **fields: Any,
    ) -> bool:
        """Update some fields; with ``expected_state`` a compare-and-swap that
        returns False when the stored state differs. :class:`NotFound` when
        the instance is not part of the upgrade; :class:`IllegalTransition`
        for a state change :data:`~controller.store.states.INSTANCE_TRANSITIONS`
        does not declare."""
        what = f"upgrade {upgrade_id} instance {instance_id}"
        _check_fields(what, fields, _UPGRADE_INSTANCE_UPDATABLE)
        values = dict(fields)
        if "state" in values:
            values["state"] = _member(UpgradeInstanceState, "state", values["state"])
        t = upgrade_instances_table.c
        key = and_(t.upgrade_id == upgrade_id, t.instance_id == instance_id)
        with self._db.write() as conn:
            state = conn.execute(select(t.state).where(key).with_for_update()).scalar_one_or_none()
            if state is None:
                raise NotFound(f"{what}: not found")
            if expected_state is not None and state != expected_state:
                return False
            if "state" in values:
                _check_transition(INSTANCE_TRANSITIONS, what, state, values["state"])
            conn.execute(update(upgrade_instances_table).where(key).values(**values))
            return True
