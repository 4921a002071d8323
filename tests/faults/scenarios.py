"""Registry of fault scenarios: id -> one-line description.

Every scenario that records figures (tests.faults.record) is listed here, and
tests/faults/test_reliability_doc.py checks docs/reliability.md has a row for
each id. Append new scenarios; keep ids stable (they name the JSON records).
"""

from __future__ import annotations

SCENARIOS: dict[str, str] = {
    # Controller killed with SIGKILL at a step of a rolling upgrade, restarted
    # on the same database (tests/faults/test_controller_crash.py).
    "controller-crash-forward": (
        "controller SIGKILLed at reimage-decided, reimaged, health-wait and committed"
        " in one upgrade, restarted after each"
    ),
    "controller-crash-rollback-decided": (
        "controller SIGKILLed after deciding to roll back a version that never turns healthy"
    ),
    # Agent lost during a batch (tests/faults/test_agent_loss.py).
    "agent-sigkill-during-batch": (
        "agent SIGKILLed mid-batch for longer than the health timeout, then restarted"
    ),
    "agent-sigstop-during-batch": (
        "agent SIGSTOPped (host unreachable) mid-batch past the health timeout, then resumed"
    ),
}
SCENARIOS.update(
    {
        # Guests and images (tests/faults/test_guest_faults.py).
        "guest-health-flap": (
            "new version's service flaps during the health wait and again after the commit"
        ),
        "guest-extension-hang": (
            "new version's extension never reports: not healthy in time, rolled back, stopped"
        ),
        "host-disk-full-during-reimage": (
            "host storage full when the new base image arrives: reimage refused, old disk kept"
        ),
        "image-truncated-publish": "a truncated qcow2 published: refused by the catalog",
        "image-corrupt-in-transit": (
            "blob corrupted on the controller after publish: agent's sha256 check refuses it"
        ),
    }
)
