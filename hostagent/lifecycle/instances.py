"""Instance lifecycle on one host: create/converge, reimage, rollback, commit,
start, stop, delete, and the instance view.

Every step of an operation that changes disks or the domain definition is
recorded in the journal *before* it is done (see :mod:`hostagent.lifecycle.journal`);
:mod:`hostagent.lifecycle.recovery` finishes or undoes whatever a crash interrupted.
Data disks are created once and never written by the agent again.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from hostagent.contract import instancespec, views
from hostagent.disks.imagecache import ImageRejected
from hostagent.disks.layout import Layout
from hostagent.domxml import designer
from hostagent.domxml.domain import Domain
from hostagent.domxml.metadata import DataDiskRecord, Generation, Metadata
from hostagent.guest import extensions
from hostagent.guest.reports import ReportStore
from hostagent.health.probes import Prober
from hostagent.health.verdict import verdict
from hostagent.hypervisor.virt import Hypervisor, HypervisorError
from hostagent.lifecycle.faults import crash_point
from hostagent.lifecycle.generations import GenerationBuilder
from hostagent.lifecycle.journal import Entry, Journal
from hostagent.lifecycle.operations import OperationFailed
from hostagent.network.addresses import Subnet, mac_for
from kvmss.base import atomicfile, qemuimg

log = logging.getLogger(__name__)


class NotFound(OperationFailed):
    def __init__(self, name: str) -> None:
        super().__init__("NotFound", f"instance {name} does not exist on this host")


class Conflict(OperationFailed):
    def __init__(self, message: str) -> None:
        super().__init__("Conflict", message)


@dataclass(frozen=True)
class HostSettings:
    domain_type: str
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
        self.settings = settings
        self.hv = hv
        self.layout = layout
        self.journal = journal
        self.builder = builder
        self.reports = reports
        self.prober = prober
        self.subnet = subnet
        self._alloc_lock = threading.Lock()

    # -- stored spec ---------------------------------------------------------

    def spec(self, name: str) -> instancespec.InstanceSpec | None:
        p = self.layout.spec(name)
        if not p.exists():
            return None
        return instancespec.InstanceSpec(**atomicfile.read_json(p))

    def _save_spec(self, name: str, spec: instancespec.InstanceSpec) -> None:
        self.layout.make_instance_dir(name)
        stored = spec.model_copy(update={"operationId": None})
        atomicfile.write_json(self.layout.spec(name), stored.model_dump(mode="json"))

    def domain(self, name: str) -> Domain:
        dom = self.hv.get(name)
        if dom is None or dom.metadata is None:
            raise NotFound(name)
        return dom

    @staticmethod
    def meta(dom: Domain) -> Metadata:
        assert dom.metadata is not None
        return dom.metadata

    # -- validation done before an operation is accepted (4xx) ----------------

    @staticmethod
    def validate_spec(spec: instancespec.InstanceSpec) -> None:
        try:
            ordered = extensions.order(spec.extensions)
            extensions.user_data_script(
                instance="check",
                instance_id="check",
                extensions=ordered,
                report_url="http://127.0.0.1/",
                token="check",
                custom_data=spec.osProfile.customData,
            )
        except ValueError as e:
            raise OperationFailed("InvalidSpec", str(e)) from None

    # -- create / converge -----------------------------------------------------

    def _allocate_address(self) -> str:
        in_use = {self.meta(d).address for d in self.hv.owned()}
        in_use |= {str(e.data["address"]) for e in self.journal.pending() if "address" in e.data}
        return self.subnet.allocate(in_use)

    def create(self, op_id: str, name: str, spec: instancespec.InstanceSpec) -> None:
        existing = self.hv.get(name)
        if existing is not None:
            self._converge(existing, spec)
            return
        if self.hv.state(name) != "absent":
            raise Conflict(f"a domain named {name} exists on this host and is not a kvmss instance")
        self._save_spec(name, spec)
        with self._alloc_lock:
            address = self._allocate_address()
            entry = self.journal.record(
                Entry(
                    op_id,
                    "create",
                    name,
                    "preparing",
                    data={
                        "address": address,
                        "uuid": str(uuid.uuid4()),
                        "createdDataDisks": [
                            d.lun
                            for d in spec.dataDisks
                            if not self.layout.data_disk(name, d.lun).exists()
                        ],
                    },
                )
            )
        try:
            gen = self.builder.build(name, 1, spec.image, spec, address, mac_for(address))
            disks = self._ensure_data_disks(name, spec.dataDisks)
        except ImageRejected as e:
            self.undo_create(entry)
            raise OperationFailed(f"Image{e.code}", str(e)) from None
        except BaseException:
            self.undo_create(entry)
            raise
        crash_point("create", "prepared")
        meta = Metadata(
            instance=name,
            address=address,
            mac=mac_for(address),
            current=gen,
            previous=None,
            data_disks=disks,
        )
        layout = designer.InstanceLayout(
            name=name,
            uuid=str(entry.data["uuid"]),
            domain_type=self.settings.domain_type,
            vcpus=spec.vcpus,
            memory_mib=spec.memoryMB,
            bridge=self.settings.bridge,
            console_log=str(self.layout.console_log(name)),
            metadata=meta,
        )
        entry = self.journal.record(entry.at("defining"))
        try:
            self.hv.define(designer.design(layout))
        except HypervisorError as e:
            self.undo_create(entry)
            raise OperationFailed("DefineFailed", str(e)) from None
        crash_point("create", "defined")
        entry = self.journal.record(entry.at("starting"))
        self._start(name, spec, address)
        self.journal.record(entry.at("done"))

    def _ensure_data_disks(
        self, name: str, wanted: list[instancespec.DataDisk]
    ) -> tuple[DataDiskRecord, ...]:
        out = []
        for d in sorted(wanted, key=lambda d: d.lun):
            path = self.layout.data_disk(name, d.lun)
            if not path.exists():
                qemuimg.create(path, d.diskSizeGB << 30, fmt="qcow2")
            out.append(DataDiskRecord(lun=d.lun, size_gb=d.diskSizeGB, path=str(path)))
        return tuple(out)

    def undo_create(self, entry: Entry) -> None:
        """Remove what a create made before its domain was defined."""
        name = entry.instance
        if self.hv.get(name) is None:
            self.builder.remove(name, 1)
            for lun in entry.data.get("createdDataDisks", []):
                self.layout.data_disk(name, int(lun)).unlink(missing_ok=True)
            self.layout.spec(name).unlink(missing_ok=True)
        self.journal.clear(name)

    def _converge(self, dom: Domain, spec: instancespec.InstanceSpec) -> None:
        """An existing instance takes the new spec: extensions and probe apply
        from the next generation and at once respectively; new data disks and
        hardware changes apply at the next start. Data disks are never removed."""
        name = dom.name
        meta = self.meta(dom)
        self._save_spec(name, spec)
        have = {d.lun for d in meta.data_disks}
        extra = [d for d in spec.dataDisks if d.lun not in have]
        if extra or dom.vcpus != spec.vcpus or dom.memory_mib != spec.memoryMB:
            disks = meta.data_disks + self._ensure_data_disks(name, extra)
            new_meta = replace(meta, data_disks=tuple(sorted(disks, key=lambda d: d.lun)))
            layout = designer.InstanceLayout(
                name=name,
                uuid=dom.uuid,
                domain_type=dom.type,
                vcpus=spec.vcpus,
                memory_mib=spec.memoryMB,
                bridge=self.settings.bridge,
                console_log=str(self.layout.console_log(name)),
                metadata=new_meta,
            )
            fresh = designer.design(layout)
            # keep the machine type libvirt pinned, so the guest's hardware stays put
            self.hv.define(replace(fresh, os=replace(fresh.os, machine=dom.os.machine)))
        self.watch(name, spec, meta.address)

    # -- reimage -----------------------------------------------------------------

    def reimage(self, op_id: str, name: str, image: instancespec.ImageSpec) -> None:
        dom = self.domain(name)
        meta = self.meta(dom)
        spec = self.spec(name)
        if spec is None:
            raise Conflict(f"instance {name} has no stored spec; PUT it again first")
        numbers = [meta.current.number] + ([meta.previous.number] if meta.previous else [])
        new_number = max(numbers) + 1
        entry = self.journal.record(
            Entry(
                op_id,
                "reimage",
                name,
                "preparing",
                was_running=self.hv.is_running(name),
                data={
                    "from": meta.current.number,
                    "to": new_number,
                    "drop": meta.previous.number if meta.previous else None,
                },
            )
        )
        try:
            gen = self.builder.build(name, new_number, image, spec, meta.address, meta.mac)
        except ImageRejected as e:
            self.undo_reimage(entry)
            raise OperationFailed(f"Image{e.code}", str(e)) from None
        except BaseException:
            self.undo_reimage(entry)
            raise
        crash_point("reimage", "prepared")
        entry = self.journal.record(entry.at("stopping"))
        try:
            self.hv.stop(name, self.settings.shutdown_timeout)
        except HypervisorError as e:
            self.undo_reimage(entry)
            raise OperationFailed("StopFailed", str(e)) from None
        crash_point("reimage", "stopped")
        entry = self.journal.record(entry.at("swapping"))
        new_meta = replace(meta, current=gen, previous=meta.current)
        try:
            self.hv.define(designer.apply_generation(dom, new_meta))
        except HypervisorError as e:
            self.undo_reimage(entry)
            raise OperationFailed("SwapFailed", str(e)) from None
        crash_point("reimage", "swapped")
        self.finish_reimage(entry)

    def finish_reimage(self, entry: Entry) -> None:
        """After the swap: start on the new disk, drop the generation before the
        previous one, forget reports of generations that are gone."""
        name = entry.instance
        entry = self.journal.record(entry.at("starting"))
        meta = self.meta(self.domain(name))
        spec = self.spec(name)
        try:
            self._start(name, spec, meta.address)
        except HypervisorError as e:
            self.journal.clear(name)
            raise OperationFailed(
                "StartFailed", f"{e}; the instance is on its new OS disk, roll back to undo"
            ) from None
        crash_point("reimage", "started")
        entry = self.journal.record(entry.at("cleaning"))
        drop = entry.data.get("drop")
        if drop is not None and drop not in self._referenced(meta):
            self.builder.remove(name, int(drop))
        self._prune_reports(name, meta)
        self.journal.record(entry.at("done"))

    def undo_reimage(self, entry: Entry) -> None:
        """Before the swap: remove the new generation's files, restart the guest
        if it was running. The instance stays on its old OS disk."""
        name = entry.instance
        to = int(entry.data["to"])
        dom = self.hv.get(name)
        if dom is not None and to not in self._referenced(self.meta(dom)):
            self.builder.remove(name, to)
        if entry.was_running and dom is not None and not self.hv.is_running(name):
            spec = self.spec(name)
            try:
                self._start(name, spec, self.meta(dom).address)
            except HypervisorError as e:
                log.error("could not restart %s on its old OS disk: %s", name, e)
        self.journal.clear(name)

    # -- rollback / commit ---------------------------------------------------------

    def rollback(self, op_id: str, name: str) -> None:
        dom = self.domain(name)
        meta = self.meta(dom)
        if meta.previous is None:
            raise Conflict(f"instance {name} has no previous OS disk to roll back to")
        entry = self.journal.record(
            Entry(
                op_id,
                "rollback",
                name,
                "stopping",
                was_running=self.hv.is_running(name),
                data={"from": meta.current.number, "to": meta.previous.number},
            )
        )
        self.redo_rollback(entry)

    def redo_rollback(self, entry: Entry) -> None:
        name = entry.instance
        dom = self.domain(name)
        meta = self.meta(dom)
        to = int(entry.data["to"])
        if meta.current.number != to:
            if meta.previous is None or meta.previous.number != to:
                self.journal.clear(name)
                raise Conflict(f"instance {name} no longer has generation {to} to return to")
            entry = self.journal.record(entry.at("stopping"))
            self.hv.stop(name, self.settings.shutdown_timeout)
            crash_point("rollback", "stopped")
            entry = self.journal.record(entry.at("swapping"))
            self.hv.define(
                designer.apply_generation(dom, replace(meta, current=meta.previous, previous=None))
            )
            crash_point("rollback", "swapped")
            meta = self.meta(self.domain(name))
        entry = self.journal.record(entry.at("starting"))
        try:
            self._start(name, self.spec(name), meta.address)
        except HypervisorError as e:
            self.journal.clear(name)
            raise OperationFailed("StartFailed", str(e)) from None
        crash_point("rollback", "started")
        entry = self.journal.record(entry.at("cleaning"))
        failed = int(entry.data["from"])
        if failed not in self._referenced(meta):
            self.builder.remove(name, failed)
        self._prune_reports(name, meta)
        self.journal.record(entry.at("done"))

    def commit(self, op_id: str, name: str) -> None:
        dom = self.domain(name)
        meta = self.meta(dom)
        if meta.previous is None:
            return
        entry = Entry(op_id, "commit", name, "swapping", data={"drop": meta.previous.number})
        self.redo_commit(self.journal.record(entry))

    def redo_commit(self, entry: Entry) -> None:
        name = entry.instance
        dom = self.domain(name)
        meta = self.meta(dom)
        if meta.previous is not None:
            self.hv.define(designer.apply_generation(dom, replace(meta, previous=None)))
            meta = replace(meta, previous=None)
        crash_point("commit", "swapped")
        entry = self.journal.record(entry.at("cleaning"))
        drop = int(entry.data["drop"])
        if drop not in self._referenced(meta):
            self.builder.remove(name, drop)
        self._prune_reports(name, meta)
        self.journal.record(entry.at("done"))

    # -- power -------------------------------------------------------------------

    def start(self, op_id: str, name: str) -> None:
        meta = self.meta(self.domain(name))
        try:
            self._start(name, self.spec(name), meta.address)
        except HypervisorError as e:
            raise OperationFailed("StartFailed", str(e)) from None

    def stop(self, op_id: str, name: str) -> None:
        self.domain(name)
        self.prober.unwatch(name)
        try:
            self.hv.stop(name, self.settings.shutdown_timeout)
        except HypervisorError as e:
            raise OperationFailed("StopFailed", str(e)) from None

    def _start(self, name: str, spec: instancespec.InstanceSpec | None, address: str) -> None:
        if spec is not None:
            self.watch(name, spec, address)
        self.hv.start(name)

    def watch(self, name: str, spec: instancespec.InstanceSpec, address: str) -> None:
        if spec.healthProbe is not None:
            self.prober.watch(name, spec.healthProbe, address)
        else:
            self.prober.unwatch(name)

    # -- delete ------------------------------------------------------------------

    def delete(self, op_id: str, name: str, delete_data_disks: bool) -> None:
        dom = self.hv.get(name)
        entry = Entry(
            op_id,
            "delete",
            name,
            "undefining",
            data={"deleteDataDisks": delete_data_disks},
        )
        if dom is None and not self.layout.instance_dir(name).exists():
            return
        self.redo_delete(self.journal.record(entry))

    def redo_delete(self, entry: Entry) -> None:
        name = entry.instance
        self.prober.unwatch(name)
        if self.hv.get(name) is not None:  # never a domain kvmss does not own
            self.hv.undefine(name)
        crash_point("delete", "undefined")
        d = self.layout.instance_dir(name)
        for n in self.builder.files_on_disk(name) if d.exists() else set():
            self.builder.remove(name, n)
        for p in (self.layout.spec(name), self.layout.reports(name), self.layout.console_log(name)):
            p.unlink(missing_ok=True)
        if entry.data.get("deleteDataDisks"):
            for p in d.glob("data-lun*.qcow2"):
                p.unlink()
        if d.exists() and not any(d.iterdir()):
            d.rmdir()
        self.journal.record(entry.at("done"))

    # -- helpers -------------------------------------------------------------------

    @staticmethod
    def _referenced(meta: Metadata) -> set[int]:
        gens: list[Generation] = [meta.current] + ([meta.previous] if meta.previous else [])
        return {g.number for g in gens}

    def _prune_reports(self, name: str, meta: Metadata) -> None:
        keep = {meta.current.instance_id}
        if meta.previous is not None:
            keep.add(meta.previous.instance_id)
        self.reports.prune(name, keep)

    def sweep_orphans(self, name: str) -> list[Path]:
        """Delete OS disks and seeds no generation of the domain refers to."""
        dom = self.hv.get(name)
        if dom is None or self.journal.get(name) is not None:
            return []
        keep = self._referenced(self.meta(dom))
        removed = []
        for n in sorted(self.builder.files_on_disk(name) - keep):
            removed += [self.layout.os_disk(name, n), self.layout.seed(name, n)]
            self.builder.remove(name, n)
        return [p for p in removed if not p.exists()]

    # -- views -------------------------------------------------------------------

    def view(self, name: str) -> views.InstanceView:
        dom = self.domain(name)
        return self._view(dom)

    def list(self) -> list[views.InstanceView]:
        return [self._view(d) for d in sorted(self.hv.owned(), key=lambda d: d.name)]

    def _view(self, dom: Domain) -> views.InstanceView:
        meta = self.meta(dom)
        name = dom.name
        power = self.hv.state(name)
        spec = self.spec(name)
        exts = self.reports.extensions(name, meta.current.instance_id)
        probe = spec.healthProbe if spec else None
        app_expected = bool(spec) and any(
            e.type == "ApplicationHealthLinux" for e in (spec.extensions if spec else [])
        )
        app = self.reports.application_health(name, meta.current.instance_id)
        health = verdict(
            power_state=power,
            extensions=exts,
            probe=probe,
            probe_healthy=self.prober.healthy(name) if probe else None,
            app_health_expected=app_expected,
            app_health=app,
        )
        return views.InstanceView(
            name=name,
            powerState=power,
            address=meta.address,
            current=_gen_view(meta.current),
            previous=_gen_view(meta.previous) if meta.previous else None,
            dataDisks=[
                views.DataDiskView(lun=d.lun, diskSizeGB=d.size_gb, path=d.path)
                for d in meta.data_disks
            ],
            extensions=exts,
            probe=self.prober.status(name) if probe else None,
            applicationHealth=app,
            health=health,
        )


def _gen_view(g: Generation) -> views.GenerationView:
    return views.GenerationView(
        generation=g.number,
        instanceId=g.instance_id,
        image=instancespec.ImageReference(
            publisher=g.image.publisher,
            offer=g.image.offer,
            sku=g.image.sku,
            version=g.image.version,
        ),
        imageSha256=g.image.sha256,
        osDisk=g.os_disk,
    )
