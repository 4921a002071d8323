"""What an agent answers about its host and its instances: the views the
controller reads (generations, disks, extensions, probe, health).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from hostagent.contract.instancespec import ImageReference

ExtensionState = Literal["NotStarted", "Transitioning", "Succeeded", "Failed"]
HealthState = Literal["Healthy", "Unhealthy", "Unknown"]


class ExtensionStatus(BaseModel):
    name: str
    status: ExtensionState
    exitCode: int | None = None
    message: str | None = None
    instanceId: str | None = None
    time: str | None = None


class ProbeStatus(BaseModel):
    healthy: bool | None = None
    consecutiveSuccesses: int = 0
    consecutiveFailures: int = 0
    lastError: str | None = None
    lastProbeTime: str | None = None


class Health(BaseModel):
    state: HealthState
    reasons: list[str] = Field(default_factory=list)


class GenerationView(BaseModel):
    generation: int
    instanceId: str
    image: ImageReference
    imageSha256: str
    osDisk: str


class DataDiskView(BaseModel):
    lun: int
    diskSizeGB: int
    path: str


class InstanceView(BaseModel):
    name: str
    powerState: str
    address: str
    current: GenerationView
    previous: GenerationView | None = None
    dataDisks: list[DataDiskView] = Field(default_factory=list)
    extensions: list[ExtensionStatus] = Field(default_factory=list)
    probe: ProbeStatus | None = None
    applicationHealth: str | None = None
    health: Health
    operation: str | None = None


class InstanceList(BaseModel):
    value: list[InstanceView]


class HostCapacity(BaseModel):
    vcpus: int
    memoryMB: int
    diskFreeGB: float


class HostView(BaseModel):
    name: str
    hypervisor: Literal["kvm", "qemu", "test"]
    libvirtVersion: str
    capacity: HostCapacity
    instanceCount: int
    bridge: str
    subnet: str
