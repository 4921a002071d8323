"""What the tiny image takes from the build host: its tools, run with errors
that say what ran and what it printed, and its programs, copied into a staging
tree together with the shared libraries they need.

Everything comes from Debian packages the setup step installs (busybox-static,
e2fsprogs, util-linux, linux-image-amd64); nothing is downloaded. The Debian
image (images/debian) runs its tools through :func:`run` and locks its
output and cache directories with :func:`locked` too.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
_OUTPUT_KEEP = 2000
# "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
_LDD_LINE = re.compile(r"^\s*(?:(\S+)\s+=>\s+)?(\S+)(?:\s+\(0x[0-9a-f]+\))?\s*$")


class BuildError(Exception):
    """Building the tiny image failed; the message says which step and why."""


def run(
    cmd: Sequence[str], *, what: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a host tool; on failure raise :class:`BuildError` naming ``what`` failed,
    the command, its exit code and the tail of what it printed."""
    full_env = dict(os.environ, LC_ALL="C")
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, errors="replace", env=full_env, check=False
        )
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} is not installed") from None
    if proc.returncode != 0:
        out = (proc.stderr.strip() or proc.stdout.strip())[-_OUTPUT_KEEP:]
        raise BuildError(
            f"{what}: {' '.join(cmd)} failed with exit code {proc.returncode}"
            + (f": {out}" if out else "")
        )
    return proc


@contextmanager
def locked(directory: Path, name: str = ".lock") -> Iterator[None]:
    """Hold an exclusive lock on ``directory/name`` (created if needed) for
    the ``with``, so two builds never interleave in one directory."""
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def shared_libraries(program: Path) -> list[Path]:
    """The shared libraries ``program`` loads (the dynamic loader included), as
    ldd resolves them on this host; empty for a static executable."""
    proc = subprocess.run(
        ["ldd", str(program)],
        capture_output=True,
        text=True,
        errors="replace",
        env=dict(os.environ, LC_ALL="C"),
        check=False,
    )
    text = proc.stdout + proc.stderr
    if "not a dynamic executable" in text or "statically linked" in text:
        return []
    if proc.returncode != 0:
        raise BuildError(f"ldd {program} failed with exit code {proc.returncode}: {text.strip()}")
    libs: list[Path] = []
    for line in proc.stdout.splitlines():
        if "=> not found" in line:
            raise BuildError(f"{program} needs {line.split()[0]}, which is not installed")
        m = _LDD_LINE.match(line)
        if m is None or not m.group(2).startswith("/"):
            continue  # linux-vdso.so.1 has no file
        libs.append(Path(m.group(2)))
    return libs


def _dest(root: Path, path: str) -> Path:
    rel = path.lstrip("/")
    if not rel or ".." in Path(rel).parts:
        raise BuildError(f"refusing to install to {path!r}: not a path inside the image")
    return root / rel


def install_file(root: Path, src: Path, dest: str, mode: int = 0o644) -> Path:
    """Copy ``src`` (following symlinks) to ``dest`` inside ``root``."""
    target = _dest(root, dest)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copyfile(src, target, follow_symlinks=True)
    except FileNotFoundError:
        raise BuildError(f"{src} does not exist on this host") from None
    target.chmod(mode)
    return target


def install_program(root: Path, src: Path, dest: str) -> None:
    """Copy the executable ``src`` to ``dest`` inside ``root`` and every shared
    library it needs to the same path it has on this host."""
    if not src.exists():
        raise BuildError(f"{src} does not exist on this host")
    install_file(root, src, dest, 0o755)
    for lib in shared_libraries(src):
        if not _dest(root, str(lib)).exists():
            install_file(root, lib, str(lib), 0o755)


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """Every applet of ``busybox`` with its usual path (``usr/bin/wget``)."""
    proc = run([str(busybox), "--list-full"], what="listing busybox applets")
    applets = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if not applets:
        raise BuildError(f"{busybox} --list-full printed no applets")
    return applets


def install_busybox(root: Path, *, flat: bool, busybox: Path = BUSYBOX) -> list[str]:
    """Install a static ``busybox`` as /bin/busybox with a symlink for every applet.

    ``flat`` puts every link in /bin (for the initrd); otherwise each goes to
    its usual path. A path already present in ``root`` is left alone, so real
    programs installed first win over applets. Returns the applet names.
    """
    if shared_libraries(busybox):
        raise BuildError(f"{busybox} is dynamically linked: install busybox-static")
    install_file(root, busybox, "/bin/busybox", 0o755)
    names: list[str] = []
    for path in busybox_applets(busybox):
        name = path.rsplit("/", 1)[-1]
        names.append(name)
        if "/" not in path or name == "busybox":
            continue  # linuxrc: only meaningful at the root of an old-style initrd
        link = _dest(root, f"/bin/{name}" if flat else path)
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("busybox" if flat else "/bin/busybox")
    return names
