"""The agent's configuration: what it accepts, and its secret kept out of reprs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hostagent.daemon.config import AgentConfig, ConfigError

TOKEN = "agent-config-token-0123456789"


def test_the_token_is_kept_out_of_the_repr(tmp_path: Path) -> None:
    cfg = AgentConfig.from_dict(
        {"name": "host-a", "token": TOKEN, "storage_dir": "agent"}, tmp_path
    )
    assert cfg.token == TOKEN
    assert TOKEN not in repr(cfg)
    assert cfg.storage_dir == (tmp_path / "agent").resolve()


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("name", "not a host", "name"),
        ("bridge", {"name": "a-bridge-name-too-long"}, "bridge.name"),
        ("bridge", {"subnet": "10.77.0.0/30"}, "bridge.subnet"),
        ("guest_port", 70000, "guest_port"),
        ("shutdown_timeout", 0, "shutdown_timeout"),
        ("guest_isolation", "yes", "guest_isolation"),
        ("network_namespace", "../x", "network_namespace"),
        ("network_namespace", 5, "network_namespace"),
    ],
)
def test_bad_values_name_the_field(key: str, value: object, field: str) -> None:
    raw = {"name": "host-a", "token": TOKEN, key: value}
    with pytest.raises(ConfigError, match=f"^{field}:"):
        AgentConfig.from_dict(raw)


def test_the_network_namespace_is_optional() -> None:
    raw = {"name": "host-a", "token": TOKEN}
    assert AgentConfig.from_dict(raw).network_namespace is None
    cfg = AgentConfig.from_dict({**raw, "network_namespace": "kvmss-lab1"})
    assert cfg.network_namespace == "kvmss-lab1"
