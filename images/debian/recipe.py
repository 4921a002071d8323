"""What the Debian image is made of: the suite, the mirrors, the packages,
the units masked and the kernel command line, and the key that names a
cached root filesystem built from them.

The key covers everything that decides the root filesystem tree (suite,
mirrors, packages, masked units, the guest files and the code that builds
the tree), not what is done with the tree afterwards (the version stamp,
the disk), so changing the disk layout reuses the cached tree and changing
a package rebuilds it. This module's values enter the key as values, so
editing a comment here rebuilds nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from images.tiny.manifest import recipe_files, sha256_file

RECIPE_DIR = Path(__file__).parent
GUEST_ROOTFS = RECIPE_DIR / "guest" / "rootfs"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))

# Installed with apt-get --no-install-recommends after a minbase debootstrap.
# ifupdown is cloud-init's "eni" renderer (static addresses from the seed's
# network-config), which writes routes, the default route included, as
# `route add` commands: net-tools has route(8). dbus lets systemd-logind run,
# which turns the ACPI power button into a clean poweroff; curl and python3
# are what the kvmss guest script reports with; zstd compresses the
# initramfs; extlinux is the boot loader of a disk built to boot through the
# firmware (--boot firmware).
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "cloud-init",
    "openssh-server",
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "sudo",
    "python3",
    "curl",
    "ifupdown",
    "net-tools",
    "iproute2",
    "netbase",
    "extlinux",
)
# Units that do nothing useful in a VM (or in a disposable OS disk) and cost
# boot time under TCG: package-cache timers, ext4 scrubbing, fstrim (the root
# is mounted with discard), the VGA gettys (the console is ttyS0), and early
# loading of modules for what the guest has not got (a display, EFI, device
# mapper, FUSE: each modprobe is seconds of CPU under TCG on every boot).
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
    "getty-static.service",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@dm_mod.service",
    "modprobe@fuse.service",
)
# The code that builds the tree; its content is part of the cache key.
TREE_MODULES = ("rootfs.py", "chroot.py")

ROOT_LABEL = "kvmss-root"
CMDLINE = "root=/dev/vda rw console=ttyS0 net.ifnames=0 no_timer_check"

_URL_RE = re.compile(r"^https?://[A-Za-z0-9._~:/%@-]+$")


@dataclass(frozen=True)
class Mirrors:
    """Where the packages come from: the archive (``SUITE`` and
    ``SUITE-updates``) and the security archive (``SUITE-security``)."""

    archive: str = DEFAULT_MIRROR
    security: str = DEFAULT_SECURITY_MIRROR

    def __post_init__(self) -> None:
        for field in ("archive", "security"):
            url = getattr(self, field)
            if not _URL_RE.fullmatch(url):
                raise ValueError(f"mirror {field} {url[:200]!r} is not a plain http(s) URL")

    def sources_list(self) -> str:
        """The image's /etc/apt/sources.list."""
        return (
            f"deb {self.archive} {SUITE} main\n"
            f"deb {self.archive} {SUITE}-updates main\n"
            f"deb {self.security} {SUITE}-security main\n"
        )


def _deb822_stanzas(text: str) -> Iterable[dict[str, str]]:
    stanza: dict[str, str] = {}
    key = ""
    for line in [*text.splitlines(), ""]:
        if line.startswith("#"):
            continue
        if not line.strip():
            if stanza:
                yield stanza
            stanza, key = {}, ""
        elif line[0] in " \t" and key:
            stanza[key] += " " + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip().lower()
            stanza[key] = value.strip()


def _one_line_entries(text: str) -> Iterable[tuple[str, str, list[str]]]:
    """(uri, suite, components) of each ``deb`` line of a sources.list."""
    for raw in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", raw.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            yield words[1], words[2], words[3:]


def source_entries(paths: Iterable[Path] = APT_SOURCES) -> list[tuple[str, str, list[str]]]:
    """(uri, suite, components) of every ``deb`` source this host's apt has."""
    entries: list[tuple[str, str, list[str]]] = []
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.iterdir())
        elif p.is_file():
            files.append(p)
    for f in files:
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        if f.name.endswith(".sources"):
            for s in _deb822_stanzas(text):
                if "deb" not in s.get("types", "").split() or s.get("enabled", "yes") == "no":
                    continue
                for uri in s.get("uris", "").split():
                    for suite in s.get("suites", "").split():
                        entries.append((uri, suite, s.get("components", "").split()))
        elif f.name.endswith(".list"):
            entries += _one_line_entries(text)
    return entries


def host_mirrors(paths: Iterable[Path] = APT_SOURCES) -> Mirrors:
    """The mirrors this host's apt uses for ``SUITE`` (main), else Debian's CDN."""
    archive = security = None
    for uri, suite, components in source_entries(paths):
        if "main" not in components or not _URL_RE.fullmatch(uri.rstrip("/")):
            continue
        if suite == SUITE and archive is None:
            archive = uri.rstrip("/")
        elif suite == f"{SUITE}-security" and security is None:
            security = uri.rstrip("/")
    return Mirrors(archive or DEFAULT_MIRROR, security or DEFAULT_SECURITY_MIRROR)


def tree_key(mirrors: Mirrors, packages: Iterable[str] = PACKAGES) -> str:
    """sha256 naming the cached root filesystem tree of this recipe."""
    h = hashlib.sha256()
    h.update(f"suite {SUITE}\narchive {mirrors.archive}\nsecurity {mirrors.security}\n".encode())
    h.update(("packages " + " ".join(sorted(packages)) + "\n").encode())
    h.update(("masked " + " ".join(sorted(MASKED_UNITS)) + "\n").encode())
    for name in TREE_MODULES:
        h.update(f"module {name} {sha256_file(RECIPE_DIR / name)}\n".encode())
    for p in recipe_files(GUEST_ROOTFS):
        h.update(f"guest {p.relative_to(GUEST_ROOTFS).as_posix()} {sha256_file(p)}\n".encode())
    return h.hexdigest()
