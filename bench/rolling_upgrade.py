"""Rolling-upgrade benchmark, simulated part: a whole rolling upgrade against a
real controller (``controller.daemon.server``, real SQLite, real HTTP) whose
hosts are simulated agents (:mod:`bench.simagent`) with boot times drawn from
the real TCG guests' measured range (12.6-17.5 s to the first HTTP 200, the
disk swap 0.7-1.0 s) scaled down by ``--scale`` so that a run takes minutes.

For each fleet (100, 1,000, 10,000 instances on 5, 50, 500 hosts by default;
scale sets of at most 1,000, all upgraded at once, 20% batches) it prints:

- ``wall/floor``: the upgrade's wall time (the controller's own start and end
  times) over its physical floor (per scale set, the sum over its batches of
  the slowest instance's swap + boot as the simulated agents drew them; the
  largest over the sets, which run side by side);
- controller CPU seconds per upgraded instance, and its peak RSS;

then a growth table relative to the smallest fleet. Both in one run.

Run from the repository::

    .venv/bin/python bench/rolling_upgrade.py                 # 100, 1,000, 10,000
    .venv/bin/python bench/rolling_upgrade.py --fleets 100:5,1000:50
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from bench import load, loadreport  # noqa: E402
from bench.loadmix import scale_set_name  # noqa: E402
from controller.store.facade import Store  # noqa: E402
from kvmss.base.clock import SystemClock  # noqa: E402

REAL_BOOT = (12.6, 17.5)  # s, TCG guest start to the first HTTP 200 (issue 18)
REAL_SWAP = 0.85  # s, stop-to-start disk swap and define, middle of 0.7-1.0
MAX_SET = 1000
UPGRADE_TIMEOUT = 3600.0


def _say(msg: str) -> None:
    print(f"rolling_upgrade: {msg}", file=sys.stderr, flush=True)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def fleet_args(instances: int, hosts: int, scale: float, poll: float) -> argparse.Namespace:
    sets = max(1, -(-instances // MAX_SET))
    return argparse.Namespace(
        instances=instances,
        scale_sets=sets,
        hosts=hosts,
        poll_seconds=poll,
        agent_op_seconds=REAL_SWAP / scale,
        agent_boot_seconds=0.0,
        agent_extra=[f"--boot-range={REAL_BOOT[0] / scale}:{REAL_BOOT[1] / scale}"],
    )


def floor_and_wall(db: Path, reimage_seconds: dict[str, float]) -> tuple[float, float, int]:
    """(floor, wall, upgraded) of the last upgrade of every set, from the store."""
    store = Store.open(f"sqlite:///{db}", clock=SystemClock())
    try:
        floors, starts, ends, upgraded = [], [], [], 0
        now = SystemClock().now()
        for name in sorted(s.name for s in store.scale_sets.all()):
            up = store.upgrades.history(name, now, limit=1)[0]
            assert up.end_time is not None, name
            if up.status != "Completed":
                raise load.SetupError(f"upgrade of {name} ended {up.status}: {up.error_message}")
            names = {i.instance_id: i.name for i in store.instances.of(name)}
            floors.append(
                sum(max(reimage_seconds[names[iid]] for iid in batch) for batch in up.batches)
            )
            starts.append(up.start_time)
            ends.append(up.end_time)
            upgraded += up.successful_count
        return max(floors), max(ends) - min(starts), upgraded
    finally:
        store.close()


def one_fleet(instances: int, hosts: int, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="kvmss-rolling-"))
    fa = fleet_args(instances, hosts, args.scale, args.poll_seconds)
    procs = load.Processes(work, fa)
    try:
        procs.start()
        with httpx.Client(
            base_url=procs.url, headers={"Authorization": f"Bearer {procs.token}"}, timeout=120
        ) as api:
            t = time.monotonic()
            load.populate(api, procs, fa)
            _say(f"{instances} instances on {hosts} hosts ready in {time.monotonic() - t:.0f} s")
            names = [scale_set_name(i) for i in range(fa.scale_sets)]
            pid = procs.controller.pid
            cpu0 = loadreport.process_cpu_seconds(pid)
            load._on_each(
                names, lambda n: load._check(api.post(f"/v1/scaleSets/{n}/osRollingUpgrade"), 202)
            )
            for name in names:
                ended = lambda n=name: load._upgrade_ended(api, n)  # noqa: E731
                load._wait_for(f"upgrade of {name}", ended, UPGRADE_TIMEOUT, 0.05)
            cpu = loadreport.process_cpu_seconds(pid) - cpu0
            rss = peak_rss_mb(pid)
            stats = httpx.get(
                f"http://127.0.0.1:{procs.agents_port}/stats?reimages=1",
                headers={"Authorization": f"Bearer {procs.agent_token}"},
                timeout=60,
            ).json()
        procs.stop()
        floor, wall, upgraded = floor_and_wall(work / "controller.db", stats["reimageSeconds"])
        return {
            "instances": instances,
            "hosts": hosts,
            "sets": fa.scale_sets,
            "wall": wall,
            "floor": floor,
            "ratio": wall / floor,
            "cpu_ms": cpu / max(upgraded, 1) * 1000,
            "rss_mb": rss,
            "upgraded": upgraded,
        }
    finally:
        procs.stop()
        shutil.rmtree(work, ignore_errors=True)


def render(rows: list[dict[str, Any]], scale: float) -> str:
    out = [
        f"simulated agents; real boot {REAL_BOOT[0]}-{REAL_BOOT[1]} s and swap {REAL_SWAP} s"
        f" scaled down by {scale:g}",
        f"{'instances':>9} {'hosts':>5} {'sets':>4} {'wall s':>7} {'floor s':>7}"
        f" {'wall/floor':>10} {'ctl CPU ms/inst':>15} {'peak RSS MB':>11}",
    ]
    for r in rows:
        out.append(
            f"{r['instances']:>9} {r['hosts']:>5} {r['sets']:>4} {r['wall']:>7.2f}"
            f" {r['floor']:>7.2f} {r['ratio']:>10.3f} {r['cpu_ms']:>15.2f} {r['rss_mb']:>11.0f}"
        )
    base = rows[0]
    out.append(f"growth relative to {base['instances']} instances:")
    out.append(
        f"{'instances':>9} {'x inst':>7} {'x wall/floor':>12} {'x CPU/inst':>10} {'x RSS':>6}"
    )
    for r in rows:
        out.append(
            f"{r['instances']:>9} {r['instances'] / base['instances']:>7.0f}"
            f" {r['ratio'] / base['ratio']:>12.2f} {r['cpu_ms'] / base['cpu_ms']:>10.2f}"
            f" {r['rss_mb'] / base['rss_mb']:>6.2f}"
        )
    return "\n".join(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="A whole rolling upgrade on simulated hosts.")
    ap.add_argument(
        "--fleets",
        default="100:5,1000:50,10000:500",
        help="INSTANCES:HOSTS,... (default 100:5,1000:50,10000:500)",
    )
    ap.add_argument("--scale", type=float, default=10.0, help="boot times divided by this (10)")
    ap.add_argument("--poll-seconds", type=float, default=1.0, help="controller poll_seconds")
    args = ap.parse_args(argv)
    try:
        args.fleets = [tuple(int(x) for x in f.split(":")) for f in args.fleets.split(",")]
    except ValueError:
        ap.error("--fleets: must be INSTANCES:HOSTS,... with whole numbers")
    if any(len(f) != 2 or min(f) <= 0 for f in args.fleets):
        ap.error("--fleets: each must be INSTANCES:HOSTS, both positive")
    if any(i > MAX_SET and i % MAX_SET for i, _h in args.fleets):
        ap.error(f"--fleets: above {MAX_SET}, instances must be a multiple of {MAX_SET}")
    if args.scale <= 0 or args.poll_seconds <= 0:
        ap.error("--scale and --poll-seconds: must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rows = []
    try:
        for instances, hosts in args.fleets:
            rows.append(one_fleet(instances, hosts, args))
            _say(f"{instances}: wall/floor {rows[-1]['ratio']:.3f}")
    except load.SetupError as e:
        print(f"rolling_upgrade: set-up failed: {e}", file=sys.stderr)
        return 2
    print(render(rows, args.scale))
    return 0


if __name__ == "__main__":
    sys.exit(main())
