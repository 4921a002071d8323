"""The message of a guest lab that got stuck tells what each side said, even
when a side is down, and never hides the timeout it explains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agentproc import AgentProcess
from tests.guestlab import wait_until
from tests.labstate import describe_lab


def no_controller() -> list[dict[str, Any]]:
    raise ConnectionError("controller refused")


def test_a_lab_whose_agent_and_controller_are_down_is_described(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path, name="host9")  # never started
    agent.log.write_text("".join(f"line {i}\n" for i in range(40)))
    text = describe_lab([agent], no_controller)
    assert "agent host9 (not running):" in text
    assert "  no answer: " in text  # nothing listens on its port
    assert "MiB free under " in text
    assert "controller listing:\n  no answer: controller refused" in text
    assert "line 39" in text and "line 24" not in text  # the last 15 lines of its log


def test_a_controller_listing_is_one_line_per_instance(tmp_path: Path) -> None:
    rows = [
        {"name": "a-0", "host": "h1", "provisioningState": "Succeeded", "powerState": "running",
         "health": "Unhealthy", "healthReasons": ["probe: refused"], "imageVersion": "2"},
    ]  # fmt: skip
    text = describe_lab([], lambda: rows)
    assert "a-0 on h1: Succeeded running Unhealthy ['probe: refused'] on 2" in text


def test_a_timeout_carries_the_state_and_a_failing_explanation_does_not_hide_it() -> None:
    with pytest.raises(AssertionError, match=r"waiting for x\nstuck here"):
        wait_until(lambda: False, 0, "x", explain=lambda: "stuck here")
    with pytest.raises(AssertionError, match=r"waiting for x\n\(could not tell the state: "):
        wait_until(lambda: False, 0, "x", explain=lambda: str(1 / 0))
