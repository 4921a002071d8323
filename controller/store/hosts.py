"""The store's registered host agents (a token is a secret: kept out of reprs and messages)."""

from __future__ import annotations

from sqlalchemy import delete, insert
from sqlalchemy.exc import IntegrityError

from controller.store import queries
from controller.store.engine import StoreBase
from controller.store.records import AlreadyExists, HostRecord, NotFound
from controller.store.rows import _record, _row
from controller.store.schema import hosts_table


class HostRows(StoreBase):
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
