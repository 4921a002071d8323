"""Reimaging instances by hand: a fresh OS disk from the image each runs now,
data disks kept."""

from __future__ import annotations

import logging

from controller.base.background import Background
from controller.fleet.agents import AgentPort
from controller.fleet.models import ScaleSetModels
from controller.fleet.operations import OperationWaiter
from controller.images.specs import ImageSpecs
from hostagent.contract.client import AgentError
from kvmss.base.clock import Clock

log = logging.getLogger(__name__)


class Reimages:
    def __init__(
        self,
        agents: AgentPort,
        clock: Clock,
        models: ScaleSetModels,
        images: ImageSpecs,
        operations: OperationWaiter,
        background: Background,
    ) -> None:
        self._agents = agents
        self._clock = clock
        self._models = models
        self._images = images
        self._operations = operations
        self._background = background

    def reimage(self, name: str, instance_ids: list[str]) -> None:
        """Runs in the background, after the images are found; each agent
        journals its reimage."""
        ref = self._models.model(name).image_reference
        jobs = []
        for inst in self._models.named_instances(name, instance_ids):
            version = inst.image_version or self._images.resolve(ref).version
            jobs.append((inst, self._images.image_spec(self._images.resolve(ref, version))))

        def work() -> None:
            for inst, spec in jobs:
                op_id = f"reimage-{inst.name}-{int(self._clock.now() * 1000)}"
                try:
                    op = self._agents.reimage(inst.host, inst.name, spec, op_id)
                    op = self._operations.wait(inst.host, op)
                    if op.status == "Succeeded":
                        self._agents.commit(inst.host, inst.name, f"{op_id}-commit")
                    else:
                        log.error("reimage of %s failed: %s", inst.name, op.error)
                except AgentError as e:
                    log.error("reimage of %s: %s", inst.name, e)

        self._background.run(f"reimage-{name}-{self._clock.now()}", work)
