"""Reading the daemons' YAML configuration files: the pieces the controller's
and the agent's settings share. Errors name the setting and never echo a
token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """The configuration is wrong; the message names the setting."""


def load_mapping(path: Path, known: set[str]) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of settings")
    check_known(raw, known)
    return raw


def check_known(raw: dict[str, Any], known: set[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r}")


def listen_address(value: object, default: str) -> tuple[str, int]:
    text = str(value if value is not None else default)
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen: must be ADDRESS:PORT, e.g. {default}")
    return host.strip("[]"), int(port)


def token(raw: dict[str, Any], base: Path) -> str:
    """``token`` or the contents of ``token_file`` (relative to ``base``)."""
    value = raw.get("token")
    if value is None and "token_file" in raw:
        tf = base / str(raw["token_file"])
        try:
            value = tf.read_text().strip()
        except OSError as e:
            raise ConfigError(f"token_file: cannot read {tf}: {e.strerror}") from None
    if not isinstance(value, str) or len(value) < 16:
        raise ConfigError("token: required, at least 16 characters (or set token_file)")
    return value
