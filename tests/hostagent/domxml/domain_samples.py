"""Sample domains shared by the domxml and designer tests, and their golden files.

Each sample exists as a hand-built :class:`Domain` (what the designer must
produce for the matching metadata) and as a golden XML file under ``data/``
(paths under ``/var/lib/kvmss``). Set ``KVMSS_REGENERATE_GOLDEN=1`` to rewrite
the golden files from the samples, then review the diff.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hostagent.contract.instancespec import ImageReference
from hostagent.domxml.devices import Disk, Interface, OsBoot
from hostagent.domxml.domain import Domain
from hostagent.domxml.metadata import DataDiskRecord, Generation, ImageRecord, Metadata

DATA_DIR = Path(__file__).parent / "data"
GOLDEN_ROOT = "/var/lib/kvmss"
REGENERATE = os.environ.get("KVMSS_REGENERATE_GOLDEN") == "1"

SHA_V1 = "3f0c1e9b7d2a4c6e8f1a3b5c7d9e0f2a4b6c8d0e1f3a5b7c9d1e3f5a7b9c0d2e"
SHA_V2 = "9a8b7c6d5e4f30112233445566778899aabbccddeeff00112233445566778899"


def tiny_reference(version: str) -> ImageReference:
    return ImageReference(publisher="kvmss", offer="tiny", sku="busybox", version=version)


IMAGE_V1 = ImageRecord(tiny_reference("1"), SHA_V1)
IMAGE_V2 = ImageRecord(tiny_reference("2"), SHA_V2)
CMDLINE = "console=ttyS0 root=/dev/vda rw net.ifnames=0 quiet"


def _inst(root: str, instance: str) -> str:
    return f"{root}/instances/{instance}"


def generation(
    root: str, instance: str, number: int, image: ImageRecord, kernel_sha: str | None = None
) -> Generation:
    """Generation ``number`` of ``instance`` with its files under ``root``;
    with ``kernel_sha``, booting the cached kernel and initrd of that image."""
    inst = _inst(root, instance)
    cache = f"{root}/cache"
    return Generation(
        number=number,
        instance_id=f"{instance}-g{number}",
        os_disk=f"{inst}/os-{number}.qcow2",
        seed=f"{inst}/seed-{number}.iso",
        image=image,
        kernel=f"{cache}/kernel-{kernel_sha[:12]}" if kernel_sha else None,
        initrd=f"{cache}/initrd-{kernel_sha[:12]}" if kernel_sha else None,
        cmdline=CMDLINE if kernel_sha else None,
    )


def _writable(path: str, target: str, serial: str) -> Disk:
    return Disk(
        path=path, target=target, bus="virtio", serial=serial, cache="writeback", discard="unmap"
    )


def _seed(path: str) -> Disk:
    return Disk(path=path, target="sda", bus="sata", device="cdrom", format="raw", readonly=True)


def direct_kernel_metadata(root: str = GOLDEN_ROOT) -> Metadata:
    """web-0 on its second generation (direct kernel boot), two data disks."""
    inst = _inst(root, "web-0")
    return Metadata(
        instance="web-0",
        address="10.77.0.5",
        mac="52:54:00:4b:1d:05",
        current=generation(root, "web-0", 2, IMAGE_V2, SHA_V2),
        previous=generation(root, "web-0", 1, IMAGE_V1, SHA_V1),
        data_disks=(
            DataDiskRecord(lun=0, size_gb=4, path=f"{inst}/data-lun0.qcow2"),
            DataDiskRecord(lun=1, size_gb=16, path=f"{inst}/data-lun1.qcow2"),
        ),
    )


def direct_kernel_domain(
    root: str = GOLDEN_ROOT,
    name: str = "web-0",
    uuid: str = "6f1c1a52-3c1e-4d8e-9a51-0c4b2f1e7a10",
) -> Domain:
    md = direct_kernel_metadata(root)
    inst = _inst(root, "web-0")
    return Domain(
        name=name,
        uuid=uuid,
        type="qemu",
        memory_mib=256,
        vcpus=1,
        os=OsBoot(
            arch="x86_64",
            machine="pc",
            kernel=md.current.kernel,
            initrd=md.current.initrd,
            cmdline=CMDLINE,
        ),
        disks=(
            _writable(f"{inst}/os-2.qcow2", "vda", "os"),
            _writable(f"{inst}/data-lun0.qcow2", "vdb", "lun0"),
            _writable(f"{inst}/data-lun1.qcow2", "vdc", "lun1"),
            _seed(f"{inst}/seed-2.iso"),
        ),
        interfaces=(Interface(bridge="kvmss0", mac="52:54:00:4b:1d:05"),),
        metadata=md,
        cpu_mode=None,
        console_log=f"{inst}/console.log",
    )


def firmware_metadata(root: str = GOLDEN_ROOT) -> Metadata:
    """db-1 on its first generation (firmware boot), no previous, no data disks."""
    ref = ImageReference(publisher="kvmss", offer="debian", sku="12", version="2024.1.15")
    image = ImageRecord(ref, SHA_V1)
    return Metadata(
        instance="db-1",
        address="10.77.0.6",
        mac="52:54:00:4b:1d:06",
        current=generation(root, "db-1", 1, image),
    )


def firmware_domain(
    root: str = GOLDEN_ROOT,
    name: str = "db-1",
    uuid: str = "0d5e8c3a-7b21-4f6a-b0c4-5e9d2a1f3b47",
) -> Domain:
    md = firmware_metadata(root)
    inst = _inst(root, "db-1")
    return Domain(
        name=name,
        uuid=uuid,
        type="kvm",
        memory_mib=2048,
        vcpus=2,
        os=OsBoot(),
        disks=(_writable(f"{inst}/os-1.qcow2", "vda", "os"), _seed(f"{inst}/seed-1.iso")),
        interfaces=(Interface(bridge="kvmss0", mac="52:54:00:4b:1d:06"),),
        metadata=md,
        cpu_mode="host-passthrough",
        console_log=f"{inst}/console.log",
    )


# name of the golden file -> builder of its sample domain
SAMPLES = {
    "domain-direct-kernel.xml": direct_kernel_domain,
    "domain-firmware.xml": firmware_domain,
}


def golden_text(filename: str, generated: str) -> str:
    """The golden file's content (without its final newline).

    With ``KVMSS_REGENERATE_GOLDEN=1`` the file is first rewritten from
    ``generated``."""
    path = DATA_DIR / filename
    if REGENERATE:
        DATA_DIR.mkdir(exist_ok=True)
        path.write_text(generated + "\n", encoding="utf-8")
    return path.read_text(encoding="utf-8").removesuffix("\n")


def assert_valid_domain_xml(xml: str, directory: Path) -> None:
    """libvirt's own schema check: ``virt-xml-validate <file> domain`` exits 0."""
    path = directory / "domain-to-validate.xml"
    path.write_text(xml, encoding="utf-8")
    result = subprocess.run(
        ["virt-xml-validate", str(path), "domain"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, (
        f"virt-xml-validate exited {result.returncode}:\n{result.stdout}{result.stderr}\n{xml}"
    )
