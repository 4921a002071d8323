"""The tiny image's kernel: which installed Debian kernel, and its modules in
load order, resolved from ``modules.dep`` and ``modules.builtin``.

The guest has no modprobe and no module index: the builder copies the ``.ko``
files it needs (decompressed) and writes ``lib/modules/<version>/kvmss-load``,
one ``name path`` line per module, dependencies first, which the initrd and
the boot script read and feed to ``insmod``.
"""

from __future__ import annotations

import gzip
import lzma
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from images.tiny.host import BuildError

BOOT_DIR = Path("/boot")
MODULES_ROOT = Path("/lib/modules")
LOAD_LIST = "kvmss-load"
_SUFFIXES = (".ko", ".ko.xz", ".ko.gz", ".ko.zst")


def module_name(path: str) -> str:
    """``kernel/drivers/virtio/virtio_pci.ko.xz`` -> ``virtio_pci`` (dashes as underscores)."""
    base = path.rsplit("/", 1)[-1]
    for suffix in _SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


def _version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key for kernel versions: numeric parts as numbers, after words."""
    return tuple(
        (1, int(p), "") if p.isdigit() else (0, 0, p) for p in re.split(r"[.\-+~]", version)
    )


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path
    modules_dir: Path


def find_kernel(
    version: str | None = None, *, boot: Path = BOOT_DIR, modules_root: Path = MODULES_ROOT
) -> Kernel:
    """The installed kernel ``version``, or the newest one that has both
    ``vmlinuz-<version>`` in ``boot`` and a ``modules.dep`` (never the kernel
    this host runs: the build host may be a container or a different VM)."""
    if version is not None:
        candidates = [version]
    else:
        found = [p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*")]
        candidates = sorted(found, key=_version_key, reverse=True)
    for v in candidates:
        image = boot / f"vmlinuz-{v}"
        mods = modules_root / v
        if image.is_file() and (mods / "modules.dep").is_file():
            return Kernel(version=v, image=image, modules_dir=mods)
    if version is not None:
        raise BuildError(
            f"kernel {version!r}: need {boot}/vmlinuz-{version} and"
            f" {modules_root}/{version}/modules.dep"
        )
    raise BuildError(
        f"no kernel found: need {boot}/vmlinuz-<version> with"
        f" {modules_root}/<version>/modules.dep (apt-get install linux-image-amd64)"
    )


@dataclass(frozen=True)
class Module:
    name: str
    path: str  # relative to the modules directory, as in modules.dep (maybe compressed)

    @property
    def installed_path(self) -> str:
        """Where the decompressed module goes, relative to the modules directory."""
        for suffix in _SUFFIXES[1:]:
            if self.path.endswith(suffix):
                return self.path[: -len(suffix)] + ".ko"
        return self.path


class ModuleIndex:
    """``modules.dep`` and ``modules.builtin`` of one kernel."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._paths: dict[str, str] = {}
        self._deps: dict[str, list[str]] = {}
        dep_file = kernel.modules_dir / "modules.dep"
        for lineno, line in enumerate(dep_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            head, sep, tail = line.partition(":")
            if not sep:
                raise BuildError(f"{dep_file} line {lineno} has no ':'")
            name = module_name(head)
            self._paths[name] = head.strip()
            self._deps[name] = [module_name(d) for d in tail.split()]
        builtin = kernel.modules_dir / "modules.builtin"
        self._builtin = (
            {module_name(line.strip()) for line in builtin.read_text().splitlines() if line.strip()}
            if builtin.is_file()
            else set()
        )

    def is_builtin(self, name: str) -> bool:
        return name.replace("-", "_") in self._builtin

    def resolve(self, names: Iterable[str]) -> list[Module]:
        """``names`` and everything they depend on, each once, dependencies first.

        Modules built into the kernel are left out; a name that is neither a
        module nor built in raises :class:`BuildError`.
        """
        order: list[Module] = []
        done: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in done:
                return
            if name in chain:
                raise BuildError(f"kernel module dependency cycle: {' -> '.join((*chain, name))}")
            path = self._paths.get(name)
            if path is None:
                if name in self._builtin:
                    done.add(name)
                    return
                raise BuildError(
                    f"kernel module {name!r} is neither in {self.kernel.modules_dir}/modules.dep"
                    f" nor built into kernel {self.kernel.version}"
                )
            for dep in self._deps[name]:
                visit(dep, (*chain, name))
            done.add(name)
            order.append(Module(name=name, path=path))

        for name in names:
            visit(name.replace("-", "_"), ())
        return order


def _decompressed(src: Path) -> bytes:
    name = src.name
    if name.endswith(".ko"):
        return src.read_bytes()
    if name.endswith(".ko.xz"):
        return lzma.decompress(src.read_bytes())
    if name.endswith(".ko.gz"):
        return gzip.decompress(src.read_bytes())
    raise BuildError(f"kernel module {src}: compression not supported (only .ko, .ko.xz, .ko.gz)")


def install_modules(kernel: Kernel, modules: Sequence[Module], root: Path) -> Path:
    """Copy ``modules`` (decompressed) under ``root/lib/modules/<version>/`` and
    write their load list there; returns the list's path."""
    target = root / "lib" / "modules" / kernel.version
    lines = []
    for mod in modules:
        dest = target / mod.installed_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(_decompressed(kernel.modules_dir / mod.path))
        dest.chmod(0o644)
        lines.append(f"{mod.name} {mod.installed_path}\n")
    target.mkdir(parents=True, exist_ok=True)
    load_list = target / LOAD_LIST
    load_list.write_text("".join(lines))
    load_list.chmod(0o644)
    return load_list
