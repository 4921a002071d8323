"""Moving one instance's row of an upgrade: a compare-and-swap on its state,
written before the agent is asked to act, and logged as a decision."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.fleet.agents import AgentPort
from controller.store.facade import Store, UpgradeInstanceRecord, UpgradeRecord
from controller.store.states import DONE_STATES, UpgradeInstanceState
from controller.upgrade.observing import Observer
from kvmss.base.clock import Clock

Decide = Callable[[UpgradeRecord, str | None, str, str], None]
# (upgrade id, instance id, the state a row left)
Left = Callable[[str, str, UpgradeInstanceState], None]


def op_id(up: UpgradeRecord, iid: str, action: str) -> str:
    """The agent operation id of ``action`` on an instance in an upgrade: the
    same at every step, so a step repeated after a restart is the same call."""
    return f"u{up.id.replace('-', '')[:16]}-{iid}-{action}"


class UpgradeRows:
    def __init__(self, store: Store, clock: Clock, decide: Decide, left: Left) -> None:
        self._store = store
        self._clock = clock
        self._decide = decide
        self._left = left

    def set(
        self,
        up: UpgradeRecord,
        u: UpgradeInstanceRecord,
        expected: UpgradeInstanceState,
        state: UpgradeInstanceState,
        **fields: Any,
    ) -> bool:
        """Move ``u`` from ``expected`` to ``state``; False when it was no
        longer in ``expected`` (another step moved it)."""
        if state in DONE_STATES:
            fields.setdefault("finished_at", self._clock.now())
        ok = self._store.upgrade_instances.update(
            up.id, u.instance_id, expected_state=expected, state=state, **fields
        )
        self._left(up.id, u.instance_id, expected)
        if ok:
            reason = fields.get("reason")
            self._decide(up, u.instance_id, state, str(reason) if reason else state)
        return ok

    def row(self, up: UpgradeRecord, iid: str) -> UpgradeInstanceRecord | None:
        return next(
            (r for r in self._store.upgrade_instances.of(up.id) if r.instance_id == iid), None
        )


@dataclass(frozen=True)
class RowParts:
    """What each part that moves an instance's row works with."""

    store: Store
    agents: AgentPort
    clock: Clock
    rows: UpgradeRows
    observer: Observer
