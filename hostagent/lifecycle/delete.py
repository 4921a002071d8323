"""Deleting an instance: its domain, generations, spec, reports and console
log; its data disks only when asked. Journaled "undefining" first, so a
killed agent finishes a delete it began."""

from __future__ import annotations

from hostagent.disks.layout import Layout
from hostagent.health.probes import Prober
from hostagent.hypervisor.virt import Hypervisor
from hostagent.lifecycle.faults import crash_point
from hostagent.lifecycle.generations import GenerationBuilder
from hostagent.lifecycle.journal import Entry, Journal


class Deletion:
    def __init__(
        self,
        hv: Hypervisor,
        layout: Layout,
        journal: Journal,
        builder: GenerationBuilder,
        prober: Prober,
    ) -> None:
        self.hv = hv
        self.layout = layout
        self.journal = journal
        self.builder = builder
        self.prober = prober

    def delete(self, op_id: str, name: str, delete_data_disks: bool) -> None:
        if self.hv.get(name) is None and not self.layout.instance_dir(name).exists():
            return
        entry = Entry(
            op_id, "delete", name, "undefining", data={"deleteDataDisks": delete_data_disks}
        )
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
