"""The controller's behaviour behind its API: the image catalog with automatic
upgrades on publish, hosts, scale sets and their instances, and the rolling
upgrades (run by one thread each, resumed when the controller restarts).

Every public method either returns what the API shows or raises
:class:`ControllerError` with a 4xx status, a code and a one-line message.

The parts (each a base class of :class:`Controller`, which wires them and runs
the lifecycle): :mod:`controller.service.base` (what they share),
:mod:`controller.service.imagespecs`, :mod:`controller.service.hosts`,
:mod:`controller.service.scalesets`, :mod:`controller.service.reconciler`,
:mod:`controller.service.upgradestarts` and :mod:`controller.service.setviews`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from controller.fleet.agents import AgentPort
from controller.images.catalog import Catalog
from controller.service.base import ControllerError, Settings
from controller.service.hosts import HostRegistry
from controller.service.reconciler import Reconciler
from controller.service.scalesets import ScaleSets
from controller.service.setviews import SetViews
from controller.service.upgradestarts import UpgradeStarts
from controller.store.facade import Store
from controller.upgrade.orchestrator import Orchestrator
from controller.upgrade.steps import unconfirmed
from controller.views.instances import InstanceViews, ObservingPort, host_lister
from hostagent.contract import views
from hostagent.contract.client import AgentClient
from kvmss.base.clock import Clock

log = logging.getLogger(__name__)

__all__ = ["Controller", "ControllerError", "Settings"]


class Controller(HostRegistry, ScaleSets, Reconciler, UpgradeStarts, SetViews):
    """All the parts, wired up, with the lifecycle of their background work."""

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        agents: AgentPort,
        clock: Clock,
        settings: Settings,
        probe_host: Callable[[str, str], views.HostView] | None = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.agents = agents
        self.clock = clock
        self.settings = settings
        self.views = InstanceViews(
            agents,
            host_lister(agents),
            lambda: [h.name for h in store.list_hosts()],
            clock,
            settings.view_refresh_seconds,
        )
        self.orch = Orchestrator(
            store, ObservingPort(agents, self.views), self.image_spec, clock, self.views.recent
        )
        self._probe_host = probe_host or (lambda url, token: AgentClient(url, token).host())
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = {}
        self._set_locks = {}
        self._dirty = set()
        self._endpoints = {}
        self._shown_bodies = {}

    # -- lifecycle ---------------------------------------------------------------

    def resume(self) -> None:
        """After a restart: every upgrade still RollingForward continues, and
        the rollbacks an ended one decided but could not confirm (their host
        did not answer) are carried out once their hosts answer."""
        for up in self.store.running_upgrades():
            log.warning("resuming upgrade %s of %s", up.id, up.scale_set)
            self._spawn(up.id)
        now = self.clock.now()
        for ss in self.store.list_scale_sets():
            for up in self.store.history(ss.name, now):
                rows = self.store.list_upgrade_instances(up.id)
                if up.status != "RollingForward" and any(unconfirmed(u) for u in rows):
                    log.warning("settling rollbacks upgrade %s of %s left", up.id, up.scale_set)
                    self._settle_later(up.id)
            self._reconcile_later(ss.name)

    def _settle_later(self, upgrade_id: str) -> None:
        """Settle an ended upgrade's unconfirmed rollbacks in the background."""

        def run() -> None:
            self.orch.run(
                upgrade_id, poll_seconds=self.settings.poll_seconds, should_stop=self._stop.is_set
            )

        self._background(f"upgrade-{upgrade_id}", run)

    def close(self) -> None:
        self._stop.set()
        self.views.close()
        for t in list(self._threads.values()):
            t.join(timeout=30)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for background work (tests and the lab)."""
        for t in list(self._threads.values()):
            t.join(timeout)
