"""Starting and stopping an instance's domain, and its host-side probe: a
running instance with a probe in its spec is probed, a stopped one is not."""

from __future__ import annotations

from hostagent.contract import instancespec
from hostagent.health.probes import Prober
from hostagent.hypervisor.virt import Hypervisor, HypervisorError
from hostagent.lifecycle.operations import OperationFailed
from hostagent.lifecycle.records import InstanceRecords, meta


class Power:
    def __init__(
        self, hv: Hypervisor, prober: Prober, records: InstanceRecords, shutdown_timeout: float
    ) -> None:
        self.hv = hv
        self.prober = prober
        self.records = records
        self.shutdown_timeout = shutdown_timeout

    def start(self, name: str) -> None:
        address = meta(self.records.domain(name)).address
        try:
            self.boot(name, self.records.spec(name), address)
        except HypervisorError as e:
            raise OperationFailed("StartFailed", str(e)) from None

    def stop(self, name: str) -> None:
        self.records.domain(name)
        self.prober.unwatch(name)
        try:
            self.shut_down(name)
        except HypervisorError as e:
            raise OperationFailed("StopFailed", str(e)) from None

    def boot(self, name: str, spec: instancespec.InstanceSpec | None, address: str) -> None:
        """Start the domain, probing it from now on when its spec asks."""
        if spec is not None:
            self.watch(name, spec, address)
        self.hv.start(name)

    def shut_down(self, name: str) -> bool:
        """ACPI power-off, forced after the host's shutdown timeout."""
        return self.hv.stop(name, self.shutdown_timeout)

    def watch(self, name: str, spec: instancespec.InstanceSpec, address: str) -> None:
        if spec.healthProbe is not None:
            self.prober.watch(name, spec.healthProbe, address)
        else:
            self.prober.unwatch(name)
