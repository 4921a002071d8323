"""Removing an instance's files: the generations its domain no longer refers
to and the reports of their instance-ids (an instance keeps its current OS
disk and at most one previous, docs/design.md "Words"), or all of them when
it is deleted."""

from __future__ import annotations

from pathlib import Path

from hostagent.disks.layout import Layout
from hostagent.domxml.metadata import Metadata
from hostagent.guest.reports import ReportStore
from hostagent.hypervisor.virt import Hypervisor
from hostagent.lifecycle.generations import GenerationBuilder
from hostagent.lifecycle.journal import Entry, Journal
from hostagent.lifecycle.records import generation_numbers, meta


class Cleanup:
    def __init__(
        self,
        hv: Hypervisor,
        layout: Layout,
        journal: Journal,
        builder: GenerationBuilder,
        reports: ReportStore,
    ) -> None:
        self.hv = hv
        self.layout = layout
        self.journal = journal
        self.builder = builder
        self.reports = reports

    def clean(self, entry: Entry, drop: int | None, m: Metadata) -> None:
        """The last steps of a swap: record "cleaning", remove generation
        ``drop`` unless ``m`` still refers to it, forget the reports of
        instance-ids ``m`` no longer has, record "done"."""
        name = entry.instance
        entry = self.journal.record(entry.at("cleaning"))
        if drop is not None and drop not in generation_numbers(m):
            self.builder.remove(name, drop)
        keep = {m.current.instance_id}
        if m.previous is not None:
            keep.add(m.previous.instance_id)
        self.reports.prune(name, keep)
        self.journal.record(entry.at("done"))

    def sweep_orphans(self, name: str) -> list[Path]:
        """Delete OS disks and seeds no generation of the domain refers to."""
        dom = self.hv.get(name)
        if dom is None or self.journal.get(name) is not None:
            return []
        keep = generation_numbers(meta(dom))
        removed = []
        for n in sorted(self.builder.files_on_disk(name) - keep):
            removed += [self.layout.os_disk(name, n), self.layout.seed(name, n)]
            self.builder.remove(name, n)
        return [p for p in removed if not p.exists()]

    def remove_instance_files(self, name: str, delete_data_disks: bool) -> None:
        """Everything in the instance's directory but its data disks, and
        those too when asked; the directory once it is empty."""
        d = self.layout.instance_dir(name)
        for n in self.builder.files_on_disk(name) if d.exists() else set():
            self.builder.remove(name, n)
        for p in (self.layout.spec(name), self.layout.reports(name), self.layout.console_log(name)):
            p.unlink(missing_ok=True)
        if delete_data_disks:
            for p in d.glob("data-lun*.qcow2"):
                p.unlink()
        if d.exists() and not any(d.iterdir()):
            d.rmdir()
