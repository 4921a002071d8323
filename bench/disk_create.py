"""Benchmark: an OS disk as a qcow2 overlay vs as a full copy of the base.

Run as ``.venv/bin/python bench/disk_create.py``. For a 1 GiB and a 4 GiB
base qcow2 filled with random bytes (nothing sparse, nothing zero-detected),
times creating an overlay on the base (median of several) and making a full
copy with ``qemu-img convert`` (what a naive implementation would do), and
prints the raw times and the ratio overlay / full copy for both sizes.

Goals: ratio <= 0.01, and overlay time flat in the base size (the 4 GiB
overlay within 2x of the 1 GiB one, allowing for timer noise). Exits 1 if a
goal is missed. Works in a temporary directory under /var/tmp and removes it.
The base stays in the page cache between copies, which favours the copy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from kvmss.base import qemuimg

GiB = 1 << 30
CHUNK = 16 << 20
RATIO_GOAL = 0.01
FLATNESS_GOAL = 2.0


@dataclass(frozen=True)
class Timing:
    """Seconds until the call returned, and until its output was fsync'd."""

    returned: float
    durable: float


@dataclass(frozen=True)
class Result:
    size: int
    base_bytes: int
    overlay_times: list[Timing]
    copy_times: list[Timing]

    def overlay(self, durable: bool) -> float:
        return _median(self.overlay_times, durable)

    def copy(self, durable: bool) -> float:
        return _median(self.copy_times, durable)

    def ratio(self, durable: bool) -> float:
        return self.overlay(durable) / self.copy(durable)


def _median(times: list[Timing], durable: bool) -> float:
    return statistics.median(t.durable if durable else t.returned for t in times)


def make_base(workdir: Path, size: int) -> Path:
    """A qcow2 of ``size`` bytes, every byte random."""
    raw = workdir / f"base-{size >> 30}g.raw"
    with open(raw, "wb") as f:
        left = size
        while left:
            n = min(CHUNK, left)
            f.write(os.urandom(n))
            left -= n
    base = workdir / f"base-{size >> 30}g.qcow2"
    qemuimg.convert(raw, base, src_format="raw")
    raw.unlink()
    return base


def timed(fn: Callable[[], None], out: Path) -> Timing:
    """Time ``fn`` from a quiet start (no dirty pages of earlier steps being
    written back): until it returns, and until ``out`` is on stable storage."""
    os.sync()
    t0 = time.perf_counter()
    fn()
    t1 = time.perf_counter()
    fd = os.open(out, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    t2 = time.perf_counter()
    return Timing(t1 - t0, t2 - t0)


def measure(workdir: Path, size: int, overlays: int, copies: int) -> Result:
    base = make_base(workdir, size)
    overlay_times = []
    for i in range(overlays):
        ov = workdir / f"ov-{i}.qcow2"
        overlay_times.append(timed(partial(qemuimg.create_overlay, ov, base), ov))
        ov.unlink()
    copy_times = []
    for i in range(copies):
        cp = workdir / f"copy-{i}.qcow2"
        copy_times.append(timed(partial(qemuimg.convert, base, cp, src_format="qcow2"), cp))
        cp.unlink()
    result = Result(size, base.stat().st_size, overlay_times, copy_times)
    base.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes-gib", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--overlays", type=int, default=9, help="overlays timed per size")
    ap.add_argument("--copies", type=int, default=3, help="full copies timed per size")
    args = ap.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="kvmss-bench-disk-", dir="/var/tmp"))
    try:
        results = []
        for gib in args.sizes_gib:
            print(f"measuring a {gib} GiB base ...", file=sys.stderr, flush=True)
            results.append(measure(workdir, gib * GiB, args.overlays, args.copies))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    for durable in (True, False):
        title = (
            "until the new disk is fsync'd (the goal)"
            if durable
            else "until the command returns (the copy may still sit in the page cache)"
        )
        print(f"\ntime {title}:")
        print(
            f"{'base':>6} {'overlay (median)':>17} {'full copy (median)':>19} {'overlay/copy':>13}"
        )
        for r in results:
            print(
                f"{r.size >> 30:>5}G {r.overlay(durable) * 1e3:>14.1f} ms"
                f" {r.copy(durable):>17.3f} s {r.ratio(durable):>13.5f}"
            )
    print()
    for r in results:
        ovs = ", ".join(f"{t.returned * 1e3:.1f}/{t.durable * 1e3:.1f}" for t in r.overlay_times)
        cps = ", ".join(f"{t.returned:.2f}/{t.durable:.2f}" for t in r.copy_times)
        print(
            f"{r.size >> 30}G base ({r.base_bytes} bytes) raw times, returned/fsync'd:"
            f" overlay ms [{ovs}]; full copy s [{cps}]"
        )

    ok = all(r.ratio(True) <= RATIO_GOAL for r in results)
    print(f"goal overlay/copy (fsync'd) <= {RATIO_GOAL}: {'met' if ok else 'MISSED'}")
    if len(results) > 1:
        small, large = results[0], results[-1]
        flat = large.overlay(True) / small.overlay(True)
        flat_ok = flat <= FLATNESS_GOAL
        print(
            f"overlay time (fsync'd) {large.size >> 30}G / {small.size >> 30}G = {flat:.2f}"
            f" (goal <= {FLATNESS_GOAL}: {'met' if flat_ok else 'MISSED'})"
        )
        ok = ok and flat_ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
