"""Creating an instance (PUT of a name this host does not have) and
converging one that exists to a new spec.

A create is journaled "preparing", "defining", "starting", "done", each step
before it is acted on (docs/design.md rule 10), so recovery finishes a
create whose domain is defined and undoes one whose domain is not. Data
disks are created once and never written by the agent.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import replace

from hostagent.contract import instancespec
from hostagent.disks.layout import Layout
from hostagent.domxml import designer
from hostagent.domxml.domain import Domain
from hostagent.domxml.metadata import DataDiskRecord, Metadata
from hostagent.guest import extensions
from hostagent.hypervisor.virt import Hypervisor, HypervisorError
from hostagent.lifecycle.faults import crash_point
from hostagent.lifecycle.generations import GenerationBuilder, undone_if_failed
from hostagent.lifecycle.journal import Entry, Journal
from hostagent.lifecycle.operations import OperationFailed
from hostagent.lifecycle.power import Power
from hostagent.lifecycle.records import Conflict, InstanceRecords, meta
from hostagent.network.addresses import Subnet, mac_for
from kvmss.base import qemuimg


def validate_spec(spec: instancespec.InstanceSpec) -> None:
    """What only a generation's script would find wrong, checked before an
    operation is accepted (a 4xx, not a failed operation)."""
    try:
        extensions.user_data_script(
            instance="check",
            instance_id="check",
            extensions=extensions.order(spec.extensions),
            report_url="http://127.0.0.1/",
            token="check",
            custom_data=spec.osProfile.customData,
        )
    except ValueError as e:
        raise OperationFailed("InvalidSpec", str(e)) from None


class Creation:
    def __init__(
        self,
        domain_type: str,
        bridge: str,
        hv: Hypervisor,
        layout: Layout,
        journal: Journal,
        builder: GenerationBuilder,
        records: InstanceRecords,
        power: Power,
        subnet: Subnet,
    ) -> None:
        self.domain_type = domain_type
        self.bridge = bridge
        self.hv = hv
        self.layout = layout
        self.journal = journal
        self.builder = builder
        self.records = records
        self.power = power
        self.subnet = subnet
        self._alloc_lock = threading.Lock()

    def create(self, op_id: str, name: str, spec: instancespec.InstanceSpec) -> None:
        existing = self.hv.get(name)
        if existing is not None:
            self.converge(existing, spec)
            return
        if self.hv.state(name) != "absent":
            raise Conflict(f"a domain named {name} exists on this host and is not a kvmss instance")
        self.records.save_spec(name, spec)
        entry = self._record_intent(op_id, name, spec)
        address = str(entry.data["address"])
        with undone_if_failed(lambda: self.undo(entry)):
            gen = self.builder.build(name, 1, spec.image, spec, address, mac_for(address))
            disks = self.ensure_data_disks(name, spec.dataDisks)
        crash_point("create", "prepared")
        mac = mac_for(address)
        m = Metadata(instance=name, address=address, mac=mac, current=gen, data_disks=disks)
        entry = self.journal.record(entry.at("defining"))
        try:
            self.hv.define(self._design(name, str(entry.data["uuid"]), self.domain_type, spec, m))
        except HypervisorError as e:
            self.undo(entry)
            raise OperationFailed("DefineFailed", str(e)) from None
        crash_point("create", "defined")
        entry = self.journal.record(entry.at("starting"))
        self.power.boot(name, spec, address)
        self.journal.record(entry.at("done"))

    def _record_intent(self, op_id: str, name: str, spec: instancespec.InstanceSpec) -> Entry:
        """Journal "preparing" with the address, uuid and data disks this
        create takes, under the lock that keeps two creates off one address."""
        with self._alloc_lock:
            in_use = {meta(d).address for d in self.hv.owned()}
            in_use |= {
                str(e.data["address"]) for e in self.journal.pending() if "address" in e.data
            }
            data = {
                "address": self.subnet.allocate(in_use),
                "uuid": str(uuid.uuid4()),
                "createdDataDisks": [
                    d.lun for d in spec.dataDisks if not self.layout.data_disk(name, d.lun).exists()
                ],
            }
            return self.journal.record(Entry(op_id, "create", name, "preparing", data=data))

    def ensure_data_disks(
        self, name: str, wanted: list[instancespec.DataDisk]
    ) -> tuple[DataDiskRecord, ...]:
        """Create the data disks that do not exist yet; an existing one is left as it is."""
        out = []
        for d in sorted(wanted, key=lambda d: d.lun):
            path = self.layout.data_disk(name, d.lun)
            if not path.exists():
                qemuimg.create(path, d.diskSizeGB << 30, fmt="qcow2")
            out.append(DataDiskRecord(lun=d.lun, size_gb=d.diskSizeGB, path=str(path)))
        return tuple(out)

    def undo(self, entry: Entry) -> None:
        """Remove what a create made before its domain was defined."""
        name = entry.instance
        if self.hv.get(name) is None:
            self.builder.remove(name, 1)
            for lun in entry.data.get("createdDataDisks", []):
                self.layout.data_disk(name, int(lun)).unlink(missing_ok=True)
            self.layout.spec(name).unlink(missing_ok=True)
        self.journal.clear(name)

    def converge(self, dom: Domain, spec: instancespec.InstanceSpec) -> None:
        """An existing instance takes the new spec: extensions and probe apply
        from the next generation and at once respectively; new data disks and
        hardware changes apply at the next start. Data disks are never removed."""
        name = dom.name
        m = meta(dom)
        self.records.save_spec(name, spec)
        have = {d.lun for d in m.data_disks}
        extra = [d for d in spec.dataDisks if d.lun not in have]
        if extra or dom.vcpus != spec.vcpus or dom.memory_mib != spec.memoryMB:
            disks = m.data_disks + self.ensure_data_disks(name, extra)
            new_meta = replace(m, data_disks=tuple(sorted(disks, key=lambda d: d.lun)))
            fresh = self._design(name, dom.uuid, dom.type, spec, new_meta)
            # keep the machine type libvirt pinned, so the guest's hardware stays put
            self.hv.define(replace(fresh, os=replace(fresh.os, machine=dom.os.machine)))
        self.power.watch(name, spec, m.address)

    def _design(
        self, name: str, uuid_: str, domain_type: str, spec: instancespec.InstanceSpec, m: Metadata
    ) -> Domain:
        return designer.design(
            designer.InstanceLayout(
                name=name,
                uuid=uuid_,
                domain_type=domain_type,
                vcpus=spec.vcpus,
                memory_mib=spec.memoryMB,
                bridge=self.bridge,
                console_log=str(self.layout.console_log(name)),
                metadata=m,
            )
        )
