"""Reimage (a new OS disk generation), and the rollback or commit that ends it.

Each is journaled step by step before it acts (docs/design.md rule 10); the
domain's current generation says whether the OS disk swap happened, so
recovery finishes a swapped reimage and undoes one that was not: the
instance is on its old or its new OS disk, never in between.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from hostagent.contract import instancespec
from hostagent.domxml import designer
from hostagent.hypervisor.virt import Hypervisor, HypervisorError
from hostagent.lifecycle.cleanup import Cleanup
from hostagent.lifecycle.faults import crash_point
from hostagent.lifecycle.generations import GenerationBuilder, undone_if_failed
from hostagent.lifecycle.journal import Entry, Journal
from hostagent.lifecycle.operations import OperationFailed
from hostagent.lifecycle.power import Power
from hostagent.lifecycle.records import Conflict, InstanceRecords, generation_numbers, meta

log = logging.getLogger(__name__)


class Reimaging:
    def __init__(
        self,
        hv: Hypervisor,
        journal: Journal,
        builder: GenerationBuilder,
        records: InstanceRecords,
        power: Power,
        cleanup: Cleanup,
    ) -> None:
        self.hv = hv
        self.journal = journal
        self.builder = builder
        self.records = records
        self.power = power
        self.cleanup = cleanup

    def reimage(self, op_id: str, name: str, image: instancespec.ImageSpec) -> None:
        dom = self.records.domain(name)
        m = meta(dom)
        spec = self.records.spec(name)
        if spec is None:
            raise Conflict(f"instance {name} has no stored spec; PUT it again first")
        new_number = max(generation_numbers(m)) + 1
        entry = self.journal.record(
            Entry(
                op_id,
                "reimage",
                name,
                "preparing",
                was_running=self.hv.is_running(name),
                data={
                    "from": m.current.number,
                    "to": new_number,
                    "drop": m.previous.number if m.previous else None,
                },
            )
        )
        with undone_if_failed(lambda: self.undo_reimage(entry)):
            gen = self.builder.build(name, new_number, image, spec, m.address, m.mac)
        crash_point("reimage", "prepared")
        entry = self.journal.record(entry.at("stopping"))
        try:
            self.power.shut_down(name)
        except HypervisorError as e:
            self.undo_reimage(entry)
            raise OperationFailed("StopFailed", str(e)) from None
        crash_point("reimage", "stopped")
        entry = self.journal.record(entry.at("swapping"))
        try:
            self.hv.define(
                designer.apply_generation(dom, replace(m, current=gen, previous=m.current))
            )
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
        m = meta(self.records.domain(name))
        try:
            self.power.boot(name, self.records.spec(name), m.address)
        except HypervisorError as e:
            self.journal.clear(name)
            raise OperationFailed(
                "StartFailed", f"{e}; the instance is on its new OS disk, roll back to undo"
            ) from None
        crash_point("reimage", "started")
        drop = entry.data.get("drop")
        self.cleanup.clean(entry, None if drop is None else int(drop), m)

    def undo_reimage(self, entry: Entry) -> None:
        """Before the swap: remove the new generation's files, restart the guest
        if it was running. The instance stays on its old OS disk."""
        name = entry.instance
        to = int(entry.data["to"])
        dom = self.hv.get(name)
        if dom is not None and to not in generation_numbers(meta(dom)):
            self.builder.remove(name, to)
        if entry.was_running and dom is not None and not self.hv.is_running(name):
            try:
                self.power.boot(name, self.records.spec(name), meta(dom).address)
            except HypervisorError as e:
                log.error("could not restart %s on its old OS disk: %s", name, e)
        self.journal.clear(name)

    def rollback(self, op_id: str, name: str) -> None:
        m = meta(self.records.domain(name))
        if m.previous is None:
            raise Conflict(f"instance {name} has no previous OS disk to roll back to")
        entry = self.journal.record(
            Entry(
                op_id,
                "rollback",
                name,
                "stopping",
                was_running=self.hv.is_running(name),
                data={"from": m.current.number, "to": m.previous.number},
            )
        )
        self.redo_rollback(entry)

    def redo_rollback(self, entry: Entry) -> None:
        """Back to generation "to" (unless the domain is on it already), start,
        and remove the generation rolled back from."""
        name = entry.instance
        dom = self.records.domain(name)
        m = meta(dom)
        to = int(entry.data["to"])
        if m.current.number != to:
            if m.previous is None or m.previous.number != to:
                self.journal.clear(name)
                raise Conflict(f"instance {name} no longer has generation {to} to return to")
            entry = self.journal.record(entry.at("stopping"))
            self.power.shut_down(name)
            crash_point("rollback", "stopped")
            entry = self.journal.record(entry.at("swapping"))
            back = replace(m, current=m.previous, previous=None)
            self.hv.define(designer.apply_generation(dom, back))
            crash_point("rollback", "swapped")
            m = meta(self.records.domain(name))
        entry = self.journal.record(entry.at("starting"))
        try:
            self.power.boot(name, self.records.spec(name), m.address)
        except HypervisorError as e:
            self.journal.clear(name)
            raise OperationFailed("StartFailed", str(e)) from None
        crash_point("rollback", "started")
        self.cleanup.clean(entry, int(entry.data["from"]), m)

    def commit(self, op_id: str, name: str) -> None:
        m = meta(self.records.domain(name))
        if m.previous is None:
            return
        entry = Entry(op_id, "commit", name, "swapping", data={"drop": m.previous.number})
        self.redo_commit(self.journal.record(entry))

    def redo_commit(self, entry: Entry) -> None:
        """Forget the previous generation in the domain, then remove its files."""
        name = entry.instance
        dom = self.records.domain(name)
        m = meta(dom)
        if m.previous is not None:
            self.hv.define(designer.apply_generation(dom, replace(m, previous=None)))
            m = replace(m, previous=None)
        crash_point("commit", "swapped")
        self.cleanup.clean(entry, int(entry.data["drop"]), m)
