"""The store's hot reads: statements built once, and each compiled once per
dialect into a :class:`Plan` that :meth:`controller.store.engine.Database.rows`
runs on the DBAPI connection itself (docs/performance-notes.md, "Store reads").
Statements select their columns in the order of the record's fields, so a
row builds its record positionally (``cls(*row)``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import Integer, Select, Table, bindparam, case, func, select
from sqlalchemy.engine import Compiled, Dialect

from controller.store.records import Decision, InstanceRecord, UpgradeInstanceRecord
from controller.store.schema import (
    RUNNING,
    decision_log_table,
    hosts_table,
    images_table,
    instances_table,
    scale_sets_table,
    upgrade_instances_table,
    upgrades_table,
)
from controller.store.states import ProvisioningState

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


def columns(cls: type[DataclassInstance], table: Table) -> Select[Any]:
    """SELECT of ``table``'s columns in the order of ``cls``'s fields, so that
    a row builds its record positionally (``cls(*row)``)."""
    return select(*(table.c[f.name] for f in dataclasses.fields(cls)))


@dataclass(frozen=True)
class Plan:
    """A read statement compiled for one dialect, with the conversions
    SQLAlchemy would apply to its parameters and result columns."""

    compiled: Compiled
    sql: str
    columns: tuple[str, ...]
    binds: Mapping[str, Callable[[Any], Any]]
    results: tuple[Callable[[Any], Any] | None, ...] | None
    positional: tuple[str, ...] | None

    @classmethod
    def of(cls, stmt: Select[Any], dialect: Dialect) -> Plan:
        compiled = stmt.compile(dialect=dialect)
        binds: dict[str, Callable[[Any], Any]] = {}
        # (by compiled name: an anonymous literal's key in ``binds`` is not it)
        for bind, name in compiled.bind_names.items():
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                binds[name] = proc
        results = tuple(
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in stmt.selected_columns
        )
        return cls(
            compiled,
            str(compiled),
            tuple(str(c.key) for c in stmt.selected_columns),
            binds,
            results if any(results) else None,
            tuple(compiled.positiontup or ()) if dialect.positional else None,
        )

    def parameters(self, given: Mapping[str, Any]) -> Any:
        values = self.compiled.construct_params(dict(given))
        assert values is not None
        for name, proc in self.binds.items():
            values[name] = proc(values[name])
        if self.positional is None:
            return values
        return tuple(values[n] for n in self.positional)


INSTANCE_COLUMNS: Final = columns(InstanceRecord, instances_table)
UPGRADE_INSTANCE_COLUMNS: Final = columns(UpgradeInstanceRecord, upgrade_instances_table)
DECISION_COLUMNS: Final = columns(Decision, decision_log_table)

_I, _H, _S = images_table.c, hosts_table.c, scale_sets_table.c
_N, _U, _UI = instances_table.c, upgrades_table.c, upgrade_instances_table.c
IMAGE: Final = select(images_table).where(
    _I.publisher == bindparam("p"),
    _I.offer == bindparam("o"),
    _I.sku == bindparam("s"),
    _I.version == bindparam("v"),
)
IMAGES_OF_SKU: Final = (
    select(images_table)
    .where(_I.publisher == bindparam("p"), _I.offer == bindparam("o"), _I.sku == bindparam("s"))
    .order_by(_I.version)
)
HOST: Final = select(hosts_table).where(_H.name == bindparam("name"))
HOSTS: Final = select(hosts_table).order_by(_H.name)
SCALE_SET: Final = select(scale_sets_table).where(_S.name == bindparam("name"))
SCALE_SETS: Final = select(scale_sets_table).order_by(_S.name)
INSTANCE: Final = INSTANCE_COLUMNS.where(
    _N.scale_set == bindparam("scale_set"), _N.instance_id == bindparam("instance_id")
)
INSTANCES_OF: Final = INSTANCE_COLUMNS.where(_N.scale_set == bindparam("scale_set"))
INSTANCE_COUNTS: Final = select(
    func.count(),
    func.coalesce(func.sum(case((_N.state == ProvisioningState.CREATING, 1), else_=0)), 0),
).where(_N.scale_set == bindparam("scale_set"))
UPGRADE: Final = select(upgrades_table).where(_U.id == bindparam("id"))
RUNNING_UPGRADE: Final = select(upgrades_table).where(
    _U.scale_set == bindparam("scale_set"), _U.status == RUNNING
)
RUNNING_UPGRADES: Final = (
    select(upgrades_table).where(_U.status == RUNNING).order_by(_U.start_time, _U.id)
)
HISTORY: Final = (
    select(upgrades_table)
    .where(_U.scale_set == bindparam("scale_set"), _U.start_time >= bindparam("since"))
    .order_by(_U.start_time.desc(), _U.id.desc())
    .limit(bindparam("limit", type_=Integer))
)
UPGRADE_INSTANCES_OF: Final = UPGRADE_INSTANCE_COLUMNS.where(
    _UI.upgrade_id == bindparam("upgrade_id")
)
DECISIONS_OF: Final = DECISION_COLUMNS.where(
    decision_log_table.c.upgrade_id == bindparam("upgrade_id")
).order_by(decision_log_table.c.seq)
