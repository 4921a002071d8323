"""What the agents say of an instance during an upgrade, and when to ask them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from controller.fleet.agents import AgentPort
from controller.store.facade import InstanceRecord, UpgradeInstanceRecord, UpgradeRecord
from controller.store.states import UpgradeInstanceState
from hostagent.contract import views
from hostagent.contract.client import AgentError, AgentUnreachable
from kvmss.base.clock import Clock

# (host, name, max age or None for the default) -> (known, view): the latest
# snapshot of an instance's view if recent enough (controller.views.instances)
Recent = Callable[[str, str, float | None], tuple[bool, views.InstanceView | None]]

# a snapshot this young is as good as asking
FRESH_SECONDS: Final = 1.0
# the longest a row in flight (reimage, health wait) goes without a look
MAX_POLL_INTERVAL: Final = 5.0


def no_snapshots(host: str, name: str, max_age: float | None) -> tuple[bool, None]:
    return False, None


@dataclass(frozen=True)
class Observed:
    """What the agent says of an instance right now."""

    healthy: bool
    version: str | None
    reasons: tuple[str, ...] = ()


def observed(view: views.InstanceView | None) -> Observed:
    if view is None:
        return Observed(False, None, ("instance missing on its host",))
    return Observed(
        view.health.state == "Healthy", view.current.image.version, tuple(view.health.reasons)
    )


class Observer:
    def __init__(self, agents: AgentPort, clock: Clock, recent: Recent = no_snapshots) -> None:
        self._agents = agents
        self._clock = clock
        self._recent = recent
        # (upgrade id, instance id, row state) -> when its agent was last asked
        self._asked: dict[tuple[str, str, UpgradeInstanceState], float] = {}

    def observe(
        self, inst: InstanceRecord, *, snapshot: bool = False, max_age: float | None = None
    ) -> Observed:
        """What the agent says of ``inst`` now; with ``snapshot``, what its
        host's latest snapshot said (within ``max_age``) when it says healthy.
        A snapshot that says otherwise may be older than the instance's
        recovery (taken while it booted): the agent is asked, so an upgrade
        is never stopped on a stale view."""
        if snapshot:
            known, view = self._recent(inst.host, inst.name, max_age)
            seen = observed(view) if known else None
            if seen is not None and seen.healthy:
                return seen
        try:
            view = self._agents.instance(inst.host, inst.name)
        except AgentUnreachable:
            return Observed(False, None, ("host agent unreachable",))
        except AgentError as e:
            return Observed(False, None, (f"agent error {e.code}",))
        return observed(view)

    def fresh(self, inst: InstanceRecord) -> Observed | None:
        """What a snapshot of at most :data:`FRESH_SECONDS` says, if there is one."""
        known, view = self._recent(inst.host, inst.name, FRESH_SECONDS)
        return observed(view) if known else None

    def due(self, up: UpgradeRecord, u: UpgradeInstanceRecord, since: float) -> bool:
        """Whether to ask the agent how a row in flight (Reimaging,
        WaitingHealth) is doing at this step: when a tenth of the time since
        ``since`` has passed since it was last asked (at most
        :data:`MAX_POLL_INTERVAL`), and always once its deadline has passed."""
        now = self._clock.now()
        if u.deadline is not None and now >= u.deadline:
            return True
        key = (up.id, u.instance_id, u.state)
        last = self._asked.get(key)
        if last is not None and now - last < min(MAX_POLL_INTERVAL, (now - since) / 10):
            return False
        self._asked[key] = now
        return True

    def forget(self, upgrade_id: str, instance_id: str, state: UpgradeInstanceState) -> None:
        """The row left ``state``: when it was asked in it no longer matters."""
        self._asked.pop((upgrade_id, instance_id, state), None)
