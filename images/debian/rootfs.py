"""The Debian image's root filesystem tree, built once and cached.

Building it is the expensive part (debootstrap, then apt-get installing
cloud-init, openssh-server and the kernel). The tree is kept under
``<cache>/debian-rootfs/<key>/tree`` with a ``tree.json`` saying what is in
it, where ``key`` is :func:`images.debian.recipe.tree_key`; every version of
the image is stamped on a hard-linked copy of it, so the cached tree is never
written to after it is complete. A tree is built in a ``.new-*`` directory and renamed into place
when finished, under the cache's lock, so a half-built tree is never used;
trees of other keys are removed once a new one is in place (each is large).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from images.debian import chroot
from images.debian.recipe import GUEST_ROOTFS, MASKED_UNITS, PACKAGES, SUITE, Mirrors, tree_key
from images.tiny import host
from images.tiny.rootfs import copy_guest_tree

CACHE_SUBDIR = "debian-rootfs"
TREE = "tree"
TREE_INFO = "tree.json"
# Version stamps are made on hard-linked copies of the tree, inside the cache
# directory (hard links need one filesystem), named with this prefix.
STAGE_PREFIX = ".stage-"
_KEY_RE = re.compile(r"^[0-9a-f]{64}$")
# Loaded from the initramfs to mount the root (each may instead be built in).
BOOT_MODULES = ("virtio_pci", "virtio_blk", "ext4")

Say = Callable[[str], None]


@dataclass(frozen=True)
class CachedTree:
    key: str
    path: Path  # the root filesystem tree
    kernel_version: str
    packages: dict[str, str]  # installed package -> version
    build_seconds: float
    reused: bool  # found in the cache rather than built by this call

    def kernel_image(self) -> Path:
        return self.path / "boot" / f"vmlinuz-{self.kernel_version}"

    def initrd_image(self) -> Path:
        return self.path / "boot" / f"initrd.img-{self.kernel_version}"


def _quiet(_: str) -> None:
    pass


def ensure_tree(
    cache: Path, mirrors: Mirrors, *, refresh: bool = False, say: Say = _quiet
) -> CachedTree:
    """The cached tree for ``mirrors`` and this recipe, built first when the
    cache has none (or ``refresh`` asks for a new one: package updates).

    Call it under the cache's lock (:func:`cache_dir` and ``host.locked``)
    and keep the lock while reading the tree. Raises ``host.BuildError``.
    """
    key = tree_key(mirrors)
    entry = cache / key
    if not refresh:
        found = _load(entry, key)
        if found is not None:
            return found
    work = cache / f".new-{key[:16]}-{os.getpid()}"
    _remove(work)
    work.mkdir(mode=0o755)
    started = time.monotonic()
    try:
        kernel_version = build_tree(work / TREE, mirrors, say=say)
        packages = installed_packages(work / TREE)
        info = {
            "key": key,
            "suite": SUITE,
            "mirrors": {"archive": mirrors.archive, "security": mirrors.security},
            "kernelVersion": kernel_version,
            "packages": packages,
            "buildSeconds": round(time.monotonic() - started, 1),
        }
        (work / TREE_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        _remove(entry)
        os.replace(work, entry)
    finally:
        _remove(work)
    prune(cache, keep=key)
    found = _load(entry, key, reused=False)
    if found is None:
        raise host.BuildError(f"the root filesystem tree just built in {entry} is incomplete")
    return found


def prune(cache: Path, keep: str) -> None:
    """Remove every tree but ``keep``'s, and what crashed builds left
    (``.new-*`` trees, ``.stage-*`` copies). Call under the cache's lock."""
    for other in cache.iterdir():
        name = other.name
        if name == keep or not other.is_dir():
            continue
        if _KEY_RE.fullmatch(name) or name.startswith((".new-", STAGE_PREFIX)):
            _remove(other)


def cache_dir(cache_root: Path) -> Path:
    """``<cache_root>/debian-rootfs``, created 0755."""
    path = cache_root / CACHE_SUBDIR
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _load(entry: Path, key: str, *, reused: bool = True) -> CachedTree | None:
    try:
        info: Any = json.loads((entry / TREE_INFO).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("key") != key:
        return None
    kernel_version = info.get("kernelVersion")
    packages = info.get("packages")
    seconds = info.get("buildSeconds")
    if not isinstance(kernel_version, str) or not isinstance(packages, dict):
        return None
    tree = CachedTree(
        key=key,
        path=entry / TREE,
        kernel_version=kernel_version,
        packages={str(k): str(v) for k, v in packages.items()},
        build_seconds=float(seconds) if isinstance(seconds, (int, float)) else 0.0,
        reused=reused,
    )
    if not (tree.kernel_image().is_file() and tree.initrd_image().is_file()):
        return None
    return tree


def build_tree(root: Path, mirrors: Mirrors, *, say: Say = _quiet) -> str:
    """Make the Debian root filesystem at ``root`` (which must not exist);
    returns the version of the kernel installed in it."""
    started = time.monotonic()
    say(f"debootstrap --variant=minbase {SUITE} from {mirrors.archive}")
    host.run(
        [
            "debootstrap",
            "--variant=minbase",
            "--components=main",
            SUITE,
            str(root),
            mirrors.archive,
        ],
        what=f"debootstrap of {SUITE}",
    )
    say(f"debootstrap done ({time.monotonic() - started:.0f} s)")
    # The recipe's own files go in before the packages, so that the kernel's
    # initramfs is made once, with the module list and compression they set,
    # and dpkg already leaves out the documentation.
    copy_guest_tree(GUEST_ROOTFS, root)
    (root / "etc/apt/sources.list").write_text(mirrors.sources_list())
    started = time.monotonic()
    say(f"apt-get install {' '.join(PACKAGES)}")
    with chroot.mounted(root):
        chroot.run(root, ["apt-get", "update", "-q"], what="apt-get update in the image")
        chroot.run(
            root,
            [
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "-o",
                "Dpkg::Options::=--force-confold",
                *PACKAGES,
            ],
            what="installing the image's packages",
        )
        chroot.run(root, ["apt-get", "clean"], what="apt-get clean in the image")
        kernel_version = _kernel_version(root)
        listing = chroot.run(
            root,
            ["lsinitramfs", f"/boot/initrd.img-{kernel_version}"],
            what="listing the image's initramfs",
        ).stdout
    say(f"packages installed ({time.monotonic() - started:.0f} s)")
    _check_initramfs(root, kernel_version, listing)
    _finish(root)
    return kernel_version


def _kernel_version(root: Path) -> str:
    found = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(found) != 1:
        raise host.BuildError(
            f"the image should hold one kernel in /boot, found {len(found)}: {', '.join(found)}"
        )
    return found[0]


def _check_initramfs(root: Path, kernel_version: str, listing: str) -> None:
    """Every module of BOOT_MODULES is in the initramfs or built into the kernel."""
    modules_dir = root / "usr/lib/modules" / kernel_version
    builtin_file = modules_dir / "modules.builtin"
    builtin = builtin_file.read_text() if builtin_file.is_file() else ""
    names = {
        Path(line.strip()).name.split(".ko")[0].replace("-", "_")
        for line in (listing + "\n" + builtin).splitlines()
        if ".ko" in line
    }
    missing = [m for m in BOOT_MODULES if m not in names]
    if missing:
        raise host.BuildError(
            f"the image's initramfs /boot/initrd.img-{kernel_version} lacks"
            f" {', '.join(missing)}: it could not mount an ext4 root on virtio-blk"
        )


def _finish(root: Path) -> None:
    """What must not be the same on every instance, or must not come from the
    build host, is removed; units that only cost boot time are masked."""
    for unit in MASKED_UNITS:
        link = root / "etc/systemd/system" / unit
        _remove(link)
        link.symlink_to("/dev/null")
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    # Empty: systemd makes a new machine id on each instance's first boot.
    (root / "etc/machine-id").write_text("")
    _remove(root / "var/lib/dbus/machine-id")
    (root / "etc/hostname").write_text("localhost\n")
    # debootstrap copied the build host's resolver; the guest has its own.
    _remove(root / "etc/resolv.conf")
    (root / "etc/resolv.conf").write_text("")
    for rel in ("var/lib/apt/lists", "var/cache/apt", "tmp", "var/tmp"):
        for p in (root / rel).glob("*"):
            if p.name not in ("lock", "partial"):
                _remove(p)
    for log in (root / "var/log").rglob("*"):
        if log.is_file() and not log.is_symlink():
            log.write_bytes(b"")


def installed_packages(root: Path) -> dict[str, str]:
    """Package -> version of everything dpkg has installed in ``root``."""
    proc = host.run(
        [
            "dpkg-query",
            f"--admindir={root / 'var/lib/dpkg'}",
            "-W",
            "-f",
            "${db:Status-Abbrev} ${Package} ${Version}\n",
        ],
        what="listing the image's packages",
    )
    packages = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "ii":
            packages[parts[1]] = parts[2]
    missing = [p for p in PACKAGES if p not in packages]
    if missing:
        raise host.BuildError(f"packages not installed in the image: {', '.join(missing)}")
    return dict(sorted(packages.items()))
