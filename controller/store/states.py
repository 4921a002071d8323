"""The states a rolling upgrade and each instance of its plan go through, and
the moves between them (docs/design.md, "Rolling upgrade rules").

The store checks every persisted change of a state against these tables:
a move not declared here is a bug, raised as
:class:`controller.store.records.IllegalTransition`. The values are the
strings of the wire and of the database.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class UpgradeStatus(StrEnum):
    """An upgrade's ``runningStatus.code``, as Azure's RollingUpgradeStatusCode."""

    ROLLING_FORWARD = "RollingForward"
    CANCELLED = "Cancelled"
    COMPLETED = "Completed"
    FAULTED = "Faulted"


class StartedBy(StrEnum):
    """Who started an upgrade: a newly published version (rule 9) or a user."""

    PLATFORM = "Platform"
    USER = "User"


class UpgradeInstanceState(StrEnum):
    """Where one instance of an upgrade's plan is (rules 3, 4 and 12)."""

    PENDING = "Pending"
    REIMAGING = "Reimaging"
    WAITING_HEALTH = "WaitingHealth"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    # Also a rollback given up on while its host did not answer (no
    # finished_at yet): carried out once the host answers (rule 12).
    ROLLBACK_FAILED = "RollbackFailed"
    SKIPPED = "Skipped"


class ProvisioningState(StrEnum):
    """An instance's ``provisioningState``."""

    CREATING = "Creating"
    RUNNING = "Running"
    FAILED = "Failed"
    # Its rollback could not be confirmed or failed: someone (or the
    # controller, once its host answers) has to look.
    NEEDS_ATTENTION = "NeedsAttention"


_S = UpgradeStatus
UPGRADE_TRANSITIONS: Final[Mapping[UpgradeStatus, frozenset[UpgradeStatus]]] = {
    _S.ROLLING_FORWARD: frozenset({_S.CANCELLED, _S.COMPLETED, _S.FAULTED}),
    _S.CANCELLED: frozenset(),
    _S.COMPLETED: frozenset(),
    _S.FAULTED: frozenset(),
}

_I = UpgradeInstanceState
INSTANCE_TRANSITIONS: Final[Mapping[UpgradeInstanceState, frozenset[UpgradeInstanceState]]] = {
    # Skipped from any state in flight: the instance was removed meanwhile.
    _I.PENDING: frozenset({_I.REIMAGING, _I.SKIPPED}),
    _I.REIMAGING: frozenset({_I.WAITING_HEALTH, _I.FAILED, _I.ROLLING_BACK, _I.SKIPPED}),
    _I.WAITING_HEALTH: frozenset({_I.SUCCEEDED, _I.FAILED, _I.ROLLING_BACK, _I.SKIPPED}),
    _I.ROLLING_BACK: frozenset({_I.ROLLED_BACK, _I.ROLLBACK_FAILED, _I.SKIPPED}),
    # An unconfirmed rollback settled: done, or failed for good.
    _I.ROLLBACK_FAILED: frozenset({_I.ROLLED_BACK, _I.ROLLBACK_FAILED}),
    _I.SUCCEEDED: frozenset(),
    _I.FAILED: frozenset(),
    _I.ROLLED_BACK: frozenset(),
    _I.SKIPPED: frozenset(),
}

FAILED_STATES: Final = frozenset({_I.FAILED, _I.ROLLED_BACK, _I.ROLLBACK_FAILED})
DONE_STATES: Final = FAILED_STATES | {_I.SUCCEEDED, _I.SKIPPED}
ACTIVE_STATES: Final = frozenset({_I.REIMAGING, _I.WAITING_HEALTH, _I.ROLLING_BACK})
