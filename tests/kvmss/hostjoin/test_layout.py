"""kvmss.hostjoin.layout: where kvmss goes on the host and the agent's
settings, checked before the host is touched."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from kvmss.hostjoin.layout import AgentSettings, HostLayout, agent_url, check_config
from kvmss.hostjoin.steps import JoinError


def test_layout_paths_are_checked() -> None:
    with pytest.raises(ValueError, match="--prefix"):
        HostLayout.of("relative/path", "/etc/kvmss", "/var/lib/kvmss")
    with pytest.raises(ValueError, match="--state-dir"):
        HostLayout.of("/opt/kvmss", "/etc/kvmss", "/var/lib/kvmss; rm -rf /")
    assert HostLayout().agent_bin == PurePosixPath("/opt/kvmss/venv/bin/kvmss-agent")


def test_settings_are_checked_and_name_their_option() -> None:
    with pytest.raises(ValueError, match="--bridge-name and --bridge-subnet"):
        AgentSettings("h", bridge_name="kvmss0")
    with pytest.raises(ValueError, match=r"--agent-address 'host\.example'"):
        AgentSettings("h", address="host.example")
    with pytest.raises(ValueError, match="--agent-port 0"):
        AgentSettings("h", port=0)


def test_the_config_names_the_token_file_and_brackets_ipv6() -> None:
    layout = HostLayout.of("/opt/k", "/etc/k", "/srv/k")
    doc = AgentSettings("h", bridge_name="kvb1", bridge_subnet="10.9.0.0/24").config(
        layout, "2001:db8::5"
    )
    assert doc["listen"] == "[2001:db8::5]:8090"
    assert doc["token_file"] == "/etc/k/agent.token" and "token" not in doc
    assert doc["storage_dir"] == "/srv/k/agent"
    assert doc["bridge"] == {"name": "kvb1", "subnet": "10.9.0.0/24"}
    assert agent_url("2001:db8::5", 8090) == "http://[2001:db8::5]:8090"
    check_config(doc)  # the agent itself would take it


def test_a_config_the_agent_would_refuse_is_refused_here() -> None:
    doc = AgentSettings("h").config(HostLayout(), "192.0.2.1")
    with pytest.raises(JoinError, match="agent configuration: "):
        check_config({**doc, "libvirt_uri": ""})
