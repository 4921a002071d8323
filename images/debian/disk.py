"""One version of the Debian image: the cached tree stamped with the version,
made into a whole-disk ext4, and (for firmware boot) given a boot loader.

The stamp is made on a hard-linked copy of the cached tree (``cp -al``,
cheap): a file the stamp changes is unlinked and written anew, never written
through a link, so the cached tree stays as it was. ``mkfs.ext4 -d`` copies
the staged tree (owners, modes, links, device nodes, extended attributes)
into the filesystem.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from pathlib import Path

from images.debian import chroot
from images.debian.recipe import CMDLINE, ROOT_LABEL
from images.tiny import host

OS_VERSION = "etc/os-version"
OS_RELEASE = "usr/lib/os-release"  # /etc/os-release links to it
EXTLINUX_DIR = "boot/extlinux"
# Lines of /usr/lib/os-release the stamp owns (os-release(5): IMAGE_ID and
# IMAGE_VERSION name the image and its version; VARIANT says whose it is).
_STAMP_KEYS = ("VARIANT", "VARIANT_ID", "IMAGE_ID", "IMAGE_VERSION")
IMAGE_ID = "kvmss-debian"


def stage(tree: Path, staged: Path) -> None:
    """A hard-linked copy of ``tree`` at ``staged`` (which must not exist)."""
    host.run(
        ["cp", "-a", "--link", "--no-target-directory", str(tree), str(staged)],
        what=f"copying the cached root filesystem to {staged}",
    )


def _replace(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``path`` as a new file: never through a hard link to the cache."""
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def os_release(debian: str, version: str) -> str:
    """Debian's os-release with the kvmss image lines (re)placed at its end."""
    kept = [
        line
        for line in debian.splitlines()
        if line.strip() and line.split("=", 1)[0].strip() not in _STAMP_KEYS
    ]
    return "\n".join(
        [
            *kept,
            'VARIANT="kvmss"',
            "VARIANT_ID=kvmss",
            f"IMAGE_ID={IMAGE_ID}",
            f"IMAGE_VERSION={version}",
            "",
        ]
    )


def stamp(root: Path, version: str) -> None:
    """Write ``version`` into /etc/os-version and /usr/lib/os-release of ``root``."""
    _replace(root / OS_VERSION, version + "\n")
    release = root / OS_RELEASE
    _replace(release, os_release(release.read_text(), version))


def extlinux_conf(kernel_version: str) -> str:
    """The boot loader's configuration: boot the image's kernel at once, with
    the root found by label (firmware boot does not know which disk it is),
    and without the kernel's BIOS disk probe (EDD: seconds under TCG, for
    information nothing in the guest uses)."""
    cmdline = CMDLINE.replace("root=/dev/vda", f"root=LABEL={ROOT_LABEL}") + " edd=off"
    return (
        "# kvmss Debian image: boot loader for firmware (SeaBIOS) boot.\n"
        "DEFAULT debian\n"
        "PROMPT 0\n"
        "TIMEOUT 0\n"
        "SERIAL 0 115200\n"
        "LABEL debian\n"
        f"  LINUX /boot/vmlinuz-{kernel_version}\n"
        f"  INITRD /boot/initrd.img-{kernel_version}\n"
        f"  APPEND {cmdline}\n"
    )


def derived_uuid(purpose: str, version: str) -> str:
    """A UUID that depends only on ``purpose`` and ``version``, so two builds
    of one version have the same filesystem identity."""
    digest = hashlib.sha256(f"kvmss-debian\0{purpose}\0{version}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def make_ext4(root: Path, raw: Path, *, size_bytes: int, version: str, firmware: bool) -> None:
    """Write a raw disk of ``size_bytes`` at ``raw`` holding ``root`` as one
    ext4 filesystem (no partition table; the root is /dev/vda)."""
    with raw.open("wb") as f:
        f.truncate(size_bytes)
    # extlinux reads ext4 without the 64bit feature only (syslinux 6.04).
    features = ["-O", "^64bit"] if firmware else []
    host.run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            ROOT_LABEL,
            "-U",
            derived_uuid("root", version),
            "-E",
            f"hash_seed={derived_uuid('hash', version)}",
            *features,
            "-d",
            str(root),
            str(raw),
        ],
        what="making the root filesystem",
    )


def install_boot_loader(raw: Path, scratch: Path) -> None:
    """Make the whole-disk ext4 in ``raw`` bootable by SeaBIOS: extlinux's boot
    sector at the start of the filesystem, which is the disk's first sector
    (ext4 leaves its first 1024 bytes to a boot loader). extlinux is the
    image's own, run chrooted into the filesystem mounted from a loop device."""
    with tempfile.TemporaryDirectory(prefix="mnt-", dir=scratch) as tmp:
        mnt = Path(tmp)
        host.run(
            ["mount", "-o", "loop", str(raw), str(mnt)],
            what="mounting the new root filesystem (loop device)",
        )
        try:
            with chroot.mounted(mnt):
                chroot.run(
                    mnt,
                    ["extlinux", "--install", f"/{EXTLINUX_DIR}"],
                    what="installing the extlinux boot loader",
                )
        finally:
            host.run(["umount", str(mnt)], what="unmounting the new root filesystem")
