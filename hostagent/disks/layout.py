"""Where the agent keeps things under its storage directory.

    <root>/cache/<sha256>                    base images, kernels, initrds (imagecache)
    <root>/instances/<name>/os-<gen>.qcow2   OS disk of a generation (overlay on a base)
    <root>/instances/<name>/seed-<gen>.iso   NoCloud seed of a generation
    <root>/instances/<name>/data-lun<N>.qcow2
    <root>/instances/<name>/spec.json        the last spec the controller sent
    <root>/instances/<name>/reports.json     extension and application-health reports
    <root>/instances/<name>/console.log      serial console (written by virtlogd)
    <root>/journal/<name>.json               the half-done operation on an instance
    <root>/operations/<id>.json              long operations and their outcome
    <root>/guest-secret                      key for per-instance guest tokens

Every path is built from a validated instance name, never from raw input.

Seeds (customData, protectedSettings, the guest's report token) and disks
(the guest's data; cloud-init keeps a copy of its user-data on the OS disk)
are 0600, the instance directories 0711: libvirt's QEMU user traverses to
them (libvirt's dynamic_ownership hands it the seed and disks while a guest
runs) but no local user lists or reads an instance's files. ``prepare``
tightens what an older agent left looser.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from hostagent.contract.names import check_instance_name

log = logging.getLogger(__name__)

# Traverse, not list: the QEMU user reaches the disks by name only.
INSTANCE_DIR_MODE = 0o711
SEED_MODE = 0o600
# every file of an instance: seeds, disks, spec, reports
PRIVATE_BITS = 0o077


@dataclass(frozen=True)
class Layout:
    root: Path

    def prepare(self) -> None:
        """Create the directories with their modes, and tighten instance
        directories and seeds an older agent left readable by everyone."""
        # libvirt's QEMU user must traverse to the disks and read the bases.
        for d in (self.root, self.cache_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
        self.instances_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.instances_dir, INSTANCE_DIR_MODE)
        for d in (self.journal_dir, self.operations_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        self._tighten_instances()

    def _tighten_instances(self) -> None:
        with os.scandir(self.instances_dir) as dirs:
            for d in dirs:
                if not d.is_dir(follow_symlinks=False):
                    continue
                _set_mode(Path(d.path), INSTANCE_DIR_MODE)
                with os.scandir(d.path) as files:
                    for f in files:
                        # seeds (and a crashed write's seed-<gen>.iso.part), disks
                        if f.is_file(follow_symlinks=False):
                            mode = stat.S_IMODE(f.stat(follow_symlinks=False).st_mode)
                            _set_mode(Path(f.path), mode & ~PRIVATE_BITS)

    def make_instance_dir(self, name: str) -> Path:
        """The instance's directory, created mode 0711 if missing."""
        d = self.instance_dir(name)
        d.mkdir(mode=INSTANCE_DIR_MODE, parents=True, exist_ok=True)
        # mkdir's mode goes through the umask: only ever narrower than 0711.
        _set_mode(d, INSTANCE_DIR_MODE)
        return d

    @property
    def instances_dir(self) -> Path:
        return self.root / "instances"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def journal_dir(self) -> Path:
        return self.root / "journal"

    @property
    def operations_dir(self) -> Path:
        return self.root / "operations"

    @property
    def guest_secret(self) -> Path:
        return self.root / "guest-secret"

    def instance_dir(self, name: str) -> Path:
        return self.instances_dir / check_instance_name(name)

    def os_disk(self, name: str, generation: int) -> Path:
        return self.instance_dir(name) / f"os-{generation}.qcow2"

    def seed(self, name: str, generation: int) -> Path:
        return self.instance_dir(name) / f"seed-{generation}.iso"

    def data_disk(self, name: str, lun: int) -> Path:
        return self.instance_dir(name) / f"data-lun{lun}.qcow2"

    def spec(self, name: str) -> Path:
        return self.instance_dir(name) / "spec.json"

    def reports(self, name: str) -> Path:
        return self.instance_dir(name) / "reports.json"

    def console_log(self, name: str) -> Path:
        return self.instance_dir(name) / "console.log"

    def journal(self, name: str) -> Path:
        return self.journal_dir / f"{check_instance_name(name)}.json"


def _set_mode(path: Path, mode: int) -> None:
    current = stat.S_IMODE(os.stat(path, follow_symlinks=False).st_mode)
    if current != mode:
        os.chmod(path, mode)
        log.info("%s: mode %o -> %o", path, current, mode)
