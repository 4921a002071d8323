"""``manifest.json`` of a built image (tiny or Debian): what the files are,
their sha256, how to boot them, and which recipe and host inputs made them.

``boot`` is ``kernel`` when the host boots the image's kernel and initrd
directly with ``cmdline``, ``firmware`` when the disk boots by itself
(SeaBIOS and a boot loader on the disk; the kernel and initrd files are
then only a copy of what the disk holds, and are not published).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from images.tiny.host import BuildError
from kvmss.base import atomicfile

MANIFEST = "manifest.json"
# The files of every built image, next to its manifest.
DISK_FILE = "disk.qcow2"
KERNEL_FILE = "vmlinuz"
INITRD_FILE = "initrd.img"
BOOT_MODES = ("kernel", "firmware")
RECIPE_DIR = Path(__file__).parent
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def recipe_files(recipe_dir: Path = RECIPE_DIR) -> list[Path]:
    """The files that make up the recipe: its Python modules and guest files."""
    files = [p for p in recipe_dir.rglob("*") if p.is_file()]
    return sorted(
        (p for p in files if "__pycache__" not in p.parts and p.suffix != ".pyc"),
        key=lambda p: p.relative_to(recipe_dir).as_posix(),
    )


def recipe_digest(recipe_dir: Path = RECIPE_DIR) -> str:
    """sha256 over every recipe file's relative path and content."""
    h = hashlib.sha256()
    for p in recipe_files(recipe_dir):
        h.update(p.relative_to(recipe_dir).as_posix().encode() + b"\0")
        h.update(sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def inputs_digest(kernel_version: str, files: Iterable[Path]) -> str:
    """sha256 over the kernel version and the content of the host files the
    image is made of (kernel, busybox, ...), so a package upgrade rebuilds."""
    h = hashlib.sha256(kernel_version.encode() + b"\0")
    for p in files:
        h.update(f"{p}\0{sha256_file(p)}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ImageFile:
    file: str
    sha256: str
    size: int

    @classmethod
    def of(cls, path: Path) -> ImageFile:
        return cls(file=path.name, sha256=sha256_file(path), size=path.stat().st_size)

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, field: str, data: Any) -> ImageFile:
        if not isinstance(data, dict):
            raise ValueError(f"{field} must be an object")
        name = data.get("file")
        if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
            raise ValueError(f"{field}.file must be a plain file name")
        sha = data.get("sha256")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise ValueError(f"{field}.sha256 must be 64 lowercase hex digits")
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"{field}.size must be a non-negative integer")
        return cls(file=name, sha256=sha, size=size)

    def verify(self, directory: Path) -> bool:
        """True when the file exists in ``directory`` with this size and sha256."""
        path = directory / self.file
        try:
            if path.stat().st_size != self.size:
                return False
        except FileNotFoundError:
            return False
        return sha256_file(path) == self.sha256


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    disk: ImageFile
    kernel: ImageFile
    initrd: ImageFile
    cmdline: str
    kernel_version: str
    recipe: str
    inputs: str
    boot: str = "kernel"

    def __post_init__(self) -> None:
        if self.boot not in BOOT_MODES:
            raise ValueError(f"manifest boot must be one of {', '.join(BOOT_MODES)}")

    def files(self) -> tuple[ImageFile, ImageFile, ImageFile]:
        return (self.disk, self.kernel, self.initrd)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "disk": self.disk.to_json(),
            "kernel": self.kernel.to_json(),
            "initrd": self.initrd.to_json(),
            "cmdline": self.cmdline,
            "kernelVersion": self.kernel_version,
            "recipe": self.recipe,
            "inputs": self.inputs,
            "boot": self.boot,
        }

    def dumps(self) -> bytes:
        return json.dumps(self.to_json(), indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        if not isinstance(data, dict):
            raise ValueError("manifest must be a JSON object")

        def text(key: str) -> str:
            v = data.get(key)
            if not isinstance(v, str) or not v:
                raise ValueError(f"manifest {key} must be a non-empty string")
            return v

        return cls(
            name=text("name"),
            version=text("version"),
            disk=ImageFile.from_json("disk", data.get("disk")),
            kernel=ImageFile.from_json("kernel", data.get("kernel")),
            initrd=ImageFile.from_json("initrd", data.get("initrd")),
            cmdline=text("cmdline"),
            kernel_version=text("kernelVersion"),
            recipe=text("recipe"),
            inputs=text("inputs"),
            boot=text("boot") if "boot" in data else "kernel",
        )

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read and check a manifest; :class:`BuildError` says what is wrong with it."""
        try:
            return cls.from_json(json.loads(path.read_bytes()))
        except (ValueError, UnicodeDecodeError) as e:
            raise BuildError(f"{path}: {e}") from None


def reusable(out: Path, name: str, version: str, recipe: str, inputs: str) -> Manifest | None:
    """The manifest in ``out`` when it is for image ``name`` at ``version``
    made by the same recipe from the same inputs, and its files still match
    it; else None (the image must be built)."""
    path = out / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = Manifest.load(path)
    except BuildError:
        return None
    if (manifest.name, manifest.version, manifest.recipe, manifest.inputs) != (
        name,
        version,
        recipe,
        inputs,
    ):
        return None
    if not all(f.verify(out) for f in manifest.files()):
        return None
    return manifest


def install(work: Path, out: Path, manifest: Manifest) -> None:
    """Move the files ``manifest`` names from ``work`` into ``out`` and write
    the manifest last. There is no manifest while files are being swapped,
    so a reader never sees one that does not describe the files next to it."""
    (out / MANIFEST).unlink(missing_ok=True)
    for f in manifest.files():
        os.replace(work / f.file, out / f.file)
    atomicfile.write_bytes(out / MANIFEST, manifest.dumps(), mode=0o644)


def seal(
    work: Path,
    out: Path,
    *,
    name: str,
    version: str,
    cmdline: str,
    kernel_version: str,
    recipe: str,
    inputs: str,
    boot: str = "kernel",
) -> Manifest:
    """Describe the disk, kernel and initrd built in ``work`` (made 0644)
    and install them and their manifest into ``out``; the manifest."""
    files = {}
    for file in (DISK_FILE, KERNEL_FILE, INITRD_FILE):
        (work / file).chmod(0o644)
        files[file] = ImageFile.of(work / file)
    manifest = Manifest(
        name=name,
        version=version,
        disk=files[DISK_FILE],
        kernel=files[KERNEL_FILE],
        initrd=files[INITRD_FILE],
        cmdline=cmdline,
        kernel_version=kernel_version,
        recipe=recipe,
        inputs=inputs,
        boot=boot,
    )
    install(work, out, manifest)
    return manifest
