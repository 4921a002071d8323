"""Crash points of the controller, for fault-injection tests.

``KVMSS_CONTROLLER_CRASH_AT=rollback-decided`` makes the controller kill
itself with SIGKILL the first time the orchestrator reaches that step;
``KVMSS_CONTROLLER_CRASH_AT=health-wait:3`` the third time. Tests restart it
on the same database without the variable and check the upgrade resumes
(docs/design.md rule 10). Unset in production, where a crash point costs one dict
lookup. The steps, in the order an instance meets them:

- ``reimage-decided``: Reimaging recorded, the agent not asked yet
- ``reimaged``: the agent says the reimage Succeeded, WaitingHealth not recorded
- ``health-wait``: an instance was found not healthy yet, its deadline not reached
- ``rollback-decided``: RollingBack recorded, the agent not asked yet
- ``committed``: the agent committed the new OS disk, Succeeded not recorded
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

ENV = "KVMSS_CONTROLLER_CRASH_AT"
STEPS = frozenset({"reimage-decided", "reimaged", "health-wait", "rollback-decided", "committed"})

_lock = threading.Lock()
_reached: dict[str, int] = {}
_rejected: set[str] = set()


def parse(value: str) -> tuple[str, int]:
    """``step`` or ``step:n`` as (step, n); ValueError for anything else."""
    step, sep, nth = value.partition(":")
    if step not in STEPS:
        raise ValueError(f"{ENV}: unknown step {step!r} (one of {sorted(STEPS)})")
    if not sep:
        return step, 1
    if not nth.isdigit() or int(nth) < 1:
        raise ValueError(f"{ENV}: {nth!r} is not a positive count")
    return step, int(nth)


def crash_point(step: str) -> None:
    """SIGKILL this process when ``step`` is reached for the configured n-th time."""
    target = os.environ.get(ENV)
    if not target:
        return
    try:
        wanted, nth = parse(target)
    except ValueError as e:
        with _lock:
            if target not in _rejected:
                _rejected.add(target)
                log.error("%s; no crash point is armed", e)
        return
    if wanted != step:
        return
    with _lock:
        count = _reached[step] = _reached.get(step, 0) + 1
    if count == nth:
        log.warning("crash point %s reached (time %d): SIGKILL", step, count)
        os.kill(os.getpid(), signal.SIGKILL)
