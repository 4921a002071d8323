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
    _check_one_of,
    _instance_sort_key,
)
from controller.store.schema import upgrade_instances_table, upgrades_table

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
            _check_one_of("state", rec.state, UPGRADE_INSTANCE_STATES)
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
        with self._db.write() as conn:
            res = conn.execute(update(upgrade_instances_table).where(cond).values(**fields))
            if res.rowcount == 1:
                return True
            if conn.execute(select(t.state).where(key)).first() is None:
                raise NotFound(f"{what}: not found")
            return False
