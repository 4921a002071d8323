from __future__ import annotations

from pathlib import Path

import pytest

from controller.daemon.server import ControllerConfig
from hostagent.daemon.config import AgentConfig
from kvmss.base.configfile import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("load", [AgentConfig.load, ControllerConfig.load])
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: h\ntoken: short\n", "token: required"),
        ("name: h\nlisten: nowhere\ntoken: 0123456789abcdef\n", "listen: must be ADDRESS:PORT"),
        ("name: h\nbogus: 1\ntoken: 0123456789abcdef\n", "unknown setting 'bogus'"),
        ("- a list\n", "must be a mapping"),
        ("name: h\ntoken_file: missing.token\n", "token_file: cannot read"),
        ("{{{", "not valid YAML"),
    ],
)
def test_bad_settings_name_the_setting_and_never_echo_tokens(
    tmp_path: Path, load: object, text: str, message: str
) -> None:
    if load == ControllerConfig.load:
        text = text.replace("name: h\n", "")
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, text))  # type: ignore[operator]
    assert message in str(e.value)
    assert "0123456789abcdef" not in str(e.value)


def test_token_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "agent.token").write_text("token-from-file-0123456789\n")
    cfg = AgentConfig.load(
        write(tmp_path, "name: h1\ntoken_file: agent.token\nlisten: 0.0.0.0:9\n")
    )
    assert cfg.token == "token-from-file-0123456789"
    assert (cfg.listen_host, cfg.listen_port) == ("0.0.0.0", 9)
    ctl = ControllerConfig.load(write(tmp_path, "token_file: agent.token\n"))
    assert ctl.token == "token-from-file-0123456789"
    assert ctl.public_url == "http://127.0.0.1:8080"
