"""Where kvmss lives on a joined host and what its agent is configured with,
checked before the host is touched."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from hostagent.daemon.config import AgentConfig, ConfigError
from kvmss.hostjoin.steps import JoinError
from kvmss.hostjoin.unitfile import Relocation, check_path

AGENT_UNIT = "kvmss-agent.service"
# What the unit files in systemd/ say.
DEFAULT_PREFIX = PurePosixPath("/opt/kvmss")
DEFAULT_CONFIG_DIR = PurePosixPath("/etc/kvmss")
DEFAULT_STATE_DIR = PurePosixPath("/var/lib/kvmss")
DEFAULT_AGENT_PORT = 8090


@dataclass(frozen=True)
class HostLayout:
    """Where kvmss lives on the host."""

    prefix: PurePosixPath = DEFAULT_PREFIX
    config_dir: PurePosixPath = DEFAULT_CONFIG_DIR
    state_dir: PurePosixPath = DEFAULT_STATE_DIR

    @classmethod
    def of(cls, prefix: str, config_dir: str, state_dir: str) -> HostLayout:
        """Checked paths (ValueError names the option)."""
        return cls(
            check_path(prefix, "--prefix"),
            check_path(config_dir, "--config-dir"),
            check_path(state_dir, "--state-dir"),
        )

    @property
    def agent_bin(self) -> PurePosixPath:
        return self.prefix / "venv" / "bin" / "kvmss-agent"

    @property
    def config_file(self) -> PurePosixPath:
        return self.config_dir / "agent.yaml"

    @property
    def token_file(self) -> PurePosixPath:
        return self.config_dir / "agent.token"

    @property
    def storage_dir(self) -> PurePosixPath:
        return self.state_dir / "agent"

    @property
    def pid_file(self) -> PurePosixPath:
        return self.state_dir / "agent.pid"

    @property
    def log_file(self) -> PurePosixPath:
        return self.state_dir / "agent.log"

    @property
    def unit_file(self) -> PurePosixPath:
        return PurePosixPath("/etc/systemd/system") / AGENT_UNIT

    def relocation(self) -> Relocation:
        default = HostLayout()
        return Relocation(
            {
                default.prefix: self.prefix,
                default.config_dir: self.config_dir,
                default.state_dir: self.state_dir,
            }
        )


@dataclass(frozen=True)
class AgentSettings:
    """What goes into the agent's configuration, besides paths and token."""

    name: str
    address: str | None = None  # None: the address the SSH connection reached
    port: int = DEFAULT_AGENT_PORT
    bridge_name: str | None = None
    bridge_subnet: str | None = None
    libvirt_uri: str = "qemu:///system"

    def __post_init__(self) -> None:
        if (self.bridge_name is None) != (self.bridge_subnet is None):
            raise ValueError("--bridge-name and --bridge-subnet: give both or neither")
        if self.address is not None:
            try:
                ipaddress.ip_address(self.address)
            except ValueError:
                raise ValueError(
                    f"--agent-address {self.address!r}: must be an IP address of the host"
                ) from None
        if not 0 < self.port < 65536:
            raise ValueError(f"--agent-port {self.port}: not a TCP port")

    def config(self, layout: HostLayout, address: str) -> dict[str, Any]:
        """The agent's YAML configuration as a mapping (the token by file)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "listen": f"{_host(address)}:{self.port}",
            "token_file": str(layout.token_file),
            "libvirt_uri": self.libvirt_uri,
            "storage_dir": str(layout.storage_dir),
        }
        if self.bridge_name is not None:
            doc["bridge"] = {"name": self.bridge_name, "subnet": self.bridge_subnet}
        return doc


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def agent_url(address: str, port: int) -> str:
    return f"http://{_host(address)}:{port}"


def check_config(doc: dict[str, Any]) -> None:
    """The agent's own validation of ``doc``, here, before the host is touched."""
    raw = {k: v for k, v in doc.items() if k != "token_file"}
    try:
        AgentConfig.from_dict({**raw, "token": "x" * 32})
    except ConfigError as e:
        raise JoinError(f"agent configuration: {e}") from None
