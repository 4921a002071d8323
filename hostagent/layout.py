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
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hostagent.wire import check_instance_name


@dataclass(frozen=True)
class Layout:
    root: Path

    def prepare(self) -> None:
        # libvirt's QEMU user must traverse to the disks and read the bases.
        for d in (self.root, self.cache_dir, self.root / "instances"):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o755)
        for d in (self.journal_dir, self.operations_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)

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
        return self.root / "instances" / check_instance_name(name)

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
