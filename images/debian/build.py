"""Build the Debian base image: Debian 12 (bookworm) with real cloud-init,
openssh-server and Debian's kernel, for the kvmss agent and real hosts.

``python -m images.debian.build --version V --out DIR`` writes the files
and manifest the tiny image has: a whole-disk ext4 (root /dev/vda, label
``kvmss-root``) as qcow2, the image's own kernel and initramfs for direct
kernel boot, and the digests of the recipe and of its inputs (the cached
tree's key, kernel and package versions).

The root filesystem tree is built once and cached (:mod:`images.debian.rootfs`);
a version is that tree stamped with the version and made into a disk.
``--boot firmware`` also installs extlinux, so the disk boots by itself
through SeaBIOS (its manifest says ``"boot": "firmware"``; publishing it
stages no kernel). A DIR already holding version V from the same recipe and
inputs is left as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from images.debian import disk, recipe, rootfs
from images.tiny import host
from images.tiny.build import check_version
from images.tiny.manifest import (
    DISK_FILE,
    INITRD_FILE,
    KERNEL_FILE,
    Manifest,
    recipe_digest,
    reusable,
    seal,
)
from kvmss.base import qemuimg

NAME = "debian"
DEFAULT_DISK_GB = 4
MAX_DISK_GB = 2048
REPO = Path(__file__).resolve().parents[2]
DEFAULT_CACHE = REPO / "build" / "cache"


def _inputs(tree: rootfs.CachedTree, boot: str, disk_gb: int, compress: bool) -> str:
    """What the image is made from besides the recipe: the cached tree (its
    key, kernel and every package version) and the disk options."""
    h = hashlib.sha256(f"tree {tree.key}\nkernel {tree.kernel_version}\n".encode())
    h.update(f"boot {boot}\ndisk {disk_gb} GB\ncompress {compress}\n".encode())
    for name, package_version in sorted(tree.packages.items()):
        h.update(f"package {name} {package_version}\n".encode())
    return h.hexdigest()


def _stderr(message: str) -> None:
    print(f"images.debian.build: {message}", file=sys.stderr, flush=True)


def _check_options(version: str, boot: str, disk_gb: int) -> None:
    check_version(version)
    if boot not in ("kernel", "firmware"):
        raise ValueError(f"boot {boot!r} must be 'kernel' or 'firmware'")
    if isinstance(disk_gb, bool) or not 2 <= disk_gb <= MAX_DISK_GB:
        raise ValueError(f"disk size {disk_gb} GB must be from 2 to {MAX_DISK_GB}")


def build(
    version: str,
    out: Path,
    *,
    boot: str = "kernel",
    disk_gb: int = DEFAULT_DISK_GB,
    compress: bool = False,
    cache: Path = DEFAULT_CACHE,
    mirrors: recipe.Mirrors | None = None,
    refresh: bool = False,
    say: Callable[[str], None] = _stderr,
) -> Manifest:
    """Build version ``version`` of the Debian image into ``out`` (created
    if needed) and return its manifest, or return the manifest already there
    when it is for the same version, recipe and inputs and its files match.

    ``boot`` is ``kernel`` (direct kernel boot) or ``firmware`` (extlinux on
    the disk); ``disk_gb`` is the disk's virtual size; ``compress`` writes
    compressed qcow2 clusters (smaller, slower to build); ``refresh``
    rebuilds the cached tree (newer packages). Raises ValueError for a bad
    argument and ``host.BuildError`` or ``qemuimg.QemuImgError`` when a step
    fails.
    """
    _check_options(version, boot, disk_gb)
    mirrors = mirrors or recipe.host_mirrors()
    out.mkdir(mode=0o755, parents=True, exist_ok=True)
    trees = rootfs.cache_dir(cache)
    with host.locked(out):
        recipe_sum = recipe_digest(recipe.RECIPE_DIR)
        with tempfile.TemporaryDirectory(prefix=".build-", dir=out) as tmp:
            work = Path(tmp)
            with host.locked(trees):
                tree = rootfs.ensure_tree(trees, mirrors, refresh=refresh, say=say)
                if tree.reused:
                    say(f"root filesystem tree {tree.key[:12]} from the cache")
                inputs = _inputs(tree, boot, disk_gb, compress)
                existing = None if refresh else reusable(out, NAME, version, recipe_sum, inputs)
                if existing is not None:
                    return existing
                _make_raw(tree, work, version, boot=boot, disk_gb=disk_gb, trees=trees)
            qemuimg.convert(
                work / "disk.raw",
                work / DISK_FILE,
                src_format="raw",
                dst_format="qcow2",
                compress=compress,
            )
            return seal(
                work,
                out,
                name=NAME,
                version=version,
                cmdline=recipe.CMDLINE,
                kernel_version=tree.kernel_version,
                recipe=recipe_sum,
                inputs=inputs,
                boot=boot,
            )


def _make_raw(
    tree: rootfs.CachedTree, work: Path, version: str, *, boot: str, disk_gb: int, trees: Path
) -> None:
    """``work/disk.raw`` of ``version``, and the kernel and initrd next to it.
    Runs under the cache's lock (the staged copy lives in the cache)."""
    staged = Path(tempfile.mkdtemp(prefix=rootfs.STAGE_PREFIX, dir=trees))
    staged.rmdir()
    try:
        disk.stage(tree.path, staged)
        disk.stamp(staged, version)
        if boot == "firmware":
            conf = staged / disk.EXTLINUX_DIR / "extlinux.conf"
            conf.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            conf.write_text(disk.extlinux_conf(tree.kernel_version))
        raw = work / "disk.raw"
        disk.make_ext4(
            staged, raw, size_bytes=disk_gb << 30, version=version, firmware=boot == "firmware"
        )
        if boot == "firmware":
            disk.install_boot_loader(raw, work)
        shutil.copyfile(tree.kernel_image(), work / KERNEL_FILE)
        shutil.copyfile(tree.initrd_image(), work / INITRD_FILE)
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m images.debian.build", description="Build the kvmss Debian base image."
    )
    parser.add_argument("--version", required=True, help="image version, e.g. 1 or 2024.1.2")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument(
        "--boot",
        choices=("kernel", "firmware"),
        default="kernel",
        help="direct kernel boot (default) or a disk that boots by itself through SeaBIOS",
    )
    parser.add_argument(
        "--disk-gb", type=int, default=DEFAULT_DISK_GB, help="virtual disk size in GB"
    )
    parser.add_argument("--compress", action="store_true", help="compressed qcow2 clusters")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help=f"cache directory ({DEFAULT_CACHE})"
    )
    parser.add_argument(
        "--refresh", action="store_true", help="rebuild the cached root filesystem tree"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        manifest = build(
            args.version,
            args.out,
            boot=args.boot,
            disk_gb=args.disk_gb,
            compress=args.compress,
            cache=args.cache,
            refresh=args.refresh,
        )
    except (ValueError, host.BuildError, qemuimg.QemuImgError, OSError) as e:
        _stderr(str(e))
        return 1
    sys.stdout.buffer.write(manifest.dumps())
    _stderr(
        f"{NAME} {manifest.version} in {args.out} ({time.monotonic() - started:.1f} s,"
        f" disk {manifest.disk.size >> 20} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
