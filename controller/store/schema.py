"""The controller's tables (SQLAlchemy Core). One running upgrade per scale
set is a partial unique index, enforced by the database itself."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Generic, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect

from controller.store.states import (
    ProvisioningState,
    StartedBy,
    UpgradeInstanceState,
    UpgradeStatus,
)

_E = TypeVar("_E", bound=StrEnum)


class EnumText(TypeDecorator[_E], Generic[_E]):
    """A StrEnum stored as its string: rows come out as members (the planned
    reads of :mod:`controller.store.queries` convert them too)."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[_E], length: int) -> None:
        super().__init__(length)
        self._enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self._enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> _E | None:
        return None if value is None else self._enum(value)


RUNNING: Final = UpgradeStatus.ROLLING_FORWARD

metadata = MetaData()

schema_version_table = Table(
    "schema_version",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", Integer, nullable=False),
)

images_table = Table(
    "images",
    metadata,
    Column("publisher", String(64), primary_key=True),
    Column("offer", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("virtual_size", BigInteger, nullable=False),
    Column("path", Text, nullable=False),
    Column("published_at", Double, nullable=False),
    Column("kernel_path", Text),
    Column("kernel_sha256", String(64)),
    Column("initrd_path", Text),
    Column("initrd_sha256", String(64)),
    Column("cmdline", Text),
)

hosts_table = Table(
    "hosts",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("url", Text, nullable=False),
    Column("token", Text, nullable=False),
    Column("registered_at", Double, nullable=False),
)

scale_sets_table = Table(
    "scale_sets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("body", Text, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

instances_table = Table(
    "instances",
    metadata,
    Column(
        "scale_set",
        String(64),
        ForeignKey("scale_sets.name", ondelete="RESTRICT"),
        primary_key=True,
    ),
    Column("instance_id", String(20), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("host", String(64), nullable=False),
    Column("update_domain", Integer, nullable=False),
    Column("fault_domain", Integer, nullable=False),
    Column("image_version", String(64)),
    Column("state", EnumText(ProvisioningState, 32), nullable=False),
    Column("updated_at", Double, nullable=False),
)

upgrades_table = Table(
    "upgrades",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "scale_set",
        String(64),
        ForeignKey("scale_sets.name", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("started_by", EnumText(StartedBy, 16), nullable=False),
    Column("target_publisher", String(64), nullable=False),
    Column("target_offer", String(64), nullable=False),
    Column("target_sku", String(64), nullable=False),
    Column("target_version", String(64), nullable=False),
    Column("status", EnumText(UpgradeStatus, 16), nullable=False),
    Column("start_time", Double, nullable=False),
    Column("end_time", Double),
    Column("error_code", String(64)),
    Column("error_message", Text),
    Column("cancel_requested", Boolean, nullable=False),
    Column("policy", Text, nullable=False),
    Column("batches", Text, nullable=False),
    Column("current_batch", Integer, nullable=False),
    Column("successful_count", Integer, nullable=False),
    Column("failed_count", Integer, nullable=False),
    Column("in_progress_count", Integer, nullable=False),
    Column("pending_count", Integer, nullable=False),
    Column("rolled_back_ok", Integer, nullable=False),
    Column("rolled_back_failed", Integer, nullable=False),
    Column("rollback_error", Text),
)

# docs/design.md rule 8: one rolling upgrade per scale set, enforced by the database.
Index(
    "upgrades_one_running_per_scale_set",
    upgrades_table.c.scale_set,
    unique=True,
    sqlite_where=upgrades_table.c.status == RUNNING,
    postgresql_where=upgrades_table.c.status == RUNNING,
)
Index("upgrades_by_start", upgrades_table.c.scale_set, upgrades_table.c.start_time)

upgrade_instances_table = Table(
    "upgrade_instances",
    metadata,
    Column(
        "upgrade_id",
        String(36),
        ForeignKey("upgrades.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("instance_id", String(20), primary_key=True),
    Column("batch", Integer, nullable=False),
    Column("state", EnumText(UpgradeInstanceState, 16), nullable=False),
    Column("operation_id", String(64)),
    Column("from_version", String(64)),
    Column("started_at", Double),
    Column("deadline", Double),
    Column("finished_at", Double),
    Column("reason", Text),
)

decision_log_table = Table(
    "decision_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column(
        "upgrade_id",
        String(36),
        ForeignKey("upgrades.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("time", Double, nullable=False),
    Column("instance_id", String(20)),
    Column("event", String(32), nullable=False),
    Column("message", Text, nullable=False),
)
