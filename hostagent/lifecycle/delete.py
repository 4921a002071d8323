"""Deleting an instance: its domain, generations, spec, reports and console
log; its data disks only when asked. Journaled "undefining" first, so a
killed agent finishes a delete it began."""

from __future__ import annotations

from hostagent.disks.layout import Layout
from hostagent.health.probes import Prober
from hostagent.hypervisor.virt import Hypervisor
from hostagent.lifecycle.cleanup import Cleanup
from hostagent.lifecycle.faults import crash_point
from hostagent.lifecycle.journal import Entry, Journal


class Deletion:
    def __init__(
        self, hv: Hypervisor, layout: Layout, journal: Journal, cleanup: Cleanup, prober: Prober
    ) -> None:
        self.hv = hv
        self.layout = layout
        self.journal = journal
        self.cleanup = cleanup
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
        self.cleanup.remove_instance_files(name, bool(entry.data.get("deleteDataDisks")))
        self.journal.record(entry.at("done"))
