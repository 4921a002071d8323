from __future__ import annotations

import os
import secrets
import uuid
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from hostagent.domxml.designer import (
    InstanceLayout,
    apply_generation,
    data_disk_target,
    design,
)
from hostagent.domxml.devices import Disk
from hostagent.domxml.domain import Domain
from hostagent.domxml.metadata import DataDiskRecord, Generation, Metadata
from tests.hostagent.domxml.domain_samples import (
    GOLDEN_ROOT,
    IMAGE_V1,
    IMAGE_V2,
    assert_valid_domain_xml,
    direct_kernel_domain,
    direct_kernel_metadata,
    firmware_domain,
    firmware_metadata,
    generation,
    golden_text,
)


def _layout(
    metadata: Metadata,
    *,
    name: str = "web-0",
    uuid_: str = "6f1c1a52-3c1e-4d8e-9a51-0c4b2f1e7a10",
    domain_type: str = "qemu",
    vcpus: int = 1,
    memory_mib: int = 256,
) -> InstanceLayout:
    inst = os.path.dirname(metadata.current.os_disk)
    return InstanceLayout(
        name=name,
        uuid=uuid_,
        domain_type=domain_type,
        vcpus=vcpus,
        memory_mib=memory_mib,
        bridge="kvmss0",
        console_log=f"{inst}/console.log",
        metadata=metadata,
    )


def _generation_3(root: str = GOLDEN_ROOT) -> Generation:
    return replace(
        generation(root, "web-0", 3, IMAGE_V2),
        kernel=f"{root}/cache/kernel-new",
        initrd=f"{root}/cache/initrd-new",
        cmdline="console=ttyS0 root=/dev/vda ro",
    )


def os_disk_path(domain: Domain) -> str:
    (path,) = [d.path for d in domain.disks if d.target == "vda"]
    return path


def _disk_xml(disk: Disk) -> bytes:
    return ET.tostring(disk.to_element())


# ---- design -------------------------------------------------------------------------


def test_design_of_direct_kernel_instance_is_the_golden_domain(tmp_path: Path) -> None:
    domain = design(_layout(direct_kernel_metadata()))
    assert domain == direct_kernel_domain()
    xml = domain.to_xml()
    assert xml == golden_text("domain-direct-kernel.xml", xml)
    assert_valid_domain_xml(xml, tmp_path)


def test_design_of_firmware_instance_on_kvm_is_the_golden_domain(tmp_path: Path) -> None:
    layout = _layout(
        firmware_metadata(),
        name="db-1",
        uuid_="0d5e8c3a-7b21-4f6a-b0c4-5e9d2a1f3b47",
        domain_type="kvm",
        vcpus=2,
        memory_mib=2048,
    )
    domain = design(layout)
    assert domain == firmware_domain()
    xml = domain.to_xml()
    assert xml == golden_text("domain-firmware.xml", xml)
    assert_valid_domain_xml(xml, tmp_path)


def test_design_policy() -> None:
    md = direct_kernel_metadata()
    domain = design(_layout(md))
    assert [(d.target, d.bus, d.device, d.format) for d in domain.disks] == [
        ("vda", "virtio", "disk", "qcow2"),
        ("vdb", "virtio", "disk", "qcow2"),
        ("vdc", "virtio", "disk", "qcow2"),
        ("sda", "sata", "cdrom", "raw"),
    ]
    os_disk, lun0, lun1, seed = domain.disks
    assert os_disk.path == md.current.os_disk and os_disk.serial == "os"
    assert (lun0.path, lun0.serial) == (md.data_disks[0].path, "lun0")
    assert (lun1.path, lun1.serial) == (md.data_disks[1].path, "lun1")
    assert seed.path == md.current.seed and seed.readonly and seed.serial is None
    # writable disks: writeback (O_DIRECT of cache=none fails on tmpfs), guest TRIM frees space
    assert {(d.cache, d.discard, d.readonly) for d in (os_disk, lun0, lun1)} == {
        ("writeback", "unmap", False)
    }
    assert (domain.os.kernel, domain.os.initrd, domain.os.cmdline) == (
        md.current.kernel,
        md.current.initrd,
        md.current.cmdline,
    )
    assert [(i.bridge, i.mac, i.model) for i in domain.interfaces] == [("kvmss0", md.mac, "virtio")]
    assert domain.cpu_mode is None  # qemu (TCG) has no host-passthrough
    assert domain.metadata == md


@pytest.mark.parametrize(("domain_type", "cpu_mode"), [("kvm", "host-passthrough"), ("qemu", None)])
def test_cpu_mode_follows_domain_type(domain_type: str, cpu_mode: str | None) -> None:
    domain = design(_layout(direct_kernel_metadata(), domain_type=domain_type))
    assert (domain.type, domain.cpu_mode) == (domain_type, cpu_mode)


def test_data_disks_take_the_target_of_their_lun_in_lun_order() -> None:
    md = replace(
        direct_kernel_metadata(),
        data_disks=(
            DataDiskRecord(lun=7, size_gb=1, path="/d/seven.qcow2"),
            DataDiskRecord(lun=0, size_gb=1, path="/d/zero.qcow2"),
            DataDiskRecord(lun=15, size_gb=1, path="/d/fifteen.qcow2"),
        ),
    )
    domain = design(_layout(md))
    assert [(d.target, d.path, d.serial) for d in domain.disks[1:-1]] == [
        ("vdb", "/d/zero.qcow2", "lun0"),
        ("vdi", "/d/seven.qcow2", "lun7"),
        ("vdq", "/d/fifteen.qcow2", "lun15"),
    ]


def test_firmware_boot_when_the_generation_has_no_kernel() -> None:
    domain = design(_layout(firmware_metadata()))
    assert (domain.os.kernel, domain.os.initrd, domain.os.cmdline) == (None, None, None)
    boot = ET.fromstring(domain.to_xml()).find("os/boot")
    assert boot is not None and boot.get("dev") == "hd"


# ---- data_disk_target -----------------------------------------------------------------


def test_data_disk_target() -> None:
    assert data_disk_target(0) == "vdb"
    assert data_disk_target(1) == "vdc"
    assert data_disk_target(15) == "vdq"
    targets = [data_disk_target(lun) for lun in range(16)]
    assert len(set(targets)) == 16 and "vda" not in targets


@pytest.mark.parametrize("lun", [-1, 16, 26])
def test_data_disk_target_out_of_range(lun: int) -> None:
    with pytest.raises(ValueError, match=f"lun {lun} is out of range 0-15"):
        data_disk_target(lun)


# ---- apply_generation ----------------------------------------------------------------


def test_apply_generation_swaps_only_os_disk_seed_boot_and_metadata() -> None:
    before = design(_layout(direct_kernel_metadata()))
    assert before.metadata is not None
    new_md = replace(before.metadata, current=_generation_3(), previous=before.metadata.current)
    after = apply_generation(before, new_md)

    assert os_disk_path(after) == "/var/lib/kvmss/instances/web-0/os-3.qcow2"
    seed = [d for d in after.disks if d.target == "sda"]
    assert [d.path for d in seed] == ["/var/lib/kvmss/instances/web-0/seed-3.iso"]
    assert (after.os.kernel, after.os.initrd, after.os.cmdline) == (
        "/var/lib/kvmss/cache/kernel-new",
        "/var/lib/kvmss/cache/initrd-new",
        "console=ttyS0 root=/dev/vda ro",
    )
    assert after.metadata == new_md

    # the data disk elements are identical, byte for byte
    data_before = [_disk_xml(d) for d in before.disks if d.target not in ("vda", "sda")]
    data_after = [_disk_xml(d) for d in after.disks if d.target not in ("vda", "sda")]
    assert len(data_before) == 2
    assert data_after == data_before
    # the OS disk and seed keep every attribute but their path
    assert replace(after.disks[0], path=before.disks[0].path) == before.disks[0]
    assert replace(after.disks[-1], path=before.disks[-1].path) == before.disks[-1]
    # and nothing else of the domain moved
    assert replace(after, disks=before.disks, os=before.os, metadata=before.metadata) == before
    assert after.os.machine == before.os.machine


def test_apply_generation_to_firmware_boot_and_back() -> None:
    before = design(_layout(direct_kernel_metadata()))
    assert before.metadata is not None
    firmware_gen = Generation(
        number=3,
        instance_id="web-0-g3",
        os_disk="/var/lib/kvmss/instances/web-0/os-3.qcow2",
        seed="/var/lib/kvmss/instances/web-0/seed-3.iso",
        image=IMAGE_V1,
    )
    firmware = apply_generation(before, replace(before.metadata, current=firmware_gen))
    assert (firmware.os.kernel, firmware.os.initrd, firmware.os.cmdline) == (None, None, None)
    assert ET.fromstring(firmware.to_xml()).find("os/boot") is not None
    # rolling back restores the domain exactly
    assert apply_generation(firmware, before.metadata) == before


def test_apply_generation_needs_os_disk_and_seed() -> None:
    domain = design(_layout(direct_kernel_metadata()))
    assert domain.metadata is not None
    md = replace(domain.metadata, current=_generation_3())
    with pytest.raises(ValueError, match="no OS disk on target vda"):
        apply_generation(replace(domain, disks=domain.disks[1:]), md)
    with pytest.raises(ValueError, match="no seed cdrom on target sda"):
        apply_generation(replace(domain, disks=domain.disks[:-1]), md)


@pytest.mark.parametrize("uri", ["test:///default", "qemu:///system"])
def test_os_disk_swap_through_libvirt_keeps_data_disks(uri: str, scratch: Path) -> None:
    """Define, read back, apply a generation, redefine, read back (never start).

    libvirt's own <disk> elements for the data disks (with the PCI addresses
    libvirt assigned) must be unchanged; only the OS disk and seed move."""
    root = str(scratch)
    name = "kvmss-test-" + secrets.token_hex(4)
    layout = _layout(direct_kernel_metadata(root), name=name, uuid_=str(uuid.uuid4()))
    conn = libvirt.open(uri)
    try:
        dom = conn.defineXML(design(layout).to_xml())
        try:
            first_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            first = Domain.from_xml(first_xml)
            assert first.metadata is not None
            new_md = replace(first.metadata, current=_generation_3(root), previous=None)
            swapped = apply_generation(first, new_md)
            assert_valid_domain_xml(swapped.to_xml(), scratch)
            dom = conn.defineXML(swapped.to_xml())
            second_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        finally:
            dom.undefine()
    finally:
        conn.close()

    second = Domain.from_xml(second_xml)
    assert second == swapped
    assert os_disk_path(second) == f"{root}/instances/web-0/os-3.qcow2"
    assert second.metadata == new_md

    def libvirt_disks(xml: str) -> dict[str, bytes]:
        devices = ET.fromstring(xml).find("devices")
        assert devices is not None
        out = {}
        for disk in devices.findall("disk"):
            target = disk.find("target")
            assert target is not None
            out[target.get("dev", "")] = ET.tostring(disk)
        return out

    disks_before, disks_after = libvirt_disks(first_xml), libvirt_disks(second_xml)
    assert sorted(disks_before) == sorted(disks_after) == ["sda", "vda", "vdb", "vdc"]
    for target in ("vdb", "vdc"):
        assert disks_after[target] == disks_before[target]
    for target in ("vda", "sda"):
        assert disks_after[target] != disks_before[target]
