"""kvmss.lab.hints: what the lab tells its user to run next."""

from __future__ import annotations

from pathlib import Path

from kvmss.lab.files import resolve_dir
from kvmss.lab.hints import take_down


def test_lab_commands_say_what_to_run_next(tmp_path: Path) -> None:
    assert take_down(resolve_dir(None)).startswith("make demo-down (or ")
    assert take_down(tmp_path).endswith(f"lab down --dir {tmp_path}")
