"""The live view of a rolling upgrade (``kvmss vmss rolling-upgrade wait``).

:func:`changes` is a pure function from two successive
RollingUpgradeStatusInfo documents to the lines to print, so a terminal and a
log file both get one line per change and nothing is reprinted. :func:`watch`
is the poll loop around it, on an injected :class:`~kvmss.base.clock.Clock`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kvmss.base.clock import Clock, iso8601
from kvmss.client.api import ApiError, ControllerUnreachable
from kvmss.client.tables import image_urn, one_line

Status = Mapping[str, Any]

TERMINAL_CODES = frozenset({"Completed", "Faulted", "Cancelled"})
POLL_SECONDS = 1.0
# How long the watcher rides out a controller that does not answer (a
# restarted controller resumes the upgrade; the watcher should not give up).
PATIENCE_SECONDS = 120.0
BAR_WIDTH = 20


class WatchError(Exception):
    """The watcher cannot follow the upgrade any more."""


@dataclass(frozen=True)
class Counts:
    successful: int
    failed: int
    in_progress: int
    pending: int

    @property
    def done(self) -> int:
        return self.successful + self.failed

    @property
    def total(self) -> int:
        return self.successful + self.failed + self.in_progress + self.pending


def _props(status: Status) -> Mapping[str, Any]:
    p = status.get("properties")
    return p if isinstance(p, Mapping) else {}


def _ours(status: Status) -> Mapping[str, Any]:
    k = status.get("kvmss")
    return k if isinstance(k, Mapping) else {}


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def running_code(status: Status) -> str:
    rs = _props(status).get("runningStatus")
    return str(rs.get("code", "Unknown")) if isinstance(rs, Mapping) else "Unknown"


def upgrade_id(status: Status) -> str | None:
    uid = _ours(status).get("upgradeId")
    return str(uid) if uid is not None else None


def counts(status: Status) -> Counts:
    p = _props(status).get("progress")
    p = p if isinstance(p, Mapping) else {}
    return Counts(
        successful=_int(p.get("successfulInstanceCount")),
        failed=_int(p.get("failedInstanceCount")),
        in_progress=_int(p.get("inProgressInstanceCount")),
        pending=_int(p.get("pendingInstanceCount")),
    )


def progress_bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    """``[#####---------------]``; an empty upgrade shows an empty bar."""
    filled = 0 if total <= 0 else min(width, done * width // total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def format_elapsed(seconds: float | None) -> str:
    """``0:01:05``; unknown is ``-``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def parse_time(value: Any) -> float | None:
    """Epoch seconds from an ISO 8601 string (``...Z`` included) or a number."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            return None
        return dt.timestamp() if dt.tzinfo is not None else None
    return None


def elapsed(status: Status, now: float) -> float | None:
    """Seconds since the upgrade started; a finished one stops at its last action."""
    rs = _props(status).get("runningStatus")
    if not isinstance(rs, Mapping):
        return None
    start = parse_time(rs.get("startTime"))
    if start is None:
        return None
    end = now
    if running_code(status) in TERMINAL_CODES:
        end = parse_time(rs.get("endTime")) or parse_time(rs.get("lastActionTime")) or now
    return end - start


def header_line(status: Status, now: float) -> str:
    """``RollingForward  0:00:42  [########------------]  4/10  succeeded 3, ...``"""
    c = counts(status)
    return (
        f"{one_line(running_code(status))}  {format_elapsed(elapsed(status, now))}  "
        f"{progress_bar(c.done, c.total)}  {c.done}/{c.total}  "
        f"succeeded {c.successful}, failed {c.failed}, "
        f"in progress {c.in_progress}, pending {c.pending}"
    )


def intro_line(status: Status) -> str:
    ours = _ours(status)
    uid = upgrade_id(status)
    batches = ours.get("batches")
    n = len(batches) if isinstance(batches, list) else 0
    started_by = _props(status).get("startedBy")
    by = f", started by {one_line(str(started_by))}" if started_by else ""
    return (
        f"rolling upgrade {one_line(uid[:8]) if uid else '-'} "
        f"to {image_urn(ours.get('targetImageReference'))}: "
        f"{n} batch{'es' if n != 1 else ''}{by}"
    )


def batch_lines(status: Status) -> list[str]:
    """One line per batch: ``batch 2/3: 3 WaitingHealth, 4 RolledBack (reason)``."""
    ours = _ours(status)
    batches = ours.get("batches")
    if not isinstance(batches, list):
        return []
    views: dict[str, Mapping[str, Any]] = {}
    instances = ours.get("instances")
    for inst in instances if isinstance(instances, list) else []:
        if isinstance(inst, Mapping) and "instanceId" in inst:
            views[str(inst["instanceId"])] = inst
    lines = []
    for i, batch in enumerate(batches):
        parts = []
        for iid in batch if isinstance(batch, list) else []:
            view = views.get(str(iid), {})
            part = f"{one_line(str(iid))} {one_line(str(view.get('state', 'Pending')))}"
            if view.get("reason"):
                part += f" ({one_line(str(view['reason']))})"
            parts.append(part)
        lines.append(f"batch {i + 1}/{len(batches)}: {', '.join(parts) or '-'}")
    return lines


def _decisions(status: Status) -> list[Mapping[str, Any]]:
    d = _ours(status).get("decisions")
    return [x for x in d if isinstance(x, Mapping)] if isinstance(d, list) else []


def _decision_key(d: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(str(d.get(k)) for k in ("time", "instanceId", "event", "message"))


def decision_line(d: Mapping[str, Any]) -> str:
    """``decision 2024-01-02T03:04:05.000Z [3] Reimaged: message``."""
    t = d.get("time")
    when = iso8601(float(t)) if isinstance(t, int | float) and not isinstance(t, bool) else t
    who = f" [{one_line(str(d['instanceId']))}]" if d.get("instanceId") is not None else ""
    msg = f": {one_line(str(d['message']))}" if d.get("message") else ""
    return f"decision {one_line(str(when or '-'))}{who} {one_line(str(d.get('event', '-')))}{msg}"


def error_line(status: Status) -> str | None:
    err = _props(status).get("error")
    if not isinstance(err, Mapping) or not err:
        return None
    return (
        f"error: {one_line(str(err.get('message', '-')))} ({one_line(str(err.get('code', '-')))})"
    )


def changes(prev: Status | None, cur: Status, now: float) -> list[str]:
    """The lines that tell a reader who saw ``prev`` what ``cur`` adds.

    With no ``prev`` (or a different upgrade) that is the whole picture with
    only the last decision; afterwards the progress line when the code or a
    count changes, each batch whose instances changed, every new decision,
    and the error when it appears or changes.
    """
    if prev is None or upgrade_id(prev) != upgrade_id(cur):
        return describe(cur, now)
    out: list[str] = []
    if (running_code(prev), counts(prev)) != (running_code(cur), counts(cur)):
        out.append(header_line(cur, now))
    before = batch_lines(prev)
    for i, line in enumerate(batch_lines(cur)):
        if i >= len(before) or before[i] != line:
            out.append(line)
    seen = {_decision_key(d) for d in _decisions(prev)}
    out.extend(decision_line(d) for d in _decisions(cur) if _decision_key(d) not in seen)
    err = error_line(cur)
    if err is not None and err != error_line(prev):
        out.append(err)
    return out


def describe(status: Status, now: float) -> list[str]:
    """The whole picture of one status (what ``get-latest`` prints)."""
    out = [intro_line(status), header_line(status, now), *batch_lines(status)]
    decisions = _decisions(status)
    if decisions:
        out.append(decision_line(decisions[-1]))
    err = error_line(status)
    if err is not None:
        out.append(err)
    return out


def watch(
    fetch: Callable[[], Status],
    emit: Callable[[str], None],
    clock: Clock,
    *,
    interval: float = POLL_SECONDS,
    patience: float = PATIENCE_SECONDS,
    expected_upgrade_id: str | None = None,
) -> Status:
    """Poll ``fetch`` every ``interval`` seconds, emitting :func:`changes`,
    until the running status is terminal; returns that last status.

    Once a status was shown, a controller that stops answering (or answers
    5xx: it may be restarting, and resumes the upgrade) is retried for up to
    ``patience`` seconds; a 4xx answer, or no answer to the first call, is
    raised at once. With
    ``expected_upgrade_id``, statuses of another upgrade are not shown (the
    latest may briefly still be the previous one), for up to ``patience``.
    KeyboardInterrupt passes through: the upgrade itself keeps running.
    """
    prev: Status | None = None
    started = clock.monotonic()
    failing_since: float | None = None
    while True:
        try:
            cur = fetch()
        except (ControllerUnreachable, ApiError) as e:
            if prev is None or (isinstance(e, ApiError) and e.status < 500):
                raise
            now = clock.monotonic()
            if failing_since is None:
                failing_since = now
                emit(f"controller not answering ({e}); retrying for up to {patience:.0f}s")
            elif now - failing_since >= patience:
                raise
            clock.sleep(interval)
            continue
        if failing_since is not None:
            emit("controller answering again")
            failing_since = None
        uid = upgrade_id(cur)
        if expected_upgrade_id is not None and uid is not None and uid != expected_upgrade_id:
            if clock.monotonic() - started >= patience:
                raise WatchError(
                    f"the controller reports upgrade {uid} as the latest, "
                    f"not {expected_upgrade_id} that was started"
                )
            clock.sleep(interval)
            continue
        for line in changes(prev, cur, clock.now()):
            emit(line)
        prev = cur
        if running_code(cur) in TERMINAL_CODES:
            return cur
        clock.sleep(interval)
