"""The instances of one host: the operations the API and recovery call, each
done by the part that holds it (create, reimage, power, delete, views)."""

from __future__ import annotations

from dataclasses import dataclass

from hostagent.contract import instancespec
from hostagent.contract.views import InstanceView
from hostagent.disks.layout import Layout
from hostagent.domxml.domain import Domain
from hostagent.domxml.metadata import Metadata
from hostagent.guest.reports import ReportStore
from hostagent.health.probes import Prober
from hostagent.hypervisor.domaintype import DomainType
from hostagent.hypervisor.virt import Hypervisor
from hostagent.lifecycle import create, records
from hostagent.lifecycle.cleanup import Cleanup
from hostagent.lifecycle.delete import Deletion
from hostagent.lifecycle.generations import GenerationBuilder
from hostagent.lifecycle.journal import Journal
from hostagent.lifecycle.power import Power
from hostagent.lifecycle.reimage import Reimaging
from hostagent.lifecycle.views import Views
from hostagent.network.addresses import Subnet


@dataclass(frozen=True)
class HostSettings:
    domain_type: DomainType
    bridge: str
    shutdown_timeout: float


class InstanceManager:
    def __init__(
        self,
        settings: HostSettings,
        hv: Hypervisor,
        layout: Layout,
        journal: Journal,
        builder: GenerationBuilder,
        reports: ReportStore,
        prober: Prober,
        subnet: Subnet,
    ) -> None:
        self.hv = hv
        self.journal = journal
        self.builder = builder
        self.subnet = subnet
        self.records = records.InstanceRecords(hv, layout)
        self.power = Power(hv, prober, self.records, settings.shutdown_timeout)
        self.cleanup = Cleanup(hv, layout, journal, builder, reports)
        self.creation = create.Creation(
            settings.domain_type,
            settings.bridge,
            hv,
            layout,
            journal,
            builder,
            self.records,
            self.power,
            subnet,
        )
        self.reimaging = Reimaging(hv, journal, builder, self.records, self.power, self.cleanup)
        self.deletion = Deletion(hv, layout, journal, self.cleanup, prober)
        self.views = Views(hv, self.records, reports, prober)

    # -- what the API asks ---------------------------------------------------

    validate_spec = staticmethod(create.validate_spec)

    def create(self, op_id: str, name: str, spec: instancespec.InstanceSpec) -> None:
        self.creation.create(op_id, name, spec)

    def reimage(self, op_id: str, name: str, image: instancespec.ImageSpec) -> None:
        self.reimaging.reimage(op_id, name, image)

    def rollback(self, op_id: str, name: str) -> None:
        self.reimaging.rollback(op_id, name)

    def commit(self, op_id: str, name: str) -> None:
        self.reimaging.commit(op_id, name)

    def start(self, op_id: str, name: str) -> None:
        self.power.start(name)

    def stop(self, op_id: str, name: str) -> None:
        self.power.stop(name)

    def delete(self, op_id: str, name: str, delete_data_disks: bool) -> None:
        self.deletion.delete(op_id, name, delete_data_disks)

    def view(self, name: str) -> InstanceView:
        return self.views.view(name)

    def list(self) -> list[InstanceView]:
        return self.views.list()

    # -- what the rest of the agent reads --------------------------------------

    def spec(self, name: str) -> instancespec.InstanceSpec | None:
        return self.records.spec(name)

    def domain(self, name: str) -> Domain:
        return self.records.domain(name)

    @staticmethod
    def meta(dom: Domain) -> Metadata:
        return records.meta(dom)

    def watch(self, name: str, spec: instancespec.InstanceSpec, address: str) -> None:
        self.power.watch(name, spec, address)
