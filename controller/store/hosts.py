"""The store's registered host agents (a token is a secret: kept out of reprs and messages)."""

from __future__ import annotations

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from controller.store import queries
from controller.store.engine import Database
from controller.store.records import AlreadyExists, HostRecord, NotFound
from controller.store.rows import _record, _row
from controller.store.schema import hosts_table


class Hosts:
    """The ``hosts`` table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add(self, rec: HostRecord) -> None:
        try:
            with self._db.write() as conn:
                conn.execute(insert(hosts_table).values(**_row(rec)))
        except IntegrityError:
            raise AlreadyExists(f"host {rec.name!r}: already registered") from None

    def get(self, name: str) -> HostRecord | None:
        rows = self._db.maps(queries.HOST, name=name)
        return _record(HostRecord, rows[0]) if rows else None

    def all(self) -> list[HostRecord]:
        return [_record(HostRecord, m) for m in self._db.maps(queries.HOSTS)]

    def delete(self, name: str) -> None:
        with self._db.write() as conn:
            res = conn.execute(delete(hosts_table).where(hosts_table.c.name == name))
        if res.rowcount == 0:
            raise NotFound(f"host {name!r}: not found")
