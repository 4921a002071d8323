"""What the agent keeps of an instance: the spec the controller last sent
(``spec.json``) and the domain libvirt holds with kvmss's metadata, which is
the only record of its generations (docs/design.md "Processes")."""

from __future__ import annotations

from hostagent.contract import instancespec
from hostagent.disks.layout import Layout
from hostagent.domxml.domain import Domain
from hostagent.domxml.metadata import Metadata
from hostagent.hypervisor.virt import Hypervisor
from hostagent.lifecycle.operations import OperationFailed
from kvmss.base import atomicfile


class NotFound(OperationFailed):
    def __init__(self, name: str) -> None:
        super().__init__("NotFound", f"instance {name} does not exist on this host")


class Conflict(OperationFailed):
    def __init__(self, message: str) -> None:
        super().__init__("Conflict", message)


class InstanceRecords:
    def __init__(self, hv: Hypervisor, layout: Layout) -> None:
        self.hv = hv
        self.layout = layout

    def spec(self, name: str) -> instancespec.InstanceSpec | None:
        p = self.layout.spec(name)
        if not p.exists():
            return None
        return instancespec.InstanceSpec(**atomicfile.read_json(p))

    def save_spec(self, name: str, spec: instancespec.InstanceSpec) -> None:
        self.layout.make_instance_dir(name)
        stored = spec.model_copy(update={"operationId": None})
        atomicfile.write_json(self.layout.spec(name), stored.model_dump(mode="json"))

    def domain(self, name: str) -> Domain:
        """The domain of an instance this agent owns; NotFound otherwise."""
        dom = self.hv.get(name)
        if dom is None or dom.metadata is None:
            raise NotFound(name)
        return dom


def meta(dom: Domain) -> Metadata:
    """The metadata of a domain :meth:`Hypervisor.get` or ``owned`` returned (it has one)."""
    assert dom.metadata is not None
    return dom.metadata


def generation_numbers(m: Metadata) -> set[int]:
    """The generations a domain refers to: their files must stay."""
    return {m.current.number} | ({m.previous.number} if m.previous else set())
