"""An initramfs from a directory: a newc cpio archive, gzip-compressed.

Written here rather than with cpio(1) so that every entry is owned by root
and carries one fixed mtime, entries come in path order with inode numbers
in that order (the same tree gives the same bytes), and device nodes such as
/dev/console need no root privileges to add.
"""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from images.tiny.host import BuildError

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class DeviceNode:
    """A device node to add to the archive (``path`` relative, like ``dev/console``)."""

    path: str
    kind: str  # "c" or "b"
    major: int
    minor: int
    mode: int = 0o600

    def file_type(self) -> int:
        if self.kind == "c":
            return stat.S_IFCHR
        if self.kind == "b":
            return stat.S_IFBLK
        raise ValueError(f"device node {self.path}: kind must be 'c' or 'b', got {self.kind!r}")


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _entry(
    name: str,
    ino: int,
    mode: int,
    mtime: int,
    data: bytes = b"",
    nlink: int = 1,
    rdev: tuple[int, int] = (0, 0),
) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
    header = _MAGIC + b"".join(b"%08X" % f for f in fields)
    head = header + encoded
    return head + _pad4(len(head)) + data + _pad4(len(data))


def _walk(root: Path) -> Iterator[tuple[str, os.stat_result, Path]]:
    """Every path under ``root`` (root itself excluded), sorted, parents first."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            path = here / name
            yield path.relative_to(root).as_posix(), path.lstat(), path


def newc_archive(root: Path, *, mtime: int, nodes: Sequence[DeviceNode] = ()) -> bytes:
    """The newc cpio archive of the tree at ``root`` plus ``nodes``.

    Directories, regular files and symlinks only (hard links are stored as
    separate copies); permissions are kept, owners become root.
    """
    members: dict[str, tuple[int, bytes, int, tuple[int, int]]] = {}
    for rel, st, path in _walk(root):
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            members[rel] = (stat.S_IFDIR | perm, b"", 2, (0, 0))
        elif stat.S_ISREG(st.st_mode):
            members[rel] = (stat.S_IFREG | perm, path.read_bytes(), 1, (0, 0))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(path).encode()
            members[rel] = (stat.S_IFLNK | 0o777, target, 1, (0, 0))
        else:
            raise BuildError(f"initramfs: {path} is not a directory, file or symlink")
    for node in nodes:
        rel = node.path.strip("/")
        parent = rel.rpartition("/")[0]
        if parent and parent not in members:
            raise BuildError(f"initramfs: device node {rel} has no parent directory {parent}")
        if rel in members:
            raise BuildError(f"initramfs: device node {rel} is already a file in {root}")
        members[rel] = (node.file_type() | (node.mode & 0o7777), b"", 1, (node.major, node.minor))
    chunks = []
    for ino, rel in enumerate(sorted(members), start=1):
        mode, data, nlink, rdev = members[rel]
        chunks.append(_entry(rel, ino, mode, mtime, data, nlink, rdev))
    chunks.append(_entry(_TRAILER, 0, 0, 0))
    return b"".join(chunks)


def write_initramfs(root: Path, out: Path, *, mtime: int, nodes: Sequence[DeviceNode] = ()) -> None:
    """Write the gzip-compressed newc archive of ``root`` (and ``nodes``) to ``out``."""
    archive = newc_archive(root, mtime=mtime, nodes=nodes)
    out.write_bytes(gzip.compress(archive, compresslevel=9, mtime=mtime))
