"""Running Debian's own tools inside the root filesystem being built.

apt, dpkg and the maintainer scripts (initramfs-tools, openssh-server...)
need /proc, /sys and /dev; they are bind-mounted for the time of the
``with`` and unmounted afterwards, also when a step fails. A
``policy-rc.d`` that says "no" keeps maintainer scripts from starting
services on the build host.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from images.tiny import host

POLICY_RC_D = "usr/sbin/policy-rc.d"
# (source, mount point inside the tree, mount arguments)
_MOUNTS = (
    ("proc", "proc", ["-t", "proc"]),
    ("sysfs", "sys", ["-t", "sysfs"]),
    ("/dev", "dev", ["--bind"]),
    ("/dev/pts", "dev/pts", ["--bind"]),
)
# What maintainer scripts see: no questions, no services, a plain locale.
CHROOT_ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
}


def _unmount(target: Path) -> None:
    proc = subprocess.run(["umount", str(target)], capture_output=True, text=True, check=False)
    if proc.returncode != 0 and os.path.ismount(target):
        # Something still holds it (a daemon a maintainer script started):
        # detach it so the tree can be moved and removed.
        subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)


@contextmanager
def mounted(root: Path) -> Iterator[None]:
    """/proc, /sys, /dev and /dev/pts of ``root`` mounted, and services held
    back by ``policy-rc.d``, for the duration of the ``with``."""
    policy = root / POLICY_RC_D
    with ExitStack() as stack:
        policy.write_text("#!/bin/sh\n# kvmss image build: start no services.\nexit 101\n")
        policy.chmod(0o755)
        stack.callback(policy.unlink, missing_ok=True)
        for source, rel, args in _MOUNTS:
            target = root / rel
            target.mkdir(parents=True, exist_ok=True)
            host.run(["mount", *args, source, str(target)], what=f"mounting {rel} in {root}")
            stack.callback(_unmount, target)
        yield


def run(
    root: Path, cmd: Sequence[str], *, what: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` chrooted into ``root`` (which must be :func:`mounted`)."""
    return host.run(["chroot", str(root), *cmd], what=what, env={**CHROOT_ENV, **(env or {})})
