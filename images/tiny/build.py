"""Build the tiny base image: a busybox guest that boots in seconds under TCG.

``python -m images.tiny.build --version V --out DIR`` writes into DIR:

- ``disk.qcow2``: compressed qcow2 of an ext4 filesystem filling the whole
  disk (the root is /dev/vda, no partition table);
- ``vmlinuz``: the Debian kernel;
- ``initrd.img``: busybox and the modules for an ext4 root on virtio-blk;
- ``manifest.json``: the three files' sha256 and size, the kernel command
  line, and the digests of the recipe and host inputs.

A DIR already holding version V made by the same recipe from the same
inputs, its files matching its manifest, is left as it is.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

from images.tiny import host, rootfs
from images.tiny.initrd import build_initrd
from images.tiny.kernel import Kernel, ModuleIndex, find_kernel
from images.tiny.manifest import (
    DISK_FILE,
    INITRD_FILE,
    KERNEL_FILE,
    Manifest,
    inputs_digest,
    recipe_digest,
    reusable,
    seal,
)
from kvmss.base import qemuimg

NAME = "tiny"
DISK_SIZE_BYTES = 64 << 20
CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=-1 quiet no_timer_check"
# Every file in the image and the initrd gets this mtime (2023-11-14).
MTIME = 1_700_000_000
# The version becomes an image reference part and a line in /etc/os-release.
VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_version(version: str) -> str:
    if not VERSION_RE.fullmatch(version):
        raise ValueError(
            f"version {version[:80]!r} is invalid: use 1-64 letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return version


def _build_into(work: Path, version: str, kernel: Kernel) -> None:
    index = ModuleIndex(kernel)
    initrd_root = work / "initrd"
    initrd_root.mkdir()
    boot_modules = build_initrd(
        initrd_root, work / INITRD_FILE, kernel=kernel, index=index, mtime=MTIME
    )
    root = work / "rootfs"
    root.mkdir()
    rootfs.stage(
        root,
        version=version,
        kernel=kernel,
        index=index,
        skip_modules={m.name for m in boot_modules},
    )
    raw = work / "disk.raw"
    rootfs.make_ext4(root, raw, size_bytes=DISK_SIZE_BYTES, version=version, mtime=MTIME)
    qemuimg.convert(raw, work / DISK_FILE, src_format="raw", dst_format="qcow2", compress=True)
    host.install_file(work, kernel.image, "/" + KERNEL_FILE)


def build(version: str, out: Path, *, kernel_version: str | None = None) -> Manifest:
    """Build version ``version`` of the tiny image into ``out`` (created if
    needed) and return its manifest, or return the manifest already there when
    it is for the same version, recipe and host inputs and its files match.

    ``kernel_version`` picks an installed kernel (default: the newest).
    Raises ValueError for a bad version and :class:`host.BuildError` (or
    :class:`qemuimg.QemuImgError`) when a step fails.
    """
    check_version(version)
    out.mkdir(mode=0o755, parents=True, exist_ok=True)
    with host.locked(out):
        kernel = find_kernel(kernel_version)
        recipe = recipe_digest()
        inputs = inputs_digest(kernel.version, (kernel.image, *rootfs.HOST_PROGRAMS))
        existing = reusable(out, NAME, version, recipe, inputs)
        if existing is not None:
            return existing
        with tempfile.TemporaryDirectory(prefix=".build-", dir=out) as tmp:
            work = Path(tmp)
            _build_into(work, version, kernel)
            return seal(
                work,
                out,
                name=NAME,
                version=version,
                cmdline=CMDLINE,
                kernel_version=kernel.version,
                recipe=recipe,
                inputs=inputs,
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m images.tiny.build", description="Build the kvmss tiny base image."
    )
    parser.add_argument("--version", required=True, help="image version, e.g. 1 or 2024.1.2")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--kernel-version", help="installed kernel to use (default: newest)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    try:
        manifest = build(args.version, args.out, kernel_version=args.kernel_version)
    except (ValueError, host.BuildError, qemuimg.QemuImgError, OSError) as e:
        print(f"images.tiny.build: {e}", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(manifest.dumps())
    print(
        f"images.tiny.build: {NAME} {manifest.version} in {args.out}"
        f" ({time.monotonic() - started:.1f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
