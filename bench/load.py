"""Load benchmark: many concurrent API clients against a real controller.

Starts a real controller (``python -m controller.daemon.server``: uvicorn, a real
SQLite store file, the real catalog) and, in another process, simulated host
agents speaking the real agent HTTP contract, so the controller reaches
them through its real agent client. Fills
it the way a user would, through the API: publishes image version 1 (a real
qcow2), registers the hosts, creates the scale sets with their capacity and
waits for every instance to be Running, runs one rolling upgrade per set
(nothing to do, but every set then has a status and a history), and
publishes version 2 so that upgrades started during the run do real batches.

Then, from this process, ``--clients`` clients run a mix of requests for
``--duration`` seconds, and it prints
p50/p99 latency and errors per request kind and overall, requests/s, the CPU
each process used, and the ratios to the goals measured in this run.

Goals: p99 < 100 ms over all requests, 0 errors. Exit status 0 when both
are met, 1 when one is missed, 2 when the set-up fails.

Run from the repository::

    .venv/bin/python bench/load.py                      # 200 clients, 10,000 instances, 60 s
    .venv/bin/python bench/load.py --duration 20 --clients 50 --instances 2000
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import yaml  # noqa: E402

from bench import loadreport, scalesets  # noqa: E402
from bench.loadclients import Shape, Target, run_clients  # noqa: E402
from bench.loaddashboards import open_dashboards  # noqa: E402
from bench.loadmix import MIX, parse_weights, scale_set_name  # noqa: E402
from bench.served import free_port  # noqa: E402
from bench.simagent import host_names  # noqa: E402
from kvmss.base import qemuimg  # noqa: E402
from kvmss.base.clock import SystemClock  # noqa: E402
from kvmss.base.waiting import wait_until  # noqa: E402

IMAGE = ("bench", "load", "1")
READY_TIMEOUT_SECONDS = 900.0


class SetupError(Exception):
    """The benchmark could not be set up (a process did not start, a call failed)."""


def _say(msg: str) -> None:
    print(f"load: {msg}", file=sys.stderr, flush=True)


def _wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    if not wait_until(SystemClock(), check, timeout=timeout, interval=every):
        raise SetupError(f"{what}: not within {timeout:g} s")


class Processes:
    """The simulated agents and the controller, each its own process."""

    def __init__(self, work: Path, args: argparse.Namespace) -> None:
        self.work = work
        self.args = args
        self.token = secrets.token_urlsafe(24)
        self.agent_token = secrets.token_urlsafe(24)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.agents_port = 0
        self.port = free_port()

    def start(self) -> None:
        (self.work / "controller.token").write_text(self.token)
        (self.work / "agent.token").write_text(self.agent_token)
        self.agents = self._spawn(
            "agents",
            [
                str(REPO / "bench" / "simagent.py"),
                f"--hosts={self.args.hosts}",
                f"--token-file={self.work / 'agent.token'}",
                f"--op-seconds={self.args.agent_op_seconds}",
                f"--boot-seconds={self.args.agent_boot_seconds}",
                *getattr(self.args, "agent_extra", ()),
            ],
            stdout=subprocess.PIPE,
        )
        assert self.agents.stdout is not None
        line = self.agents.stdout.readline().decode().split()
        if len(line) != 2 or line[0] != "listening":
            raise SetupError(f"simulated agents did not start (see {self.work / 'agents.log'})")
        self.agents_port = int(line[1])
        config = {
            "listen": f"127.0.0.1:{self.port}",
            "token_file": str(self.work / "controller.token"),
            "database": str(self.work / "controller.db"),
            "blob_dir": str(self.work / "blobs"),
            "public_url": f"http://127.0.0.1:{self.port}",
            "poll_seconds": self.args.poll_seconds,
        }
        (self.work / "controller.yaml").write_text(yaml.safe_dump(config))
        self.controller = self._spawn(
            "controller",
            ["-m", "controller.daemon.server", "--config", str(self.work / "controller.yaml")],
        )

        def up() -> bool:
            if self.controller.poll() is not None:
                raise SetupError(f"the controller exited (see {self.work / 'controller.log'})")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for("the controller answering /healthz", up, 30)

    def _spawn(self, name: str, argv: list[str], stdout: int | None = None) -> Any:
        log = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, *argv],
            cwd=REPO,
            stdout=stdout if stdout is not None else log,
            stderr=log,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.procs.append(proc)
        return proc

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        """The controller first, so that it does not log agents vanishing."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _check(r: httpx.Response, *ok: int) -> Any:
    if r.status_code not in ok:
        raise SetupError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}")
    return r.json() if r.content else None


def scale_set_body(capacity: int) -> dict[str, Any]:
    """A Rolling scale set following ``latest`` of the bench image by hand
    (no automatic OS upgrade: the clients start the upgrades)."""
    body = scalesets.scale_set_body(
        capacity,
        IMAGE,
        prefix="bench",
        sku_name="bench",
        memory_mb=256,
        health_timeout="PT1M",
        automatic=False,
        probe=scalesets.http_probe(interval=5, probes=2),
        extensions=[scalesets.custom_script("app", "true")],
    )
    return {"location": "local", "tags": {"purpose": "load"}, **body}


@contextmanager
def _timed(what: str) -> Iterator[None]:
    t = time.monotonic()
    yield
    _say(f"{what}: {time.monotonic() - t:.1f} s")


def _publish(api: httpx.Client, work: Path, version: str) -> None:
    disk = work / f"disk-{version}.qcow2"
    qemuimg.create(disk, (64 + int(version)) << 20)
    path = "/v1/images/" + "/".join((*IMAGE, version))
    _check(api.put(path, content=disk.read_bytes()), 201)


def _all_running(api: httpx.Client, name: str, capacity: int) -> bool:
    vms = _check(api.get(f"/v1/scaleSets/{name}/virtualMachines"), 200)
    return len(vms["value"]) == capacity and all(
        v["provisioningState"] == "Running" and v["health"] == "Healthy" for v in vms["value"]
    )


def _upgrade_ended(api: httpx.Client, name: str) -> bool:
    latest = _check(api.get(f"/v1/scaleSets/{name}/rollingUpgrades/latest"), 200)
    return bool(latest["properties"]["runningStatus"]["code"] != "RollingForward")


def _on_each(names: list[str], call: Callable[[str], Any]) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(call, names))


def populate(api: httpx.Client, procs: Processes, args: argparse.Namespace) -> dict[str, float]:
    """Fill the controller through its API; seconds taken by each step."""
    took = {}
    capacity = args.instances // args.scale_sets
    t = time.monotonic()
    _publish(api, procs.work, "1")
    for name in host_names(args.hosts):
        url = f"http://127.0.0.1:{procs.agents_port}/{name}"
        _check(
            api.post("/v1/hosts", json={"name": name, "url": url, "token": procs.agent_token}), 201
        )
    names = [scale_set_name(i) for i in range(args.scale_sets)]
    body = scale_set_body(capacity)
    _on_each(names, lambda n: _check(api.put(f"/v1/scaleSets/{n}", json=body), 201))
    took["create_requests"] = time.monotonic() - t

    def created() -> bool:
        return bool(agent_stats(procs)["instances"] >= args.instances)

    _wait_for(f"{args.instances} instances on the agents", created, READY_TIMEOUT_SECONDS, 0.5)
    took["instances_on_agents"] = time.monotonic() - t
    t1 = time.monotonic()
    for name in names:
        running = partial(_all_running, api, name, capacity)
        _wait_for(f"{name} Running and Healthy", running, READY_TIMEOUT_SECONDS)
    took["list_every_set_once"] = time.monotonic() - t1
    took["all_running"] = time.monotonic() - t
    t = time.monotonic()
    _on_each(names, lambda n: _check(api.post(f"/v1/scaleSets/{n}/osRollingUpgrade"), 202))
    for name in names:
        ended = partial(_upgrade_ended, api, name)
        _wait_for(f"first upgrade of {name}", ended, READY_TIMEOUT_SECONDS)
    _publish(api, procs.work, "2")
    took["first_upgrades_and_v2"] = time.monotonic() - t
    return took


def upgrades_running(url: str) -> int:
    """Rolling upgrades the controller runs now (its /metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=60).text
    for line in text.splitlines():
        if line.startswith("kvmss_rolling_upgrades_running "):
            return int(float(line.split()[1]))
    raise SetupError("/metrics: no kvmss_rolling_upgrades_running")


def agent_stats(procs: Processes) -> Any:
    """What the simulated agents count: instances, calls answered so far."""
    r = httpx.get(
        f"http://127.0.0.1:{procs.agents_port}/stats",
        headers={"Authorization": f"Bearer {procs.agent_token}"},
        timeout=60,
    )
    return _check(r, 200)


def agent_calls(procs: Processes) -> int:
    return int(agent_stats(procs)["calls"])


def measure(procs: Processes, args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    pids = (procs.controller.pid, procs.agents.pid)
    calls = agent_calls(procs)
    before = [loadreport.process_cpu_seconds(p) for p in pids]
    m0 = loadreport.machine_busy_seconds()
    result = run_clients(
        Target("127.0.0.1", procs.port, procs.token),
        Shape(args.scale_sets, args.instances // args.scale_sets, args.weights),
        clients=args.clients,
        think=args.think,
        duration=args.duration,
    )
    after = [loadreport.process_cpu_seconds(p) for p in pids]
    m1 = loadreport.machine_busy_seconds()
    setup["agent_calls_per_second"] = round((agent_calls(procs) - calls) / result.wall_seconds, 1)
    setup["upgrades_running_at_end"] = upgrades_running(procs.url)
    wall = result.wall_seconds
    cores = os.cpu_count() or 1
    cpu = loadreport.CpuUse(
        controller=(after[0] - before[0]) / wall,
        agents=(after[1] - before[1]) / wall,
        clients=result.client_cpu_seconds / wall,
        machine=(m1[0] - m0[0]) / (m1[1] - m0[1]) * cores,
        machine_cores=cores,
    )
    return loadreport.summarize(result, cpu, setup)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Concurrent API clients against a real controller with simulated agents."
    )
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    ap.add_argument("--clients", type=int, default=200, help="concurrent clients (default 200)")
    ap.add_argument("--instances", type=int, default=10_000, help="instances in all (10,000)")
    ap.add_argument("--scale-sets", type=int, default=50, help="scale sets sharing them (50)")
    ap.add_argument("--hosts", type=int, default=20, help="simulated hosts (default 20)")
    ap.add_argument(
        "--think", type=float, default=1.0, help="mean seconds between a client's requests (1.0)"
    )
    ap.add_argument("--poll-seconds", type=float, default=1.0, help="controller poll_seconds")
    ap.add_argument(
        "--agent-op-seconds", type=float, default=10.0, help="reimage/rollback time (10)"
    )
    ap.add_argument("--agent-boot-seconds", type=float, default=5.0, help="boot after it (5)")
    ap.add_argument(
        "--weights",
        default="",
        help="kind=weight,... replacing the default mix's per cent (e.g. start_upgrade=0)",
    )
    more = "then run again with this many dashboards polling /ui/ and compare (0: no)"
    ap.add_argument("--dashboards", type=int, default=0, help=more)
    ap.add_argument("--json", type=Path, help="also write the figures to this file")
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it (logs, db)")
    args = ap.parse_args(argv)
    for name in ("duration", "clients", "instances", "scale_sets", "hosts", "poll_seconds"):
        if getattr(args, name) <= 0:
            ap.error(f"--{name.replace('_', '-')}: must be positive")
    if args.keep and args.keep.exists() and any(args.keep.iterdir()):
        ap.error(f"--keep: {args.keep} is not empty (a run starts from nothing)")
    try:
        args.weights = parse_weights(args.weights)
    except ValueError as e:
        ap.error(f"--weights: {e}")
    for name in ("think", "dashboards"):
        if getattr(args, name) < 0:
            ap.error(f"--{name}: must be 0 or more")
    if args.instances % args.scale_sets or not 1 <= args.instances // args.scale_sets <= 1000:
        ap.error("--instances: must be --scale-sets times a capacity of 1 to 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="kvmss-load-", dir="/var/tmp"))
    procs = Processes(work, args)
    try:
        procs.start()
        api = httpx.Client(
            base_url=procs.url, headers={"Authorization": f"Bearer {procs.token}"}, timeout=300
        )
        with _timed(f"populated {args.instances} instances"):
            took = populate(api, procs, args)
        _say("populate steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in took.items()))
        setup = {
            "clients": args.clients,
            "think": args.think,
            "offered_per_second": round(args.clients / args.think, 1) if args.think else 0,
            "instances": args.instances,
            "scale_sets": args.scale_sets,
            "capacity": args.instances // args.scale_sets,
            "hosts": args.hosts,
            "duration": args.duration,
            "weights": {k: args.weights.get(k, w) for k, (w, _) in MIX.items()},
            "populate_seconds": {k: round(v, 2) for k, v in took.items()},
        }
        _say(f"{args.clients} clients for {args.duration:g} s")
        summary = measure(procs, args, setup)
        if args.dashboards:
            _say(f"again, with {args.dashboards} dashboards open")
            with open_dashboards(procs.url, procs.token, args.dashboards, scale_set_name(0)) as st:
                summary["with_dashboards"] = measure(procs, args, dict(setup))
            summary["dashboards"] = loadreport.dashboards(args.dashboards, st, summary)
    except (SetupError, httpx.HTTPError, qemuimg.QemuImgError) as e:
        print(f"load: set-up failed: {e}", file=sys.stderr)
        return 2
    finally:
        procs.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(loadreport.render(summary))
    if args.dashboards:
        print(loadreport.render_dashboards(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    goals = summary["goals"]
    return 0 if goals["p99_met"] and goals["errors_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
