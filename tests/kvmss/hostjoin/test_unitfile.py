"""Pointing unit files at a host's own directories (kvmss.hostjoin.unitfile)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from kvmss.hostjoin.layout import HostLayout
from kvmss.hostjoin.unitfile import check_path, retarget
from tests.agentproc import REPO

AGENT_UNIT = REPO / "systemd" / "kvmss-agent.service"

SAMPLE = """\
# Installed from /opt/kvmss: this comment stays as it is.
[Unit]
Description=kvmss host agent (/etc/kvmss/agent.yaml)
ConditionPathExists=/etc/kvmss/agent.yaml

[Service]
Type=notify
ExecStartPre=-/opt/kvmss/venv/bin/kvmss-agent check \\
    --config=/etc/kvmss/agent.yaml
ExecStart=/opt/kvmss/venv/bin/kvmss-agent serve --config /etc/kvmss/agent.yaml
ReadWritePaths=/var/lib/kvmss -/var/lib/kvmssx /run/libvirt
EnvironmentFile=-/etc/kvmssfoo/env
StateDirectory=kvmss
ConfigurationDirectory=kvmss

[Install]
WantedBy=multi-user.target
"""


def layout(prefix: str, config: str, state: str) -> HostLayout:
    return HostLayout.of(prefix, config, state)


def test_default_layout_changes_nothing() -> None:
    assert retarget(SAMPLE, HostLayout().relocation()) == SAMPLE
    if AGENT_UNIT.is_file():
        text = AGENT_UNIT.read_text()
        assert retarget(text, HostLayout().relocation()) == text


def test_paths_are_moved_in_known_keys_only() -> None:
    out = retarget(SAMPLE, layout("/srv/k", "/srv/etc", "/data/kvmss").relocation())
    lines = out.splitlines()
    assert "ExecStart=/srv/k/venv/bin/kvmss-agent serve --config /srv/etc/agent.yaml" in lines
    # A continued line is joined; the '-' prefix and the --opt=path form survive.
    assert "ExecStartPre=-/srv/k/venv/bin/kvmss-agent check --config=/srv/etc/agent.yaml" in lines
    assert "ConditionPathExists=/srv/etc/agent.yaml" in lines
    # Path boundaries: /var/lib/kvmssx and /etc/kvmssfoo are other directories.
    assert "ReadWritePaths=/data/kvmss -/var/lib/kvmssx /run/libvirt" in lines
    assert "EnvironmentFile=-/etc/kvmssfoo/env" in lines
    # Neither is under its systemd root any more: dropped (the installer makes
    # them), and the state stays writable under ProtectSystem=strict.
    assert not any(line.startswith(("StateDirectory", "ConfigurationDirectory")) for line in lines)
    assert "ReadWritePaths=/data/kvmss" in lines  # added for StateDirectory=
    # Comments, descriptions and other keys stay byte for byte.
    assert lines[0] == "# Installed from /opt/kvmss: this comment stays as it is."
    assert "Description=kvmss host agent (/etc/kvmss/agent.yaml)" in lines
    assert "Type=notify" in lines and "WantedBy=multi-user.target" in lines


def test_directories_under_their_root_keep_a_relative_name() -> None:
    out = retarget(SAMPLE, layout("/opt/kvmss", "/etc/kvmss-b", "/var/lib/kvmss/b").relocation())
    assert "StateDirectory=kvmss/b\n" in out
    assert "ConfigurationDirectory=kvmss-b\n" in out


def test_the_real_agent_unit_follows_the_layout() -> None:
    if not AGENT_UNIT.is_file():
        pytest.skip("systemd/kvmss-agent.service is not in the checkout")
    lay = layout("/srv/kvmss", "/srv/kvmss/etc", "/srv/kvmss/state")
    out = retarget(AGENT_UNIT.read_text(), lay.relocation())
    [exec_start] = [line for line in out.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == f"ExecStart={lay.agent_bin} serve --config {lay.config_file}"
    assert f"ReadWritePaths={lay.state_dir}" in out.splitlines()
    settings = [line for line in out.splitlines() if not line.startswith(("#", ";"))]
    assert not any("/opt/kvmss" in line or "/etc/kvmss/" in line for line in settings)


@pytest.mark.parametrize(
    "bad", ["relative", "/with space", "/a/../b", "/a//b", "/per%cent", "/q'uote", "/$HOME"]
)
def test_paths_that_cannot_go_into_a_unit_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--prefix"):
        check_path(bad, "--prefix")


def test_good_paths_pass() -> None:
    assert check_path("/var/tmp/kvmss-tests/x_1.2+3", "--prefix") == PurePosixPath(
        "/var/tmp/kvmss-tests/x_1.2+3"
    )
