"""Reconciling a scale set's instances to its model's capacity: creating
missing ones on the model's image, finishing ones left Creating, removing
the highest extras; one at a time per scale set."""

from __future__ import annotations

import logging
import threading

from controller.base.background import Background
from controller.base.errors import ControllerError
from controller.fleet import placement, specs
from controller.fleet.agents import AgentPort
from controller.fleet.models import ScaleSetModels
from controller.fleet.operations import OperationWaiter
from controller.images.specs import ImageSpecs
from controller.model.scaleset import ScaleSetModel
from controller.store.facade import ImageRecord, InstanceRecord, Store, instance_name
from controller.store.states import ProvisioningState
from hostagent.contract.client import AgentError
from hostagent.contract.operations import Operation

log = logging.getLogger(__name__)

CREATING = ProvisioningState.CREATING


class Reconciler:
    def __init__(
        self,
        store: Store,
        agents: AgentPort,
        models: ScaleSetModels,
        images: ImageSpecs,
        operations: OperationWaiter,
        background: Background,
    ) -> None:
        self._store = store
        self._agents = agents
        self._models = models
        self._images = images
        self._operations = operations
        self._background = background
        self._lock = threading.Lock()
        self._set_locks: dict[str, threading.Lock] = {}

    def reconcile_later(self, name: str) -> None:
        """Reconcile in the background; a request made while one runs makes it
        run again, so the last model always wins."""
        self._background.coalesce(f"reconcile-{name}", lambda: self.reconcile(name))

    def set_lock(self, name: str) -> threading.Lock:
        """Held while instances of ``name`` are created or deleted."""
        with self._lock:
            return self._set_locks.setdefault(name, threading.Lock())

    def reconcile(self, name: str) -> None:
        """Bring the instances to ``sku.capacity``: create missing ones on the
        model's image, finish ones left Creating, remove the highest extras."""
        with self.set_lock(name):
            try:
                model = self._models.model(name)
            except ControllerError:
                return
            insts = self._store.instances.of(name)
            extra = placement.ids_to_remove([i.instance_id for i in insts], model.capacity)
            for iid in extra:
                self.delete_instance(next(i for i in insts if i.instance_id == iid))
            if extra:
                insts = self._store.instances.of(name)
            next_id = max((int(i.instance_id) for i in insts), default=-1) + 1
            new = placement.new_instance_ids(
                [i.instance_id for i in insts], model.capacity, next_id
            )
            if not new and all(i.state != CREATING for i in insts):
                return  # the common case: a change that leaves the capacity alone
            target = self._images.resolve(model.image_reference)
            if self._place(model, insts, new, target):
                self._create(model, target)

    def _place(
        self, model: ScaleSetModel, insts: list[InstanceRecord], new: list[str], target: ImageRecord
    ) -> bool:
        """Record the new instances (Creating) on their hosts; False when
        there is nowhere to put them."""
        try:
            where = placement.place(
                new,
                [h.name for h in self._store.hosts.all()],
                {i.instance_id: i.host for i in insts},
            )
        except placement.PlacementError as e:
            log.error("%s: %s", model.name, e)
            return False
        self._store.instances.add_many(
            [
                InstanceRecord(
                    model.name,
                    iid,
                    instance_name(model.name, iid),
                    host,
                    ud,
                    fd,
                    target.version,
                    CREATING,
                )
                for iid, (host, ud, fd) in where.items()
            ]
        )
        return True

    def _create(self, model: ScaleSetModel, target: ImageRecord) -> None:
        """Ask the agents for every instance left Creating, then wait for them."""
        name = model.name
        pending = [i for i in self._store.instances.of(name) if i.state == CREATING]
        spec_image = self._images.image_spec(target)
        ops = []
        for inst in pending:
            computer_name = f"{model.computer_name_prefix}{int(inst.instance_id):06d}"
            spec = specs.instance_spec(model, inst.name, spec_image, computer_name)
            try:
                ops.append((inst, self._agents.put_instance(inst.host, inst.name, spec)))
            except AgentError as e:
                log.error("%s: create failed: %s", inst.name, e)
                self._store.instances.update(name, inst.instance_id, state=ProvisioningState.FAILED)
        self._settle(name, ops)

    def _settle(self, name: str, ops: list[tuple[InstanceRecord, Operation]]) -> None:
        # One write for every outcome known, made before each wait: a
        # scale-out of hundreds is a few commits, not hundreds.
        settled: dict[str, ProvisioningState] = {}
        for inst, op in ops:
            if op.status == "InProgress" and settled:
                self._store.instances.set_states(name, settled)
                settled = {}
            done = self._operations.wait(inst.host, op)
            ok = done.status == "Succeeded"
            if not ok:
                why = (
                    f"{done.error.code}: {done.error.message}"
                    if done.error
                    else f"still {done.status}"
                )
                log.error("%s: create failed on %s: %s", inst.name, inst.host, why)
            settled[inst.instance_id] = (
                ProvisioningState.RUNNING if ok else ProvisioningState.FAILED
            )
        if settled:
            self._store.instances.set_states(name, settled)

    def delete_instance(self, inst: InstanceRecord) -> None:
        try:
            op = self._agents.delete(inst.host, inst.name, f"del-{inst.name}")
            self._operations.wait(inst.host, op)
        except AgentError as e:
            log.warning("deleting %s on %s: %s", inst.name, inst.host, e)
        self._store.instances.delete(inst.scale_set, inst.instance_id)
