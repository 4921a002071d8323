"""What the guest fault scenarios (tests/faults/test_guest_faults.py) share: a
lab whose first host keeps its storage on a small tmpfs, the guest scripts,
image variants (padded, unique, truncated), a once-a-second sampler of what
the agents and the controller say during an upgrade, and byte-level
snapshots of the data disks the guests never mount."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from bench.scalesets import http_probe, scale_set_body
from hostagent.contract.client import AgentClient, AgentError
from hostagent.contract.views import InstanceView
from kvmss.base import qemuimg
from tests.guestlab import TOKEN, GuestLab, guest_lab, wait_until

MiB = 1 << 20
HTTP_PORT = 8080
PER_BOOT = "/var/lib/cloud/scripts/per-boot/svc.sh"


# -- the lab -------------------------------------------------------------------------


@dataclass
class FaultLab:
    """A GuestLab (controller + 2 agents) whose host1 stores everything on a
    tmpfs of ``tmpfs_bytes`` mounted at ``small_storage``."""

    lab: GuestLab
    small_storage: Path
    work: Path  # scratch space on the real disk (image variants, disk snapshots)

    def client(self, host: str) -> AgentClient:
        return next(a.client for a in self.lab.agents if a.name == host)


@contextmanager
def fault_lab(tag: str, tmpfs_bytes: int) -> Iterator[FaultLab]:
    """guest_lab with host1's storage directory on a size-limited tmpfs: the
    agent is stopped before it owns anything, the tmpfs is mounted over its
    (empty) storage directory and the agent started again on it. The tmpfs
    is unmounted after the lab (guests included) is gone."""
    mounted: list[Path] = []
    try:
        with guest_lab(tag, hosts=2) as lab:
            host1 = lab.agents[0]
            storage = host1.root / "storage"
            host1.stop()
            shutil.rmtree(storage)
            storage.mkdir()
            subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={tmpfs_bytes},mode=0755", "tmpfs", storage],
                check=True,
            )
            mounted.append(storage)
            host1.start()
            lab.add_hosts()
            work = host1.root.parent / "work"
            work.mkdir()
            yield FaultLab(lab, storage, work)
    finally:
        for m in mounted:
            subprocess.run(["umount", "-l", str(m)], check=False)
            shutil.rmtree(m.parent.parent, ignore_errors=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@contextmanager
def filled(fs: Path, leave_bytes: int) -> Iterator[Path]:
    """A file taking all of ``fs`` but ``leave_bytes``, removed on exit."""
    filler = fs / "filler"
    size = free_bytes(fs) - leave_bytes
    assert size > 0, f"{fs} has only {free_bytes(fs)} bytes free"
    with filler.open("wb") as f:
        os.posix_fallocate(f.fileno(), 0, size)
    try:
        yield filler
    finally:
        filler.unlink()


# -- the guest side ------------------------------------------------------------------


# Once per data disk: a marker and 1 MiB of random bytes at the start of the
# lun-1 disk (found by its serial; the guest never mounts it), fsync'ed so
# QEMU has written them to the file: a disk kvmss replaced, even by an empty
# one of the same size, would then no longer match its copy.
MARK_LUN1 = (
    "for b in /sys/block/vd*; do"
    ' [ "$(cat $b/serial 2>/dev/null)" = lun1 ] && d=/dev/${b##*/}; done;'
    ' if [ -n "$d" ] && ! head -c 9 "$d" | grep -q KVMSS-L1; then'
    " { echo KVMSS-L1 $(cat /proc/sys/kernel/random/uuid); head -c 1048576 /dev/urandom; }"
    ' | dd of="$d" bs=65536 conv=fsync 2>/dev/null || exit 1; fi;'
)


def service_command(flap_version: str | None = None) -> str:
    """An extension that installs a per-boot web service on port 8080 serving
    /health, and starts it. On ``flap_version`` (the image's /etc/os-version)
    the service flaps at every boot, saying so on the console: answers for
    3 s, closed for 8 s, answers (the instance turns healthy), then 404 from
    24 s to 31 s after it started, then answers for good."""
    lines = [
        "#!/bin/sh",
        'say() { echo "kvmss-flap: $*" >/dev/console; }',
        "mkdir -p /www && echo ok >/www/health",
        f"busybox httpd -f -p {HTTP_PORT} -h /www &",
        "pid=$!",
    ]
    if flap_version is not None:
        lines += [
            f'[ "$(cat /etc/os-version)" = {shlex.quote(flap_version)} ] || exit 0',
            "sleep 3; kill $pid; say closed",
            f"sleep 8; busybox httpd -f -p {HTTP_PORT} -h /www & say open",
            "sleep 13; rm -f /www/health; say 404",
            "sleep 7; echo ok >/www/health; say 200",
        ]
    body = " ".join(shlex.quote(line) for line in lines)
    return (
        f"{MARK_LUN1} mkdir -p {os.path.dirname(PER_BOOT)} /www"
        f" && printf '%s\\n' {body} > {PER_BOOT}"
        f" && chmod +x {PER_BOOT} && {{ setsid {PER_BOOT} </dev/null >/dev/null 2>&1 & }}"
    )


def hang_command(hang_version: str) -> str:
    """An extension that never ends (so never reports) on ``hang_version``."""
    return (
        f'if [ "$(cat /etc/os-version)" = {shlex.quote(hang_version)} ]; then'
        " echo hanging; exec sleep 100000; fi; echo set up"
    )


def model(
    offer: str,
    extensions: list[dict[str, Any]],
    *,
    health_timeout: str,
    max_unhealthy_percent: int = 20,
    automatic: bool = True,
) -> dict[str, Any]:
    """3 tiny instances with two 1 GiB data disks (the image mounts lun 0 at
    /data and never touches lun 1), an HTTP probe every 2 s needing 3 in a
    row, following ``latest`` of kvmss/<offer>/1."""
    return scale_set_body(
        3,
        ("kvmss", offer, "1"),
        prefix=offer,
        data_disks=2,
        health_timeout=health_timeout,
        automatic=automatic,
        max_unhealthy_percent=max_unhealthy_percent,
        probe=http_probe(interval=2, probes=3, port=HTTP_PORT),
        extensions=extensions,
    )


# -- image variants ------------------------------------------------------------------


def variant(src: Path, out: Path, disk: Path) -> Path:
    """An image directory ``out`` like ``src`` (same kernel, initrd, command
    line) but with ``disk`` as its disk; what imagebuild.publish reads."""
    out.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((src / "manifest.json").read_text())
    for part in ("kernel", "initrd"):
        shutil.copyfile(src / manifest[part]["file"], out / manifest[part]["file"])
    if disk != out / "disk.qcow2":
        shutil.move(disk, out / "disk.qcow2")
    manifest["disk"] = {"file": "disk.qcow2", "size": (out / "disk.qcow2").stat().st_size}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return out


def padded_disk(src_disk: Path, out: Path, pad_bytes: int) -> Path:
    """``src_disk`` grown by ``pad_bytes`` of random data past its filesystem:
    a bootable qcow2 of about ``pad_bytes`` more, whose sha256 no host has."""
    raw = out.with_suffix(".raw")
    qemuimg.convert(src_disk, raw, src_format="qcow2", dst_format="raw")
    with raw.open("ab") as f:
        left = pad_bytes
        while left > 0:
            n = min(left, 4 * MiB)
            f.write(os.urandom(n))
            left -= n
    qemuimg.convert(raw, out, src_format="raw", dst_format="qcow2")
    raw.unlink()
    return out


def truncated_disk(src_disk: Path, out: Path, keep_bytes: int) -> Path:
    shutil.copyfile(src_disk, out)
    os.truncate(out, keep_bytes)
    return out


def flip_bytes(path: Path, offset: int, count: int = 16) -> None:
    """Invert ``count`` bytes of ``path`` at ``offset`` in place (a read-only
    file too: the test runs as root)."""
    mode = path.stat().st_mode
    os.chmod(path, 0o600)
    try:
        with path.open("r+b") as f:
            f.seek(offset)
            data = f.read(count)
            f.seek(offset)
            f.write(bytes(b ^ 0xFF for b in data))
    finally:
        os.chmod(path, mode & 0o7777)


# -- watching an upgrade -------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the sampler started
    code: str | None  # runningStatus of the latest upgrade
    upgrade_id: str | None
    states: dict[str, str]  # instance id -> state in the latest upgrade
    views: dict[str, InstanceView | None]  # instance id -> what its agent says


@dataclass
class Instance:
    instance_id: str
    name: str
    host: str


def instances(lab: GuestLab, scale_set: str) -> list[Instance]:
    return [
        Instance(v["instanceId"], v["name"], v["host"])
        for v in sorted(lab.vms(scale_set), key=lambda v: int(v["instanceId"]))
    ]


def out_of_service(s: Sample, target: str) -> set[str]:
    """Instances out of service because of an upgrade to ``target``: not
    healthy (or not found), except one already committed on the target (its
    health is its own affair from then on: scenario 1 flaps it on purpose)."""
    out = set()
    for iid, v in s.views.items():
        if v is None:
            out.add(iid)
        elif v.health.state != "Healthy":
            committed = v.current.image.version == target and v.previous is None
            if not committed:
                out.add(iid)
    return out


@dataclass
class Sampler:
    """Samples once a second, on a thread, what each agent says of the scale
    set's instances (one listing per host) and the states of its latest
    upgrade, until stopped."""

    fl: FaultLab
    scale_set: str
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._insts = instances(self.fl.lab, self.scale_set)
        self._stop = threading.Event()
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.samples.append(self.sample())
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - started)))

    def sample(self) -> Sample:
        by_host: dict[str, dict[str, InstanceView]] = {}
        for host in {i.host for i in self._insts}:
            try:
                by_host[host] = {v.name: v for v in self.fl.client(host).instances()}
            except AgentError:
                by_host[host] = {}
        latest = self.latest()
        kv = latest["kvmss"] if latest else {}
        return Sample(
            t=time.monotonic() - self._t0,
            code=latest["properties"]["runningStatus"]["code"] if latest else None,
            upgrade_id=kv.get("upgradeId"),
            states={r["instanceId"]: r["state"] for r in kv.get("instances", [])},
            views={i.instance_id: by_host[i.host].get(i.name) for i in self._insts},
        )

    def latest(self) -> dict[str, Any] | None:
        r = requests.get(
            f"{self.fl.lab.url}/v1/scaleSets/{self.scale_set}/rollingUpgrades/latest",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return dict(r.json())

    def worst(self, target: str) -> int:
        return max((len(out_of_service(s, target)) for s in self.samples), default=0)

    def worst_raw(self) -> int:
        """Most instances seen not healthy at once, whatever the reason."""
        return max(
            (
                sum(1 for v in s.views.values() if v is None or v.health.state != "Healthy")
                for s in self.samples
            ),
            default=0,
        )


def wait_new_upgrade(lab: GuestLab, scale_set: str, before: int, timeout: float = 60) -> None:
    wait_until(lambda: len(lab.history(scale_set)) > before, timeout, "a new upgrade")


def wait_ended(lab: GuestLab, scale_set: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = lab.call("GET", f"/v1/scaleSets/{scale_set}/rollingUpgrades/latest")
        if latest["properties"]["runningStatus"]["code"] != "RollingForward":
            return dict(latest)
        time.sleep(1)
    raise AssertionError(f"the upgrade of {scale_set} did not end within {timeout}s")


def views(fl: FaultLab, scale_set: str) -> dict[str, InstanceView]:
    out = {}
    for i in instances(fl.lab, scale_set):
        v = fl.client(i.host).instance(i.name)
        assert v is not None, f"{i.name} is missing on {i.host}"
        out[i.instance_id] = v
    return out


def final_states(fl: FaultLab, scale_set: str) -> dict[str, str]:
    """instance id -> 'Healthy v2 running gen 3' as the agents say now."""
    return {
        iid: f"{v.health.state} v{v.current.image.version} {v.powerState}"
        f" gen {v.current.generation}"
        for iid, v in views(fl, scale_set).items()
    }


def console(fl: FaultLab, host: str, name: str) -> str:
    agent = next(a for a in fl.lab.agents if a.name == host)
    path = agent.root / "storage" / "instances" / name / "console.log"
    return path.read_text(errors="replace") if path.exists() else ""


# -- data disks ----------------------------------------------------------------------


class DataDiskSnapshot:
    """Copies of every instance's lun-1 data disk file (a qcow2 no guest
    mounts, holding its guest's marker and random bytes: MARK_LUN1), to
    count later how many of its bytes changed."""

    def __init__(self, fl: FaultLab, scale_set: str) -> None:
        self.copies: dict[Path, Path] = {}
        into = fl.work / f"lun1-{scale_set}-{time.monotonic_ns()}"
        into.mkdir()
        for iid, v in views(fl, scale_set).items():
            disk = Path(next(d.path for d in v.dataDisks if d.lun == 1))
            copy = into / f"{iid}.qcow2"
            shutil.copyfile(disk, copy)
            assert b"KVMSS-L1" in copy.read_bytes(), f"{disk} was never marked by its guest"
            self.copies[disk] = copy

    def bytes_changed(self) -> int:
        """Bytes that differ between each copy and its disk now, plus any
        difference in length, summed over the disks."""
        changed = 0
        for disk, copy in self.copies.items():
            with disk.open("rb") as a, copy.open("rb") as b:
                while True:
                    x, y = a.read(MiB), b.read(MiB)
                    if not x and not y:
                        break
                    if x != y:
                        changed += sum(p != q for p, q in zip(x, y, strict=False))
                        changed += abs(len(x) - len(y))
        return changed
