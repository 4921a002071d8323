"""Policy for an instance's domain: buses, targets, cache modes, the OS disk
swap. The model only writes and parses a domain; every choice is made here.

- OS disk: virtio on ``vda``, qcow2, serial ``os``.
- Data disk lun N: virtio on :func:`data_disk_target` (``vdb`` + N), qcow2,
  serial ``lunN``. Targets follow luns, so a lun keeps its target for life.
- NoCloud seed: read-only SATA cdrom on ``sda``, raw.
- Cache ``writeback`` on the writable disks. ``none`` opens with O_DIRECT,
  which tmpfs and some other filesystems refuse, so a guest whose disks sit on
  one would not start. ``writeback`` is QEMU's own default, written out so it
  does not change with the QEMU version; the disk advertises a volatile write
  cache and QEMU honours the guest's flushes, so data a guest has fsync'ed is
  on the host's disk.
- Discard ``unmap``: a guest's TRIM frees clusters in the qcow2 files, so
  overlays and data disks shrink back instead of only growing.
- Direct kernel boot when the generation names a kernel, firmware boot from
  the OS disk otherwise.
- CPU ``host-passthrough`` under KVM; QEMU's default model under TCG, where
  passthrough does not exist.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hostagent.contract import limits
from hostagent.domxml.devices import Disk, Interface, OsBoot
from hostagent.domxml.domain import Domain
from hostagent.domxml.metadata import DataDiskRecord, Generation, Metadata

OS_DISK_TARGET = "vda"
SEED_TARGET = "sda"
WRITABLE_DISK_CACHE = "writeback"
WRITABLE_DISK_DISCARD = "unmap"
MACHINE = "pc"


@dataclass(frozen=True)
class InstanceLayout:
    """Everything :func:`design` needs to build an instance's domain."""

    name: str
    uuid: str
    domain_type: str  # "kvm" | "qemu" | "test" (see hostagent.hypervisor.domaintype)
    vcpus: int
    memory_mib: int
    bridge: str
    console_log: str
    metadata: Metadata  # includes current generation, data disks, mac, address


def data_disk_target(lun: int) -> str:
    """The target of data disk ``lun``: 0 -> "vdb", 1 -> "vdc", ... 15 -> "vdq"."""
    if not limits.LUN_MIN <= lun <= limits.LUN_MAX:
        raise ValueError(f"data disk lun {lun} is out of range {limits.LUN_MIN}-{limits.LUN_MAX}")
    return "vd" + chr(ord("b") + lun)


def _os_disk(path: str) -> Disk:
    return Disk(
        path=path,
        target=OS_DISK_TARGET,
        bus="virtio",
        format="qcow2",
        serial="os",
        cache=WRITABLE_DISK_CACHE,
        discard=WRITABLE_DISK_DISCARD,
    )


def _data_disk(record: DataDiskRecord) -> Disk:
    return Disk(
        path=record.path,
        target=data_disk_target(record.lun),
        bus="virtio",
        format="qcow2",
        serial=f"lun{record.lun}",
        cache=WRITABLE_DISK_CACHE,
        discard=WRITABLE_DISK_DISCARD,
    )


def _seed_disk(path: str) -> Disk:
    return Disk(
        path=path, target=SEED_TARGET, bus="sata", device="cdrom", format="raw", readonly=True
    )


def _boot(generation: Generation, machine: str) -> OsBoot:
    return OsBoot(
        machine=machine,
        kernel=generation.kernel,
        initrd=generation.initrd,
        cmdline=generation.cmdline,
    )


def design(layout: InstanceLayout) -> Domain:
    """The domain of an instance, from scratch."""
    metadata = layout.metadata
    current = metadata.current
    data_disks = sorted(metadata.data_disks, key=lambda d: d.lun)
    return Domain(
        name=layout.name,
        uuid=layout.uuid,
        type=layout.domain_type,
        memory_mib=layout.memory_mib,
        vcpus=layout.vcpus,
        os=_boot(current, MACHINE),
        disks=(
            _os_disk(current.os_disk),
            *(_data_disk(d) for d in data_disks),
            _seed_disk(current.seed),
        ),
        interfaces=(Interface(bridge=layout.bridge, mac=metadata.mac),),
        metadata=metadata,
        cpu_mode="host-passthrough" if layout.domain_type == "kvm" else None,
        console_log=layout.console_log,
    )


def apply_generation(domain: Domain, metadata: Metadata) -> Domain:
    """``domain`` booting ``metadata.current``: the OS disk swap of a reimage or rollback.

    Only the OS disk's path, the seed's path, the kernel/initrd/cmdline and the
    metadata change; data disks, interfaces, name, uuid, memory and every other
    attribute of the OS disk and seed (cache, serial...) are kept as they are.
    """
    current = metadata.current
    disks: list[Disk] = []
    found: set[str] = set()
    for disk in domain.disks:
        if disk.target == OS_DISK_TARGET:
            disk = replace(disk, path=current.os_disk)
            found.add(disk.target)
        elif disk.target == SEED_TARGET:
            disk = replace(disk, path=current.seed)
            found.add(disk.target)
        disks.append(disk)
    for target, what in ((OS_DISK_TARGET, "OS disk"), (SEED_TARGET, "seed cdrom")):
        if target not in found:
            raise ValueError(f"domain {domain.name!r} has no {what} on target {target}")
    return replace(
        domain,
        disks=tuple(disks),
        os=replace(
            domain.os, kernel=current.kernel, initrd=current.initrd, cmdline=current.cmdline
        ),
        metadata=metadata,
    )
