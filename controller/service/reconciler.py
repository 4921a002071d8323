"""Reconciling a scale set's instances to its model's capacity: creating
missing ones on the model's image, finishing ones left Creating, removing
the highest extras; one at a time per scale set."""

from __future__ import annotations

import logging
import threading

from controller.fleet import placement, specs
from controller.service.base import ControllerError
from controller.service.imagespecs import ImageSpecs
from controller.store.facade import InstanceRecord, instance_name
from controller.store.states import ProvisioningState
from hostagent.contract.client import AgentError

log = logging.getLogger(__name__)


class Reconciler(ImageSpecs):
    """Instances brought to the model's capacity, in the background."""

    _set_locks: dict[str, threading.Lock]
    _dirty: set[str]

    def _reconcile_later(self, name: str) -> None:
        """Reconcile in the background; a request made while one runs makes it
        run again, so the last model always wins."""
        key = f"reconcile-{name}"
        with self._lock:
            self._dirty.add(name)

        def work() -> None:
            while True:
                with self._lock:
                    if name not in self._dirty or self._stop.is_set():
                        if self._threads.get(key) is threading.current_thread():
                            del self._threads[key]
                        return
                    self._dirty.discard(name)
                self.reconcile(name)

        self._background(key, work)

    def _set_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._set_locks.setdefault(name, threading.Lock())

    def reconcile(self, name: str) -> None:
        """Bring the instances to ``sku.capacity``: create missing ones on the
        model's image, finish ones left Creating, remove the highest extras."""
        with self._set_lock(name):
            try:
                model = self.model(name)
            except ControllerError:
                return
            insts = self.store.instances.of(name)
            extra = placement.ids_to_remove([i.instance_id for i in insts], model.capacity)
            for iid in extra:
                inst = next(i for i in insts if i.instance_id == iid)
                self._delete_instance(inst)
            if extra:
                insts = self.store.instances.of(name)
            next_id = max((int(i.instance_id) for i in insts), default=-1) + 1
            new = placement.new_instance_ids(
                [i.instance_id for i in insts], model.capacity, next_id
            )
            if not new and all(i.state != ProvisioningState.CREATING for i in insts):
                return  # the common case: a change that leaves the capacity alone
            target = self.resolve(model.image_reference)
            hosts = [h.name for h in self.store.hosts.all()]
            try:
                where = placement.place(new, hosts, {i.instance_id: i.host for i in insts})
            except placement.PlacementError as e:
                log.error("%s: %s", name, e)
                return
            self.store.instances.add_many(
                [
                    InstanceRecord(
                        name,
                        iid,
                        instance_name(name, iid),
                        host,
                        ud,
                        fd,
                        target.version,
                        ProvisioningState.CREATING,
                    )
                    for iid, (host, ud, fd) in where.items()
                ]
            )
            pending = [
                i for i in self.store.instances.of(name) if i.state == ProvisioningState.CREATING
            ]
            spec_image = self.image_spec(target)
            ops = []
            for inst in pending:
                spec = specs.instance_spec(
                    model,
                    inst.name,
                    spec_image,
                    f"{model.computer_name_prefix}{int(inst.instance_id):06d}",
                )
                try:
                    ops.append((inst, self.agents.put_instance(inst.host, inst.name, spec)))
                except AgentError as e:
                    log.error("%s: create failed: %s", inst.name, e)
                    self.store.instances.update(
                        name, inst.instance_id, state=ProvisioningState.FAILED
                    )
            # One write for every outcome known, made before each wait: a
            # scale-out of hundreds is a few commits, not hundreds.
            settled: dict[str, ProvisioningState] = {}
            for inst, op in ops:
                if op.status == "InProgress" and settled:
                    self.store.instances.set_states(name, settled)
                    settled = {}
                done = self._wait_op(inst.host, op)
                if done.status != "Succeeded":
                    why = (
                        f"{done.error.code}: {done.error.message}"
                        if done.error
                        else f"still {done.status}"
                    )
                    log.error("%s: create failed on %s: %s", inst.name, inst.host, why)
                settled[inst.instance_id] = (
                    ProvisioningState.RUNNING
                    if done.status == "Succeeded"
                    else ProvisioningState.FAILED
                )
            if settled:
                self.store.instances.set_states(name, settled)

    def _delete_instance(self, inst: InstanceRecord) -> None:
        try:
            op = self.agents.delete(inst.host, inst.name, f"del-{inst.name}")
            self._wait_op(inst.host, op)
        except AgentError as e:
            log.warning("deleting %s on %s: %s", inst.name, inst.host, e)
        self.store.instances.delete(inst.scale_set, inst.instance_id)
