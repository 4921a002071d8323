"""The tiny image's initrd: busybox, the modules an ext4 root on virtio-blk
needs, and ``guest/initrd/init``, which loads them, mounts ``root=`` and
switch_roots to busybox init on the OS disk."""

from __future__ import annotations

from pathlib import Path

from images.tiny import host
from images.tiny.initramfs import DeviceNode, write_initramfs
from images.tiny.kernel import Kernel, Module, ModuleIndex, install_modules

GUEST_INIT = Path(__file__).parent / "guest" / "initrd" / "init"

BOOT_MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
    "crc16",
    "mbcache",
    "jbd2",
    "crc32c_generic",  # ext4's metadata_csum asks the crypto API for crc32c at mount
    "ext4",
)

# The kernel opens /dev/console for /init before anything mounts devtmpfs.
_NODES = (
    DeviceNode("dev/console", "c", 5, 1, 0o600),
    DeviceNode("dev/null", "c", 1, 3, 0o666),
)


def build_initrd(
    staging: Path, out: Path, *, kernel: Kernel, index: ModuleIndex, mtime: int
) -> list[Module]:
    """Stage the initrd tree in the empty directory ``staging`` and write the
    gzip-compressed initramfs to ``out``; returns the modules it loads, in order."""
    for d in ("bin", "dev", "proc", "sys", "newroot"):
        (staging / d).mkdir(parents=True, exist_ok=True)
    host.install_busybox(staging, flat=True)
    host.install_file(staging, GUEST_INIT, "/init", 0o755)
    modules = index.resolve(BOOT_MODULES)
    install_modules(kernel, modules, staging)
    write_initramfs(staging, out, mtime=mtime, nodes=_NODES)
    return modules
