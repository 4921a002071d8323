"""Controller crash points: SIGKILL at the n-th time a named step is reached,
nothing at all when the variable is unset or names no known step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from controller.upgrade import faults
from tests.agentproc import REPO

# reaches health-wait three times, then committed once, printing before each
SCRIPT = """
from controller.upgrade.faults import crash_point
for step in ["health-wait", "health-wait", "health-wait", "committed"]:
    print(step, flush=True)
    crash_point(step)
print("survived", flush=True)
"""


def run(value: str | None) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    if value is not None:
        env[faults.ENV] = value
    p = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True
    )
    return p.returncode, p.stdout.split()


@pytest.mark.parametrize(
    ("value", "code", "printed"),
    [
        (None, 0, 5),
        ("health-wait", -signal.SIGKILL, 1),
        ("health-wait:3", -signal.SIGKILL, 3),
        ("committed", -signal.SIGKILL, 4),
        ("committed:2", 0, 5),
        ("reimaged", 0, 5),
        ("no-such-step", 0, 5),
        ("health-wait:0", 0, 5),
    ],
)
def test_crash_point_kills_at_the_nth_time_only(value: str | None, code: int, printed: int) -> None:
    rc, out = run(value)
    assert rc == code
    assert len(out) == printed, out


def test_parse_names_the_steps() -> None:
    assert faults.parse("rollback-decided:2") == ("rollback-decided", 2)
    with pytest.raises(ValueError, match="unknown step"):
        faults.parse("rollback")
