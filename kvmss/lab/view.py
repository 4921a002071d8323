"""What ``kvmss lab up`` shows while it waits: instances turning healthy, then
the rolling upgrade live (batches, each instance's upgrade state and health,
a progress bar, the elapsed time).

On a terminal the picture is redrawn in place every poll (once a second);
elsewhere each change is one line, with the progress line repeated every
:data:`HEARTBEAT` seconds so a log shows the upgrade is alive. Both loops run
on an injected :class:`~kvmss.base.clock.Clock`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kvmss.base.clock import Clock
from kvmss.client import progress
from kvmss.client.screen import Screen
from kvmss.client.tables import as_object, cell, render_table, values_of
from kvmss.client.ticks import ticks
from kvmss.lab.state import LabError

HEARTBEAT = 15.0
DECISIONS_SHOWN = 3

Doc = Mapping[str, Any]


def _iid_key(v: Doc) -> tuple[int, str]:
    iid = str(v.get("instanceId", ""))
    return (int(iid) if iid.isdigit() else 1 << 62, iid)


def sorted_vms(doc: Any) -> list[Doc]:
    """The instance views of a ``virtualMachines`` answer, by instance id."""
    return sorted(values_of(doc), key=_iid_key)


def health_text(v: Doc) -> str:
    health = cell(v.get("health"))
    reasons = v.get("healthReasons")
    if health != "Healthy" and isinstance(reasons, list) and reasons:
        return f"{health} ({cell(reasons[0])})"
    return health


def instance_line(v: Doc) -> str:
    """``instance 3 (demo-3) on host2: Healthy, image version 2, running``."""
    return (
        f"instance {cell(v.get('instanceId'))} ({cell(v.get('name'))}) on {cell(v.get('host'))}: "
        f"{health_text(v)}, image version {cell(v.get('imageVersion'))}, "
        f"{cell(v.get('powerState'))}"
    )


# --- waiting for healthy instances --------------------------------------------------


def healthy_frame(vms: Sequence[Doc], count: int, elapsed: float) -> list[str]:
    healthy = sum(1 for v in vms if v.get("health") == "Healthy")
    rows = [
        [v.get("instanceId"), v.get("host"), v.get("imageVersion"), v.get("powerState"),
         health_text(v)]
        for v in vms
    ]  # fmt: skip
    return [
        f"waiting for {count} healthy instances: {healthy}/{count}  "
        f"{progress.progress_bar(healthy, count)}  {progress.format_elapsed(elapsed)}",
        *render_table(["INSTANCE", "HOST", "VERSION", "POWER", "HEALTH"], rows).splitlines(),
    ]


def wait_healthy(
    fetch_vms: Callable[[], Any],
    count: int,
    screen: Screen,
    clock: Clock,
    *,
    timeout: float,
) -> list[Doc]:
    """Poll until exactly ``count`` instances exist and all are Healthy,
    saying a line for each instance the first time it is healthy."""
    started = clock.monotonic()
    last_said = started
    seen: set[str] = set()
    for doc, fresh in ticks(fetch_vms, clock):
        vms = sorted_vms(doc)
        elapsed = clock.monotonic() - started
        for v in vms:
            iid = str(v.get("instanceId"))
            if v.get("health") == "Healthy" and iid not in seen:
                seen.add(iid)
                screen.say(f"  {instance_line(v)}  [{progress.format_elapsed(elapsed)}]")
                last_said = clock.monotonic()
        healthy = [v for v in vms if v.get("health") == "Healthy"]
        if fresh and len(vms) == count and len(healthy) == count:
            screen.clear_live()
            return vms
        if elapsed >= timeout:
            screen.clear_live()
            sick = [v for v in vms if v.get("health") != "Healthy"]
            detail = "; ".join(instance_line(v) for v in sick[:3]) or f"{len(vms)} exist"
            raise LabError(
                f"{len(healthy)} of {count} instances healthy after {timeout:.0f}s: {detail}"
            )
        screen.live(healthy_frame(vms, count, elapsed))
        if not screen.tty and clock.monotonic() - last_said >= HEARTBEAT:
            screen.say(
                f"  waiting: {len(healthy)}/{count} healthy ({progress.format_elapsed(elapsed)})"
            )
            last_said = clock.monotonic()
    raise AssertionError("unreachable: ticks() never ends")


# --- following the rolling upgrade --------------------------------------------------


def _ours(status: Doc) -> Mapping[str, Any]:
    return as_object(status.get("kvmss"))


def upgrade_states(status: Doc) -> dict[str, Doc]:
    """Instance id -> its row in the upgrade (batch, state, reason)."""
    rows = _ours(status).get("instances")
    out: dict[str, Doc] = {}
    for r in rows if isinstance(rows, list) else []:
        if isinstance(r, Mapping) and r.get("instanceId") is not None:
            out[str(r["instanceId"])] = r
    return out


def target_version(status: Doc) -> str | None:
    v = as_object(_ours(status).get("targetImageReference")).get("version")
    return str(v) if v is not None else None


def intro(status: Doc) -> str:
    ours = _ours(status)
    uid = progress.upgrade_id(status)
    batches = ours.get("batches")
    n = len(batches) if isinstance(batches, list) else 0
    by = ours.get("startedBy") or as_object(status.get("properties")).get("startedBy")
    target = as_object(ours.get("targetImageReference"))
    urn = ":".join(cell(target.get(k)) for k in ("publisher", "offer", "sku", "version"))
    return (
        f"rolling upgrade {cell(uid[:8] if uid else None)} to {urn}, started by {cell(by)}: "
        f"{n} batch{'es' if n != 1 else ''}"
    )


def current_batch_line(status: Doc) -> str | None:
    lines = progress.batch_lines(status)
    cur = _ours(status).get("currentBatch")
    if not lines:
        return None
    if isinstance(cur, int) and not isinstance(cur, bool) and 0 <= cur < len(lines):
        return lines[cur]
    return lines[-1]


def upgrade_table(status: Doc, vms: Sequence[Doc]) -> list[str]:
    states = upgrade_states(status)
    rows = []
    for v in vms:
        row = states.get(str(v.get("instanceId")), {})
        batch = row.get("batch")
        # The reason is on the batch line and in the decisions: keep rows short.
        state = cell(row.get("state"))
        rows.append(
            [
                v.get("instanceId"),
                v.get("host"),
                batch + 1 if isinstance(batch, int) and not isinstance(batch, bool) else None,
                state,
                v.get("imageVersion"),
                v.get("powerState"),
                health_text(v),
            ]
        )
    headers = ["INSTANCE", "HOST", "BATCH", "UPGRADE", "VERSION", "POWER", "HEALTH"]
    return render_table(headers, rows).splitlines()


def upgrade_frame(status: Doc, vms: Sequence[Doc], now: float, max_rows: int = 40) -> list[str]:
    """The whole picture, at most ``max_rows`` lines (the instance table is
    cut with a "more" line when the terminal is too short)."""
    head = [intro(status), progress.header_line(status, now)]
    batch = current_batch_line(status)
    if batch is not None:
        head.append(batch)
    decisions = _ours(status).get("decisions")
    tail = [
        progress.decision_line(d)
        for d in (decisions if isinstance(decisions, list) else [])[-DECISIONS_SHOWN:]
        if isinstance(d, Mapping)
    ]
    err = progress.error_line(status)
    if err is not None:
        tail.append(err)
    table = upgrade_table(status, vms)
    room = max(3, max_rows - len(head) - len(tail))
    if len(table) > room:
        hidden = len(table) - (room - 1)
        table = [*table[: room - 1], f"... {hidden} more instances"]
    return [*head, *table, *tail]


def _vm_key(v: Doc) -> tuple[str, str, str]:
    return (health_text(v), cell(v.get("imageVersion")), cell(v.get("powerState")))


def vm_changes(prev: Sequence[Doc] | None, cur: Sequence[Doc]) -> list[str]:
    """A line per instance whose health, image version or power state changed."""
    before = {str(v.get("instanceId")): _vm_key(v) for v in prev or []}
    return [
        f"  {instance_line(v)}"
        for v in cur
        if prev is not None and before.get(str(v.get("instanceId"))) != _vm_key(v)
    ]


def follow_upgrade(
    fetch_status: Callable[[], Doc],
    fetch_vms: Callable[[], Any],
    screen: Screen,
    clock: Clock,
    *,
    timeout: float,
    max_rows: Callable[[], int] = lambda: 40,
) -> Doc:
    """Show the latest rolling upgrade until it ends; return its last status."""
    started = clock.monotonic()
    prev: Doc | None = None
    prev_vms: list[Doc] | None = None
    last_said = started

    def fetch() -> tuple[Doc, list[Doc]]:
        return fetch_status(), sorted_vms(fetch_vms())

    for (cur, vms), fresh in ticks(fetch, clock):
        now = clock.now()
        if screen.tty:
            screen.live(upgrade_frame(cur, vms, now, max_rows()))
        else:
            lines = progress.changes(prev, cur, now) + vm_changes(prev_vms, vms) if fresh else []
            if not lines and clock.monotonic() - last_said >= HEARTBEAT:
                lines = [progress.header_line(cur, now)]
            for line in lines:
                screen.say(line)
            if lines:
                last_said = clock.monotonic()
        prev, prev_vms = cur, vms
        if progress.running_code(cur) in progress.TERMINAL_CODES:
            screen.settle()
            return cur
        if clock.monotonic() - started >= timeout:
            screen.settle()
            raise LabError(
                f"the rolling upgrade is still {progress.running_code(cur)} after {timeout:.0f}s"
            )
    raise AssertionError("unreachable: ticks() never ends")
