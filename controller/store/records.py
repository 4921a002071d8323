"""What the controller's store holds, as frozen dataclasses (no SQLAlchemy
object leaves the store), and the store's errors. Secrets (a host's token, a
scale set body with its customData) are kept out of the reprs."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from controller.store.states import (
    ProvisioningState,
    StartedBy,
    UpgradeInstanceState,
    UpgradeStatus,
)

# An instance id: a canonical decimal of 1-18 digits (Azure's are decimal strings).
INSTANCE_ID_RE: Final = re.compile(r"0|[1-9][0-9]{0,17}")


class StoreError(Exception):
    """The store could not do what was asked (base of every store error)."""


class NotFound(StoreError):
    """The row asked for does not exist."""


class AlreadyExists(StoreError):
    """A row with that key exists already."""


class Conflict(StoreError):
    """A compare-and-swap or a uniqueness rule refused the write."""


class IllegalTransition(StoreError):
    """A state change :mod:`controller.store.states` does not declare: a bug
    in the caller, never an answer to bad input."""


@dataclass(frozen=True)
class ImageRef:
    publisher: str
    offer: str
    sku: str
    version: str

    def __str__(self) -> str:
        return f"{self.publisher}/{self.offer}/{self.sku}/{self.version}"


@dataclass(frozen=True)
class ImageRecord:
    publisher: str
    offer: str
    sku: str
    version: str
    sha256: str
    size_bytes: int
    virtual_size: int
    path: Path
    published_at: float
    kernel_path: Path | None = None
    kernel_sha256: str | None = None
    initrd_path: Path | None = None
    initrd_sha256: str | None = None
    cmdline: str | None = None

    @property
    def ref(self) -> ImageRef:
        return ImageRef(self.publisher, self.offer, self.sku, self.version)


@dataclass(frozen=True)
class HostRecord:
    name: str
    url: str
    token: str = field(repr=False)
    registered_at: float


@dataclass(frozen=True)
class ScaleSetRecord:
    name: str
    # The validated model body; holds customData, so it never shows in a repr.
    body: dict[str, Any] = field(repr=False)
    generation: int
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class InstanceRecord:
    scale_set: str
    instance_id: str
    name: str
    host: str
    update_domain: int
    fault_domain: int
    image_version: str | None  # what the controller believes it runs; None = unknown
    state: ProvisioningState
    updated_at: float = 0.0  # set by the store on every write


@dataclass(frozen=True)
class UpgradeRecord:
    id: str
    scale_set: str
    started_by: StartedBy
    target: ImageRef
    status: UpgradeStatus
    start_time: float
    policy: dict[str, Any]
    batches: list[list[str]]
    end_time: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    cancel_requested: bool = False
    current_batch: int = 0
    successful_count: int = 0
    failed_count: int = 0
    in_progress_count: int = 0
    pending_count: int = 0
    rolled_back_ok: int = 0
    rolled_back_failed: int = 0
    rollback_error: str | None = None


@dataclass(frozen=True)
class UpgradeInstanceRecord:
    upgrade_id: str
    instance_id: str
    batch: int
    state: UpgradeInstanceState = UpgradeInstanceState.PENDING
    operation_id: str | None = None
    from_version: str | None = None
    started_at: float | None = None
    deadline: float | None = None
    finished_at: float | None = None
    reason: str | None = None

    @property
    def unconfirmed(self) -> bool:
        """A rollback decided but given up on while its host did not answer
        (docs/design.md rule 12): carried out once the host answers."""
        return self.state == UpgradeInstanceState.ROLLBACK_FAILED and self.finished_at is None


@dataclass(frozen=True)
class Decision:
    upgrade_id: str
    seq: int
    time: float
    instance_id: str | None
    event: str
    message: str


def new_upgrade_id() -> str:
    return str(uuid.uuid4())


def instance_name(scale_set: str, instance_id: str) -> str:
    """The instance's name on its host: ``<scaleset>-<id>``."""
    return f"{scale_set}-{instance_id}"
