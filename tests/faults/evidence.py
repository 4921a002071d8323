"""What a fault scenario measures, from outside the controller.

- Out of service: each instance's service probed from this host
  (``http://<address>:8080/health``) once a second, the most down at once.
  Probing the guests themselves, not asking the controller or the agents,
  keeps the count honest while either of them is killed or stopped.
- Reimages: the agents' own operation records (``<storage>/operations``),
  which survive agent restarts: every reimage an agent ran has one (one it
  cancelled before it started has one too, and does not count), and the
  controller's operation ids are one per upgrade and instance, so a second
  reimage of an instance in one upgrade would be a second record. The OS
  disk generation each agent reports tells the same from the domain.
- Data disk: the guest-visible content of lun1 (``qemu-img convert -U`` to a
  sparse raw copy, read while the guest runs; nothing but the extension's
  first boot ever writes it), compared byte by byte before and after: a disk
  recreated, swapped or written by kvmss shows as changed bytes (the marker
  the extension wrote once is random).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from hostagent.contract.operations import Operation
from hostagent.contract.views import InstanceView
from tests.agentproc import AgentProcess

CHUNK = 1 << 20


class ServiceSampler:
    """Probes every instance's service once a second on a thread."""

    def __init__(self, addresses: dict[str, str], port: int = 8080) -> None:
        self.urls = {name: f"http://{addr}:{port}/health" for name, addr in addresses.items()}
        self.max_down = 0
        self.samples = 0
        self.down_seconds: dict[str, int] = dict.fromkeys(addresses, 0)
        self.worst: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="sampler", daemon=True)
        self._pool = ThreadPoolExecutor(max(1, len(addresses)))

    def __enter__(self) -> ServiceSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self._pool.shutdown()

    @staticmethod
    def _up(url: str) -> bool:
        """Answering 200. A probe that times out is tried once more with a
        longer timeout: an untouched TCG guest starved of CPU while another
        boots once answered 0.8 s late and counted as out of service (CI,
        2026-12-05); a guest that is down still fails both."""
        for timeout in (0.8, 2.0):
            try:
                return requests.get(url, timeout=timeout).status_code == 200
            except requests.Timeout:
                continue
            except requests.RequestException:
                return False
        return False

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            names = list(self.urls)
            up = list(self._pool.map(self._up, [self.urls[n] for n in names]))
            down = [n for n, ok in zip(names, up, strict=True) if not ok]
            self.samples += 1
            for n in down:
                self.down_seconds[n] += 1
            if len(down) > self.max_down:
                self.max_down, self.worst = len(down), down
            self._stop.wait(max(0.0, 1.0 - (time.monotonic() - began)))


@dataclass
class Snapshot:
    views: dict[str, InstanceView]
    ops: dict[str, Operation]
    lun1: dict[str, Path] = field(default_factory=dict)


def operations(agent: AgentProcess) -> dict[str, Operation]:
    d = agent.root / "storage" / "operations"
    return {p.stem: Operation(**json.loads(p.read_text())) for p in d.glob("*.json")}


def lun1_copy(view: InstanceView, dest: Path) -> Path:
    """The guest-visible content of data disk lun1 as a sparse raw file."""
    src = next(d.path for d in view.dataDisks if d.lun == 1)
    subprocess.run(
        ["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", src, str(dest)],
        check=True,
        capture_output=True,
    )
    return dest


def snapshot(agents: list[AgentProcess], dest: Path, tag: str) -> Snapshot:
    """Every instance's view and lun1 content, every agent's operations."""
    dest.mkdir(parents=True, exist_ok=True)
    views = {v.name: v for a in agents for v in a.client.instances()}
    ops = {k: v for a in agents for k, v in operations(a).items()}
    lun1 = {n: lun1_copy(v, dest / f"{n}-{tag}.raw") for n, v in views.items()}
    return Snapshot(views, ops, lun1)


def _extents(path: Path) -> list[tuple[int, int]]:
    """Data (non-hole) extents of a sparse file."""
    out = []
    with path.open("rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end))
            pos = end
    return out


def bytes_changed(a: Path, b: Path) -> int:
    """How many bytes differ between two raw images (holes read as zeros)."""
    if a.stat().st_size != b.stat().st_size:
        return max(a.stat().st_size, b.stat().st_size)
    regions = sorted(_extents(a) + _extents(b))
    changed = 0
    covered = 0
    with a.open("rb") as fa, b.open("rb") as fb:
        for start, end in regions:
            start = max(start, covered)
            while start < end:
                n = min(CHUNK, end - start)
                fa.seek(start)
                fb.seek(start)
                ca, cb = fa.read(n), fb.read(n)
                if ca != cb:
                    changed += sum(1 for x, y in zip(ca, cb, strict=True) if x != y)
                start += n
            covered = max(covered, end)
    return changed


def marked(path: Path) -> bool:
    """The extension's marker is on the disk (it ran and wrote lun1)."""
    with path.open("rb") as f:
        return f.read(10) == b"KVMSS-LUN1"


@dataclass(frozen=True)
class Delta:
    """What the agents did between two snapshots, per instance name."""

    reimages: dict[str, int]
    rollbacks: dict[str, int]
    generation: dict[str, int]
    data_bytes_changed: dict[str, int]


def delta(before: Snapshot, after: Snapshot) -> Delta:
    # (an operation cancelled before it started is recorded too, and never ran)
    new = [
        o
        for k, o in after.ops.items()
        if k not in before.ops and not (o.error is not None and o.error.code == "Cancelled")
    ]

    def count(kind: str) -> dict[str, int]:
        return {n: sum(1 for o in new if o.kind == kind and o.instance == n) for n in after.views}

    return Delta(
        reimages=count("reimage"),
        rollbacks=count("rollback"),
        generation={
            n: v.current.generation - before.views[n].current.generation
            for n, v in after.views.items()
        },
        data_bytes_changed={n: bytes_changed(before.lun1[n], after.lun1[n]) for n in after.lun1},
    )


def final_states(s: Snapshot) -> dict[str, dict[str, Any]]:
    return {
        n: {
            "version": v.current.image.version,
            "health": v.health.state,
            "generation": v.current.generation,
            "previousDisk": v.previous is not None,
        }
        for n, v in sorted(s.views.items())
    }
