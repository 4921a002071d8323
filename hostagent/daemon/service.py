"""The agent assembled from its parts: configuration in, a running agent out."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from hostagent.contract import operations, views
from hostagent.daemon.config import AgentConfig
from hostagent.disks.imagecache import ImageCache
from hostagent.disks.layout import Layout
from hostagent.guest.reports import ReportStore
from hostagent.guest.tokens import GuestTokens
from hostagent.health.probes import ProbeFn, Prober, probe_once
from hostagent.hypervisor.domaintype import DomainType, choose_domain_type
from hostagent.hypervisor.virt import Hypervisor, disk_free_gb
from hostagent.lifecycle import recovery
from hostagent.lifecycle.generations import GenerationBuilder, Network
from hostagent.lifecycle.instances import HostSettings, InstanceManager
from hostagent.lifecycle.journal import Journal
from hostagent.lifecycle.operations import Operations
from hostagent.network import bridge, firewall, netns
from hostagent.network.addresses import Subnet
from kvmss.base.clock import Clock, SystemClock

log = logging.getLogger(__name__)


@dataclass
class Agent:
    config: AgentConfig
    clock: Clock
    layout: Layout
    hv: Hypervisor
    tokens: GuestTokens
    reports: ReportStore
    prober: Prober
    ops: Operations
    instances: InstanceManager
    domain_type: DomainType

    @classmethod
    def build(cls, config: AgentConfig, clock: Clock | None = None) -> Agent:
        clock = clock or SystemClock()
        layout = Layout(config.storage_dir)
        layout.prepare()
        hv = Hypervisor(config.libvirt_uri, clock, storage_root=layout.root.absolute())
        domain_type = choose_domain_type(config.libvirt_uri)
        subnet = Subnet(config.subnet)
        tokens = GuestTokens(layout.guest_secret)
        reports = ReportStore(layout.reports, clock)
        prober = Prober(clock, probe_from(config.network_namespace))
        journal = Journal(layout.journal_dir)
        builder = GenerationBuilder(
            layout,
            ImageCache(layout.cache_dir, clock=clock),
            tokens,
            reports,
            Network(subnet, config.guest_port),
        )
        instances = InstanceManager(
            HostSettings(domain_type, config.bridge_name, config.shutdown_timeout),
            hv,
            layout,
            journal,
            builder,
            reports,
            prober,
            subnet,
        )
        agent = cls(
            config=config,
            clock=clock,
            layout=layout,
            hv=hv,
            tokens=tokens,
            reports=reports,
            prober=prober,
            ops=Operations(layout.operations_dir, clock),
            instances=instances,
            domain_type=domain_type,
        )
        agent.ops.on_finish = agent._settle
        return agent

    def _settle(self, op: operations.Operation) -> None:
        """After an operation's worker returns: clear its journal entry if it got
        to the end, or finish/undo it if it stopped half way (a bug or a host
        failure raised out of the middle of it)."""
        entry = self.instances.journal.get(op.instance)
        if entry is None or entry.operation != op.id:
            return
        if entry.step != "done":
            log.error("%s of %s stopped at step %s; settling it", op.kind, op.instance, entry.step)
            failed = self.ops.get(op.id)
            recovery.recover_entry(self.instances, self.ops, entry)
            settled = self.ops.get(op.id)
            # Recovery words an undo as "the agent restarted"; here it did
            # not: the operation keeps the error its worker stopped with.
            if (
                failed is not None
                and failed.error is not None
                and settled is not None
                and settled.error is not None
                and settled.error.code == "Interrupted"
            ):
                self.ops.finish(
                    op.id,
                    failed.error.model_copy(
                        update={"message": f"{failed.error.message} (what it did is undone)"}
                    ),
                )
        self.instances.journal.clear(op.instance)

    @property
    def subnet(self) -> Subnet:
        return self.instances.subnet

    def start(self) -> None:
        """Guests isolated, bridge up, half-done operations settled, probes running."""
        if self.domain_type != "test":
            ns = self.config.network_namespace
            if ns is not None:
                netns.create(ns)
            self.isolate_guests()
            if self.config.manage_bridge:
                cidr = self.subnet.host_cidr
                bridge.ensure_bridge(self.config.bridge_name, None if ns else cidr)
                if ns is not None:
                    netns.ensure_uplink(self.config.bridge_name, ns, cidr)
        for inst, kind, outcome in recovery.recover(self.instances, self.ops):
            log.warning("after restart: %s of %s %s", kind, inst, outcome)
        for dom in self.hv.owned():
            spec = self.instances.spec(dom.name)
            if spec is not None and dom.metadata is not None and self.hv.is_running(dom.name):
                self.instances.watch(dom.name, spec, dom.metadata.address)
        self.prober.start()

    def isolate_guests(self) -> None:
        """Install (or, with ``guest_isolation: false``, remove) the nftables
        table that keeps guests off everything but the guest report port.
        Done before the bridge is set up, so no guest ever runs unfiltered;
        an agent that cannot install it does not start."""
        cfg = self.config
        ns = cfg.network_namespace
        if cfg.guest_isolation:
            iface = netns.veth_names(cfg.bridge_name)[1] if ns else None
            firewall.apply(cfg.bridge_name, self.subnet.gateway, cfg.guest_port, ns, iface)
        else:
            firewall.remove(cfg.bridge_name, ns)
            log.warning("guest_isolation is off: guests on %s reach this host", cfg.bridge_name)

    def stop(self) -> None:
        self.prober.stop()
        self.ops.shutdown()
        self.hv.close()

    def host_view(self) -> views.HostView:
        cpus, mem = self.hv.capacity()
        return views.HostView(
            name=self.config.name,
            hypervisor=self.domain_type,
            libvirtVersion=self.hv.libvirt_version(),
            capacity=views.HostCapacity(
                vcpus=cpus, memoryMB=mem, diskFreeGB=disk_free_gb(str(self.layout.root))
            ),
            instanceCount=len(self.hv.owned()),
            bridge=self.config.bridge_name,
            subnet=self.config.subnet,
        )


def probe_from(namespace: str | None) -> ProbeFn:
    """Probes from the agent's own namespace, or with sockets made in ``namespace``."""
    if namespace is None:
        return probe_once
    ns = namespace
    return functools.partial(probe_once, opener=lambda: netns.socket_in(ns))
