"""Crash points for fault-injection tests.

``KVMSS_AGENT_CRASH_AFTER=reimage:stopped`` makes the agent kill itself with
SIGKILL right after that step is done, so tests can prove that every step of
an operation is recoverable. Unset in production; costs one dict lookup.
"""

from __future__ import annotations

import os
import signal


def crash_point(kind: str, step: str) -> None:
    target = os.environ.get("KVMSS_AGENT_CRASH_AFTER")
    if target and target == f"{kind}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
