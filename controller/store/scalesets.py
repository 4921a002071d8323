"""The store's scale set models (compare-and-swap on their generation)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from controller.store import queries
from controller.store.engine import Database
from controller.store.records import Conflict, NotFound, ScaleSetRecord
from controller.store.rows import _dumps, _record
from controller.store.schema import instances_table, scale_sets_table


class ScaleSets:
    """The ``scale_sets`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(self, name: str, body: Mapping[str, Any], expected_generation: int | None) -> int:
        """Store the model of ``name``; its new generation.

        ``expected_generation``: None creates or replaces whatever is stored;
        0 creates only (:class:`Conflict` if it exists); n > 0 replaces only
        generation n (:class:`Conflict` if another is stored, :class:`NotFound`
        if there is none).
        """
        if expected_generation is not None and expected_generation < 0:
            raise ValueError(f"expected_generation: must be >= 0, got {expected_generation}")
        text = _dumps(dict(body), "body")
        now = self._db.clock.now()
        t = scale_sets_table.c
        try:
            with self._db.write() as conn:
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

    def get(self, name: str) -> ScaleSetRecord | None:
        rows = self._db.maps(queries.SCALE_SET, name=name)
        if not rows:
            return None
        return _record(ScaleSetRecord, rows[0], body=json.loads(rows[0]["body"]))

    def all(self) -> list[ScaleSetRecord]:
        return [
            _record(ScaleSetRecord, m, body=json.loads(m["body"]))
            for m in self._db.maps(queries.SCALE_SETS)
        ]

    def delete(self, name: str, expected_generation: int | None = None) -> None:
        """Delete the model and its upgrade history; :class:`Conflict` while
        instances remain or when the generation is not ``expected_generation``."""
        t = scale_sets_table.c
        with self._db.write() as conn:
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
