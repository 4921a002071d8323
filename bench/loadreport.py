"""The load benchmark's figures: latency percentiles and errors per request
kind and overall, throughput, CPU of each process, and the ratios to the
goals, all from one run; printed as a table and written as JSON."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from bench.loadclients import RunResult
from bench.loadmix import KINDS

P99_GOAL_MS = 100.0
ERRORS_GOAL = 0
_TICK = os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / _TICK, sum(ticks) / _TICK


@dataclass(frozen=True)
class CpuUse:
    """Cores kept busy during the run, per process and for the machine."""

    controller: float
    agents: float
    clients: float
    machine: float
    machine_cores: int


def _row(latencies: list[float], errors: int, conflicts: int) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {
        "count": len(ms),
        "p50_ms": round(percentile(ms, 50), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2) if ms else math.nan,
        "errors": errors,
        "conflicts": conflicts,
    }


def summarize(result: RunResult, cpu: CpuUse, setup: dict[str, Any]) -> dict[str, Any]:
    rec = result.recorder
    kinds = {
        k: _row(s.latencies, s.errors, s.conflicts)
        for k in KINDS
        if (s := rec.kinds[k]).latencies or s.errors
    }
    every = [x for s in rec.kinds.values() for x in s.latencies]
    overall = _row(
        every,
        sum(s.errors for s in rec.kinds.values()),
        sum(s.conflicts for s in rec.kinds.values()),
    )
    answered = overall["count"] + overall["errors"]
    p99 = overall["p99_ms"]
    return {
        "setup": setup,
        "kinds": kinds,
        "overall": overall,
        "requests_per_second": round(answered / result.wall_seconds, 1),
        "wall_seconds": round(result.wall_seconds, 2),
        "client_lag_p99_ms": round(percentile([x * 1000 for x in rec.lags], 99), 2),
        "connections_opened": rec.connections,
        "cpu_cores": {
            "controller": round(cpu.controller, 3),
            "simulated_agents": round(cpu.agents, 3),
            "clients": round(cpu.clients, 3),
            "machine": round(cpu.machine, 3),
            "machine_cores": cpu.machine_cores,
        },
        "goals": {
            "p99_ms": P99_GOAL_MS,
            "p99_ratio": round(p99 / P99_GOAL_MS, 3),
            "p99_met": p99 < P99_GOAL_MS,
            "errors": overall["errors"],
            "errors_met": overall["errors"] <= ERRORS_GOAL,
        },
        "error_examples": rec.error_examples,
    }


def render(summary: dict[str, Any]) -> str:
    s, g, cpu = summary["setup"], summary["goals"], summary["cpu_cores"]
    lines = [
        f"load: {s['clients']} clients, think {s['think']:g} s"
        f" ({'open loop' if s['think'] > 0 else 'closed loop'}), {s['instances']} instances"
        f" ({s['scale_sets']} scale sets x {s['capacity']}) on {s['hosts']} simulated hosts,"
        f" {summary['wall_seconds']:g} s",
        f"{'kind':<16}{'n':>8}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'errors':>8}{'409s':>7}",
    ]
    rows = [*summary["kinds"].items(), ("all", summary["overall"])]
    for kind, r in rows:
        lines.append(
            f"{kind:<16}{r['count']:>8}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
            f"{r['max_ms']:>10.1f}{r['errors']:>8}{r['conflicts']:>7}"
        )
    lines += [
        f"controller -> agents: {s['agent_calls_per_second']:g} calls/s; rolling upgrades"
        f" running at the end: {s['upgrades_running_at_end']}",
        f"requests/s: {summary['requests_per_second']:g}"
        f" (offered {s['offered_per_second']:g}); client lag p99"
        f" {summary['client_lag_p99_ms']:g} ms; connections opened"
        f" {summary['connections_opened']}",
        f"CPU, cores busy during the run: controller {cpu['controller']:.2f}, simulated agents"
        f" {cpu['simulated_agents']:.2f}, clients {cpu['clients']:.2f}; whole machine"
        f" {cpu['machine']:.2f} of {cpu['machine_cores']}",
        f"p99 / {g['p99_ms']:g} ms goal: {g['p99_ratio']:.2f}"
        f" ({'met' if g['p99_met'] else 'MISSED'}); errors: {g['errors']}"
        f" (goal 0, {'met' if g['errors_met'] else 'MISSED'})",
    ]
    lines += [f"error: {e}" for e in summary["error_examples"]]
    return "\n".join(lines)


def dashboards(count: int, st: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """The run with ``count`` dashboards open against the one without them."""
    without = summary["overall"]["p99_ms"]
    with_them = summary["with_dashboards"]["overall"]["p99_ms"]
    return {
        "count": count,
        "polls": st.polls,
        "not_modified": st.not_modified,
        "errors": st.errors,
        "poll_p99_ms": round(percentile([x * 1000 for x in st.latencies], 99), 2),
        "api_p99_ms_without": without,
        "api_p99_ms_with": with_them,
        "p99_ratio": round(with_them / without, 3) if without else None,
        "within_10_percent": bool(without) and with_them <= without * 1.1,
    }


def render_dashboards(summary: dict[str, Any]) -> str:
    """The run with dashboards open, and how it compares with the one without."""
    d = summary["dashboards"]
    return (
        f"with {d['count']} dashboards open:\n"
        + render(summary["with_dashboards"])
        + "\n"
        + (
            f"dashboards: {d['count']} open, {d['polls']} polls ({d['not_modified']} answered 304,"
            f" {d['errors']} errors, p99 {d['poll_p99_ms']:g} ms); API p99 without them"
            f" {d['api_p99_ms_without']:g} ms, with them {d['api_p99_ms_with']:g} ms: ratio"
            f" {d['p99_ratio']} ({'within' if d['within_10_percent'] else 'NOT within'} 10 %)"
        )
    )
