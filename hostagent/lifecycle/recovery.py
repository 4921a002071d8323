"""Finishing or undoing what a killed agent left half done.

For each journal entry, what libvirt says the domain runs decides:
- create: defined -> finish (start); not defined -> undo (remove its files).
- reimage: swapped (the domain's current generation is the new one) ->
  finish (start, clean up); not swapped -> undo (remove the new overlay and
  seed, restart on the old disk). The instance is on the old or the new OS
  disk, never in between, and no overlay is left behind.
- rollback, commit, delete: finished (they only move toward the safe state).
Then the operation is marked Succeeded or Failed so the controller sees the
outcome when it polls.
"""

from __future__ import annotations

import logging

from hostagent.contract import operations
from hostagent.hypervisor.virt import HypervisorError
from hostagent.lifecycle.instances import InstanceManager
from hostagent.lifecycle.journal import Entry
from hostagent.lifecycle.operations import OperationFailed, Operations
from hostagent.lifecycle.records import meta

log = logging.getLogger(__name__)


def recover(mgr: InstanceManager, ops: Operations) -> list[tuple[str, str, str]]:
    """Returns (instance, kind, outcome) for each operation it settled."""
    settled = []
    for entry in mgr.journal.pending():
        outcome = recover_entry(mgr, ops, entry)
        settled.append((entry.instance, entry.kind, outcome))
    for op in ops.interrupted():
        ops.finish(
            op.id,
            operations.ErrorInfo(
                code="Interrupted",
                message="the agent restarted while this operation ran; its last recorded step"
                " was already settled, check the instance view and retry if needed",
            ),
        )
        settled.append((op.instance, op.kind, "Failed (Interrupted)"))
    for dom in mgr.hv.owned():
        for p in mgr.cleanup.sweep_orphans(dom.name):
            log.warning("removed orphan %s", p)
    return settled


def recover_entry(mgr: InstanceManager, ops: Operations, entry: Entry) -> str:
    """Finish or undo one journal entry and record the operation's outcome."""
    error = _settle(mgr, entry)
    outcome = "Succeeded" if error is None else f"Failed ({error.code})"
    log.warning("recovered %s of %s: %s", entry.kind, entry.instance, outcome)
    ops.finish(entry.operation, error)
    mgr.journal.clear(entry.instance)
    return outcome


def _settle(mgr: InstanceManager, entry: Entry) -> operations.ErrorInfo | None:
    name = entry.instance
    if entry.step == "done":
        return None
    try:
        if entry.kind == "create":
            if mgr.hv.get(name) is None:
                mgr.creation.undo(entry)
                return _interrupted("create", "before the domain was defined; undone")
            mgr.journal.record(entry.at("starting"))
            mgr.start(entry.operation, name)
        elif entry.kind == "reimage":
            dom = mgr.hv.get(name)
            if dom is None:
                return _interrupted("reimage", "and the domain is gone")
            if meta(dom).current.number == int(entry.data["to"]):
                mgr.reimaging.finish_reimage(entry)
            else:
                mgr.reimaging.undo_reimage(entry)
                return _interrupted(
                    "reimage", "before the OS disk swap; undone, the instance keeps its old disk"
                )
        elif entry.kind == "rollback":
            mgr.reimaging.redo_rollback(entry)
        elif entry.kind == "commit":
            mgr.reimaging.redo_commit(entry)
        elif entry.kind == "delete":
            mgr.deletion.redo_delete(entry)
        else:
            return _interrupted(entry.kind, "and the agent does not know this kind")
    except OperationFailed as e:
        return operations.ErrorInfo(code=e.code, message=e.message)
    except HypervisorError as e:
        return operations.ErrorInfo(code="HypervisorError", message=str(e))
    return None


def _interrupted(kind: str, what: str) -> operations.ErrorInfo:
    return operations.ErrorInfo(
        code="Interrupted", message=f"the agent restarted during {kind} {what}"
    )
