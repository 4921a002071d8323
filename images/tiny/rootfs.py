"""The tiny image's root filesystem: the staging tree and the ext4 made from it.

The tree holds busybox (a link for every applet), mkfs.ext4 and blkid from
e2fsprogs and util-linux with their shared libraries (busybox can make only
ext2 and has no blkid), the kernel modules the guest loads at runtime, and
the guest scripts under ``guest/rootfs`` (busybox init runs
/usr/libexec/kvmss/boot; see that script for what a boot does).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Collection
from pathlib import Path

from images.tiny import host
from images.tiny.kernel import Kernel, ModuleIndex, install_modules

GUEST_ROOTFS = Path(__file__).parent / "guest" / "rootfs"
MKE2FS = Path("/sbin/mke2fs")
BLKID = Path("/sbin/blkid")
# Host programs copied into the image (their content is part of the build inputs).
HOST_PROGRAMS = (host.BUSYBOX, MKE2FS, BLKID)

# Loaded by the boot script: the SATA CD-ROM that carries the NoCloud seed,
# virtio networking, the ACPI power button as an input device for acpid, and
# virtio-rng (when the VM has one, the guest's random pool is ready at once).
RUNTIME_MODULES = (
    "scsi_mod",
    "libata",
    "libahci",
    "ahci",
    "cdrom",
    "sr_mod",
    "isofs",
    "failover",
    "net_failover",
    "virtio_net",
    "af_packet",
    "evdev",
    "button",
    "virtio_rng",
)

_DIRS = {
    "bin": 0o755,
    "sbin": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "lib": 0o755,
    "lib64": 0o755,
    "etc": 0o755,
    "dev": 0o755,
    "proc": 0o555,
    "sys": 0o555,
    "run": 0o755,
    "tmp": 0o1777,
    "var/lib/kvmss": 0o755,
    "var/log": 0o755,
    "root": 0o700,
    "data": 0o755,
    "mnt": 0o755,
}
_SYMLINKS = {
    "var/run": "../run",
    "etc/resolv.conf": "/run/resolv.conf",
    "etc/mtab": "/proc/mounts",
}


def os_release(version: str) -> str:
    return (
        'NAME="kvmss tiny"\n'
        "ID=kvmss-tiny\n"
        f"VERSION_ID={version}\n"
        f'VERSION="{version}"\n'
        f'PRETTY_NAME="kvmss tiny {version}"\n'
    )


def copy_guest_tree(src: Path, root: Path) -> None:
    """Copy the files under ``src`` into ``root``: scripts (``#!``) get mode
    0755, everything else 0644."""
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(src)
        (root / rel_dir).mkdir(parents=True, exist_ok=True)
        for name in sorted(filenames):
            data = (Path(dirpath) / name).read_bytes()
            dest = root / rel_dir / name
            dest.write_bytes(data)
            dest.chmod(0o755 if data.startswith(b"#!") else 0o644)


def stage(
    root: Path,
    *,
    version: str,
    kernel: Kernel,
    index: ModuleIndex,
    skip_modules: Collection[str] = (),
) -> None:
    """Fill the empty directory ``root`` with the tiny image's root filesystem.

    ``skip_modules`` are modules the initrd already loaded; they are not copied.
    """
    for rel, mode in _DIRS.items():
        d = root / rel
        d.mkdir(parents=True, exist_ok=True)
        d.chmod(mode)
    for rel, target in _SYMLINKS.items():
        (root / rel).symlink_to(target)
    # Real programs first: busybox only links applets whose path is still free.
    host.install_program(root, MKE2FS, "/sbin/mke2fs")
    (root / "sbin" / "mkfs.ext4").symlink_to("mke2fs")
    host.install_program(root, BLKID, "/sbin/blkid")
    host.install_busybox(root, flat=False)
    if Path("/etc/mke2fs.conf").is_file():
        host.install_file(root, Path("/etc/mke2fs.conf"), "/etc/mke2fs.conf")
    copy_guest_tree(GUEST_ROOTFS, root)
    modules = [m for m in index.resolve(RUNTIME_MODULES) if m.name not in skip_modules]
    install_modules(kernel, modules, root)
    (root / "etc" / "os-version").write_text(version + "\n")
    (root / "etc" / "os-release").write_text(os_release(version))
    (root / "etc" / "hostname").write_text("localhost\n")


def set_mtimes(root: Path, mtime: int) -> None:
    """Give every path under ``root`` (and root) the same mtime, links included."""
    paths = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        paths += [Path(dirpath) / n for n in (*dirnames, *filenames)]
    for p in paths:
        os.utime(p, (mtime, mtime), follow_symlinks=False)


def _derived_uuid(purpose: str, version: str) -> str:
    digest = hashlib.sha256(f"kvmss-tiny\0{purpose}\0{version}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def make_ext4(root: Path, raw: Path, *, size_bytes: int, version: str, mtime: int) -> None:
    """Write a raw ext4 filesystem of ``size_bytes`` holding ``root`` to ``raw``.

    The filesystem fills the whole disk (no partition table); its UUID, hash
    seed and timestamps derive from ``version`` and ``mtime``, so the same
    tree and version give the same bytes.
    """
    set_mtimes(root, mtime)
    with raw.open("wb") as f:
        f.truncate(size_bytes)
    host.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            "kvmss-root",
            "-U",
            _derived_uuid("root", version),
            "-E",
            f"hash_seed={_derived_uuid('hash', version)},root_owner=0:0",
            "-d",
            str(root),
            str(raw),
        ],
        what="making the root filesystem",
        env={"E2FSPROGS_FAKE_TIME": str(mtime)},
    )
    _set_ctimes(root, raw, mtime)


def _set_ctimes(root: Path, raw: Path, ctime: int) -> None:
    """``mkfs.ext4 -d`` copies each file's ctime, which no one can set on the
    staging tree; rewrite them in the filesystem so rebuilds are identical."""
    lines = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted((*dirnames, *filenames)):
            rel = "/" + (Path(dirpath) / name).relative_to(root).as_posix()
            if any(c in rel for c in '"\\\n'):
                raise host.BuildError(
                    f"root filesystem path {rel!r} has a character debugfs cannot take"
                )
            lines.append(f'set_inode_field "{rel}" ctime @{ctime}\n')
    script = raw.with_name(raw.name + ".debugfs")
    script.write_text("".join(lines))
    proc = host.run(
        ["debugfs", "-w", "-f", str(script), str(raw)],
        what="fixing root filesystem ctimes",
        env={"E2FSPROGS_FAKE_TIME": str(ctime)},
    )
    # debugfs exits 0 whatever its commands did; anything but its banner is an error.
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("debugfs ")]
    if errors:
        raise host.BuildError(f"fixing root filesystem ctimes: debugfs said {errors[0]}")
    script.unlink()
