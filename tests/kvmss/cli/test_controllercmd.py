"""``kvmss controller``: serve exists and loads the server only when run."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from kvmss.cli.main import main


def test_controller_serve_exists() -> None:
    r = CliRunner().invoke(main, ["controller", "serve", "--help"])
    assert r.exit_code == 0
    assert "--config" in r.output


def test_controller_serve_loads_the_server_lazily(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    called: list[Path] = []
    fake = types.ModuleType("controller.daemon.server")
    fake.serve_from_config = called.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "controller.daemon.server", fake)
    cfg = tmp_path / "controller.yaml"
    r = CliRunner().invoke(main, ["controller", "serve", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert called == [cfg]
